# taskq: PGXS build.  `make && make install`, then see README.md.
EXTENSION = taskq
MODULE_big = taskq
OBJS = src/taskq.o src/worker_slots.o src/executor.o src/launcher.o src/metrics.o \
       src/database_guard.o src/scan_floor.o src/commit_flush.o \
       src/submit.o src/job_rows.o src/listeners.o src/publish.o src/limits.o \
       src/caller.o src/schema_version.o src/dag.o src/databases.o \
       src/job_metrics.o src/cron_cleanup.o src/fairness.o src/jobs_vacuum.o \
       src/crash_marks.o src/tenants.o
DATA = sql/taskq--0.1.0.sql sql/taskq--0.1.0--0.2.0.sql
PGFILEDESC = "taskq - job queue inside PostgreSQL"

PG_CFLAGS = -Wall -Wmissing-prototypes -Werror=implicit-function-declaration

# Tests, the PGXS way: `make installcheck` runs the regression and isolation
# suites against a running server that preloads taskq (its postgresql.conf
# lines are in src/README.md, "Running the tests"); one suite alone:
# `make installcheck REGRESS=10_submit ISOLATION=`.  `bash test/run.sh` runs
# everything, from a fresh machine, on throwaway clusters.
# pg_regress inputs are sql/NN_name.sql (outputs expected/NN_name.out); the
# install and update scripts are the sql/taskq--*.sql files, never tests.
REGRESS = $(sort $(basename $(notdir $(filter-out sql/taskq--%,$(wildcard sql/*.sql)))))
REGRESS_OPTS = --use-existing
REGRESS_PREP = $(if $(REGRESS)$(ISOLATION),installcheck-prep)
ISOLATION = $(sort $(basename $(notdir $(wildcard test/isolation/specs/*.spec))))
ISOLATION_OPTS = --use-existing --inputdir=test/isolation
# TAP (test/t): each test starts its own clusters, so it runs as a non-root
# user and only on request: `make installcheck TAP_TESTS=1 REGRESS= ISOLATION=`
PROVE_TESTS = $(sort $(wildcard test/t/*.pl))

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The update to 0.2.0 is written in parts, one per concern, in sql/0.2.0/
# (applied in name order); the versioned script is their concatenation,
# kept in the tree so that PGXS and the packages install it like any
# extension's script.  After editing a part: `make update-script`
# (test/docs/check_update_parts.sh fails while the two differ).
UPDATE_0_2_0_PARTS = $(sort $(wildcard sql/0.2.0/*.sql))
sql/taskq--0.1.0--0.2.0.sql: $(UPDATE_0_2_0_PARTS)
	cat $^ > $@
.PHONY: update-script
update-script: sql/taskq--0.1.0--0.2.0.sql

# (after the include, which sets PostgreSQL's own defaults)
CONTRIB_TESTDB = taskq_regress
ISOLATION_TESTDB = taskq_regress
.PHONY: demo
demo: ; bash demo/run.sh

$(OBJS): src/taskq.h src/compat.h

# the `taskq` command-line tool (cli/, libpq, libmicrohttpd), installed next to psql
# (`taskq web` serves cli/web/*, compiled in as C arrays by xxd: no files at run time)
CLI_SRCS = $(filter-out cli/web_assets.c,$(wildcard cli/*.c)) cli/web_assets.c
WEB_ASSETS = cli/web/index.html cli/web/app.js cli/web/style.css
all: cli/taskq
cli/taskq: $(CLI_SRCS) cli/taskq.h cli/web.h
	$(CC) $(CFLAGS) -Wextra -I$(includedir) -o $@ $(CLI_SRCS) $(LDFLAGS) -L$(libdir) -lpq -lmicrohttpd -lpthread
cli/web_assets.c: $(WEB_ASSETS)
	{ echo '/* generated from cli/web/ by the Makefile (xxd -i): do not edit */'; \
	  echo '#include "web.h"	/* declares these arrays (-Wmissing-variable-declarations) */'; \
	  for f in $(WEB_ASSETS); do (cd cli && xxd -i $${f#cli/}) || exit 1; done; } > $@.tmp && mv $@.tmp $@
install: install-cli
install-cli: cli/taskq
	$(MKDIR_P) '$(DESTDIR)$(bindir)'
	$(INSTALL_PROGRAM) cli/taskq '$(DESTDIR)$(bindir)/taskq'
	$(if $(DESTDIR),,@echo "taskq: the command-line tool is $(bindir)/taskq, which is not on PATH: add $(bindir) to PATH, or run 'make install-cli-link' to link it into $(CLI_LINK_DIR)")
# optional: put the CLI on PATH (the Debian packages ship /usr/bin/taskq instead)
CLI_LINK_DIR ?= /usr/local/bin
install-cli-link: install-cli
	$(MKDIR_P) '$(DESTDIR)$(CLI_LINK_DIR)'
	ln -sf '$(bindir)/taskq' '$(DESTDIR)$(CLI_LINK_DIR)/taskq'
uninstall: uninstall-cli
uninstall-cli:
	rm -f '$(DESTDIR)$(bindir)/taskq'
	if [ '$(bindir)/taskq' = "$$(readlink '$(DESTDIR)$(CLI_LINK_DIR)/taskq')" ]; then rm -f '$(DESTDIR)$(CLI_LINK_DIR)/taskq'; fi
clean: clean-cli
clean-cli:
	rm -f cli/taskq cli/web_assets.c cli/web_assets.c.tmp
.PHONY: install-cli install-cli-link uninstall-cli clean-cli

# The suites run in database taskq_regress (taskq.database and
# cron.database_name point there): create it and the extensions once, then
# wait (at most a minute) for the launcher to connect its executors.
PSQL = $(bindir)/psql -X -q -v ON_ERROR_STOP=1
installcheck-prep:
	@$(PSQL) -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = 'taskq_regress'" | grep -q 1 || \
	    $(PSQL) -d postgres -c 'CREATE DATABASE taskq_regress'
	@$(PSQL) -d taskq_regress -c 'SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS taskq; CREATE EXTENSION IF NOT EXISTS pg_cron'
	@for i in $$(seq 1 120); do \
	    [ "$$($(PSQL) -d taskq_regress -Atc "SELECT count(*) >= current_setting('taskq.workers')::int FROM taskq.workers WHERE kind = 'executor'")" = t ] && exit 0; \
	    sleep 0.5; \
	done; echo "taskq: no executor connected to taskq_regress (is taskq preloaded, taskq.database = taskq_regress?)" >&2; exit 1
.PHONY: installcheck-prep
