/*-------------------------------------------------------------------------
 *
 * relay_worker.c
 *	  The relay: a background worker that decodes the outbox slot in-process
 *	  and streams committed events into Kafka, ack-gated.
 *
 * One logical decoding context stays open on the slot; WAL is read up to the
 * flush position and decoded through the `outbox` plugin in its binary
 * format (decoder/wire.h).  Frames go to the Kafka sink.  The slot's
 * confirmed position moves to a transaction's end LSN only once it and all
 * earlier transactions are settled in Kafka; when nothing is in flight it
 * moves to the decoded position, so an idle outbox never pins WAL.
 *
 * Committing backends that wrote events set our latch; librdkafka writes to
 * a pipe when delivery reports are ready.  We sleep on both.
 *
 * Failures:
 *	- Kafka unreachable: librdkafka retries forever (message.timeout.ms = 0);
 *	  decoding pauses at outbox.max_in_flight.
 *	- a record Kafka rejects permanently: written to outbox.dead_letters.
 *	- a failed producer (fatal idempotence error, delivery failure, changed
 *	  settings): producer rebuilt, decoding restarted from the slot's
 *	  confirmed position (duplicates possible, nothing lost).
 *	- an ERROR: the worker exits and the postmaster restarts it; it resumes
 *	  from the slot's confirmed position.
 *	- an invalidated slot, missing configuration: reported in relay_status
 *	  and the log once, then a calm wait instead of a crash loop.
 *
 * src/relay_worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogreader.h"
#include "access/xlogutils.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/decode.h"
#include "replication/logical.h"
#include "replication/slot.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "compat.h"
#include "event.h"
#include "kafka_sink.h"
#include "outbox.h"
#include "relay_shmem.h"
#include "wire.h"

/* How long to sleep when idle or waiting for something outside our control. */
#define RELAY_IDLE_TIMEOUT_MS		1000
#define RELAY_CALM_WAIT_MS			5000
/* Decode at most this long between two looks at Kafka and the slot. */
#define RELAY_BATCH_MS				50
/* Persist the slot's confirmed position at most this often. */
#define RELAY_SLOT_SAVE_MS			1000
/* Publish status at most this often while busy. */
#define RELAY_STATUS_MS				100
/* Largest librdkafka property file read. */
#define RELAY_MAX_CONFIG_FILE		(1024 * 1024)

/* Why relay_stream() returned. */
typedef enum RelayStop
{
	RELAY_REWIND,				/* rebuild producer, decode again from slot */
	RELAY_RESTART				/* release everything, start over */
} RelayStop;

/* The worker's state; one per process. */
typedef struct RelayState
{
	LogicalDecodingContext *ctx;	/* open decoding context, or NULL */
	OutboxSink *sink;			/* producer, or NULL */
	SinkAcked  *acked;			/* from the last sink, for the next one */
	int			pipe_rd;		/* librdkafka wake-up pipe, read end */
	int			pipe_wr;		/* write end, given to librdkafka */
	MemoryContext loop_cxt;		/* reset every loop iteration */
	char	   *brokers;		/* settings the producer was built with */
	char	   *file_props;
	char	   *guc_props;
	XLogRecPtr	saved_lsn;		/* confirmed position last persisted */
	XLogRecPtr	required_lsn;	/* restart_lsn last announced to checkpoints */
	TimestampTz last_save;		/* when */
	TimestampTz last_status;	/* last status publication */
	uint64		frames;			/* frames seen, for throttled status */
	char		logged_state[OUTBOX_STATE_LEN]; /* last state logged */
	char		logged_msg[OUTBOX_ERROR_LEN];	/* and its message */
	bool		have_extension; /* CREATE EXTENSION outbox seen */
	TimestampTz extension_checked;	/* last look for it */
} RelayState;

static RelayState relay;

