/*
 * web.c: `taskq web`, the dashboard: options, the HTTP server (libmicrohttpd,
 * a thread per connection, so a slow client holds only its own thread),
 * access control (Host check, HTTP Basic for non-loopback addresses, CSRF
 * token and Origin check on every POST) and routing to the embedded pages,
 * the JSON API (web_db.c) and the event stream (web_events.c).
 */
#define _GNU_SOURCE				/* memmem */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <sys/socket.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "taskq.h"
#include "web.h"

#define BODY_MAX (64 * 1024)	/* no request of the API needs a body */
#define POOL_SIZE 4
#define CONNECTION_TIMEOUT 30	/* seconds without progress on a connection */
#define MAX_CONNECTIONS 200
#define STREAM_SNDBUF (32 * 1024)

static char csrf_token[65];
static char *index_html;		/* the page with the token in it */
static size_t index_len;
static char *auth_user;			/* --auth: the one user name and password */
static char *auth_password;
static bool loopback;
static char listen_host[260];	/* as --listen names it, IPv6 in brackets */
static unsigned int port;

typedef struct Request
{
	size_t		body;			/* request body bytes received (and dropped) */
	bool		too_big;
}			Request;

static void
usage(void)
{
	printf("Serve the taskq dashboard over HTTP until Ctrl-C.\n\n"
		   "Usage:\n  %s web [OPTION]...\n\n"
		   "Pages: the overview (queues, throughput, latency, workers, resources,\n"
		   "health), the jobs list with filters, and each job with its attempts and\n"
		   "dependency graph, updated live from LISTEN; actions: retry, cancel, pause\n"
		   "and resume a queue, retry or purge the dead-letter queue.  Everything runs\n"
		   "as the database role the dashboard connects as: its rights and row-level\n"
		   "security decide what the pages show and what the actions may do.\n\n"
		   "Options:\n"
		   "  -l, --listen=ADDR:PORT   address to serve on (default 127.0.0.1:8080;\n"
		   "                           [::1]:PORT for IPv6; port 0 picks a free one)\n"
		   "      --auth=FILE          require HTTP Basic authentication with the\n"
		   "                           USER:PASSWORD on the first line of FILE;\n"
		   "                           required to listen on a non-loopback address\n"
		   "      --explain=FILTERS    print the plan of the jobs page query for\n"
		   "                           FILTERS (e.g. \"queue=mail&status=failed\") and exit\n"
		   "      --help               show this help and exit\n\n"
		   CONN_OPTIONS_HELP, progname);
}

/* Compare in time independent of where a and b differ. */
static bool
ct_equal(const char *a, const char *b)
{
	size_t		la = strlen(a),
				lb = strlen(b);
	unsigned char diff = la != lb;

	for (size_t i = 0; i < lb; i++)
		diff |= (unsigned char) a[i % (la ? la : 1)] ^ (unsigned char) b[i];
	return diff == 0 && la == lb;
}

/* 32 random bytes as hex: the process's CSRF token */
static void
make_token(void)
{
	unsigned char raw[32];
	int			fd = open("/dev/urandom", O_RDONLY);

	if (fd < 0 || read(fd, raw, sizeof(raw)) != (ssize_t) sizeof(raw))
		fatal("could not read /dev/urandom: %s", strerror(errno));
	close(fd);
	for (int i = 0; i < 32; i++)
		sprintf(csrf_token + 2 * i, "%02x", raw[i]);
}

/* index.html with its placeholder replaced by the token */
static void
make_index(void)
{
	static const char mark[] = "__CSRF_TOKEN__";
	const char *html = (const char *) web_index_html;
	const char *at = memmem(html, web_index_html_len, mark, strlen(mark));
	size_t		head;

	if (at == NULL)
		fatal("the embedded index.html has no CSRF placeholder");
	head = (size_t) (at - html);
	index_len = web_index_html_len - strlen(mark) + strlen(csrf_token);
	index_html = malloc(index_len);
	if (index_html == NULL)
		fatal("out of memory");
	memcpy(index_html, html, head);
	memcpy(index_html + head, csrf_token, strlen(csrf_token));
	memcpy(index_html + head + strlen(csrf_token), at + strlen(mark),
		   web_index_html_len - head - strlen(mark));
}

