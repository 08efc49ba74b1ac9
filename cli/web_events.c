/*
 * web_events.c: live updates of `taskq web`.  One thread holds the process's
 * only LISTEN connection, on the channel taskq.channel() names for the
 * dashboard's role, and appends each notification to a ring; every browser's
 * /events stream (Server-Sent Events) reads the ring from where it is.  A
 * stream that falls a whole ring behind (a client that stopped reading) is
 * closed; MHD's connection timeout closes one that does not read at all.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "taskq.h"
#include "web.h"

#define RING_SIZE 1024
#define MAX_STREAMS 64
#define KEEPALIVE_SECONDS 10
#define EVENT_MAX 2048

static char *ring[RING_SIZE];
static uint64_t ring_next;		/* sequence number of the next event */
static int	nstreams;
static volatile bool stopping;
static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ring_cond;
static pthread_t listener;
static PGconn *listen_conn;

/* Append an event (a JSON text) and wake the streams. */
static void
publish(const char *json)
{
	char	   *copy = strndup(json, EVENT_MAX);

	if (copy == NULL)
		return;
	/* one event is one "data:" line */
	for (char *p = copy; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	pthread_mutex_lock(&ring_lock);
	free(ring[ring_next % RING_SIZE]);
	ring[ring_next % RING_SIZE] = copy;
	ring_next++;
	pthread_cond_broadcast(&ring_cond);
	pthread_mutex_unlock(&ring_lock);
}

/* LISTEN on the role's channel; false (with the connection reset) on error */
static bool
listen_channel(PGconn *conn)
{
	PGresult   *res = PQexec(conn, "SELECT taskq.channel()");
	char	   *ident;
	char		sql[256];
	bool		ok;

	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
	{
		fprintf(stderr, "%s web: could not get the notification channel: %s",
				progname, PQerrorMessage(conn));
		PQclear(res);
		return false;
	}
	ident = PQescapeIdentifier(conn, PQgetvalue(res, 0, 0), strlen(PQgetvalue(res, 0, 0)));
	PQclear(res);
	if (ident == NULL)
		return false;
	snprintf(sql, sizeof(sql), "LISTEN %s", ident);
	PQfreemem(ident);
	res = PQexec(conn, sql);
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	if (!ok)
		fprintf(stderr, "%s web: LISTEN failed: %s", progname, PQerrorMessage(conn));
	PQclear(res);
	return ok;
}

static void *
listener_main(void *arg)
{
	(void) arg;
	while (!stopping)
	{
		struct pollfd pfd;
		PGnotify   *note;

		if (PQstatus(listen_conn) != CONNECTION_OK)
		{
			/* reconnect once a second; the pages reload what they show */
			struct timespec ts = {1, 0};

			nanosleep(&ts, NULL);
			PQreset(listen_conn);
			if (PQstatus(listen_conn) == CONNECTION_OK && listen_channel(listen_conn))
				publish("{\"status\":\"reconnected\"}");
			continue;
		}
		pfd.fd = PQsocket(listen_conn);
		pfd.events = POLLIN;
		/* wake up now and then to notice stopping */
		if (poll(&pfd, 1, 500) < 0 && errno != EINTR)
			break;
		if (!PQconsumeInput(listen_conn))
			continue;			/* status now says bad: reconnect above */
		while ((note = PQnotifies(listen_conn)) != NULL)
		{
			publish(note->extra);
			PQfreemem(note);
		}
	}
	return NULL;
}

bool
web_events_start(void)
{
	pthread_condattr_t attr;

	/* timed waits on the monotonic clock: a clock change delays no stream */
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&ring_cond, &attr);
	listen_conn = connect_db("web");
	if (!listen_channel(listen_conn))
		fatal("could not listen for job transitions");
	return pthread_create(&listener, NULL, listener_main, NULL) == 0;
}

void
web_events_stop(void)
{
	pthread_mutex_lock(&ring_lock);
	stopping = true;
	pthread_cond_broadcast(&ring_cond);
	pthread_mutex_unlock(&ring_lock);
	pthread_join(listener, NULL);
	PQfinish(listen_conn);
}

typedef struct Stream
{
	uint64_t	next;			/* next event to send */
	char	   *pending;		/* text being sent */
	size_t		len;
	size_t		off;
}			Stream;

/* Fill s->pending with the next events, a keep-alive, or nothing: end. */
static bool
next_chunk(Stream *s)
{
	struct timespec deadline;
	char	   *buf = NULL;
	size_t		len = 0;
	FILE	   *out;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += KEEPALIVE_SECONDS;
	pthread_mutex_lock(&ring_lock);
	while (!stopping && s->next == ring_next)
		if (pthread_cond_timedwait(&ring_cond, &ring_lock, &deadline) == ETIMEDOUT)
			break;
	if (stopping || ring_next - s->next > RING_SIZE)
	{
		/* a whole ring behind: this client does not keep up, drop it */
		pthread_mutex_unlock(&ring_lock);
		return false;
	}
	out = open_memstream(&buf, &len);
	if (out == NULL)
	{
		pthread_mutex_unlock(&ring_lock);
		return false;
	}
	if (s->next == ring_next)
		fputs(": keep-alive\n\n", out);
	for (int n = 0; s->next < ring_next && n < 64; n++, s->next++)
		fprintf(out, "data: %s\n\n", ring[s->next % RING_SIZE]);
	pthread_mutex_unlock(&ring_lock);
	fclose(out);
	free(s->pending);
	s->pending = buf;
	s->len = len;
	s->off = 0;
	return true;
}

static ssize_t
stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	Stream	   *s = cls;
	size_t		n;

	(void) pos;
	if (s->off == s->len && !next_chunk(s))
		return MHD_CONTENT_READER_END_WITH_ERROR;
	n = s->len - s->off;
	if (n > max)
		n = max;
	memcpy(buf, s->pending + s->off, n);
	s->off += n;
	return (ssize_t) n;
}

static void
stream_free(void *cls)
{
	Stream	   *s = cls;

	pthread_mutex_lock(&ring_lock);
	nstreams--;
	pthread_mutex_unlock(&ring_lock);
	free(s->pending);
	free(s);
}

/* The response of GET /events, or NULL when too many streams are open. */
struct MHD_Response *
web_events_response(void)
{
	static const char hello[] = "retry: 1000\n: taskq\n\n";
	Stream	   *s = calloc(1, sizeof(Stream));
	struct MHD_Response *resp;

	if (s == NULL)
		return NULL;
	pthread_mutex_lock(&ring_lock);
	if (nstreams >= MAX_STREAMS)
	{
		pthread_mutex_unlock(&ring_lock);
		free(s);
		return NULL;
	}
	nstreams++;
	s->next = ring_next;
	pthread_mutex_unlock(&ring_lock);
	s->pending = strdup(hello);
	s->len = s->pending ? strlen(hello) : 0;
	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, s, stream_free);
	if (resp == NULL)
	{
		stream_free(s);
		return NULL;
	}
	MHD_add_response_header(resp, "Content-Type", "text/event-stream");
	MHD_add_response_header(resp, "Cache-Control", "no-cache");
	return resp;
}
