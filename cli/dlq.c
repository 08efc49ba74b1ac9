/*
 * dlq.c: `taskq dlq`: list, retry or purge the dead-letter queue (the jobs
 * whose attempts are exhausted, status failed).
 */
#include <stdlib.h>
#include <string.h>

#include "taskq.h"

static void
usage(void)
{
	printf("List, retry or purge the dead-letter queue (failed jobs).\n\n"
		   "Usage:\n"
		   "  %s dlq [list] [--queue=QUEUE] [--type=JOB_TYPE] [--limit=N]\n"
		   "  %s dlq retry [--queue=QUEUE] [--type=JOB_TYPE] [--error-like=PATTERN]\n"
		   "  %s dlq retry ID...\n"
		   "  %s dlq purge [--older-than=INTERVAL] [--queue=QUEUE] [--type=JOB_TYPE]\n\n"
		   "list shows the failed jobs, newest first.  retry puts the matching failed\n"
		   "jobs (all of them without a filter) back to pending with fresh attempts.\n"
		   "purge deletes the matching failed jobs and their logs, except those a\n"
		   "blocked job still depends on.  Without taskq_admin, a role sees and acts\n"
		   "on its own jobs only.\n\n"
		   "Options:\n"
		   "  -q, --queue=QUEUE          only jobs of this queue\n"
		   "  -t, --type=JOB_TYPE        only jobs of this job type\n"
		   "      --error-like=PATTERN   retry: only jobs whose last error is LIKE PATTERN\n"
		   "      --older-than=INTERVAL  purge: only jobs that failed longer ago, e.g. '7 days'\n"
		   "      --limit=N              list: at most N jobs\n"
		   "      --help                 show this help and exit\n\n"
		   CONN_OPTIONS_HELP, progname, progname, progname, progname);
}

static int
dlq_list(PGconn *conn, const char *queue, const char *type, const char *limit)
{
	const char *params[3] = {queue, type, limit};
	PGresult   *res;

	res = run_query(conn,
					"SELECT id, queue, job_type, attempts || '/' || max_attempts AS attempts,"
					"       to_char(finished_at, 'YYYY-MM-DD HH24:MI:SS') AS failed_at,"
					"       left(split_part(coalesce(last_error, ''), E'\\n', 1), 100) AS last_error"
					"  FROM taskq.dead_letter_queue"
					" WHERE ($1::text IS NULL OR queue = $1) AND ($2::text IS NULL OR job_type = $2)"
					" ORDER BY finished_at DESC NULLS LAST, id DESC"
					" LIMIT $3::bigint",
					3, params);
	if (PQntuples(res) == 0)
		printf("(no failed jobs)\n");
	else
		print_table(stdout, res, "");
	PQclear(res);
	return 0;
}

static int
dlq_retry_ids(PGconn *conn, char **ids, int n)
{
	/* all or nothing: one id that cannot be retried retries none */
	PQclear(run_query(conn, "BEGIN", 0, NULL));
	for (int i = 0; i < n; i++)
	{
		const char *params[1] = {ids[i]};

		PQclear(run_query(conn, "SELECT taskq.retry($1::bigint)", 1, params));
	}
	PQclear(run_query(conn, "COMMIT", 0, NULL));
	printf("retried %d job%s\n", n, n == 1 ? "" : "s");
	return 0;
}

static int
dlq_count_call(PGconn *conn, const char *sql, const char *verb,
			   const char *p1, const char *p2, const char *p3)
{
	const char *params[3] = {p1, p2, p3};
	PGresult   *res = run_query(conn, sql, 3, params);
	const char *n = PQgetvalue(res, 0, 0);

	printf("%s %s job%s\n", verb, n, strcmp(n, "1") == 0 ? "" : "s");
	PQclear(res);
	return 0;
}

int
cmd_dlq(int argc, char **argv)
{
	enum
	{
		OPT_ERROR_LIKE = 2000, OPT_OLDER_THAN, OPT_LIMIT
	};
	static const struct option long_options[] = {
		CONN_LONG_OPTIONS,
		{"queue", required_argument, NULL, 'q'},
		{"type", required_argument, NULL, 't'},
		{"error-like", required_argument, NULL, OPT_ERROR_LIKE},
		{"older-than", required_argument, NULL, OPT_OLDER_THAN},
		{"limit", required_argument, NULL, OPT_LIMIT},
		{NULL, 0, NULL, 0}
	};
	const char *queue = NULL;
	const char *type = NULL;
	const char *error_like = NULL;
	const char *older_than = NULL;
	const char *limit = NULL;
	const char *action = "list";
	char	  **ids;
	int			nids;
	PGconn	   *conn;
	int			rc;
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
			case OPT_ERROR_LIKE:
				error_like = optarg;
				break;
			case OPT_OLDER_THAN:
				older_than = optarg;
				break;
			case OPT_LIMIT:
				if (strspn(optarg, "0123456789") != strlen(optarg) || *optarg == '\0' ||
					strlen(optarg) > 9)
					usage_error("dlq", "--limit must be a non-negative integer, got \"%s\"", optarg);
				limit = optarg;
				break;
			case OPT_HELP:
				usage();
				return 0;
			default:
				bad_option("dlq");
		}
	}
	if (optind < argc)
	{
		action = argv[optind++];
		if (strcmp(action, "list") != 0 && strcmp(action, "retry") != 0 &&
			strcmp(action, "purge") != 0)
			usage_error("dlq", "unknown action \"%s\" (expected list, retry or purge)", action);
	}
	ids = argv + optind;
	nids = argc - optind;
	for (int i = 0; i < nids; i++)
		parse_job_id("dlq", ids[i]);

	if (nids > 0 && strcmp(action, "retry") != 0)
		usage_error("dlq", "only retry takes job ids");
	if (nids > 0 && (queue || type || error_like))
		usage_error("dlq", "retry takes either job ids or filters, not both");
	if (error_like && strcmp(action, "retry") != 0)
		usage_error("dlq", "--error-like applies to retry only");
	if (older_than && strcmp(action, "purge") != 0)
		usage_error("dlq", "--older-than applies to purge only");
	if (limit && strcmp(action, "list") != 0)
		usage_error("dlq", "--limit applies to list only");

	conn = connect_db("dlq");
	if (strcmp(action, "list") == 0)
		rc = dlq_list(conn, queue, type, limit);
	else if (nids > 0)
		rc = dlq_retry_ids(conn, ids, nids);
	else if (strcmp(action, "retry") == 0)
		rc = dlq_count_call(conn, "SELECT taskq.retry_failed($1, $2, $3)", "retried",
							queue, type, error_like);
	else
		rc = dlq_count_call(conn, "SELECT taskq.purge_failed($1::interval, $2, $3)", "purged",
							older_than, queue, type);
	PQfinish(conn);
	return rc;
}
