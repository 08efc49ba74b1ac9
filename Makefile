# taskq: PGXS build.  `make && make install`, then see README.md.
EXTENSION = taskq
MODULE_big = taskq
OBJS = src/taskq.o src/resources.o src/executor.o src/launcher.o src/metrics.o \
       src/database_guard.o src/scan_floor.o src/commit_flush.o \
       src/submit.o src/job_rows.o src/listeners.o src/publish.o src/limits.o \
       src/caller.o src/schema_version.o src/dag.o src/jobs_vacuum.o
DATA = sql/taskq--0.1.0.sql sql/taskq--0.1.0--0.2.0.sql
PGFILEDESC = "taskq - job queue inside PostgreSQL"

PG_CFLAGS = -Wall -Wmissing-prototypes -Werror=implicit-function-declaration

# Tests need a cluster with taskq preloaded: run `bash test/run.sh`.

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
.PHONY: demo
demo: ; bash demo/run.sh

$(OBJS): src/taskq.h src/compat.h

# the `taskq` command-line tool (cli/, libpq), installed next to psql
CLI_SRCS = $(wildcard cli/*.c)
all: cli/taskq
cli/taskq: $(CLI_SRCS) cli/taskq.h
	$(CC) $(CFLAGS) -Wextra -I$(includedir) -o $@ $(CLI_SRCS) $(LDFLAGS) -L$(libdir) -lpq
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
	rm -f cli/taskq
.PHONY: install-cli install-cli-link uninstall-cli clean-cli
