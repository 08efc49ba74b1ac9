/*
 * jobs.c: `taskq submit` (one job, prints its id) and `taskq dag` (a job's
 * dependency graph as Mermaid or Graphviz text).
 */
#include <stdlib.h>
#include <string.h>

#include "taskq.h"

#define SUBMIT_MAX_ARGS 12

static void
submit_usage(void)
{
	printf("Submit a job and print its id.\n\n"
		   "Usage:\n  %s submit JOB_TYPE [OPTION]...\n\n"
		   "Options (omitted ones take taskq.submit()'s defaults):\n"
		   "  -j, --payload=JSON           the job's payload, a JSON object (default {})\n"
		   "  -P, --priority=PRIORITY      critical, high, normal (default) or low\n"
		   "  -q, --queue=QUEUE            queue (default \"default\")\n"
		   "  -a, --depends-on=ID[,ID...]  run only after these jobs succeeded (repeatable)\n"
		   "      --run-at=TIMESTAMP       not before this time\n"
		   "      --delay=INTERVAL         not before now() + INTERVAL, e.g. '5 minutes'\n"
		   "      --max-attempts=N         attempts before the dead-letter queue\n"
		   "      --timeout=INTERVAL       time limit of one attempt\n"
		   "      --backoff=INTERVAL       base of the exponential retry delay\n"
		   "      --cpu-units=N            CPU units the job holds while it runs\n"
		   "      --memory-mb=N            memory (MB) the job holds while it runs\n"
		   "      --idempotency-key=KEY    return the live job with this key instead of a new one\n"
		   "      --help                   show this help and exit\n\n"
		   CONN_OPTIONS_HELP, progname);
}

static void
dag_usage(void)
{
	printf("Print the dependency graph around a job (its ancestors and descendants).\n\n"
		   "Usage:\n  %s dag ID [OPTION]...\n\n"
		   "Options:\n"
		   "  -f, --format=FORMAT      mermaid (default) or dot (Graphviz)\n"
		   "      --help               show this help and exit\n\n"
		   "Example: %s dag 42 --format dot | dot -Tsvg > dag.svg\n\n"
		   CONN_OPTIONS_HELP, progname, progname);
}

/* Append the ids of "1,2,3" to the array literal being built in buf. */
static void
append_ids(char *buf, size_t size, const char *list)
{
	char	   *copy = strdup(list);
	char	   *save = NULL;

	if (copy == NULL)
		fatal("out of memory");
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
	{
		size_t		len = strlen(buf);

		parse_job_id("submit", tok);
		if (len + strlen(tok) + 3 > size)
			usage_error("submit", "too many --depends-on ids");
		snprintf(buf + len, size - len, "%s%s", len > 1 ? "," : "", tok);
	}
	if (strlen(buf) == 1)
		usage_error("submit", "--depends-on needs at least one job id");
	free(copy);
}

static const char *
nonneg_int(const char *option, const char *arg)
{
	if (*arg == '\0' || strspn(arg, "0123456789") != strlen(arg) || strlen(arg) > 9)
		usage_error("submit", "%s must be a non-negative integer, got \"%s\"", option, arg);
	return arg;
}

