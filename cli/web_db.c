/*
 * web_db.c: the dashboard's database side: a small pool of connections of
 * the role the dashboard was started as, and the fixed queries of the JSON
 * API.  Every query reads taskq's views and calls its functions, so row
 * security and grants decide what a role sees and may do; user input only
 * travels as parameters.  PostgreSQL builds the JSON.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "taskq.h"
#include "web.h"

#define POOL_MAX 8
#define PAGE_DEFAULT 50
#define PAGE_MAX 500
#define STATEMENT_TIMEOUT "15s"

static PGconn *pool[POOL_MAX];
static bool pool_busy[POOL_MAX];
static int	pool_size;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_free = PTHREAD_COND_INITIALIZER;

/* no page may hold a backend for long, whatever its filters */
static void
set_timeout(PGconn *conn)
{
	PQclear(PQexec(conn, "SET statement_timeout = '" STATEMENT_TIMEOUT "'"));
}

/* Open size connections (the first failure exits with libpq's message). */
bool
web_db_init(int size)
{
	pool_size = size < POOL_MAX ? size : POOL_MAX;
	for (int i = 0; i < pool_size; i++)
	{
		pool[i] = connect_db("web");
		set_timeout(pool[i]);
	}
	return true;
}

void
web_db_close(void)
{
	for (int i = 0; i < pool_size; i++)
		if (pool[i])
			PQfinish(pool[i]);
	pool_size = 0;
}

/* A connection of the pool, waiting for one to be free. */
static PGconn *
web_db_acquire(void)
{
	PGconn	   *conn = NULL;

	pthread_mutex_lock(&pool_lock);
	while (conn == NULL)
	{
		for (int i = 0; i < pool_size; i++)
			if (!pool_busy[i])
			{
				pool_busy[i] = true;
				conn = pool[i];
				break;
			}
		if (conn == NULL)
			pthread_cond_wait(&pool_free, &pool_lock);
	}
	pthread_mutex_unlock(&pool_lock);
	/* the server restarted or the connection broke: try once to reconnect */
	if (PQstatus(conn) != CONNECTION_OK)
	{
		PQreset(conn);
		if (PQstatus(conn) == CONNECTION_OK)
			set_timeout(conn);
	}
	return conn;
}

static void
web_db_release(PGconn *conn)
{
	pthread_mutex_lock(&pool_lock);
	for (int i = 0; i < pool_size; i++)
		if (pool[i] == conn)
			pool_busy[i] = false;
	pthread_cond_signal(&pool_free);
	pthread_mutex_unlock(&pool_lock);
}

/* s as a JSON string literal, malloc'd */
static char *
json_quote(const char *s)
{
	size_t		len = strlen(s);
	char	   *out = malloc(len * 6 + 3);
	char	   *p = out;

	if (out == NULL)
		return NULL;
	*p++ = '"';
	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		if (c == '"' || c == '\\')
		{
			*p++ = '\\';
			*p++ = (char) c;
		}
		else if (c < 0x20 || c == 0x7f)
			p += sprintf(p, "\\u%04x", c);
		else
			*p++ = (char) c;
	}
	*p++ = '"';
	*p = '\0';
	return out;
}

/* {"error": message} with an HTTP status */
WebReply
web_error(unsigned int status, const char *message)
{
	WebReply	r;
	char	   *q = json_quote(message);

	r.status = status;
	r.body = NULL;
	if (q && (r.body = malloc(strlen(q) + 16)) != NULL)
		sprintf(r.body, "{\"error\":%s}", q);
	free(q);
	return r;
}

