/*
 * status.c: `taskq status`: the summary of queues, resources, throughput,
 * workers and health checks, or one job with its log.  The summary queries
 * are shared with `taskq top`.
 */
#include <stdlib.h>
#include <string.h>

#include "taskq.h"

/*
 * Per queue: jobs pending/running/blocked/failed, whether it is paused, and
 * for how long its rate limit has throttled every claim; busiest first.
 * $1: a LIKE pattern of the queues to show, NULL for all.
 */
const char *const queues_sql =
	"WITH d AS ("
	"    SELECT queue, status::text AS status, sum(jobs)::bigint AS n"
	"      FROM taskq.queue_depth GROUP BY queue, status"
	"    UNION ALL"
	"    SELECT queue, 'failed', count(*) FROM taskq.dead_letter_queue GROUP BY queue"
	"), names AS ("
	"    SELECT queue FROM d UNION SELECT name FROM taskq.queues"
	")"
	"SELECT n.queue,"
	"       coalesce(sum(d.n) FILTER (WHERE d.status = 'pending'), 0)::bigint AS pending,"
	"       coalesce(sum(d.n) FILTER (WHERE d.status = 'running'), 0)::bigint AS running,"
	"       coalesce(sum(d.n) FILTER (WHERE d.status = 'blocked'), 0)::bigint AS blocked,"
	"       coalesce(sum(d.n) FILTER (WHERE d.status = 'failed'), 0)::bigint AS failed,"
	"       CASE WHEN q.paused THEN 'paused' ELSE '' END AS paused,"
	"       coalesce(date_trunc('second', r.throttled_for)::text, '') AS throttled"
	"  FROM names n"
	"  LEFT JOIN d ON d.queue = n.queue"
	"  LEFT JOIN taskq.queues q ON q.name = n.queue"
	"  LEFT JOIN taskq.rate_limit_state() r ON r.kind = 'queue' AND r.name = n.queue"
	" WHERE $1::text IS NULL OR n.queue LIKE $1"
	" GROUP BY n.queue, q.paused, r.throttled_for"
	" ORDER BY coalesce(sum(d.n) FILTER (WHERE d.status <> 'failed'), 0) DESC,"
	"          coalesce(sum(d.n), 0) DESC, n.queue";

const char *const resources_sql =
	"SELECT cpu_units_used, cpu_units_max, memory_mb_used, memory_mb_max"
	"  FROM taskq.resources";

const char *const throughput_sql =
	"SELECT window_minutes || 'm' AS \"window\","
	"       round(claimed_per_s::numeric, 2) AS claimed,"
	"       round(succeeded_per_s::numeric, 2) AS succeeded,"
	"       round(failed_per_s::numeric, 2) AS failed"
	"  FROM taskq.throughput ORDER BY window_minutes";

const char *const workers_sql =
	"SELECT w.pid, w.kind, w.state, w.job_id AS job, coalesce(j.job_type, '') AS job_type,"
	"       to_char(w.since, 'HH24:MI:SS') AS since,"
	"       date_trunc('second', clock_timestamp() - w.since)::text AS age,"
	"       w.jobs_done AS done"
	"  FROM taskq.workers w LEFT JOIN taskq.jobs j ON j.id = w.job_id"
	" ORDER BY w.kind <> 'launcher', w.pid";

const char *const health_sql =
	"SELECT status, check_name AS \"check\", message FROM taskq.health()";

static void
usage(void)
{
	printf("Show the state of the queue, or of one job.\n\n"
		   "Usage:\n"
		   "  %s status [OPTION]...        queues, resources, throughput, workers, health\n"
		   "  %s status [OPTION]... ID     one job: its row, dependencies and log\n\n"
		   "Queues are listed busiest first.\n\n"
		   "Options:\n"
		   "  -q, --queue=PATTERN      summary: only queues whose name is LIKE PATTERN\n"
		   "      --help               show this help and exit\n\n"
		   CONN_OPTIONS_HELP, progname, progname);
}