/* Read USER:PASSWORD from the first line of path. */
static void
read_auth(const char *path)
{
	FILE	   *f = fopen(path, "r");
	char		line[1024];
	char	   *colon;

	if (f == NULL)
		fatal("could not open --auth file \"%s\": %s", path, strerror(errno));
	if (fgets(line, sizeof(line), f) == NULL)
		fatal("--auth file \"%s\" is empty", path);
	fclose(f);
	line[strcspn(line, "\r\n")] = '\0';
	colon = strchr(line, ':');
	if (colon == NULL || colon == line || colon[1] == '\0')
		fatal("--auth file \"%s\": the first line must be USER:PASSWORD", path);
	*colon = '\0';
	auth_user = strdup(line);
	auth_password = strdup(colon + 1);
	memset(line, 0, sizeof(line));
	if (auth_user == NULL || auth_password == NULL)
		fatal("out of memory");
}

/* Parse ADDR:PORT (or [V6]:PORT) into addr; loopback tells whether it is. */
static void
parse_listen(const char *arg, struct sockaddr_storage *addr, bool *is_loopback)
{
	char		host[256];
	const char *portstr;
	struct addrinfo hints,
			   *ai;
	int			rc;

	if (arg[0] == '[')
	{
		const char *end = strchr(arg, ']');

		if (end == NULL || end[1] != ':' || (size_t) (end - arg - 1) >= sizeof(host))
			usage_error("web", "--listen must be ADDRESS:PORT, got \"%s\"", arg);
		memcpy(host, arg + 1, end - arg - 1);
		host[end - arg - 1] = '\0';
		portstr = end + 2;
		snprintf(listen_host, sizeof(listen_host), "[%s]", host);
	}
	else
	{
		const char *colon = strrchr(arg, ':');

		if (colon == NULL || (size_t) (colon - arg) >= sizeof(host) || colon == arg)
			usage_error("web", "--listen must be ADDRESS:PORT, got \"%s\"", arg);
		memcpy(host, arg, colon - arg);
		host[colon - arg] = '\0';
		portstr = colon + 1;
		snprintf(listen_host, sizeof(listen_host), "%s", host);
	}
	if (*portstr == '\0' || strspn(portstr, "0123456789") != strlen(portstr) ||
		strlen(portstr) > 5 || atoi(portstr) > 65535)
		usage_error("web", "--listen: bad port in \"%s\"", arg);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	rc = getaddrinfo(host, portstr, &hints, &ai);
	if (rc != 0)
		usage_error("web", "--listen: cannot resolve \"%s\": %s", host, gai_strerror(rc));
	memcpy(addr, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	if (addr->ss_family == AF_INET)
	{
		const struct sockaddr_in *sin = (const struct sockaddr_in *) addr;

		*is_loopback = (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	}
	else
	{
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) addr;

		*is_loopback = IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
	}
}

/*
 * On a loopback address the Host header must name a loopback host: a page
 * of another site whose name an attacker points at 127.0.0.1 (DNS
 * rebinding) is refused.  Behind --auth any name is accepted.
 */
static bool
host_allowed(const char *hosthdr)
{
	const char *const names[] = {"localhost", "127.0.0.1", "[::1]", listen_host, NULL};
	char		want[300];

	if (!loopback)
		return true;
	if (hosthdr == NULL)
		return false;
	for (int i = 0; names[i]; i++)
	{
		snprintf(want, sizeof(want), "%s:%u", names[i], port);
		if (strcasecmp(hosthdr, want) == 0)
			return true;
		/* a browser omits :80 */
		if (port == 80 && strcasecmp(hosthdr, names[i]) == 0)
			return true;
	}
	return false;
}

static enum MHD_Result
send_body(struct MHD_Connection *conn, unsigned int status, const char *type,
		  const void *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *) body, mode);
	enum MHD_Result ret;

	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type", type);
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(resp, "X-Frame-Options", "DENY");
	MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	MHD_add_response_header(resp, "Content-Security-Policy",
							"default-src 'none'; script-src 'self'; style-src 'self'; "
							"img-src 'self' data:; connect-src 'self'; "
							"frame-ancestors 'none'; base-uri 'none'; form-action 'none'");
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result
send_reply(struct MHD_Connection *conn, WebReply r)
{
	if (r.body == NULL)
		return send_body(conn, 500, "application/json", "{\"error\":\"out of memory\"}",
						 25, MHD_RESPMEM_PERSISTENT);
	return send_body(conn, r.status, "application/json; charset=utf-8",
					 r.body, strlen(r.body), MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result
send_error(struct MHD_Connection *conn, unsigned int status, const char *msg)
{
	return send_reply(conn, web_error(status, msg));
}

static const char *
get_arg(void *ctx, const char *name)
{
	return MHD_lookup_connection_value(ctx, MHD_GET_ARGUMENT_KIND, name);
}

/* the pages the browser may load; the script picks the view by the path */
static bool
is_page(const char *url)
{
	if (strcmp(url, "/") == 0 || strcmp(url, "/jobs") == 0)
		return true;
	if (strncmp(url, "/job/", 5) == 0)
	{
		size_t		n = strlen(url + 5);

		return n > 0 && n < 19 && strspn(url + 5, "0123456789") == n;
	}
	return false;
}

/*
 * A POST must carry the page's token in X-CSRF-Token (a form of another site
 * cannot set a header, and cannot read the page to learn the token) and, when
 * the browser says where it comes from, come from this origin.
 */
static bool
csrf_ok(struct MHD_Connection *conn)
{
	const char *token = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-CSRF-Token");
	const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
	const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Host");
	const char *site = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-Fetch-Site");

	if (token == NULL || !ct_equal(token, csrf_token))
		return false;
	if (site && strcmp(site, "same-origin") != 0 && strcmp(site, "none") != 0)
		return false;
	if (origin)
	{
		const char *rest = strncmp(origin, "http://", 7) == 0 ? origin + 7 :
			strncmp(origin, "https://", 8) == 0 ? origin + 8 : NULL;

		if (rest == NULL || host == NULL || strcasecmp(rest, host) != 0)
			return false;
	}
	return true;
}

static enum MHD_Result
handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
	   const char *version, const char *upload_data, size_t *upload_data_size,
	   void **con_cls)
{
	Request    *req = *con_cls;
	bool		get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

	(void) cls;
	(void) version;
	(void) upload_data;
	if (req == NULL)
	{
		const char *clen = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");

		req = calloc(1, sizeof(Request));
		if (req == NULL)
			return MHD_NO;
		*con_cls = req;
		/* refuse a declared oversized body before reading it */
		if (clen && (strlen(clen) > 9 || strtoul(clen, NULL, 10) > BODY_MAX))
			return send_error(conn, 413, "request body too large");
		return MHD_YES;
	}
	if (*upload_data_size > 0)
	{
		/* the API takes its parameters from the URL: count, drop, go on */
		req->body += *upload_data_size;
		req->too_big |= req->body > BODY_MAX;
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (req->too_big)
		return send_error(conn, 413, "request body too large");
	if (strlen(url) > 2048)
		return send_error(conn, 414, "URL too long");

	if (!host_allowed(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Host")))
		return send_error(conn, 403, "the Host header does not name this dashboard");
	if (auth_user)
	{
		char	   *pass = NULL;
		char	   *user = MHD_basic_auth_get_username_password(conn, &pass);
		bool		ok = user && pass &&
			ct_equal(user, auth_user) & ct_equal(pass, auth_password);

		MHD_free(user);
		MHD_free(pass);
		if (!ok)
		{
			struct MHD_Response *resp =
				MHD_create_response_from_buffer(23, "authentication needed\n", MHD_RESPMEM_PERSISTENT);
			enum MHD_Result ret = MHD_queue_basic_auth_fail_response(conn, "taskq", resp);

			MHD_destroy_response(resp);
			return ret;
		}
	}

	if (get)
	{
		if (is_page(url))
			return send_body(conn, 200, "text/html; charset=utf-8", index_html, index_len,
							 MHD_RESPMEM_PERSISTENT);
		if (strcmp(url, "/app.js") == 0)
			return send_body(conn, 200, "text/javascript; charset=utf-8", web_app_js,
							 web_app_js_len, MHD_RESPMEM_PERSISTENT);
		if (strcmp(url, "/style.css") == 0)
			return send_body(conn, 200, "text/css; charset=utf-8", web_style_css,
							 web_style_css_len, MHD_RESPMEM_PERSISTENT);
		if (strcmp(url, "/events") == 0)
		{
			struct MHD_Response *resp = web_events_response();
			const union MHD_ConnectionInfo *ci =
				MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
			int			sndbuf = STREAM_SNDBUF;
			enum MHD_Result ret;

			/*
			 * A small send buffer: a browser that stops reading stalls its
			 * stream soon, and MHD's timeout then closes it, instead of the
			 * kernel queueing megabytes of events for it.
			 */
			if (ci)
				setsockopt(ci->connect_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));

			if (resp == NULL)
				return send_error(conn, 503, "too many event streams");
			ret = MHD_queue_response(conn, 200, resp);
			MHD_destroy_response(resp);
			return ret;
		}
		if (strncmp(url, "/api/", 5) == 0)
			return send_reply(conn, web_api_get(url + 5, get_arg, conn));
		return send_error(conn, 404, "not found");
	}
	if (strcmp(method, "POST") == 0)
	{
		if (strncmp(url, "/api/", 5) != 0)
			return send_error(conn, 404, "not found");
		if (!csrf_ok(conn))
			return send_error(conn, 403, "missing or wrong CSRF token, or another origin");
		return send_reply(conn, web_api_post(url + 5, get_arg, conn));
	}
	return send_error(conn, 405, "method not allowed");
}

static void
request_done(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	(void) cls;
	(void) conn;
	(void) toe;
	free(*con_cls);
	*con_cls = NULL;
}

int
cmd_web(int argc, char **argv)
{
	enum
	{
		OPT_AUTH = 2000, OPT_EXPLAIN
	};
	static const struct option long_options[] = {
		CONN_LONG_OPTIONS,
		{"listen", required_argument, NULL, 'l'},
		{"auth", required_argument, NULL, OPT_AUTH},
		{"explain", required_argument, NULL, OPT_EXPLAIN},
		{NULL, 0, NULL, 0}
	};
	const char *listen_arg = "127.0.0.1:8080";
	const char *auth_file = NULL;
	const char *explain = NULL;
	struct sockaddr_storage addr;
	sigset_t	stop_signals;
	int			signo;
	struct MHD_Daemon *daemon;
	const union MHD_DaemonInfo *info;
	unsigned int flags;
	int			c;

	while ((c = getopt_long(argc, argv, CONN_SHORT_OPTIONS "l:", long_options, NULL)) != -1)
	{
		if (handle_conn_option(c, optarg))
			continue;
		switch (c)
		{
			case 'l':
				listen_arg = optarg;
				break;
			case OPT_AUTH:
				auth_file = optarg;
				break;
			case OPT_EXPLAIN:
				explain = optarg;
				break;
			case OPT_HELP:
				usage();
				return 0;
			default:
				bad_option("web");
		}
	}
	if (optind < argc)
		usage_error("web", "too many arguments (first extra: \"%s\")", argv[optind]);
	if (explain)
		return web_explain_jobs(explain);

	parse_listen(listen_arg, &addr, &loopback);
	if (!loopback && auth_file == NULL)
		usage_error("web", "--listen on a non-loopback address (\"%s\") requires --auth", listen_arg);
	if (auth_file)
		read_auth(auth_file);
	make_token();
	make_index();

	/*
	 * SIGINT and SIGTERM are blocked in every thread (the mask is inherited)
	 * and taken by sigwait() below: no handler, no self-pipe.
	 */
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
	signal(SIGPIPE, SIG_IGN);

	web_db_init(POOL_SIZE);
	if (!web_events_start())
		fatal("could not start the listener thread");

	flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
	if (addr.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	daemon = MHD_start_daemon(flags, 0, NULL, NULL, handle, NULL,
							  MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &addr,
							  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) CONNECTION_TIMEOUT,
							  MHD_OPTION_CONNECTION_LIMIT, (unsigned int) MAX_CONNECTIONS,
							  MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) (32 * 1024),
							  MHD_OPTION_NOTIFY_COMPLETED, request_done, NULL,
							  MHD_OPTION_END);
	if (daemon == NULL)
		fatal("could not serve on %s (address in use?)", listen_arg);
	info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
	port = info ? info->port : 0;
	if (addr.ss_family == AF_INET6)
	{
		char		buf[INET6_ADDRSTRLEN];

		inet_ntop(AF_INET6, &((struct sockaddr_in6 *) &addr)->sin6_addr, buf, sizeof(buf));
		printf("taskq web: serving http://[%s]:%u/\n", buf, port);
	}
	else
	{
		char		buf[INET_ADDRSTRLEN];

		inet_ntop(AF_INET, &((struct sockaddr_in *) &addr)->sin_addr, buf, sizeof(buf));
		printf("taskq web: serving http://%s:%u/\n", buf, port);
	}
	fflush(stdout);

	while (sigwait(&stop_signals, &signo) != 0)
		;
	/* end the event streams first: MHD waits for their threads */
	web_events_stop();
	MHD_stop_daemon(daemon);
	web_db_close();
	return 0;
}
