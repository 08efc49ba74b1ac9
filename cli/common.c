/*
 * common.c: what every subcommand shares: connection options, connecting,
 * running parameterised queries, reporting errors, printing tables.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "taskq.h"

/* type OIDs of the columns print_table right-aligns (pg_type.dat) */
#define INT8OID 20
#define INT2OID 21
#define INT4OID 23
#define FLOAT4OID 700
#define FLOAT8OID 701
#define NUMERICOID 1700

/* run before an error is printed, e.g. to leave top's full-screen mode */
void		(*cleanup_hook) (void) = NULL;

static const char *opt_dbname;
static const char *opt_host;
static const char *opt_port;
static const char *opt_user;

/* Record -d/-h/-p/-U; false when c is not a connection option. */
bool
handle_conn_option(int c, const char *arg)
{
	switch (c)
	{
		case 'd':
			opt_dbname = arg;
			return true;
		case 'h':
			opt_host = arg;
			return true;
		case 'p':
			opt_port = arg;
			return true;
		case 'U':
			opt_user = arg;
			return true;
		default:
			return false;
	}
}

static void
run_cleanup(void)
{
	void		(*hook) (void) = cleanup_hook;

	cleanup_hook = NULL;
	if (hook)
		hook();
}

/* Report bad usage of `command` (NULL: the top level) and exit 2. */
void
usage_error(const char *command, const char *fmt,...)
{
	va_list		ap;

	run_cleanup();
	fprintf(stderr, "%s: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry \"%s%s%s --help\" for more information.\n",
			progname, command ? " " : "", command ? command : "");
	exit(EXIT_USAGE);
}

/* After getopt_long has complained about an option. */
void
bad_option(const char *command)
{
	fprintf(stderr, "Try \"%s%s%s --help\" for more information.\n",
			progname, command ? " " : "", command ? command : "");
	exit(EXIT_USAGE);
}