static void
section(const char *title, PGresult *res, const char *empty)
{
	printf("%s\n", title);
	if (PQntuples(res) == 0)
		printf("  %s\n", empty);
	else
		print_table(stdout, res, "  ");
	PQclear(res);
}

static int
status_summary(PGconn *conn, const char *queue)
{
	PGresult   *res;

	section("Queues", run_query(conn, queues_sql, 1, &queue), "(no jobs)");

	res = run_query(conn, resources_sql, 0, NULL);
	printf("\nResources\n");
	if (PQntuples(res) == 1)
	{
		printf("  cpu units  %s / %s used\n", value_or(res, 0, 0, "?"), value_or(res, 0, 1, "?"));
		printf("  memory MB  %s / %s used\n", value_or(res, 0, 2, "?"), value_or(res, 0, 3, "?"));
	}
	PQclear(res);

	printf("\n");
	section("Throughput (per second; failed counts failed attempts)",
			run_query(conn, throughput_sql, 0, NULL),
			"(no executor counters: is taskq in shared_preload_libraries?)");
	printf("\n");
	section("Workers", run_query(conn, workers_sql, 0, NULL), "(no taskq workers running)");
	printf("\n");
	section("Health", run_query(conn, health_sql, 0, NULL), "(no checks)");
	return 0;
}

static int
status_job(PGconn *conn, const char *id)
{
	const char *params[1] = {id};
	PGresult   *res;
	int			width = 0;

	res = run_query(conn,
					"SELECT j.*,"
					"       (SELECT array_agg(d.depends_on ORDER BY d.depends_on)"
					"          FROM taskq.job_dependencies d WHERE d.job_id = j.id) AS depends_on,"
					"       (SELECT array_agg(d.job_id ORDER BY d.job_id)"
					"          FROM taskq.job_dependencies d WHERE d.depends_on = j.id) AS dependents"
					"  FROM taskq.live_jobs j WHERE j.id = $1::bigint",
					1, params);
	if (PQntuples(res) == 0)
	{
		PQclear(res);
		PQfinish(conn);
		fatal("job %s does not exist", id);
	}
	for (int c = 0; c < PQnfields(res); c++)
		if (display_width(PQfname(res, c)) > width)
			width = display_width(PQfname(res, c));
	for (int c = 0; c < PQnfields(res); c++)
	{
		print_padded(stdout, PQfname(res, c), width, false);
		fputs("  ", stdout);
		print_padded(stdout, PQgetvalue(res, 0, c), 0, false);
		fputc('\n', stdout);
	}
	PQclear(res);

	res = run_query(conn,
					"SELECT to_char(logged_at, 'YYYY-MM-DD HH24:MI:SS.MS') AS time,"
					"       status, attempt, message, coalesce(error, '') AS error"
					"  FROM taskq.job_logs WHERE job_id = $1::bigint ORDER BY id",
					1, params);
	printf("\n");
	section("Log", res, "(empty)");
	return 0;
}

int
cmd_status(int argc, char **argv)
{
	static const struct option long_options[] = {
		CONN_LONG_OPTIONS,
		{"queue", required_argument, NULL, 'q'},
		{NULL, 0, NULL, 0}
	};
	const char *id = NULL;
	const char *queue = NULL;
	PGconn	   *conn;
	int			c;
	int			rc;

	while ((c = getopt_long(argc, argv, CONN_SHORT_OPTIONS "q:", long_options, NULL)) != -1)
	{
		if (handle_conn_option(c, optarg))
			continue;
		switch (c)
		{
			case 'q':
				queue = optarg;
				break;
			case OPT_HELP:
				usage();
				return 0;
			default:
				bad_option("status");
		}
	}
	if (optind < argc)
		id = parse_job_id("status", argv[optind++]);
	if (optind < argc)
		usage_error("status", "too many arguments (first extra: \"%s\")", argv[optind]);
	if (id && queue)
		usage_error("status", "--queue applies to the summary only");

	conn = connect_db("status");
	rc = id ? status_job(conn, id) : status_summary(conn, queue);
	PQfinish(conn);
	return rc;
}
