/*
 * watch.c: `taskq watch`: LISTEN on the role's job channel (taskq.channel():
 * its own jobs, or every job for a taskq_admin member) and print one line
 * per job transition as it is committed, until Ctrl-C.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "taskq.h"

#define FIELD_MAX 256

static volatile sig_atomic_t stop_requested = 0;
static int	wake_pipe[2] = {-1, -1};

/* SIGINT/SIGTERM: set the flag and wake poll() through the pipe */
static void
on_signal(int signo)
{
	int			save_errno = errno;
	ssize_t		rc;

	(void) signo;
	stop_requested = 1;
	rc = write(wake_pipe[1], "x", 1);
	(void) rc;
	errno = save_errno;
}

static void
usage(void)
{
	printf("Print job transitions live, one line each, until Ctrl-C.\n\n"
		   "Usage:\n  %s watch [OPTION]...\n\n"
		   "Each line: time (of receipt), job id, job type, queue, new status, attempt.\n"
		   "Transitions are published on commit, on the channel taskq.channel() names:\n"
		   "your own jobs', or every job's for a member of taskq_admin.  With\n"
		   "taskq.notify_level = 'terminal' only finished jobs are published.\n\n"
		   "Options:\n"
		   "  -q, --queue=QUEUE        only jobs of this queue\n"
		   "  -t, --type=JOB_TYPE      only jobs of this job type\n"
		   "      --count=N            exit after printing N transitions\n"
		   "      --json               print each notification's JSON payload as is\n"
		   "      --help               show this help and exit\n\n"
		   CONN_OPTIONS_HELP, progname);
}

/* Append the UTF-8 encoding of code point cp to out (within outlen). */
static size_t
put_utf8(char *out, size_t pos, size_t outlen, unsigned int cp)
{
	char		buf[4];
	size_t		n;

	if (cp < 0x80)
	{
		buf[0] = (char) cp;
		n = 1;
	}
	else if (cp < 0x800)
	{
		buf[0] = (char) (0xc0 | (cp >> 6));
		buf[1] = (char) (0x80 | (cp & 0x3f));
		n = 2;
	}
	else
	{
		buf[0] = (char) (0xe0 | (cp >> 12));
		buf[1] = (char) (0x80 | ((cp >> 6) & 0x3f));
		buf[2] = (char) (0x80 | (cp & 0x3f));
		n = 3;
	}
	for (size_t i = 0; i < n && pos + 1 < outlen; i++)
		out[pos++] = buf[i];
	return pos;
}

/* Parse a JSON string at *p (after its opening quote) into out; false if malformed. */
static bool
json_string(const char **p, char *out, size_t outlen)
{
	const char *s = *p;
	size_t		pos = 0;

	while (*s && *s != '"')
	{
		unsigned int c = (unsigned char) *s++;

		if (c == '\\')
		{
			switch (*s++)
			{
				case '"':
					c = '"';
					break;
				case '\\':
					c = '\\';
					break;
				case '/':
					c = '/';
					break;
				case 'b':
				case 'f':
				case 'n':
				case 'r':
				case 't':
					c = ' ';
					break;
				case 'u':
					{
						char		hex[5] = {0};

						for (int i = 0; i < 4; i++)
						{
							if (!*s)
								return false;
							hex[i] = *s++;
						}
						c = (unsigned int) strtoul(hex, NULL, 16);
						/* control characters and surrogate halves are not printed */
						if (c < 0x20 || (c >= 0xd800 && c <= 0xdfff))
							c = ' ';
						pos = put_utf8(out, pos, outlen, c);
						continue;
					}
				default:
					return false;
			}
		}
		if (pos + 1 < outlen)
			out[pos++] = (char) c;
	}
	if (*s != '"')
		return false;
	out[pos] = '\0';
	*p = s + 1;
	return true;
}

/*
 * The value of key in a flat JSON object such as the taskq_jobs payloads:
 * strings are unescaped, numbers and literals copied as they are.
 */
static bool
json_field(const char *json, const char *key, char *out, size_t outlen)
{
	const char *p = json;
	char		name[FIELD_MAX];

	while (*p == ' ')
		p++;
	if (*p++ != '{')
		return false;
	for (;;)
	{
		bool		match;

		while (*p == ' ' || *p == ',')
			p++;
		if (*p != '"')
			return false;
		p++;
		if (!json_string(&p, name, sizeof(name)))
			return false;
		while (*p == ' ')
			p++;
		if (*p++ != ':')
			return false;
		while (*p == ' ')
			p++;
		match = strcmp(name, key) == 0;
		if (*p == '"')
		{
			p++;
			if (!json_string(&p, match ? out : name, match ? outlen : sizeof(name)))
				return false;
			if (match)
				return true;
		}
		else
		{
			size_t		len = strcspn(p, ",} ");

			if (len == 0)
				return false;
			if (match)
			{
				if (len >= outlen)
					len = outlen - 1;
				memcpy(out, p, len);
				out[len] = '\0';
				return true;
			}
			p += len;
		}
	}
}

