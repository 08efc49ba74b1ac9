/*
 * taskq.h: shared declarations of the taskq command-line tool (libpq).
 */
#ifndef TASKQ_CLI_H
#define TASKQ_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

#include "libpq-fe.h"

#define TASKQ_CLI_VERSION "0.1.0"

/* exit codes: 0 success, 1 connection or server error, 2 bad usage */
#define EXIT_ERROR 1
#define EXIT_USAGE 2

/* getopt_long code of --help in every subcommand */
#define OPT_HELP 1000

/* the global connection options, accepted before or after the subcommand */
#define CONN_SHORT_OPTIONS "d:h:p:U:"
#define CONN_LONG_OPTIONS \
	{"dbname", required_argument, NULL, 'd'}, \
	{"host", required_argument, NULL, 'h'}, \
	{"port", required_argument, NULL, 'p'}, \
	{"username", required_argument, NULL, 'U'}, \
	{"help", no_argument, NULL, OPT_HELP}

#define CONN_OPTIONS_HELP \
	"Connection options:\n" \
	"  -d, --dbname=DBNAME      database name or conninfo string (PGDATABASE)\n" \
	"  -h, --host=HOSTNAME      database server host or socket directory (PGHOST)\n" \
	"  -p, --port=PORT          database server port (PGPORT)\n" \
	"  -U, --username=USERNAME  database user name (PGUSER)\n"

extern const char *progname;

/* common.c */
extern void (*cleanup_hook) (void);
extern bool handle_conn_option(int c, const char *arg);
extern void usage_error(const char *command, const char *fmt,...)
			__attribute__((format(printf, 2, 3), noreturn));
extern void bad_option(const char *command) __attribute__((noreturn));
extern void fatal(const char *fmt,...)
			__attribute__((format(printf, 1, 2), noreturn));
extern PGconn *connect_db(const char *command);
extern PGresult *run_query(PGconn *conn, const char *sql, int nparams,
						   const char *const *params);
extern void query_failed(PGconn *conn, PGresult *res) __attribute__((noreturn));
extern const char *parse_job_id(const char *command, const char *arg);
extern void sanitize(char *s);
extern int	display_width(const char *s);
extern void print_padded(FILE *out, const char *s, int width, bool right);
extern void print_table(FILE *out, PGresult *res, const char *indent);
extern void print_table_rows(FILE *out, PGresult *res, const char *indent,
							 int maxrows);
extern const char *value_or(PGresult *res, int row, int col, const char *dflt);

/* status.c: the summary queries, shared with top.c */
extern const char *const queues_sql;
extern const char *const resources_sql;
extern const char *const throughput_sql;
extern const char *const workers_sql;
extern const char *const health_sql;

/* the subcommands */
extern int	cmd_status(int argc, char **argv);
extern int	cmd_watch(int argc, char **argv);
extern int	cmd_top(int argc, char **argv);
extern int	cmd_dlq(int argc, char **argv);
extern int	cmd_dag(int argc, char **argv);
extern int	cmd_submit(int argc, char **argv);
extern int	cmd_web(int argc, char **argv);

#endif							/* TASKQ_CLI_H */
