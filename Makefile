# taskq: PGXS build.  `make && make install`, then see README.md.
EXTENSION = taskq
MODULE_big = taskq
OBJS = src/taskq.o src/resources.o src/executor.o src/launcher.o src/metrics.o
DATA = sql/taskq--0.1.0.sql
PGFILEDESC = "taskq - job queue inside PostgreSQL"

PG_CFLAGS = -Wall -Wmissing-prototypes -Werror=implicit-function-declaration

REGRESS = $(patsubst sql/%.sql,%,$(filter-out sql/taskq--%,$(wildcard sql/*.sql)))
REGRESS_OPTS = --inputdir=. --load-extension=taskq --temp-config=test/regress.conf

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

$(OBJS): src/taskq.h