/* The HTTP status of a server error: bad input 400, rights 403, unknown 404. */
static unsigned int
status_of(const char *sqlstate)
{
	if (sqlstate == NULL)
		return 503;				/* no SQLSTATE: the connection failed */
	if (strcmp(sqlstate, "P0002") == 0)
		return 404;
	if (strcmp(sqlstate, "42501") == 0)
		return 403;
	if (strncmp(sqlstate, "22", 2) == 0 || strcmp(sqlstate, "42704") == 0)
		return 400;
	if (strcmp(sqlstate, "55000") == 0 || strcmp(sqlstate, "40001") == 0)
		return 409;
	if (strcmp(sqlstate, "54000") == 0)
		return 413;
	if (strcmp(sqlstate, "57014") == 0)
		return 503;				/* statement_timeout */
	return 500;
}

/* Run sql on conn; on success its one text value (NULL: 404). */
static WebReply
json_query_on(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
	PGresult   *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	WebReply	r;

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

		r = web_error(status_of(PQresultErrorField(res, PG_DIAG_SQLSTATE)),
					  msg ? msg : "the database connection failed");
	}
	else if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0))
		r = web_error(404, "not found");
	else
	{
		r.status = 200;
		r.body = strdup(PQgetvalue(res, 0, 0));
	}
	PQclear(res);
	return r;
}

/* One query's JSON value on a connection of the pool. */
WebReply
web_json_query(const char *sql, int nparams, const char *const *params)
{
	PGconn	   *conn = web_db_acquire();
	WebReply	r = json_query_on(conn, sql, nparams, params);

	web_db_release(conn);
	return r;
}

/*
 * The overview: one query per part, so that a part the role may not read
 * (taskq_monitor's workers, health, latency...) becomes {"error": ...} and
 * the others still show.
 */
static const struct
{
	const char *name;
	const char *sql;
}			overview_parts[] = {
	{"me",
		"SELECT json_build_object('role', current_user, 'admin', "
		"pg_catalog.pg_has_role('taskq_admin', 'MEMBER'), 'now', now())"},
	{"queues",
		"SELECT coalesce(json_agg(x ORDER BY x.queue), '[]') FROM ("
		" SELECT n.queue, coalesce(q.paused, false) AS paused, q.concurrency,"
		"  (SELECT coalesce(json_agg(json_build_object('status', d.status,"
		"     'priority', d.priority, 'jobs', d.jobs)), '[]')"
		"   FROM taskq.queue_depth d WHERE d.queue = n.queue) AS depth"
		" FROM (SELECT queue FROM taskq.queue_depth UNION SELECT name FROM taskq.queues) n(queue)"
		" LEFT JOIN taskq.queues q ON q.name = n.queue) x"},
	{"history",
		/* finished jobs per minute of the last hour (jobs_finished_idx) */
		"SELECT coalesce(json_agg(t ORDER BY t.minute), '[]') FROM ("
		" SELECT extract(epoch FROM date_trunc('minute', finished_at))::bigint AS minute,"
		"  count(*) FILTER (WHERE status = 'succeeded') AS succeeded,"
		"  count(*) FILTER (WHERE status = 'failed') AS failed,"
		"  count(*) FILTER (WHERE status = 'cancelled') AS cancelled"
		" FROM taskq.jobs WHERE finished_at >= now() - interval '1 hour'"
		" GROUP BY 1) t"},
	{"throughput",
		"SELECT coalesce(json_agg(t ORDER BY t.window_minutes), '[]') FROM taskq.throughput t"},
	{"latency",
		"SELECT coalesce(json_agg(json_build_object('queue', l.queue, 'jobs', l.jobs,"
		" 'wait_p50', extract(epoch FROM l.wait_p50), 'wait_p95', extract(epoch FROM l.wait_p95),"
		" 'wait_p99', extract(epoch FROM l.wait_p99), 'run_p50', extract(epoch FROM l.run_p50),"
		" 'run_p95', extract(epoch FROM l.run_p95), 'run_p99', extract(epoch FROM l.run_p99))"
		" ORDER BY l.queue), '[]') FROM taskq.latency('1 hour') l"},
	{"executors",
		"SELECT coalesce(json_agg(json_build_object('pid', w.pid, 'kind', w.kind, 'state', w.state,"
		" 'job_id', w.job_id, 'job_type', j.job_type, 'since', w.since, 'jobs_done', w.jobs_done)"
		" ORDER BY w.kind, w.pid), '[]')"
		" FROM taskq.workers w LEFT JOIN taskq.jobs j ON j.id = w.job_id"},
	{"external",
		/* external workers are the names holding running jobs (jobs_running_idx) */
		"SELECT coalesce(json_agg(x ORDER BY x.worker), '[]') FROM ("
		" SELECT worker, count(*) AS jobs, (array_agg(id ORDER BY id))[1:20] AS job_ids,"
		"  min(started_at) AS since, max(lease_expires_at) AS lease_expires_at"
		" FROM taskq.jobs WHERE status = 'running' AND NOT in_database"
		" GROUP BY worker) x"},
	{"resources", "SELECT row_to_json(r) FROM taskq.resources r"},
	{"health",
		"SELECT coalesce(json_agg(h), '[]') FROM taskq.health() h"},
};

