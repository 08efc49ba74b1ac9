/*
 * top.c: `taskq top`: a full-screen view of queues, resources, throughput,
 * health and workers, redrawn in place with ANSI escape codes every few
 * seconds.  The terminal is put in cbreak mode (keys unbuffered, no echo,
 * Ctrl-C read as a key) and restored however the program ends.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "taskq.h"

/* a frame line starting with this is drawn in bold (data never has it) */
#define BOLD_MARK '\001'

static struct termios saved_termios;
static bool termios_saved = false;
static bool screen_active = false;
static volatile sig_atomic_t stop_requested = 0;
static volatile sig_atomic_t resized = 0;
static int	wake_pipe[2] = {-1, -1};

/* Leave the alternate screen and restore the terminal's modes. */
static void
restore_terminal(void)
{
	if (screen_active)
	{
		/* leave the alternate screen, show the cursor */
		fputs("\033[?1049l\033[?25h", stdout);
		fflush(stdout);
		screen_active = false;
	}
	if (termios_saved)
	{
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_termios);
		termios_saved = false;
	}
}

static void
on_signal(int signo)
{
	int			save_errno = errno;
	ssize_t		rc;

	if (signo == SIGWINCH)
		resized = 1;
	else
		stop_requested = 1;
	rc = write(wake_pipe[1], "x", 1);
	(void) rc;
	errno = save_errno;
}

static void
usage(void)
{
	printf("A live full-screen view of queues (busiest first), resources, throughput,\n"
		   "health and workers.\n\n"
		   "Usage:\n  %s top [OPTION]...\n\n"
		   "Keys: q or Ctrl-C quits, space or r refreshes now.\n"
		   "When standard output is not a terminal, one plain frame is printed.\n\n"
		   "Options:\n"
		   "  -i, --interval=SECONDS   refresh interval (default 2; fractions allowed)\n"
		   "  -q, --queue=PATTERN      only queues whose name is LIKE PATTERN, e.g. 'mail%%'\n"
		   "      --once               print one plain frame and exit\n"
		   "      --help               show this help and exit\n\n"
		   CONN_OPTIONS_HELP, progname);
}

static void
terminal_size(int *rows, int *cols)
{
	struct winsize ws;

	*rows = 24;
	*cols = 80;
	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0)
	{
		*rows = ws.ws_row;
		*cols = ws.ws_col;
	}
}

/* "[#####.....]": used out of max in width cells */
static void
print_bar(FILE *out, long used, long max, int width)
{
	int			filled = 0;

	if (max > 0)
		filled = (int) ((used * width + max - 1) / max);
	if (filled > width)
		filled = width;
	fputc('[', out);
	for (int i = 0; i < width; i++)
		fputc(i < filled ? '#' : '.', out);
	fputc(']', out);
}