int
cmd_submit(int argc, char **argv)
{
	enum
	{
		OPT_RUN_AT = 2000, OPT_DELAY, OPT_MAX_ATTEMPTS, OPT_TIMEOUT, OPT_BACKOFF,
		OPT_CPU, OPT_MEMORY, OPT_KEY
	};
	static const struct option long_options[] = {
		CONN_LONG_OPTIONS,
		{"payload", required_argument, NULL, 'j'},
		{"priority", required_argument, NULL, 'P'},
		{"queue", required_argument, NULL, 'q'},
		{"depends-on", required_argument, NULL, 'a'},
		{"run-at", required_argument, NULL, OPT_RUN_AT},
		{"delay", required_argument, NULL, OPT_DELAY},
		{"max-attempts", required_argument, NULL, OPT_MAX_ATTEMPTS},
		{"timeout", required_argument, NULL, OPT_TIMEOUT},
		{"backoff", required_argument, NULL, OPT_BACKOFF},
		{"cpu-units", required_argument, NULL, OPT_CPU},
		{"memory-mb", required_argument, NULL, OPT_MEMORY},
		{"idempotency-key", required_argument, NULL, OPT_KEY},
		{NULL, 0, NULL, 0}
	};

	/*
	 * Each given option adds a named argument "name => $n::type" from this
	 * fixed table; the SQL never contains the user's text, only placeholders.
	 */
	static const struct
	{
		int			opt;
		const char *sql;
	}			args[] = {
		{'j', "payload => $%d::jsonb"},
		{'P', "priority => $%d::taskq.priority"},
		{'q', "queue => $%d::text"},
		{'a', "depends_on => $%d::bigint[]"},
		{OPT_RUN_AT, "run_at => $%d::timestamptz"},
		{OPT_DELAY, "run_at => now() + $%d::interval"},
		{OPT_MAX_ATTEMPTS, "max_attempts => $%d::integer"},
		{OPT_TIMEOUT, "timeout => $%d::interval"},
		{OPT_BACKOFF, "backoff => $%d::interval"},
		{OPT_CPU, "cpu_units => $%d::integer"},
		{OPT_MEMORY, "memory_mb => $%d::integer"},
		{OPT_KEY, "idempotency_key => $%d::text"},
	};
	const char *given[SUBMIT_MAX_ARGS] = {NULL};
	char		depends[4096] = "{";
	const char *params[SUBMIT_MAX_ARGS + 1];
	char		sql[2048];
	int			nparams = 0;
	PGconn	   *conn;
	PGresult   *res;
	int			c;

	while ((c = getopt_long(argc, argv, CONN_SHORT_OPTIONS "j:P:q:a:", long_options, NULL)) != -1)
	{
		if (handle_conn_option(c, optarg))
			continue;
		if (c == OPT_HELP)
		{
			submit_usage();
			return 0;
		}
		switch (c)
		{
			case 'P':
				if (strcmp(optarg, "critical") != 0 && strcmp(optarg, "high") != 0 &&
					strcmp(optarg, "normal") != 0 && strcmp(optarg, "low") != 0)
					usage_error("submit", "--priority must be critical, high, normal or low, got \"%s\"", optarg);
				break;
			case 'a':
				append_ids(depends, sizeof(depends) - 1, optarg);
				break;
			case OPT_MAX_ATTEMPTS:
				nonneg_int("--max-attempts", optarg);
				break;
			case OPT_CPU:
				nonneg_int("--cpu-units", optarg);
				break;
			case OPT_MEMORY:
				nonneg_int("--memory-mb", optarg);
				break;
			case 'j':
			case 'q':
			case OPT_RUN_AT:
			case OPT_DELAY:
			case OPT_TIMEOUT:
			case OPT_BACKOFF:
			case OPT_KEY:
				break;
			default:
				bad_option("submit");
		}
		for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++)
			if (args[i].opt == c)
				given[i] = c == 'a' ? depends : optarg;
	}
	if (optind >= argc)
		usage_error("submit", "no job type given");
	if (optind + 1 < argc)
		usage_error("submit", "too many arguments (first extra: \"%s\")", argv[optind + 1]);
	if (given[4] && given[5])
		usage_error("submit", "--run-at and --delay are mutually exclusive");
	if (strcmp(depends, "{") != 0)
		strcat(depends, "}");

	params[nparams++] = argv[optind];
	snprintf(sql, sizeof(sql), "SELECT taskq.submit(job_type => $1::text");
	for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++)
	{
		size_t		len = strlen(sql);

		if (given[i] == NULL)
			continue;
		params[nparams++] = given[i];
		snprintf(sql + len, sizeof(sql) - len, ", ");
		len = strlen(sql);
		snprintf(sql + len, sizeof(sql) - len, args[i].sql, nparams);
	}
	strcat(sql, ")");

	conn = connect_db("submit");
	res = run_query(conn, sql, nparams, params);
	printf("%s\n", PQgetvalue(res, 0, 0));
	PQclear(res);
	PQfinish(conn);
	return 0;
}

int
cmd_dag(int argc, char **argv)
{
	static const struct option long_options[] = {
		CONN_LONG_OPTIONS,
		{"format", required_argument, NULL, 'f'},
		{NULL, 0, NULL, 0}
	};
	const char *format = "mermaid";
	const char *params[2];
	PGconn	   *conn;
	PGresult   *res;
	int			c;

	while ((c = getopt_long(argc, argv, CONN_SHORT_OPTIONS "f:", long_options, NULL)) != -1)
	{
		if (handle_conn_option(c, optarg))
			continue;
		switch (c)
		{
			case 'f':
				if (strcmp(optarg, "mermaid") != 0 && strcmp(optarg, "dot") != 0)
					usage_error("dag", "--format must be mermaid or dot, got \"%s\"", optarg);
				format = optarg;
				break;
			case OPT_HELP:
				dag_usage();
				return 0;
			default:
				bad_option("dag");
		}
	}
	if (optind >= argc)
		usage_error("dag", "no job id given");
	if (optind + 1 < argc)
		usage_error("dag", "too many arguments (first extra: \"%s\")", argv[optind + 1]);
	params[0] = parse_job_id("dag", argv[optind]);
	params[1] = format;

	conn = connect_db("dag");
	res = run_query(conn, "SELECT taskq.dag($1::bigint, $2::text)", 2, params);
	printf("%s\n", PQgetvalue(res, 0, 0));
	PQclear(res);
	PQfinish(conn);
	return 0;
}