static WebReply
overview(void)
{
	PGconn	   *conn = web_db_acquire();
	char	   *buf = NULL;
	size_t		len = 0;
	FILE	   *out = open_memstream(&buf, &len);
	WebReply	r;

	if (out == NULL)
	{
		web_db_release(conn);
		return web_error(500, "out of memory");
	}
	fputc('{', out);
	for (size_t i = 0; i < sizeof(overview_parts) / sizeof(overview_parts[0]); i++)
	{
		WebReply	part = json_query_on(conn, overview_parts[i].sql, 0, NULL);

		fprintf(out, "%s\"%s\":%s", i ? "," : "", overview_parts[i].name,
				part.body ? part.body : "null");
		free(part.body);
		if (part.status == 503)
		{
			fclose(out);
			free(buf);
			web_db_release(conn);
			return web_error(503, "the database connection failed");
		}
	}
	fputc('}', out);
	fclose(out);
	web_db_release(conn);
	r.status = 200;
	r.body = buf;
	return r;
}

/*
 * The jobs page: newest first, keyset-paged on the primary key (before = the
 * last id of the previous page).  So that a page costs the same with ten
 * million jobs whatever the filters, it searches at most SCAN_WINDOWS ranges
 * of SCAN_WINDOW ids below the cursor, each a range scan of jobs_pkey (a
 * filter that matches rarely would otherwise make the planner read the whole
 * table and sort), and stops as soon as it has a page; "next" then continues
 * below what was searched.  Absent filters are NULL parameters, which the
 * planner folds away (PQexecParams plans with the values).
 */
#define SCAN_WINDOW "50000"
#define SCAN_WINDOWS "10"
#define SCAN_SPAN "500000"		/* SCAN_WINDOW * SCAN_WINDOWS */
#define JOBS_UPPER_SQL \
	"coalesce($8::bigint, (SELECT max(id) + 1 FROM taskq.jobs), 1)"
/*
 * (The windows' bounds are computed in a subquery of their own: under row
 * security only leakproof operators reach the index, and a bare comparison
 * of id with a column is one, an arithmetic expression is not.)
 */
#define JOBS_PAGE_SQL \
	"SELECT j.* FROM (SELECT upper - k * " SCAN_WINDOW " AS hi," \
	"  upper - (k + 1) * " SCAN_WINDOW " AS lo" \
	"  FROM (SELECT " JOBS_UPPER_SQL " AS upper OFFSET 0) t," \
	"  generate_series(0, " SCAN_WINDOWS " - 1) k OFFSET 0) w," \
	" LATERAL (SELECT id, queue, job_type, priority, status, owner::text AS owner, attempts," \
	"  max_attempts, created_at, run_at, started_at, finished_at, worker," \
	"  left(last_error, 300) AS last_error" \
	"  FROM taskq.live_jobs" \
	"  WHERE id < w.hi AND id >= w.lo" \
	"  AND ($1::text IS NULL OR queue = $1)" \
	"  AND ($2::text IS NULL OR job_type = $2)" \
	"  AND ($3::taskq.job_status IS NULL OR status = $3::taskq.job_status)" \
	"  AND ($4::text IS NULL OR owner = pg_catalog.to_regrole($4))" \
	"  AND ($5::timestamptz IS NULL OR created_at >= $5::timestamptz)" \
	"  AND ($6::timestamptz IS NULL OR created_at < $6::timestamptz)" \
	"  AND ($7::text IS NULL OR strpos(payload::text, $7) > 0" \
	"       OR strpos(last_error, $7) > 0)" \
	"  ORDER BY id DESC LIMIT $9::int + 1) j" \
	" LIMIT $9::int + 1"