/* Write one frame of plain text (bold lines marked) to out, fitting rows. */
static void
build_frame(FILE *out, PGconn *conn, const char *queue, double interval, int rows)
{
	PGresult   *res;
	PGresult   *queues;
	PGresult   *workers;
	int			used;
	int			budget;
	int			nbad = 0;
	char		stamp[32];
	time_t		now = time(NULL);
	struct tm	tm;

	localtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(out, "%ctaskq top  %s@%s:%s/%s  %s  every %gs  (q quits)\n", BOLD_MARK,
			PQuser(conn), PQhost(conn), PQport(conn), PQdb(conn), stamp, interval);
	fputc('\n', out);

	res = run_query(conn, resources_sql, 0, NULL);
	if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
	{
		long		cpu = atol(PQgetvalue(res, 0, 0));
		long		cpu_max = atol(PQgetvalue(res, 0, 1));
		long		mem = atol(PQgetvalue(res, 0, 2));
		long		mem_max = atol(PQgetvalue(res, 0, 3));

		fprintf(out, "Resources  cpu %ld/%ld units ", cpu, cpu_max);
		print_bar(out, cpu, cpu_max, 20);
		fprintf(out, "   memory %ld/%ld MB ", mem, mem_max);
		print_bar(out, mem, mem_max, 20);
		fputc('\n', out);
	}
	else
		fprintf(out, "Resources  (unknown: is taskq in shared_preload_libraries?)\n");
	PQclear(res);

	/* a small pivot: one line per counter, one column per window */
	res = run_query(conn, throughput_sql, 0, NULL);
	fprintf(out, "Throughput jobs/s");
	for (int r = 0; r < PQntuples(res); r++)
		fprintf(out, "  %8s", PQgetvalue(res, r, 0));
	fputc('\n', out);
	for (int col = 1; col <= 3; col++)
	{
		fprintf(out, "  %-15s", PQfname(res, col));
		for (int r = 0; r < PQntuples(res); r++)
			fprintf(out, "  %8s", value_or(res, r, col, "-"));
		fputc('\n', out);
	}
	PQclear(res);

	res = run_query(conn, health_sql, 0, NULL);
	for (int r = 0; r < PQntuples(res); r++)
		if (strcmp(PQgetvalue(res, r, 0), "ok") != 0)
			nbad++;
	if (nbad == 0)
		fprintf(out, "Health     all %d checks ok\n", PQntuples(res));
	else
	{
		fprintf(out, "Health     %d of %d checks not ok:\n", nbad, PQntuples(res));
		for (int r = 0; r < PQntuples(res); r++)
			if (strcmp(PQgetvalue(res, r, 0), "ok") != 0)
			{
				fprintf(out, "  %-4s  %s: ", PQgetvalue(res, r, 0), PQgetvalue(res, r, 1));
				print_padded(out, PQgetvalue(res, r, 2), 0, false);
				fputc('\n', out);
			}
	}
	used = 8 + nbad;
	PQclear(res);

	/* queues get what the workers (and the section titles) leave */
	queues = run_query(conn, queues_sql, 1, &queue);
	workers = run_query(conn, workers_sql, 0, NULL);
	budget = rows - used - 3 - (PQntuples(workers) + 3);
	if (budget < 1)
		budget = 1;
	if (PQntuples(queues) > budget)
		budget--;				/* room for "(N more)" */

	fprintf(out, "\n%cQueues", BOLD_MARK);
	if (queue)
	{
		fputs(" LIKE ", out);
		print_padded(out, queue, 0, false);
	}
	fputc('\n', out);
	print_table_rows(out, queues, "  ", budget);
	PQclear(queues);

	fprintf(out, "\n%cWorkers\n", BOLD_MARK);
	if (PQntuples(workers) == 0)
		fprintf(out, "  (no taskq workers running)\n");
	else
		print_table(out, workers, "  ");
	PQclear(workers);
}

/* Draw a frame at the top of the screen: lines clipped to cols, rest cleared. */
static void
draw_frame(char *text, int rows, int cols)
{
	char	   *line = text;
	int			n = 0;

	fputs("\033[H", stdout);
	while (line && *line && n < rows)
	{
		char	   *next = strchr(line, '\n');
		bool		bold = false;
		int			width = 0;

		if (next)
			*next++ = '\0';
		if (*line == BOLD_MARK)
		{
			bold = true;
			line++;
		}
		if (n > 0)
			fputs("\r\n", stdout);
		if (bold)
			fputs(n == 0 ? "\033[7m" : "\033[1m", stdout);
		for (char *p = line; *p; p++)
		{
			if (((unsigned char) *p & 0xc0) != 0x80 && ++width > cols)
				break;
			fputc(*p, stdout);
		}
		/* the title bar spans the whole width */
		if (bold && n == 0)
			for (; width < cols; width++)
				fputc(' ', stdout);
		if (bold)
			fputs("\033[0m", stdout);
		fputs("\033[K", stdout);
		n++;
		line = next;
	}
	fputs("\033[J", stdout);
	fflush(stdout);
}

static void
refresh(PGconn *conn, const char *queue, double interval, bool plain)
{
	char	   *text = NULL;
	size_t		len = 0;
	FILE	   *out = open_memstream(&text, &len);
	int			rows;
	int			cols;

	if (out == NULL)
		fatal("out of memory");
	terminal_size(&rows, &cols);
	build_frame(out, conn, queue, interval, plain ? 1000000 : rows);
	fclose(out);
	if (plain)
	{
		for (char *p = text; *p; p++)
			if (*p != BOLD_MARK)
				fputc(*p, stdout);
		fflush(stdout);
	}
	else
		draw_frame(text, rows, cols);
	free(text);
}