/* Report a runtime error and exit 1. */
void
fatal(const char *fmt,...)
{
	va_list		ap;

	run_cleanup();
	fprintf(stderr, "%s: error: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(EXIT_ERROR);
}

/* Connect with the options and libpq's environment, or exit 1. */
PGconn *
connect_db(const char *command)
{
	const char *keywords[8];
	const char *values[8];
	char		appname[64];
	int			n = 0;
	PGconn	   *conn;

	snprintf(appname, sizeof(appname), "%s %s", progname, command);
	/* as psql: a conninfo string in dbname overrides the separate options */
	keywords[n] = "host";
	values[n++] = opt_host;
	keywords[n] = "port";
	values[n++] = opt_port;
	keywords[n] = "user";
	values[n++] = opt_user;
	keywords[n] = "dbname";
	values[n++] = opt_dbname;
	keywords[n] = "fallback_application_name";
	values[n++] = appname;
	keywords[n] = NULL;
	values[n] = NULL;

	conn = PQconnectdbParams(keywords, values, 1);
	if (conn == NULL)
		fatal("out of memory");
	if (PQstatus(conn) != CONNECTION_OK)
	{
		char	   *msg = strdup(PQerrorMessage(conn));
		size_t		len = msg ? strlen(msg) : 0;

		while (len > 0 && msg[len - 1] == '\n')
			msg[--len] = '\0';
		PQfinish(conn);
		fatal("%s", msg ? msg : "could not connect");
	}
	return conn;
}

/* Print the server's error (message, detail, hint; no SQLSTATE) and exit 1. */
void
query_failed(PGconn *conn, PGresult *res)
{
	const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
	const char *hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : NULL;
	char	   *msg;
	size_t		len;

	run_cleanup();
	msg = strdup(primary ? primary : PQerrorMessage(conn));
	if (msg == NULL)
		exit(EXIT_ERROR);
	len = strlen(msg);
	while (len > 0 && msg[len - 1] == '\n')
		msg[--len] = '\0';
	fprintf(stderr, "%s: error: %s\n", progname, msg);
	if (detail)
		fprintf(stderr, "DETAIL:  %s\n", detail);
	if (hint)
		fprintf(stderr, "HINT:  %s\n", hint);
	free(msg);
	PQclear(res);
	PQfinish(conn);
	exit(EXIT_ERROR);
}

/*
 * Run one statement with text parameters (extended protocol: the SQL is
 * fixed text, user input only ever travels as a parameter).  Exits on error.
 */
PGresult *
run_query(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
	PGresult   *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(res);

	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
		query_failed(conn, res);
	return res;
}

/* A job id argument: a positive integer, else bad usage. */
const char *
parse_job_id(const char *command, const char *arg)
{
	const char *p = arg;

	if (*p == '\0')
		usage_error(command, "job id must be a positive integer, got \"%s\"", arg);
	for (; *p; p++)
		if (*p < '0' || *p > '9')
			usage_error(command, "job id must be a positive integer, got \"%s\"", arg);
	if (strlen(arg) > 19 || strspn(arg, "0") == strlen(arg))
		usage_error(command, "job id must be a positive integer, got \"%s\"", arg);
	return arg;
}

/* Replace control characters in place: job data never moves the cursor. */
void
sanitize(char *s)
{
	for (; *s; s++)
		if ((unsigned char) *s < 0x20 || *s == 0x7f)
			*s = ' ';
}

/* Terminal columns of a UTF-8 string (one per code point). */
int
display_width(const char *s)
{
	int			w = 0;

	for (; *s; s++)
		if (((unsigned char) *s & 0xc0) != 0x80)
			w++;
	return w;
}

/* Print s padded to width, control characters shown as spaces. */
void
print_padded(FILE *out, const char *s, int width, bool right)
{
	int			pad = width - display_width(s);

	if (right)
		for (; pad > 0; pad--)
			fputc(' ', out);
	for (const char *p = s; *p; p++)
		fputc(((unsigned char) *p < 0x20 || *p == 0x7f) ? ' ' : *p, out);
	if (!right)
		for (; pad > 0; pad--)
			fputc(' ', out);
}

static bool
is_numeric_type(Oid type)
{
	return type == INT8OID || type == INT2OID || type == INT4OID ||
		type == FLOAT4OID || type == FLOAT8OID || type == NUMERICOID;
}

/* A table cell as shown: NULL numbers as "-", other NULLs empty. */
static const char *
cell(PGresult *res, int row, int col)
{
	if (PQgetisnull(res, row, col) && is_numeric_type(PQftype(res, col)))
		return "-";
	return PQgetvalue(res, row, col);
}

/* An aligned table with a header line, numbers right-aligned. */
void
print_table(FILE *out, PGresult *res, const char *indent)
{
	print_table_rows(out, res, indent, -1);
}

/* print_table showing at most maxrows rows (-1: all), then "(N more)". */
void
print_table_rows(FILE *out, PGresult *res, const char *indent, int maxrows)
{
	int			ncols = PQnfields(res);
	int			nrows = PQntuples(res);
	int			hidden = 0;
	int		   *width = calloc(ncols > 0 ? ncols : 1, sizeof(int));

	if (width == NULL)
		fatal("out of memory");
	if (maxrows >= 0 && nrows > maxrows)
	{
		hidden = nrows - maxrows;
		nrows = maxrows;
	}
	for (int c = 0; c < ncols; c++)
	{
		width[c] = display_width(PQfname(res, c));
		for (int r = 0; r < nrows; r++)
		{
			int			w = display_width(cell(res, r, c));

			if (w > width[c])
				width[c] = w;
		}
	}
	for (int r = -1; r < nrows; r++)
	{
		char	   *line = NULL;
		size_t		len = 0;
		FILE	   *buf = open_memstream(&line, &len);

		if (buf == NULL)
			fatal("out of memory");
		fputs(indent, buf);
		for (int c = 0; c < ncols; c++)
		{
			bool		right = is_numeric_type(PQftype(res, c));
			const char *v = r < 0 ? PQfname(res, c) : cell(res, r, c);

			if (c > 0)
				fputs("  ", buf);
			print_padded(buf, v, width[c], right);
		}
		fclose(buf);
		/* no trailing blanks */
		while (len > 0 && line[len - 1] == ' ')
			line[--len] = '\0';
		fprintf(out, "%s\n", line);
		free(line);
	}
	if (hidden > 0)
		fprintf(out, "%s(%d more)\n", indent, hidden);
	free(width);
}

/* The value at (row, col), or dflt when it is NULL. */
const char *
value_or(PGresult *res, int row, int col, const char *dflt)
{
	return PQgetisnull(res, row, col) ? dflt : PQgetvalue(res, row, col);
}