static const char *const job_statuses[] = {
	"blocked", "pending", "running", "succeeded", "failed", "cancelled", NULL
};

/* digits only, 1..19 of them, not all zeros */
static bool
valid_id(const char *s)
{
	size_t		n = strlen(s);

	if (n == 0 || n > 18 || strspn(s, "0123456789") != n || strspn(s, "0") == n)
		return false;
	return true;
}

/* a parameter, NULL when absent or empty */
static const char *
param(ParamFn get, void *ctx, const char *name)
{
	const char *v = get(ctx, name);

	return (v && *v) ? v : NULL;
}

/*
 * The nine parameters of JOBS_PAGE_SQL from the request's filters; false
 * with *err set when a filter is malformed.  Timestamps are checked by the
 * server (22007 becomes 400).
 */
static bool
web_jobs_params(ParamFn get, void *ctx, const char **params, char **err)
{
	static const char *const names[] = {"queue", "type", "status", "owner", "from", "to", "q", "before"};
	const char *limit;

	for (int i = 0; i < 8; i++)
	{
		params[i] = param(get, ctx, names[i]);
		if (params[i] && strlen(params[i]) > 1000)
		{
			*err = "a filter is longer than 1000 bytes";
			return false;
		}
	}
	if (params[2])
	{
		bool		ok = false;

		for (int i = 0; job_statuses[i]; i++)
			ok |= strcmp(params[2], job_statuses[i]) == 0;
		if (!ok)
		{
			*err = "status must be blocked, pending, running, succeeded, failed or cancelled";
			return false;
		}
	}
	if (params[7] && !valid_id(params[7]))
	{
		*err = "before must be a job id (a positive integer)";
		return false;
	}
	limit = param(get, ctx, "limit");
	if (limit)
	{
		size_t		n = strlen(limit);

		if (n == 0 || n > 3 || strspn(limit, "0123456789") != n ||
			atoi(limit) < 1 || atoi(limit) > PAGE_MAX)
		{
			*err = "limit must be an integer from 1 to 500";
			return false;
		}
		params[8] = limit;
	}
	else
		params[8] = "50";
	return true;
}

static WebReply
jobs_page(ParamFn get, void *ctx)
{
	static const char sql[] =
		"WITH page AS MATERIALIZED (" JOBS_PAGE_SQL "),"
		" shown AS (SELECT * FROM page ORDER BY id DESC LIMIT $9::int),"
		" floor AS (SELECT " JOBS_UPPER_SQL " - " SCAN_SPAN " AS id)"
		" SELECT json_build_object("
		"  'jobs', (SELECT coalesce(json_agg(s ORDER BY s.id DESC), '[]') FROM shown s),"
		"  'next', (CASE WHEN (SELECT count(*) FROM page) > $9::int THEN (SELECT min(id) FROM shown)"
		"          WHEN (SELECT id FROM floor) > 1 THEN (SELECT id FROM floor) END)::text,"
		"  'searched_to', (SELECT greatest(id, 1) FROM floor)::text)";
	const char *params[9];
	char	   *err;

	if (!web_jobs_params(get, ctx, params, &err))
		return web_error(400, err);
	return web_json_query(sql, 9, params);
}