static void relay_run(void);
static void relay_begin_xact(void);
static void relay_commit_xact(void);
static bool relay_ready(void);
static bool relay_acquire_slot(void);
static void relay_create_slot(void);
static RelayStop relay_stream(void);
static void relay_teardown(bool release_slot);
static void relay_wait(long timeout_ms);
static void relay_check_extension(void);
static void relay_advance(bool force_save);
static void relay_publish_status(bool force);
static void relay_write_dead_letters(void);
static void relay_on_exit(int code, Datum arg);
static void relay_blocked(const char *state, int elevel, const char *fmt,...)
			pg_attribute_printf(3, 4);
static bool relay_settings_changed(void);
static char *read_config_file(const char *path, char **problem);
static void relay_prepare_write(LogicalDecodingContext *ctx, XLogRecPtr lsn,
								TransactionId xid, bool last_write);
static void relay_do_write(LogicalDecodingContext *ctx, XLogRecPtr lsn,
						   TransactionId xid, bool last_write);
static void relay_update_progress(LogicalDecodingContext *ctx, XLogRecPtr lsn,
								  TransactionId xid OUTBOX_UPDATE_PROGRESS_EXTRA);

/* ---------------------------------------------------------------------
 * Registration and entry point
 * ---------------------------------------------------------------------
 */