/* Enter cbreak mode and the alternate screen; restored at exit. */
static void
setup_terminal(void)
{
	if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_termios) == 0)
	{
		struct termios t = saved_termios;

		/* keys one by one, not echoed; Ctrl-C and Ctrl-Z arrive as keys */
		t.c_lflag &= ~(ICANON | ECHO | ISIG);
		t.c_cc[VMIN] = 1;
		t.c_cc[VTIME] = 0;
		termios_saved = true;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &t);
	}
	/* alternate screen, hide the cursor, clear */
	fputs("\033[?1049h\033[?25l\033[2J", stdout);
	fflush(stdout);
	screen_active = true;
}

static double
monotonic_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int
cmd_top(int argc, char **argv)
{
	enum
	{
		OPT_ONCE = 2000
	};
	static const struct option long_options[] = {
		CONN_LONG_OPTIONS,
		{"interval", required_argument, NULL, 'i'},
		{"queue", required_argument, NULL, 'q'},
		{"once", no_argument, NULL, OPT_ONCE},
		{NULL, 0, NULL, 0}
	};
	double		interval = 2;
	const char *queue = NULL;
	bool		once = false;
	bool		keys;
	double		next;
	struct sigaction sa;
	PGconn	   *conn;
	int			c;

	while ((c = getopt_long(argc, argv, CONN_SHORT_OPTIONS "i:q:", long_options, NULL)) != -1)
	{
		if (handle_conn_option(c, optarg))
			continue;
		switch (c)
		{
			case 'i':
				{
					char	   *end;

					interval = strtod(optarg, &end);
					if (*optarg == '\0' || *end != '\0' || !isfinite(interval) ||
						interval < 0.1 || interval > 86400)
						usage_error("top", "--interval must be a number of seconds between 0.1 and 86400, got \"%s\"", optarg);
					break;
				}
			case 'q':
				queue = optarg;
				break;
			case OPT_ONCE:
				once = true;
				break;
			case OPT_HELP:
				usage();
				return 0;
			default:
				bad_option("top");
		}
	}
	if (optind < argc)
		usage_error("top", "too many arguments (first extra: \"%s\")", argv[optind]);

	conn = connect_db("top");
	if (once || !isatty(STDOUT_FILENO))
	{
		refresh(conn, queue, interval, true);
		PQfinish(conn);
		return 0;
	}

	if (pipe(wake_pipe) != 0)
		fatal("could not create pipe: %s", strerror(errno));
	fcntl(wake_pipe[0], F_SETFL, O_NONBLOCK);
	fcntl(wake_pipe[1], F_SETFL, O_NONBLOCK);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGWINCH, &sa, NULL);

	atexit(restore_terminal);
	cleanup_hook = restore_terminal;
	setup_terminal();
	keys = termios_saved;

	next = 0;
	while (!stop_requested)
	{
		struct pollfd fds[2];
		double		now = monotonic_seconds();
		int			timeout;

		if (now >= next || resized)
		{
			resized = 0;
			refresh(conn, queue, interval, false);
			now = monotonic_seconds();
			next = now + interval;
		}
		timeout = (int) ((next - now) * 1000) + 1;
		fds[0].fd = wake_pipe[0];
		fds[0].events = POLLIN;
		fds[1].fd = keys ? STDIN_FILENO : -1;
		fds[1].events = POLLIN;
		if (poll(fds, 2, timeout) < 0)
		{
			if (errno == EINTR)
				continue;
			fatal("poll failed: %s", strerror(errno));
		}
		if (fds[0].revents & POLLIN)
		{
			char		buf[64];

			while (read(wake_pipe[0], buf, sizeof(buf)) > 0)
				;
		}
		if (fds[1].revents & (POLLIN | POLLHUP | POLLERR))
		{
			char		buf[64];
			ssize_t		n = read(STDIN_FILENO, buf, sizeof(buf));

			if (n <= 0)
				break;			/* the terminal went away */
			for (ssize_t i = 0; i < n; i++)
			{
				if (buf[i] == 'q' || buf[i] == 'Q' || buf[i] == 3 /* Ctrl-C */ )
					stop_requested = 1;
				else if (buf[i] == ' ' || buf[i] == 'r' || buf[i] == 'R' || buf[i] == 12 /* Ctrl-L */ )
					next = 0;
			}
		}
	}
	restore_terminal();
	cleanup_hook = NULL;
	PQfinish(conn);
	return 0;
}