/* One job, its log (attempts and errors) and its direct parents and children. */
static WebReply
job_detail(const char *id)
{
	static const char sql[] =
		"SELECT json_build_object('job', to_jsonb(j) || jsonb_build_object('owner', j.owner::text),"
		" 'logs', (SELECT coalesce(json_agg(l ORDER BY l.id), '[]') FROM taskq.job_logs l"
		"          WHERE l.job_id = j.id),"
		" 'parents', (SELECT coalesce(json_agg(d.depends_on ORDER BY d.depends_on), '[]')"
		"             FROM taskq.job_dependencies d JOIN taskq.jobs p ON p.id = d.depends_on"
		"             WHERE d.job_id = j.id),"
		" 'children', (SELECT coalesce(json_agg(d.job_id ORDER BY d.job_id), '[]')"
		"              FROM taskq.job_dependencies d JOIN taskq.jobs c ON c.id = d.job_id"
		"              WHERE d.depends_on = j.id))"
		" FROM taskq.live_jobs j WHERE j.id = $1::bigint";
	const char *params[1] = {id};

	return web_json_query(sql, 1, params);
}

/*
 * A job's dependency graph: its ancestors and descendants (at most 500
 * jobs), only the jobs the role can see, and the edges between them as
 * [parent, child].
 */
static WebReply
job_dag(const char *id)
{
	static const char sql[] =
		"WITH RECURSIVE up(id) AS (SELECT $1::bigint UNION"
		"   SELECT d.depends_on FROM up JOIN taskq.job_dependencies d ON d.job_id = up.id),"
		" down(id) AS (SELECT $1::bigint UNION"
		"   SELECT d.job_id FROM down JOIN taskq.job_dependencies d ON d.depends_on = down.id),"
		" ids AS (SELECT id FROM (SELECT id FROM up UNION SELECT id FROM down) a"
		"   ORDER BY id = $1::bigint DESC, abs(id - $1::bigint) LIMIT 500),"
		" vis AS MATERIALIZED (SELECT j.id, j.job_type, j.queue, j.status FROM taskq.live_jobs j"
		"   WHERE j.id IN (SELECT id FROM ids))"
		" SELECT json_build_object('root', $1::bigint,"
		"  'nodes', (SELECT coalesce(json_agg(v ORDER BY v.id), '[]') FROM vis v),"
		"  'edges', (SELECT coalesce(json_agg(json_build_array(d.depends_on, d.job_id)), '[]')"
		"            FROM taskq.job_dependencies d"
		"            WHERE d.job_id IN (SELECT id FROM vis) AND d.depends_on IN (SELECT id FROM vis)))"
		" WHERE EXISTS (SELECT 1 FROM taskq.jobs WHERE id = $1::bigint)";
	const char *params[1] = {id};

	return web_json_query(sql, 1, params);
}

/* GET /api/...: path is what follows "/api/" */
WebReply
web_api_get(const char *path, ParamFn get, void *ctx)
{
	if (strcmp(path, "overview") == 0)
		return overview();
	if (strcmp(path, "jobs") == 0)
		return jobs_page(get, ctx);
	if (strncmp(path, "job/", 4) == 0)
	{
		char		id[32];
		const char *rest = path + 4;
		size_t		n = strspn(rest, "0123456789");

		if (n == 0 || n >= sizeof(id))
			return web_error(n == 0 && *rest ? 400 : 404,
							 n == 0 && *rest ? "a job id is a positive integer" : "no such job");
		memcpy(id, rest, n);
		id[n] = '\0';
		if (!valid_id(id))
			return web_error(404, "no such job");
		if (rest[n] == '\0')
			return job_detail(id);
		if (strcmp(rest + n, "/dag") == 0)
			return job_dag(id);
	}
	return web_error(404, "no such API");
}