void
outbox_relay_register(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	strlcpy(bgw.bgw_library_name, "outbox", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "outbox_relay_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "outbox relay", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "outbox relay", BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);
}

void
outbox_relay_main(Datum main_arg)
{
	int			fds[2];

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(outbox_database, NULL, 0);

	memset(&relay, 0, sizeof(relay));
	relay.pipe_rd = relay.pipe_wr = -1;
	relay.loop_cxt = AllocSetContextCreate(TopMemoryContext,
										   "outbox relay loop",
										   ALLOCSET_DEFAULT_SIZES);
	if (CurrentResourceOwner == NULL)
		CreateAuxProcessResourceOwner();

	if (pipe(fds) != 0 ||
		fcntl(fds[0], F_SETFL, O_NONBLOCK) != 0 ||
		fcntl(fds[1], F_SETFL, O_NONBLOCK) != 0)
		ereport(ERROR,
				(errcode_for_socket_access(),
				 errmsg("outbox relay could not create its wake-up pipe: %m")));
	relay.pipe_rd = fds[0];
	relay.pipe_wr = fds[1];

	outbox_status_begin(outbox_database, outbox_slot_name);
	before_shmem_exit(relay_on_exit, (Datum) 0);

	ereport(LOG,
			(errmsg("outbox relay started for database \"%s\", slot \"%s\"",
					outbox_database, outbox_slot_name)));

	PG_TRY();
	{
		relay_run();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* Show the error in relay_status before the worker exits. */
		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		outbox_status_error("%s", edata->message);
		outbox_status_set_state("failed");
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/* Release Kafka and decoding resources; the slot itself is released by
 * PostgreSQL's own exit callbacks. */
static void
relay_on_exit(int code, Datum arg)
{
	if (relay.sink != NULL)
	{
		outbox_sink_destroy(relay.sink);
		relay.sink = NULL;
	}
	if (MyReplicationSlot != NULL && code == 0)
	{
		/* Keep the confirmed position a clean stop reached. */
		ReplicationSlotMarkDirty();
		ReplicationSlotSave();
	}
	outbox_status_end();
}

/* ---------------------------------------------------------------------
 * Main loop
 * ---------------------------------------------------------------------
 */

/*
 * A short transaction of our own, between WAL records.  Commit leaves
 * TopMemoryContext current and no resource owner; put back both.
 */
static MemoryContext relay_xact_caller_cxt;

static void
relay_begin_xact(void)
{
	relay_xact_caller_cxt = CurrentMemoryContext;
	StartTransactionCommand();
}

static void
relay_commit_xact(void)
{
	CommitTransactionCommand();
	if (CurrentResourceOwner == NULL)
		CurrentResourceOwner = AuxProcessResourceOwner;
	MemoryContextSwitchTo(relay_xact_caller_cxt);
}

static void
relay_run(void)
{
	for (;;)
	{
		RelayStop	stop;

		CHECK_FOR_INTERRUPTS();
		if (!relay_ready())
			continue;
		if (!relay_acquire_slot())
			continue;

		do
		{
			stop = relay_stream();
			relay_teardown(stop == RELAY_RESTART);
			if (stop == RELAY_REWIND)
			{
				outbox_status_set_state("reconnecting");
				relay_wait(outbox_retry_interval_ms);
				if (!relay_ready())
				{
					relay_teardown(true);
					break;
				}
			}
		} while (stop == RELAY_REWIND);
	}
}

/*
 * Wait for the latch, librdkafka's pipe, or the timeout; then handle
 * interrupts and configuration reloads.
 */
static void
relay_wait(long timeout_ms)
{
	int			rc;
	char		buf[64];

	rc = WaitLatchOrSocket(MyLatch,
						   WL_LATCH_SET | WL_SOCKET_READABLE | WL_TIMEOUT |
						   WL_EXIT_ON_PM_DEATH,
						   relay.pipe_rd, timeout_ms, PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
		ResetLatch(MyLatch);
	if (rc & WL_SOCKET_READABLE)
	{
		while (read(relay.pipe_rd, buf, sizeof(buf)) > 0)
			;
	}
	CHECK_FOR_INTERRUPTS();
}

/* Enter a state that needs outside help: log it once, then wait calmly. */
static void
relay_blocked(const char *state, int elevel, const char *fmt,...)
{
	char		msg[OUTBOX_ERROR_LEN];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	if (strcmp(relay.logged_state, state) != 0 ||
		strcmp(relay.logged_msg, msg) != 0)
	{
		ereport(elevel, (errmsg("outbox relay: %s", msg)));
		if (elevel >= WARNING)
			outbox_status_error("%s", msg);
		strlcpy(relay.logged_state, state, sizeof(relay.logged_state));
		strlcpy(relay.logged_msg, msg, sizeof(relay.logged_msg));
	}
	outbox_status_set_state(state);
	relay_wait(RELAY_CALM_WAIT_MS);
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

/* Is output_plugin_libraries (where this server has it) allowing "outbox"? */
static bool
plugin_allowed(void)
{
	const char *value = GetConfigOption(OUTBOX_PLUGIN_ALLOWLIST_GUC, true, false);
	char	   *copy;
	List	   *items;
	ListCell   *lc;
	bool		found = false;

	if (value == NULL)
		return true;			/* this server has no such gate */
	copy = pstrdup(value);
	if (!SplitDirectoriesString(copy, ',', &items))
		return false;
	foreach(lc, items)
	{
		const char *item = (const char *) lfirst(lc);
		const char *base = strrchr(item, '/');

		base = base ? base + 1 : item;
		if (strcmp(base, "outbox") == 0 || strcmp(base, "outbox.so") == 0)
			found = true;
	}
	return found;
}

/*
 * Check everything the relay needs that only an administrator can fix.
 * Returns false after a calm wait if something is missing.
 *
 * The extension is not among them: the slot must exist before the first
 * event is written, so the relay creates it and decodes (finding nothing)
 * even before CREATE EXTENSION outbox; the decoder notices the table when it
 * appears.
 */
static bool
relay_ready(void)
{
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}

	if (wal_level < WAL_LEVEL_LOGICAL)
	{
		relay_blocked("misconfigured", WARNING,
					  "wal_level must be \"logical\" for the relay to decode the outbox; set it in postgresql.conf and restart");
		return false;
	}
	if (!plugin_allowed())
	{
		relay_blocked("misconfigured", WARNING,
					  "output plugin \"outbox\" is not listed in %s; add it in postgresql.conf (e.g. '%s = ''pgoutput, outbox''') and restart",
					  OUTBOX_PLUGIN_ALLOWLIST_GUC, OUTBOX_PLUGIN_ALLOWLIST_GUC);
		return false;
	}
	if (outbox_kafka_brokers == NULL || outbox_kafka_brokers[0] == '\0')
	{
		relay_blocked("disabled", LOG,
					  "outbox.kafka_brokers is empty, the relay is idle until it is set and the configuration reloaded");
		return false;
	}

	return true;
}

/* ---------------------------------------------------------------------
 * The slot
 * ---------------------------------------------------------------------
 */

static void
relay_create_slot(void)
{
	LogicalDecodingContext *ctx;

	ereport(LOG,
			(errmsg("outbox relay: creating logical replication slot \"%s\"",
					outbox_slot_name)));
	outbox_status_set_state("creating_slot");
	CheckLogicalDecodingRequirements();
	outbox_slot_create(outbox_slot_name);
	ctx = CreateInitDecodingContext("outbox", NIL, false, InvalidXLogRecPtr,
									XL_ROUTINE(.page_read = read_local_xlog_page,
											   .segment_open = wal_segment_open,
											   .segment_close = wal_segment_close),
									NULL, NULL, NULL);
	DecodingContextFindStartpoint(ctx);
	FreeDecodingContext(ctx);
	ReplicationSlotPersist();
	ReplicationSlotRelease();
}

/*
 * Acquire our slot, creating it if missing.  Returns false (after a calm
 * wait) when the slot cannot be used.
 */
static bool
relay_acquire_slot(void)
{
	ReplicationSlot *slot;
	pid_t		active_pid = 0;
	Oid			database = InvalidOid;
	NameData	plugin;
	bool		invalidated = false;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	slot = SearchNamedReplicationSlot(outbox_slot_name, false);
	if (slot != NULL)
	{
		SpinLockAcquire(&slot->mutex);
		active_pid = slot->active_pid;
		database = slot->data.database;
		plugin = slot->data.plugin;
		invalidated = outbox_slot_is_invalidated(slot);
		SpinLockRelease(&slot->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);

	if (slot == NULL)
	{
		relay_create_slot();
		return relay_acquire_slot();
	}
	if (database != MyDatabaseId || strcmp(NameStr(plugin), "outbox") != 0)
	{
		relay_blocked("misconfigured", WARNING,
					  "replication slot \"%s\" is not an \"outbox\" slot of database \"%s\" (it uses plugin \"%s\"); drop it or set outbox.slot_name",
					  outbox_slot_name, outbox_database, NameStr(plugin));
		return false;
	}
	if (invalidated)
	{
		relay_blocked("slot_invalidated", WARNING,
					  "replication slot \"%s\" was invalidated because it retained more WAL than max_slot_wal_keep_size allows; events committed since its confirmed position were not relayed. Drop the slot (SELECT pg_drop_replication_slot('%s')) to resume with a new one, and use outbox.redeliver() for unconfirmed messages",
					  outbox_slot_name, outbox_slot_name);
		return false;
	}
	if (active_pid != 0)
	{
		relay_blocked("slot_busy", WARNING,
					  "replication slot \"%s\" is in use by process %d; waiting for it to be released",
					  outbox_slot_name, (int) active_pid);
		return false;
	}

	outbox_slot_acquire(outbox_slot_name, true);
	relay.saved_lsn = MyReplicationSlot->data.confirmed_flush;
	relay.required_lsn = InvalidXLogRecPtr;
	relay.last_save = GetCurrentTimestamp();
	return true;
}

/* ---------------------------------------------------------------------
 * Streaming
 * ---------------------------------------------------------------------
 */

static char *
read_config_file(const char *path, char **problem)
{
	int			fd;
	struct stat st;
	char	   *buf;
	ssize_t		n;

	*problem = NULL;
	if (path == NULL || path[0] == '\0')
		return pstrdup("");
	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0)
	{
		*problem = psprintf("could not open outbox.kafka_config_file \"%s\": %m", path);
		return NULL;
	}
	if (fstat(fd, &st) != 0 || st.st_size > RELAY_MAX_CONFIG_FILE)
	{
		CloseTransientFile(fd);
		*problem = psprintf("outbox.kafka_config_file \"%s\" is unreadable or larger than %d bytes",
							path, RELAY_MAX_CONFIG_FILE);
		return NULL;
	}
	buf = palloc(st.st_size + 1);
	n = read(fd, buf, st.st_size);
	CloseTransientFile(fd);
	if (n != st.st_size)
	{
		*problem = psprintf("could not read outbox.kafka_config_file \"%s\": %m", path);
		return NULL;
	}
	buf[n] = '\0';
	return buf;
}

/* Did the Kafka settings change since the producer was built? */
static bool
relay_settings_changed(void)
{
	char	   *problem;
	char	   *file_props;
	bool		changed;

	file_props = read_config_file(outbox_kafka_config_file, &problem);
	changed = strcmp(relay.brokers, outbox_kafka_brokers) != 0 ||
		strcmp(relay.guc_props, outbox_kafka_properties) != 0 ||
		file_props == NULL || strcmp(relay.file_props, file_props) != 0;
	if (file_props)
		pfree(file_props);
	return changed;
}

static bool
relay_start_sink(void)
{
	char	   *problem;
	char	   *file_props;
	char	   *errstr = NULL;

	file_props = read_config_file(outbox_kafka_config_file, &problem);
	if (file_props == NULL)
	{
		relay_blocked("misconfigured", WARNING, "%s", problem);
		return false;
	}
	relay.sink = outbox_sink_create(outbox_kafka_brokers, file_props,
									outbox_kafka_properties, relay.acked,
									relay.pipe_wr, &errstr);
	relay.acked = NULL;			/* taken over by the sink */
	if (relay.sink == NULL)
	{
		relay_blocked("misconfigured", WARNING,
					  "invalid Kafka producer configuration: %s",
					  errstr ? errstr : "unknown error");
		free(errstr);
		return false;
	}
	relay.brokers = MemoryContextStrdup(TopMemoryContext, outbox_kafka_brokers);
	relay.guc_props = MemoryContextStrdup(TopMemoryContext, outbox_kafka_properties);
	relay.file_props = MemoryContextStrdup(TopMemoryContext, file_props);
	return true;
}

static RelayStop
relay_stream(void)
{
	List	   *options;

	if (!relay_start_sink())
		return RELAY_RESTART;

	/*
	 * Only now is a blocked state over: relay_ready() and the slot may well
	 * pass while the producer cannot be built, and a problem that persists
	 * must be logged once, not on every retry.
	 */
	relay.logged_state[0] = '\0';
	relay.logged_msg[0] = '\0';

	options = list_make1(makeDefElem("format", (Node *) makeString("binary"), -1));
	relay.ctx = CreateDecodingContext(InvalidXLogRecPtr, options, false,
									  XL_ROUTINE(.page_read = read_local_xlog_page,
												 .segment_open = wal_segment_open,
												 .segment_close = wal_segment_close),
									  relay_prepare_write, relay_do_write,
									  relay_update_progress);
	XLogBeginRead(relay.ctx->reader, MyReplicationSlot->data.restart_lsn);

	relay.have_extension = false;
	relay.extension_checked = 0;
	relay_check_extension();
	ereport(LOG,
			(errmsg("outbox relay streaming slot \"%s\" from %X/%X to Kafka at %s",
					outbox_slot_name,
					LSN_FORMAT_ARGS(MyReplicationSlot->data.confirmed_flush),
					outbox_kafka_brokers)));

	for (;;)
	{
		XLogRecPtr	flush;
		TimestampTz batch_start;
		uint64		n = 0;
		const char *why;
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			if (outbox_kafka_brokers[0] == '\0')
				return RELAY_RESTART;
			if (relay_settings_changed())
			{
				ereport(LOG,
						(errmsg("outbox relay: Kafka settings changed, rebuilding the producer")));
				return RELAY_REWIND;
			}
		}

		MemoryContextReset(relay.loop_cxt);
		old = MemoryContextSwitchTo(relay.loop_cxt);

		outbox_sink_poll(relay.sink, 0);
		outbox_sink_report(relay.sink);
		relay_write_dead_letters();
		if (outbox_sink_failed(relay.sink, &why))
		{
			MemoryContextSwitchTo(old);
			ereport(WARNING,
					(errmsg("outbox relay: %s; rebuilding the producer and resuming from the slot's confirmed position",
							why)));
			outbox_status_error("%s", why);
			return RELAY_REWIND;
		}

		/*
		 * Decode what is flushed, in bounded batches.  The WAL reader keeps
		 * its decode buffer in the memory context current at its first read,
		 * so read in the decoding context's, never in the per-loop one.
		 */
		MemoryContextSwitchTo(relay.ctx->context);
		flush = outbox_flush_rec_ptr();
		batch_start = GetCurrentTimestamp();
		while (relay.ctx->reader->EndRecPtr < flush)
		{
			XLogRecord *record;
			char	   *errm = NULL;

			record = XLogReadRecord(relay.ctx->reader, &errm);
			if (errm)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("outbox relay could not read WAL at %X/%X: %s",
								LSN_FORMAT_ARGS(relay.ctx->reader->EndRecPtr),
								errm)));
			if (record != NULL)
				LogicalDecodingProcessRecord(relay.ctx, relay.ctx->reader);

			if (outbox_sink_failed(relay.sink, &why))
				break;
			relay_write_dead_letters();
			if ((++n & 255) == 0)
			{
				outbox_sink_poll(relay.sink, 0);
				relay_advance(false);
				relay_publish_status(false);
				CHECK_FOR_INTERRUPTS();
				if (TimestampDifferenceExceeds(batch_start, GetCurrentTimestamp(),
											   RELAY_BATCH_MS))
					break;
			}
		}

		MemoryContextSwitchTo(relay.loop_cxt);
		outbox_sink_poll(relay.sink, 0);
		relay_write_dead_letters();
		relay_advance(false);
		relay_publish_status(n == 0);
		MemoryContextSwitchTo(old);

		if (relay.ctx->reader->EndRecPtr >= flush && !outbox_sink_failed(relay.sink, &why))
		{
			/* Caught up: check the slot, then sleep until woken. */
			bool		invalidated;

			SpinLockAcquire(&MyReplicationSlot->mutex);
			invalidated = outbox_slot_is_invalidated(MyReplicationSlot);
			SpinLockRelease(&MyReplicationSlot->mutex);
			if (invalidated)
				return RELAY_RESTART;
			relay_check_extension();
			UpdateDecodingStats(relay.ctx);
			relay_wait(RELAY_IDLE_TIMEOUT_MS);
		}
	}
}

/*
 * While the extension is missing, look for it now and then and say so in
 * relay_status; decoding goes on meanwhile (there is nothing to find).
 */
static void
relay_check_extension(void)
{
	TimestampTz now;

	if (relay.have_extension)
		return;
	now = GetCurrentTimestamp();
	if (relay.extension_checked != 0 &&
		!TimestampDifferenceExceeds(relay.extension_checked, now, RELAY_CALM_WAIT_MS))
		return;
	relay.extension_checked = now;

	relay_begin_xact();
	relay.have_extension = OidIsValid(get_extension_oid("outbox", true));
	relay_commit_xact();

	if (relay.have_extension)
	{
		outbox_status_set_state("streaming");
		relay.logged_state[0] = '\0';
	}
	else
	{
		if (strcmp(relay.logged_state, "waiting_for_extension") != 0)
			ereport(LOG,
					(errmsg("outbox relay: extension \"outbox\" is not installed in database \"%s\"; the slot is ready and events will be relayed once CREATE EXTENSION outbox has run",
							outbox_database)));
		strlcpy(relay.logged_state, "waiting_for_extension", sizeof(relay.logged_state));
		outbox_status_set_state("waiting_for_extension");
	}
}

/* Free the producer and the decoding context; optionally the slot too. */
static void
relay_teardown(bool release_slot)
{
	if (relay.sink != NULL)
	{
		/* events known acknowledged are not produced again after a rewind */
		relay.acked = outbox_sink_take_acked(relay.sink);
		outbox_sink_destroy(relay.sink);
		relay.sink = NULL;
	}
	if (relay.ctx != NULL)
	{
		FreeDecodingContext(relay.ctx);
		relay.ctx = NULL;
	}
	if (relay.brokers)
		pfree(relay.brokers);
	if (relay.guc_props)
		pfree(relay.guc_props);
	if (relay.file_props)
		pfree(relay.file_props);
	relay.brokers = relay.guc_props = relay.file_props = NULL;
	if (release_slot && MyReplicationSlot != NULL)
	{
		ReplicationSlotMarkDirty();
		ReplicationSlotSave();
		ReplicationSlotRelease();
	}
}

/*
 * Move the slot's confirmed position as far as the correctness rule allows:
 * to the newest settled transaction's end, or to the decoded position when
 * nothing at all is in flight.
 */
static void
relay_advance(bool force_save)
{
	XLogRecPtr	settled = outbox_sink_settled_lsn(relay.sink);
	XLogRecPtr	target = settled;
	XLogRecPtr	confirmed;
	TimestampTz now;
	const char *why;

	/* after a producer failure only a rewind may move anything */
	if (outbox_sink_failed(relay.sink, &why))
		return;

	if (outbox_sink_idle(relay.sink))
		target = Max(target, relay.ctx->reader->EndRecPtr);

	SpinLockAcquire(&MyReplicationSlot->mutex);
	confirmed = MyReplicationSlot->data.confirmed_flush;
	SpinLockRelease(&MyReplicationSlot->mutex);

	if (target > confirmed)
	{
		LogicalConfirmReceivedLocation(target);
		confirmed = target;
	}

	/*
	 * The slot's restart_lsn moves here or while decoding, but PostgreSQL
	 * recomputes the WAL that slots need only when catalog_xmin moves too
	 * (pg_replication_slot_advance() recomputes it itself).  Without this,
	 * an idle outbox next to busy tables would keep every WAL segment.
	 */
	if (MyReplicationSlot->data.restart_lsn != relay.required_lsn)
	{
		ReplicationSlotsComputeRequiredLSN();
		relay.required_lsn = MyReplicationSlot->data.restart_lsn;
	}

	/* confirmed_flush alone is only written at checkpoints: save it often */
	now = GetCurrentTimestamp();
	if (confirmed > relay.saved_lsn &&
		(force_save ||
		 TimestampDifferenceExceeds(relay.last_save, now, RELAY_SLOT_SAVE_MS)))
	{
		ReplicationSlotMarkDirty();
		ReplicationSlotSave();
		relay.saved_lsn = confirmed;
		relay.last_save = now;
	}
}

static void
relay_publish_status(bool force)
{
	TimestampTz now = GetCurrentTimestamp();
	uint64		delivered;
	uint64		dead_lettered;
	TimestampTz last_commit;
	TimestampTz oldest;
	XLogRecPtr	confirmed;

	if (!force && !TimestampDifferenceExceeds(relay.last_status, now, RELAY_STATUS_MS))
		return;
	relay.last_status = now;
	outbox_sink_stats(relay.sink, &delivered, &dead_lettered, &last_commit, &oldest);
	SpinLockAcquire(&MyReplicationSlot->mutex);
	confirmed = MyReplicationSlot->data.confirmed_flush;
	SpinLockRelease(&MyReplicationSlot->mutex);
	outbox_status_progress(confirmed, relay.ctx->reader->EndRecPtr,
						   delivered, outbox_sink_in_flight(relay.sink),
						   dead_lettered, last_commit, oldest);
}

/* ---------------------------------------------------------------------
 * Dead letters
 * ---------------------------------------------------------------------
 */

static void
append_headers_json(StringInfo out, const SinkEvent *ev)
{
	const char *cursor = ev->headers;
	uint32		i;

	appendStringInfoChar(out, '{');
	for (i = 0; i < ev->nheaders; i++)
	{
		const char *name;
		const char *value;
		uint32		name_len;
		uint32		value_len;

		outbox_wire_next_header(&cursor, &name, &name_len, &value, &value_len);
		if (i > 0)
			appendStringInfoChar(out, ',');
		outbox_append_json_string(out, name, name_len);
		appendStringInfoChar(out, ':');
		outbox_append_json_string(out, value, value_len);
	}
	appendStringInfoChar(out, '}');
}

/*
 * Write the events Kafka rejected permanently to outbox.dead_letters, in one
 * transaction, before their transactions may be confirmed.  Runs between
 * WAL records, never inside the decoder's callbacks.
 */
static void
relay_write_dead_letters(void)
{
	SinkDeadLetter *dls;
	int			n;
	int			i;
	SPIPlanPtr	plan;
	Oid			types[10] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
	LSNOID, INT8OID, TIMESTAMPTZOID, TEXTOID, TEXTOID};
	int64		first_id = 0;
	const char *first_error = NULL;
	char	   *first_topic = NULL;

	if (relay.sink == NULL)
		return;
	n = outbox_sink_dead_letters(relay.sink, &dls);
	if (n == 0)
		return;

	relay_begin_xact();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	plan = SPI_prepare("INSERT INTO outbox.dead_letters "
					   "(message_id, topic, key, payload, headers, lsn, xid, "
					   "commit_time, error_code, error) "
					   "VALUES ($1, $2, $3, $4::pg_catalog.jsonb, "
					   "$5::pg_catalog.jsonb, $6, $7, $8, $9, $10)",
					   10, types);
	if (plan == NULL)
		elog(ERROR, "could not prepare dead letter insert: %s",
			 SPI_result_code_string(SPI_result));

	for (i = 0; i < n; i++)
	{
		SinkEvent  *ev = &dls[i].event;
		Datum		values[10];
		char		nulls[10];
		StringInfoData headers;

		memset(nulls, ' ', sizeof(nulls));
		values[0] = Int64GetDatum(ev->id);
		if (!ev->has_id)
			nulls[0] = 'n';
		values[1] = PointerGetDatum(cstring_to_text_with_len(ev->topic, ev->topic_len));
		if (ev->key)
			values[2] = PointerGetDatum(cstring_to_text_with_len(ev->key, ev->key_len));
		else
			nulls[2] = 'n';
		if (ev->payload)
			values[3] = PointerGetDatum(cstring_to_text_with_len(ev->payload, ev->payload_len));
		else
			nulls[3] = 'n';
		if (ev->nheaders > 0)
		{
			initStringInfo(&headers);
			append_headers_json(&headers, ev);
			values[4] = PointerGetDatum(cstring_to_text_with_len(headers.data, headers.len));
		}
		else
			nulls[4] = 'n';
		values[5] = LSNGetDatum(ev->commit_lsn);
		values[6] = Int64GetDatum((int64) ev->xid);
		values[7] = TimestampTzGetDatum(ev->commit_time);
		values[8] = CStringGetTextDatum(dls[i].error_code);
		values[9] = CStringGetTextDatum(dls[i].error);

		if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not insert dead letter");
		if (i == 0)
		{
			first_id = ev->id;
			first_error = dls[i].error;
			first_topic = pnstrdup(ev->topic, ev->topic_len);
		}
	}

	PopActiveSnapshot();
	SPI_finish();
	relay_commit_xact();

	ereport(WARNING,
			(errmsg("outbox relay: Kafka rejected %d event(s) permanently; written to outbox.dead_letters",
					n),
			 errdetail("First: message id " INT64_FORMAT " for topic \"%s\": %s.",
					   first_id, first_topic ? first_topic : "", first_error)));
	outbox_status_error("Kafka rejected %d event(s) permanently (first: topic \"%s\": %s); see outbox.dead_letters",
						n, first_topic ? first_topic : "", first_error);
	outbox_sink_dead_letters_written(relay.sink);
}

/* ---------------------------------------------------------------------
 * Decoding context output callbacks
 * ---------------------------------------------------------------------
 */

static void
relay_prepare_write(LogicalDecodingContext *ctx, XLogRecPtr lsn,
					TransactionId xid, bool last_write)
{
	resetStringInfo(ctx->out);
}

static void
relay_do_write(LogicalDecodingContext *ctx, XLogRecPtr lsn, TransactionId xid,
			   bool last_write)
{
	outbox_sink_add_frame(relay.sink, ctx->out->data, ctx->out->len);
	if ((++relay.frames & 8191) == 0)
	{
		/* a large transaction: keep relay_status moving while it streams */
		relay_publish_status(false);
		outbox_sink_report(relay.sink);
	}
}

static void
relay_update_progress(LogicalDecodingContext *ctx, XLogRecPtr lsn,
					  TransactionId xid OUTBOX_UPDATE_PROGRESS_EXTRA)
{
	/* progress is confirmed from acknowledgements, not from here */
}