static void
print_transition(const char *payload, bool as_json)
{
	char		id[FIELD_MAX] = "?",
				type[FIELD_MAX] = "?",
				queue[FIELD_MAX] = "?",
				status[FIELD_MAX] = "?",
				attempt[FIELD_MAX] = "?";
	char		stamp[32];
	struct timeval tv;
	struct tm	tm;

	if (as_json)
	{
		print_padded(stdout, payload, 0, false);
		fputc('\n', stdout);
		return;
	}
	json_field(payload, "id", id, sizeof(id));
	json_field(payload, "job_type", type, sizeof(type));
	json_field(payload, "queue", queue, sizeof(queue));
	json_field(payload, "status", status, sizeof(status));
	json_field(payload, "attempt", attempt, sizeof(attempt));

	gettimeofday(&tv, NULL);
	localtime_r(&tv.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
	printf("%s.%03d  ", stamp, (int) (tv.tv_usec / 1000));
	print_padded(stdout, id, 8, true);
	fputs("  ", stdout);
	print_padded(stdout, type, 20, false);
	fputs("  ", stdout);
	print_padded(stdout, queue, 12, false);
	fputs("  ", stdout);
	print_padded(stdout, status, 9, false);
	fputs("  ", stdout);
	print_padded(stdout, attempt, 0, false);
	fputc('\n', stdout);
}

/* Whether a notification passes the --queue/--type filters. */
static bool
wanted(const char *payload, const char *queue, const char *type)
{
	char		v[FIELD_MAX];

	if (queue && (!json_field(payload, "queue", v, sizeof(v)) || strcmp(v, queue) != 0))
		return false;
	if (type && (!json_field(payload, "job_type", v, sizeof(v)) || strcmp(v, type) != 0))
		return false;
	return true;
}

int
cmd_watch(int argc, char **argv)
{
	enum
	{
		OPT_COUNT = 2000, OPT_JSON
	};
	static const struct option long_options[] = {
		CONN_LONG_OPTIONS,
		{"queue", required_argument, NULL, 'q'},
		{"type", required_argument, NULL, 't'},
		{"count", required_argument, NULL, OPT_COUNT},
		{"json", no_argument, NULL, OPT_JSON},
		{NULL, 0, NULL, 0}
	};
	const char *queue = NULL;
	const char *type = NULL;
	long		count = -1;
	long		printed = 0;
	bool		as_json = false;
	struct sigaction sa;
	PGconn	   *conn;
	PGresult   *res;
	char	   *channel;
	char	   *listen;
	int			c;

	while ((c = getopt_long(argc, argv, CONN_SHORT_OPTIONS "q:t:", long_options, NULL)) != -1)
	{
		if (handle_conn_option(c, optarg))
			continue;
		switch (c)
		{
			case 'q':
				queue = optarg;
				break;
			case 't':
				type = optarg;
				break;
			case OPT_COUNT:
				{
					char	   *end;

					count = strtol(optarg, &end, 10);
					if (*optarg == '\0' || *end != '\0' || count < 1)
						usage_error("watch", "--count must be a positive integer, got \"%s\"", optarg);
					break;
				}
			case OPT_JSON:
				as_json = true;
				break;
			case OPT_HELP:
				usage();
				return 0;
			default:
				bad_option("watch");
		}
	}
	if (optind < argc)
		usage_error("watch", "too many arguments (first extra: \"%s\")", argv[optind]);

	if (pipe(wake_pipe) != 0)
		fatal("could not create pipe: %s", strerror(errno));
	fcntl(wake_pipe[1], F_SETFL, O_NONBLOCK);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	conn = connect_db("watch");
	/* the channel's name is known to this role only: ask for it */
	res = run_query(conn, "SELECT taskq.channel()", 0, NULL);
	channel = PQescapeIdentifier(conn, PQgetvalue(res, 0, 0), strlen(PQgetvalue(res, 0, 0)));
	if (channel == NULL)
		query_failed(conn, NULL);
	PQclear(res);
	listen = malloc(strlen(channel) + sizeof("LISTEN "));
	if (listen == NULL)
		fatal("out of memory");
	sprintf(listen, "LISTEN %s", channel);
	PQfreemem(channel);
	PQclear(run_query(conn, listen, 0, NULL));
	free(listen);
	if (isatty(STDOUT_FILENO) && !as_json)
		printf("time          %8s  %-20s  %-12s  %-9s  attempt\n", "id", "job_type", "queue", "status");
	fflush(stdout);

	while (!stop_requested && (count < 0 || printed < count))
	{
		struct pollfd fds[2];
		PGnotify   *note;

		fds[0].fd = PQsocket(conn);
		fds[0].events = POLLIN;
		fds[1].fd = wake_pipe[0];
		fds[1].events = POLLIN;
		if (poll(fds, 2, -1) < 0)
		{
			if (errno == EINTR)
				continue;
			fatal("poll failed: %s", strerror(errno));
		}
		if (stop_requested)
			break;
		if (!PQconsumeInput(conn))
			query_failed(conn, NULL);
		while ((count < 0 || printed < count) && (note = PQnotifies(conn)) != NULL)
		{
			if (wanted(note->extra, queue, type))
			{
				print_transition(note->extra, as_json);
				printed++;
			}
			PQfreemem(note);
		}
		/* line by line, also into a pipe or a file */
		fflush(stdout);
	}
	PQfinish(conn);
	return 0;
}
