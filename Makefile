# Makefile for the outbox extension (PGXS)
#
# The version lives in one place: default_version in outbox.control.  The
# install script sql/outbox--$(EXTVERSION).sql is built from src/sql/outbox.sql
# and META.json must carry the same version (checked below).

EXTENSION	= outbox
EXTVERSION	= $(shell sed -n "s/^default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" $(EXTENSION).control)
METAVERSION	= $(shell sed -n 's/^    "version":[[:space:]]*"\([^"]*\)".*/\1/p' META.json)

MODULE_big	= outbox
OBJS = \
	src/outbox.o \
	src/event.o \
	src/msgauth.o \
	src/sql_api.o \
	src/enqueue.o \
	src/capture.o \
	src/identity.o \
	src/adopt.o \
	src/adopt_sql.o \
	src/relay_shmem.o \
	src/launcher.o \
	src/relay_worker.o \
	src/watermark.o \
	src/schedule.o \
	src/kafka_sink.o \
	src/reply.o \
	src/eos.o \
	src/incarnation.o \
	decoder/outbox_decoder.o \
	decoder/wire.o \
	decoder/wire_encode.o
PGFILEDESC	= "outbox - transactional outbox streamed from the WAL into Kafka"

# Upgrade scripts, one per release step, named explicitly (never a wildcard:
# sql/ also holds the regression tests).
UPGRADE_SCRIPTS	= src/sql/outbox--0.1.0--0.2.0.sql src/sql/outbox--0.2.0--0.3.0.sql src/sql/outbox--0.3.0--0.4.0.sql src/sql/outbox--0.4.0--0.5.0.sql
# Install scripts of earlier releases, frozen as released (the upgrade test
# installs the oldest and updates along the chain).
OLD_INSTALL_SCRIPTS = src/sql/outbox--0.1.0.sql src/sql/outbox--0.2.0.sql src/sql/outbox--0.3.0.sql src/sql/outbox--0.4.0.sql
DATA_built	= sql/$(EXTENSION)--$(EXTVERSION).sql
DATA		= $(OLD_INSTALL_SCRIPTS) $(UPGRADE_SCRIPTS)

# pg_regress suites (sql/NAME.sql, expected/NAME.out), run against a
# temporary instance configured for logical decoding.
REGRESS_API		= api_enqueue api_validation api_emit api_capture api_confirm api_security api_hostile message_key \
			  api_lifecycle api_write_path api_schedule reserved_topics
REGRESS_DECODER	= decoder_basic decoder_txn decoder_2pc decoder_emit decoder_options decoder_columns
REGRESS_ADOPT	= adopt adopt_security
REGRESS		= $(REGRESS_API) $(REGRESS_DECODER) $(REGRESS_ADOPT) upgrade
REGRESS_OPTS	= --temp-instance=tmp_check --temp-config=test/regress.conf

PG_CPPFLAGS	= -I$(srcdir)/src -I$(srcdir)/decoder
SHLIB_LINK	= -lrdkafka

# Test programs (not installed): the local Kafka-protocol broker built on
# librdkafka's mock cluster, and a small consumer used by the end-to-end tests.
TEST_PROGRAMS	= $(patsubst %.c,%,$(wildcard test/broker/*.c))
# Unit checks (not installed): module objects linked with stand-ins for the
# backend functions they call (see each program's header).
UNIT_PROGRAMS	= test/unit/sink_check
# The demo's inventory service (not installed): librdkafka and libpq.
EXAMPLE_PROGRAMS = examples/inventory/inventory
EXTRA_CLEAN	= $(TEST_PROGRAMS) $(UNIT_PROGRAMS) $(EXAMPLE_PROGRAMS) sql/$(EXTENSION)--$(EXTVERSION).sql

PG_CONFIG	?= pg_config
PGXS		:= $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

ifneq ($(EXTVERSION),$(METAVERSION))
$(error version mismatch: outbox.control says '$(EXTVERSION)' but META.json says '$(METAVERSION)')
endif

override CFLAGS += -Wall -Wmissing-prototypes -Wpointer-arith -Werror=vla -Wendif-labels

all: $(TEST_PROGRAMS) $(UNIT_PROGRAMS) $(EXAMPLE_PROGRAMS)

sql/$(EXTENSION)--$(EXTVERSION).sql: src/sql/outbox.sql $(EXTENSION).control
	sed 's/@EXTVERSION@/$(EXTVERSION)/g' $< > $@

$(OBJS): src/compat.h src/outbox.h src/event.h src/msgauth.h src/adopt.h src/watermark.h decoder/wire.h

test/broker/%: test/broker/%.c test/broker/broker_util.h
	$(CC) $(CFLAGS_SL_NONE) -O2 -g -Wall -Wextra -Wno-unused-parameter -o $@ $< -lrdkafka -lpthread

# libpq from pkg-config (libpq-dev's libpq.pc), else from pg_config: a
# relocated copy of the server (OUTBOX_PG_ROOT) reports an include and a
# library directory that hold no libpq.
LIBPQ_CFLAGS	?= $(or $(shell pkg-config --cflags libpq 2>/dev/null),-I$(includedir))
LIBPQ_LIBS		?= $(or $(shell pkg-config --libs libpq 2>/dev/null),-L$(libdir) -lpq)

examples/inventory/inventory: examples/inventory/inventory.c
	$(CC) $(CFLAGS_SL_NONE) -O2 -g -Wall -Wextra -Wno-unused-parameter $(LIBPQ_CFLAGS) -o $@ $< $(LIBPQ_LIBS) -lrdkafka

test/unit/sink_check: test/unit/sink_check.c src/kafka_sink.o src/eos.o decoder/wire.o
	$(CC) $(CFLAGS) $(CPPFLAGS) -o $@ $^ -L$(pkglibdir) -lpgcommon -lpgport -lrdkafka -lcrypto -lpthread

.PHONY: version
version:
	@echo $(EXTVERSION)
