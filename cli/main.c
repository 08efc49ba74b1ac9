/*
 * main.c: the taskq command-line tool's entry point: global options and
 * dispatch to the subcommands.
 */
#include <stdlib.h>
#include <string.h>

#include "taskq.h"

const char *progname = "taskq";

typedef struct Command
{
	const char *name;
	int			(*run) (int argc, char **argv);
	const char *summary;
} Command;

static const Command commands[] = {
	{"status", cmd_status, "queue summary and health, or one job and its log"},
	{"watch", cmd_watch, "print job transitions live (LISTEN on taskq.channel())"},
	{"top", cmd_top, "live full-screen view of queues, workers and resources"},
	{"dlq", cmd_dlq, "list, retry or purge the dead-letter queue"},
	{"dag", cmd_dag, "render a job's dependency graph (Mermaid or Graphviz)"},
	{"submit", cmd_submit, "submit a job and print its id"},
	{"web", cmd_web, "serve the live web dashboard (HTTP, localhost by default)"},
};

static void
usage(void)
{
	printf("%s is the command-line tool of taskq, the job queue inside PostgreSQL.\n\n", progname);
	printf("Usage:\n  %s [CONNECTION-OPTION]... COMMAND [OPTION]... [ARG]...\n\n", progname);
	printf("Commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		printf("  %-8s %s\n", commands[i].name, commands[i].summary);
	printf("\n" CONN_OPTIONS_HELP);
	printf("\nGeneral options:\n"
		   "  -V, --version            print the version and exit\n"
		   "  -?, --help               show this help and exit\n\n"
		   "Run \"%s COMMAND --help\" for a command's options.\n"
		   "Exit status: 0 success, 1 connection or server error, 2 bad usage.\n",
		   progname);
}

static const Command *
find_command(const char *name)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

int
main(int argc, char **argv)
{
	static const struct option long_options[] = {
		CONN_LONG_OPTIONS,
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0}
	};
	const Command *cmd;
	static char cmdname[64];
	int			c;

	/* getopt_long names the program argv[0] in its complaints */
	argv[0] = (char *) progname;
	if (argc > 1 && strcmp(argv[1], "-?") == 0)
	{
		usage();
		return 0;
	}
	/* "+": stop at the subcommand, which parses the rest itself */
	while ((c = getopt_long(argc, argv, "+" CONN_SHORT_OPTIONS "V", long_options, NULL)) != -1)
	{
		if (handle_conn_option(c, optarg))
			continue;
		switch (c)
		{
			case OPT_HELP:
				usage();
				return 0;
			case 'V':
				printf("%s (taskq) %s\n", progname, TASKQ_CLI_VERSION);
				return 0;
			default:
				bad_option(NULL);
		}
	}
	if (optind >= argc)
		usage_error(NULL, "no command given");

	if (strcmp(argv[optind], "help") == 0)
	{
		if (optind + 1 < argc)
		{
			char	   *help_argv[] = {cmdname, "--help", NULL};

			cmd = find_command(argv[optind + 1]);
			if (cmd == NULL)
				usage_error(NULL, "unknown command \"%s\"", argv[optind + 1]);
			snprintf(cmdname, sizeof(cmdname), "%s %s", progname, cmd->name);
			optind = 0;
			return cmd->run(2, help_argv);
		}
		usage();
		return 0;
	}

	cmd = find_command(argv[optind]);
	if (cmd == NULL)
		usage_error(NULL, "unknown command \"%s\"", argv[optind]);

	argc -= optind;
	argv += optind;
	snprintf(cmdname, sizeof(cmdname), "%s %s", progname, cmd->name);
	argv[0] = cmdname;
	/* 0, not 1: makes glibc's getopt forget the "+" of the scan above */
	optind = 0;
	return cmd->run(argc, argv);
}