/* POST /api/action/NAME: taskq's functions, as the dashboard's role */
WebReply
web_api_post(const char *path, ParamFn get, void *ctx)
{
	static const struct
	{
		const char *name;
		const char *sql;
		const char *args[3];	/* request parameters, in order */
	}			actions[] = {
		{"retry", "SELECT json_build_object('retried', $1::bigint) FROM taskq.retry($1::bigint)", {"id"}},
		{"cancel", "SELECT json_build_object('cancelled', $1::bigint) FROM taskq.cancel($1::bigint)", {"id"}},
		{"pause", "SELECT json_build_object('paused', $1::text) FROM taskq.pause($1)", {"queue"}},
		{"resume", "SELECT json_build_object('resumed', $1::text) FROM taskq.resume($1)", {"queue"}},
		{"dlq_retry", "SELECT json_build_object('retried', taskq.retry_failed($1, $2, $3))",
		{"queue", "type", "error"}},
		{"dlq_purge", "SELECT json_build_object('purged', taskq.purge_failed($1::interval, $2, $3))",
		{"older_than", "queue", "type"}},
	};

	if (strncmp(path, "action/", 7) != 0)
		return web_error(404, "no such API");
	path += 7;
	for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++)
	{
		const char *params[3] = {NULL, NULL, NULL};
		int			n = 0;

		if (strcmp(path, actions[i].name) != 0)
			continue;
		for (; n < 3 && actions[i].args[n]; n++)
		{
			params[n] = param(get, ctx, actions[i].args[n]);
			if (params[n] && strlen(params[n]) > 1000)
				return web_error(400, "a parameter is longer than 1000 bytes");
		}
		if (strcmp(actions[i].args[0], "id") == 0 &&
			(params[0] == NULL || !valid_id(params[0])))
			return web_error(params[0] && strspn(params[0], "0123456789") == strlen(params[0]) ? 404 : 400,
							 "id must be a job id (a positive integer)");
		if (strcmp(actions[i].args[0], "queue") == 0 && n == 1 && params[0] == NULL)
			return web_error(400, "queue is required");
		return web_json_query(actions[i].sql, n, params);
	}
	return web_error(404, "no such action");
}

/* taskq web --explain: the plan of the jobs page for a query string */
typedef struct QsPair
{
	char	   *name;
	char	   *value;
}			QsPair;

static QsPair qs[16];
static int	nqs;

static const char *
qs_get(void *ctx, const char *name)
{
	(void) ctx;
	for (int i = 0; i < nqs; i++)
		if (strcmp(qs[i].name, name) == 0)
			return qs[i].value;
	return NULL;
}

int
web_explain_jobs(const char *querystring)
{
	char	   *copy = strdup(querystring);
	char	   *save = NULL;
	const char *params[9];
	char	   *err;
	char	   *sql;
	PGconn	   *conn;
	PGresult   *res;

	if (copy == NULL)
		fatal("out of memory");
	for (char *tok = strtok_r(copy, "&", &save); tok && nqs < 16; tok = strtok_r(NULL, "&", &save))
	{
		char	   *eq = strchr(tok, '=');

		if (eq == NULL)
			usage_error("web", "--explain wants name=value pairs joined by &, got \"%s\"", tok);
		*eq = '\0';
		qs[nqs].name = tok;
		qs[nqs++].value = eq + 1;
	}
	if (!web_jobs_params(qs_get, NULL, params, &err))
		usage_error("web", "%s", err);
	sql = malloc(strlen(JOBS_PAGE_SQL) + 16);
	if (sql == NULL)
		fatal("out of memory");
	sprintf(sql, "EXPLAIN %s", JOBS_PAGE_SQL);
	conn = connect_db("web");
	res = run_query(conn, sql, 9, params);
	for (int i = 0; i < PQntuples(res); i++)
		printf("%s\n", PQgetvalue(res, i, 0));
	PQclear(res);
	PQfinish(conn);
	free(sql);
	free(copy);
	return 0;
}
