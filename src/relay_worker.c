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
 * The loop: one service step (relay_service()) does everything that must
 * keep happening: interrupts, configuration reloads, librdkafka's queue and
 * errors, settling and confirming, status.  It runs between batches of WAL
 * records and also while the sink waits for room inside the decoder's write
 * callback (outbox.max_in_flight reached): like a walsender waiting for its
 * socket, the relay never freezes its status or ignores a reload.  When the
 * service step inside the decoder finds that the producer must be rebuilt
 * (new Kafka settings, failed producer), it leaves the decoder by throwing
 * RELAY_LEAVE_DECODING, which relay_stream() catches: the transaction being
 * decoded is aborted, the decoding context freed, and decoding restarts
 * from the slot.  Live transactions (dead letters, the extension check) run
 * only between decoding calls, with the caches invalidated around them as
 * core does after decoding (logicalfuncs.c).
 *
 * The relay forces its own session settings (read-write, no statement or
 * lock timeouts, synchronous_commit on), whatever ALTER DATABASE or ALTER
 * ROLE set: a dead letter must be durable before the slot passes it.
 *
 * Failures:
 *	- Kafka unreachable: librdkafka retries forever (message.timeout.ms = 0);
 *	  decoding pauses at outbox.max_in_flight; the state is
 *	  kafka_unreachable while librdkafka reports every broker down.
 *	- a record Kafka rejects permanently: written to outbox.dead_letters.
 *	- a failed producer (fatal idempotence error, delivery failure, changed
 *	  settings): producer rebuilt, decoding restarted from the slot's
 *	  confirmed position (duplicates possible, nothing lost).
 *	- an ERROR: the worker exits and the postmaster restarts it; it resumes
 *	  from the slot's confirmed position.
 *	- an invalidated slot, missing configuration, a slot that cannot be
 *	  created, dead letters that cannot be written: reported in
 *	  relay_status and the log once, then a calm wait and retry instead of
 *	  a crash loop.
 *
 * The slot is created as soon as decoding is possible, whether or not Kafka
 * is configured, so that no event committed after CREATE EXTENSION can be
 * missed; with outbox.kafka_brokers empty the relay holds it (state
 * disabled) without decoding.
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
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
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
#include "replication/snapbuild.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "adopt.h"
#include "compat.h"
#include "eos.h"
#include "event.h"
#include "incarnation.h"
#include "kafka_sink.h"
#include "msgauth.h"
#include "outbox.h"
#include "relay_shmem.h"
#include "reply.h"
#include "schedule.h"
#include "watermark.h"
#include "wire.h"

/* How long to sleep when idle or waiting for something outside our control. */
#define RELAY_IDLE_TIMEOUT_MS		1000
/* Look for new WAL this often when no commit wakes the relay (adopted tables). */
#define RELAY_POLL_MS				10
#define RELAY_CALM_WAIT_MS			5000
/* Decode at most this long between two looks at Kafka and the slot. */
#define RELAY_BATCH_MS				50
/* Persist the slot's confirmed position at most this often. */
#define RELAY_SLOT_SAVE_MS			1000
/* Publish status at most this often while busy. */
#define RELAY_STATUS_MS				100
/* Largest librdkafka property file read. */
#define RELAY_MAX_CONFIG_FILE		(1024 * 1024)
/* Look for CREATE / DROP EXTENSION this often while caught up. */
#define RELAY_EXTENSION_CHECK_MS	1000
/* With '*': how long the extension must be gone before the slot goes too. */
#define RELAY_ABSENT_GRACE_MS		10000
/* Ask an unreachable cluster for metadata this often, waiting this long. */
#define RELAY_PROBE_MS				2000
#define RELAY_PROBE_TIMEOUT_MS		200
/* Say that the standbys hold decoding back after this long. */
#define RELAY_STANDBY_WARN_MS		10000
/* Backoff for dead letter writes that fail. */
#define RELAY_DEAD_LETTER_RETRY_MIN_MS	1000
#define RELAY_DEAD_LETTER_RETRY_MAX_MS	30000

/*
 * SQLSTATE of the error the wait hook throws to leave the decoder; caught
 * in relay_stream(), never reported.
 */
#define RELAY_LEAVE_DECODING	MAKE_SQLSTATE('O', 'B', '0', '0', '1')

/* What the loop must do next. */
typedef enum RelayStop
{
	RELAY_CONTINUE,				/* keep streaming */
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
	WaitEventSet *wait_set;		/* latch, pipe, postmaster death */
	MemoryContext loop_cxt;		/* reset every loop iteration */
	MemoryContext replay_cxt;	/* the pending replay, reset per stream */
	char	   *brokers;		/* settings the producer was built with */
	char	   *file_props;
	char	   *guc_props;
	int			delivery;		/* outbox.delivery the producer was built for */
	char	   *progress_topic; /* outbox.progress_topic likewise */
	XLogRecPtr	saved_lsn;		/* confirmed position last persisted */
	XLogRecPtr	required_lsn;	/* restart_lsn last announced to checkpoints */
	TimestampTz last_save;		/* when */
	TimestampTz last_status;	/* last status publication */
	uint64		frames;			/* frames seen, for throttled status */
	char		logged_state[OUTBOX_STATE_LEN]; /* last state logged */
	char		logged_msg[OUTBOX_ERROR_LEN];	/* and its message */
	bool		have_extension; /* is the extension installed? */
	bool		poll_wal;		/* adopted tables: look for WAL every 10 ms */
	TimestampTz extension_checked;	/* last look for it, 0 = look now */
	bool		in_decoder;		/* inside LogicalDecodingProcessRecord()? */
	RelayStop	leave_with;		/* why the wait hook left the decoder */
	TimestampTz last_probe;		/* last metadata probe of a down cluster */
	bool		dead_letters_blocked;	/* did the last write fail? */
	TimestampTz dead_letters_retry; /* when to try again */
	int			dead_letters_backoff_ms;	/* current backoff */
	char		dbname[NAMEDATALEN];	/* the relayed database's name */
	char		slot_name[NAMEDATALEN]; /* our slot (relay_choose_slot_name()) */
	TimestampTz absent_since;	/* extension missing since, 0 if present */
	bool		replaying;		/* publishing rows after slot loss? */
	bool		watermark_failed;	/* did the last watermark write fail? */
	TimestampTz eos_captured_at;	/* exactly_once: last capture */
	uint64		eos_captured_delivered; /* delivered count at it */
	bool		fenced;			/* exactly_once: did a newer producer fence us? */
	bool		standby_gate;	/* does our failover slot wait for standbys? */
	XLogRecPtr	standby_target; /* WAL position the standbys must confirm */
	TimestampTz standby_wait_since; /* since when they have not, or 0 */
	bool		standby_waiting;	/* said so (waiting_for_standbys)? */
	uint64		delivered_base; /* delivered by producers already destroyed */
	uint64		dead_lettered_base; /* likewise for dead letters */
	bool		reply_more;		/* replies waiting beyond the last batch? */
} RelayState;

static RelayState relay;

/* The decoding context relay_create_slot() is using, for its error path. */
static LogicalDecodingContext *creating_ctx = NULL;

static void relay_run(void);
static void relay_choose_slot_name(void);
static void relay_show(void);
static bool relay_check_unused_slot(void);
static void relay_leave_absent(void);
static bool relay_all_databases(void);
static bool relay_slot_is_ours(const char *name, bool active_too);
static bool relay_slot_lookup(const char *name, bool active_too,
							  XLogRecPtr *restart_lsn);
static void relay_force_settings(void);
static MemoryContext relay_begin_xact(void);
static void relay_commit_xact(MemoryContext caller_cxt);
static void relay_abort_xact(MemoryContext caller_cxt);
static bool relay_ready(void);
static bool relay_kafka_configured(void);
static RelayStop relay_service(bool in_decoder);
static void relay_wait_hook(void *arg);
static RelayStop relay_left_decoder(MemoryContext cxt);
static void relay_destroy_sink(void);
static bool relay_acquire_slot(void);
static void relay_create_slot(void);
static RelayStop relay_stream(void);
static void relay_teardown(bool release_slot);
static void relay_wait(long timeout_ms);
static void relay_wait_for(long timeout_ms);
static void relay_check_extension(void);
static bool relay_have_adoptions(void);
static void relay_advance(bool force_save);
static void relay_publish_status(bool force);
static void relay_set_state(void);
static void relay_write_dead_letters(void);
static RelayStop relay_replay(WatermarkReplay *replay, uint64 total);
static void relay_replay_status(uint64 total, uint64 produced);
static bool relay_read_replay(WatermarkReplay *replay, uint64 *count);
static void relay_watermark_tick(void);
static void relay_eos_capture_tick(void);
static void relay_replay_in_kafka(WatermarkReplay *replay, uint64 *count);
static void relay_reply_tick(void);
static char *relay_try_xact(void (*fn) (void *), void *arg, MemoryContext cxt);
static uint64 relay_delivered(void);
static XLogRecPtr relay_decode_limit(void);
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
outbox_relay_main(Datum main_arg)
{
	int			fds[2];

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(main_arg),
											  InvalidOid, 0);
	relay_force_settings();

	memset(&relay, 0, sizeof(relay));
	relay.pipe_rd = relay.pipe_wr = -1;
	relay.loop_cxt = AllocSetContextCreate(TopMemoryContext,
										   "outbox relay loop",
										   ALLOCSET_DEFAULT_SIZES);
	relay.replay_cxt = AllocSetContextCreate(TopMemoryContext,
											 "outbox relay replay",
											 ALLOCSET_SMALL_SIZES);
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

	{
		MemoryContext cxt = relay_begin_xact();
		char	   *name = get_database_name(MyDatabaseId);

		strlcpy(relay.dbname, name ? name : "", sizeof(relay.dbname));
		relay_commit_xact(cxt);
	}
	relay_choose_slot_name();

	outbox_status_begin(relay.dbname, relay.slot_name);
	outbox_status_relay_info(rd_kafka_version_str(), NULL);
	before_shmem_exit(relay_on_exit, (Datum) 0);
	/* a named database is shown at once; with '*', once it has the extension */
	if (!relay_all_databases())
		relay_show();

	ereport(relay_all_databases() ? DEBUG1 : LOG,
			(errmsg("outbox relay started for database \"%s\", slot \"%s\"",
					relay.dbname, relay.slot_name)));

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
	outbox_reply_stop();
	relay_destroy_sink();
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
 * The relay's own session settings, whatever the database's or role's
 * defaults say: dead letters must be writable and durable before the slot
 * passes them, and no timeout may cancel the relay's work.
 */
static void
relay_force_settings(void)
{
	static const char *const settings[][2] = {
		{"default_transaction_read_only", "off"},
		{"default_transaction_isolation", "read committed"},
		{"synchronous_commit", "on"},
		{"statement_timeout", "0"},
		{"lock_timeout", "0"},
		{"idle_in_transaction_session_timeout", "0"},
		{"session_replication_role", "origin"},
		{"search_path", "pg_catalog, pg_temp"},
	};
	int			i;

	for (i = 0; i < lengthof(settings); i++)
		SetConfigOption(settings[i][0], settings[i][1], PGC_SUSET,
						PGC_S_OVERRIDE);
}

/*
 * A short transaction of our own, between WAL records (never inside the
 * decoder).  The catalog caches may hold entries read under the historic
 * snapshot, and entries read now must not leak into decoding: invalidate
 * them on both sides, as core does after decoding in logicalfuncs.c.
 * Commit leaves TopMemoryContext current and no resource owner; put back
 * both.  Returns the caller's memory context, for relay_commit_xact().
 */
static MemoryContext
relay_begin_xact_ex(bool catalogs)
{
	MemoryContext caller_cxt = CurrentMemoryContext;

	Assert(!relay.in_decoder);
	if (catalogs)
		InvalidateSystemCaches();
	/* now() is the transaction's start: without this, the worker's start */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	return caller_cxt;
}

static void
relay_commit_xact_ex(MemoryContext caller_cxt, bool catalogs)
{
	CommitTransactionCommand();
	if (catalogs)
		InvalidateSystemCaches();
	if (CurrentResourceOwner == NULL)
		CurrentResourceOwner = AuxProcessResourceOwner;
	MemoryContextSwitchTo(caller_cxt);
}

static MemoryContext
relay_begin_xact(void)
{
	return relay_begin_xact_ex(true);
}

static void
relay_commit_xact(MemoryContext caller_cxt)
{
	relay_commit_xact_ex(caller_cxt, true);
}

/* Abort whatever transaction an error left behind, for a calm retry. */
static void
relay_abort_xact(MemoryContext caller_cxt)
{
	AbortOutOfAnyTransaction();
	InvalidateSystemCaches();
	if (CurrentResourceOwner == NULL)
		CurrentResourceOwner = AuxProcessResourceOwner;
	MemoryContextSwitchTo(caller_cxt);
}

/*
 * The slot's name: <outbox.slot_name>_<database OID>, the relay's own slot,
 * if it exists; else a slot named just outbox.slot_name of our plugin and
 * database (the one slot of a release before 0.4.0), which is kept: its
 * position is where the relay stopped, and a new slot would start a replay;
 * else the relay's own, created.
 *
 * The relay's own slot wins over a slot named outbox.slot_name that
 * appeared after it (releases before 0.5.0 switched to that one and left
 * their own slot behind, retaining WAL for ever, and skipped what the new
 * slot had not seen).  That other slot is not provably the relay's (anyone
 * may create a slot of our plugin), so it is not dropped: relay_show() names
 * it in the log and relay_status (unused_slot) as retaining WAL.
 */
static void
relay_choose_slot_name(void)
{
	char		own[NAMEDATALEN];

	snprintf(own, NAMEDATALEN, "%s_%u", outbox_slot_name, MyDatabaseId);
	if (!relay_slot_is_ours(own, true) &&
		relay_slot_is_ours(outbox_slot_name, true))
		strlcpy(relay.slot_name, outbox_slot_name, NAMEDATALEN);
	else
		strlcpy(relay.slot_name, own, NAMEDATALEN);
}

/*
 * Is the slot named outbox.slot_name, when it is not the relay's, one of our
 * plugin and database that nobody uses?  Shown in relay_status.unused_slot,
 * which this updates (and clears once that slot is gone or in use).
 */
static bool
relay_check_unused_slot(void)
{
	bool		unused;

	unused = strcmp(relay.slot_name, outbox_slot_name) != 0 &&
		relay_slot_is_ours(outbox_slot_name, false);
	outbox_status_relay_info(NULL, unused ? outbox_slot_name : "");
	return unused;
}

/*
 * The relay serves its database: show it in relay_status, and, the first
 * time, log the librdkafka version it runs with and, if there is one, the
 * unused slot (relay_check_unused_slot()) as retaining WAL.
 */
static void
relay_show(void)
{
	static bool announced = false;
	bool		unused;
	XLogRecPtr	restart = InvalidXLogRecPtr;

	outbox_status_show();
	unused = relay_check_unused_slot();
	if (!announced)
	{
		announced = true;
		ereport(LOG,
				(errmsg("outbox relay for database \"%s\" runs with librdkafka %s",
						relay.dbname, rd_kafka_version_str())));
		if (unused && relay_slot_lookup(outbox_slot_name, false, &restart))
			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("outbox relay for database \"%s\" does not use replication slot \"%s\", which retains WAL from %X/%X",
							relay.dbname, outbox_slot_name,
							LSN_FORMAT_ARGS(restart)),
					 errdetail("The relay streams from its own slot \"%s\"; \"%s\", of plugin \"outbox\" in this database, is not in use.",
							   relay.slot_name, outbox_slot_name),
					 errhint("Drop it with pg_drop_replication_slot('%s') unless another client reads it.",
							 outbox_slot_name)));
	}
}

/* Is outbox.databases '*' (read again after every reload)? */
static bool
relay_all_databases(void)
{
	return strcmp(outbox_databases, "*") == 0;
}

/*
 * Is there a slot of that name of our plugin and database (and, unless
 * active_too, not in use)?
 */
static bool
relay_slot_is_ours(const char *name, bool active_too)
{
	return relay_slot_lookup(name, active_too, NULL);
}

/* relay_slot_is_ours(), also giving the slot's restart_lsn if wanted. */
static bool
relay_slot_lookup(const char *name, bool active_too, XLogRecPtr *restart_lsn)
{
	ReplicationSlot *slot;
	bool		ours = false;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	slot = SearchNamedReplicationSlot(name, false);
	if (slot != NULL)
	{
		SpinLockAcquire(&slot->mutex);
		ours = slot->data.database == MyDatabaseId &&
			strcmp(NameStr(slot->data.plugin), "outbox") == 0 &&
			(active_too || slot->active_pid == 0);
		if (ours && restart_lsn != NULL)
			*restart_lsn = slot->data.restart_lsn;
		SpinLockRelease(&slot->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);
	return ours;
}

/*
 * outbox.databases = '*' and this database has no extension: it never had
 * one (a look by the launcher), or it was dropped more than
 * RELAY_ABSENT_GRACE_MS ago and everything decoded since is acknowledged.
 * Drop our slot if there is one (nothing can use it; it would only hold
 * WAL and stop DROP DATABASE), tell the launcher, and go.  The launcher
 * starts a relay here again when CREATE EXTENSION commits.
 */
static void
relay_leave_absent(void)
{
	/* on a standby the slot is the primary's (synchronised) */
	bool		drop;

	relay_teardown(true);
	drop = !RecoveryInProgress() && relay_slot_is_ours(relay.slot_name, false);
	if (drop)
	{
		ereport(LOG,
				(errmsg("outbox relay: extension \"outbox\" is not installed in database \"%s\"; dropping its replication slot \"%s\"",
						relay.dbname, relay.slot_name)));
		ReplicationSlotDrop(relay.slot_name, true);
	}
	outbox_status_absent();
	proc_exit(0);
}

static void
relay_run(void)
{
	for (;;)
	{
		RelayStop	stop;

		CHECK_FOR_INTERRUPTS();
		if (relay_all_databases())
		{
			/*
			 * '*' relays only where the extension is.  A database without
			 * it and without our slot was only looked at; one with our slot
			 * lost its extension, and the relay first delivers what the
			 * slot holds (see relay_stream()).
			 */
			relay_check_extension();
			if (!relay.have_extension && MyReplicationSlot == NULL &&
				!relay_slot_is_ours(relay.slot_name, false))
				relay_leave_absent();
		}
		relay_show();
		if (!relay_ready())
		{
			relay_teardown(true);
			continue;
		}
		/* the slot first: events must be kept even while Kafka is not set */
		if (MyReplicationSlot == NULL && !relay_acquire_slot())
			continue;
		if (!relay_kafka_configured())
			continue;

		do
		{
			stop = relay_stream();
			relay_teardown(stop == RELAY_RESTART);
			if (stop == RELAY_REWIND)
			{
				/*
				 * A relay fenced by a newer producer of its transactional.id
				 * (exactly_once) waits longer: the other one is working, and
				 * starting again fences it in turn.
				 */
				outbox_status_set_state(relay.fenced ? "fenced" : "reconnecting");
				if (relay.fenced)
					relay_wait_for(Max(outbox_retry_interval_ms, RELAY_CALM_WAIT_MS));
				else
					relay_wait(outbox_retry_interval_ms);
				relay.fenced = false;
				if (!relay_ready() || !relay_kafka_configured())
					break;
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
	WaitEvent	events[3];
	int			n;
	int			i;
	char		buf[64];

	/* one wait set for the life of the worker, not an epoll set per wait */
	if (relay.wait_set == NULL)
	{
		relay.wait_set = outbox_create_wait_event_set(3);
		AddWaitEventToSet(relay.wait_set, WL_LATCH_SET, PGINVALID_SOCKET,
						  MyLatch, NULL);
		AddWaitEventToSet(relay.wait_set, WL_SOCKET_READABLE, relay.pipe_rd,
						  NULL, NULL);
		AddWaitEventToSet(relay.wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET,
						  NULL, NULL);
	}
	n = WaitEventSetWait(relay.wait_set, timeout_ms, events, lengthof(events),
						 PG_WAIT_EXTENSION);
	for (i = 0; i < n; i++)
	{
		if (events[i].events & WL_LATCH_SET)
			ResetLatch(MyLatch);
		if (events[i].events & WL_SOCKET_READABLE)
		{
			while (read(relay.pipe_rd, buf, sizeof(buf)) > 0)
				;
		}
	}
	CHECK_FOR_INTERRUPTS();
}

/*
 * Wait the whole timeout: commits and librdkafka's pipe end relay_wait()
 * early, and a rebuilt producer must not come back sooner than meant.
 */
static void
relay_wait_for(long timeout_ms)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													timeout_ms);

	for (;;)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
														   until);

		if (left <= 0)
			break;
		relay_wait(left);
	}
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
	if (SplitDirectoriesString(copy, ',', &items))
	{
		foreach(lc, items)
		{
			const char *item = (const char *) lfirst(lc);
			const char *base = strrchr(item, '/');

			base = base ? base + 1 : item;
			if (strcmp(base, "outbox") == 0 || strcmp(base, "outbox.so") == 0)
				found = true;
		}
	}
	list_free_deep(items);
	pfree(copy);
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

	if (RecoveryInProgress())
	{
		relay_blocked("standby", LOG,
					  "the server is a standby; the relay starts streaming when it is promoted");
		return false;
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
	return true;
}

/*
 * Is Kafka configured?  If not, hold the slot (events stay in the WAL) and
 * wait calmly for a reload.
 */
static bool
relay_kafka_configured(void)
{
	if (outbox_kafka_brokers == NULL || outbox_kafka_brokers[0] == '\0')
	{
		relay_blocked("disabled", LOG,
					  "outbox.kafka_brokers is empty; the slot keeps every event from here on, and the relay streams once it is set and the configuration reloaded");
		return false;
	}
	return true;
}

/* ---------------------------------------------------------------------
 * The slot
 * ---------------------------------------------------------------------
 */

/*
 * Create the slot.  Its initial snapshot shows exactly the transactions it
 * will never decode; it is recorded as the boundary of a replay
 * (src/watermark.c) in the same transaction, and only once that committed
 * is the slot made persistent: whatever happens in between, either the
 * boundary is recorded or the slot is gone (and made again).
 */
static void
relay_create_slot(void)
{
	LogicalDecodingContext *ctx;
	MemoryContext cxt;
	Snapshot	initial;
	bool		record;
	XLogRecPtr	start;

	ereport(LOG,
			(errmsg("outbox relay: creating logical replication slot \"%s\"",
					relay.slot_name)));
	outbox_status_set_state("creating_slot");
	CheckLogicalDecodingRequirements();

	cxt = relay_begin_xact();
	/* the initial snapshot needs repeatable read and no snapshot yet */
	XactIsoLevel = XACT_REPEATABLE_READ;
	record = outbox_watermark_available();
	if (!record && OidIsValid(get_extension_oid("outbox", true)))
		ereport(WARNING,
				(errmsg("outbox relay: extension \"outbox\" in database \"%s\" is older than 0.3.0; rows committed before the new slot are not published again",
						relay.dbname),
				 errhint("Run ALTER EXTENSION outbox UPDATE to get slot-loss recovery.")));
	InvalidateCatalogSnapshot();
	outbox_slot_create(relay.slot_name);
	ctx = CreateInitDecodingContext("outbox", NIL, true, InvalidXLogRecPtr,
									XL_ROUTINE(.page_read = read_local_xlog_page,
											   .segment_open = wal_segment_open,
											   .segment_close = wal_segment_close),
									NULL, NULL, NULL);
	creating_ctx = ctx;
	DecodingContextFindStartpoint(ctx);
	start = MyReplicationSlot->data.confirmed_flush;
	if (record)
	{
		initial = SnapBuildInitialSnapshot(ctx->snapshot_builder);
		outbox_watermark_begin_replay(initial, start, relay.slot_name);
	}
	FreeDecodingContext(ctx);
	creating_ctx = NULL;
	relay_commit_xact(cxt);

	ReplicationSlotPersist();
	/* also ends the slot's hold on data rows, needed only for the snapshot */
	ReplicationSlotRelease();
	ereport(LOG,
			(errmsg("outbox relay: created replication slot \"%s\" at %X/%X",
					relay.slot_name, LSN_FORMAT_ARGS(start))));
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
	const char *cause = NULL;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	slot = SearchNamedReplicationSlot(relay.slot_name, false);
	if (slot != NULL)
	{
		SpinLockAcquire(&slot->mutex);
		active_pid = slot->active_pid;
		database = slot->data.database;
		plugin = slot->data.plugin;
		invalidated = outbox_slot_is_invalidated(slot);
		if (invalidated)
			cause = outbox_slot_invalidation_cause(slot);
		SpinLockRelease(&slot->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);

	if (slot == NULL)
	{
		MemoryContext cxt = CurrentMemoryContext;
		char	   *problem = NULL;

		PG_TRY();
		{
			relay_create_slot();
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
			/*
			 * As a walsender cleans up: locks first, then the WAL segment the
			 * decoding context read (a plain file descriptor; the context's
			 * memory goes with the transaction), then the slot (an ephemeral
			 * slot is dropped by its release).
			 */
			LWLockReleaseAll();
			if (creating_ctx != NULL)
			{
				wal_segment_close(creating_ctx->reader);
				creating_ctx = NULL;
			}
			if (MyReplicationSlot != NULL)
				ReplicationSlotRelease();
			relay_abort_xact(cxt);
			problem = psprintf("could not create replication slot \"%s\": %s%s%s",
							   relay.slot_name, edata->message,
							   edata->hint ? " " : "",
							   edata->hint ? edata->hint : "");
			FreeErrorData(edata);
		}
		PG_END_TRY();
		if (problem != NULL)
		{
			relay_blocked("misconfigured", WARNING, "%s", problem);
			pfree(problem);
			return false;
		}
		return relay_acquire_slot();
	}
	if (database != MyDatabaseId || strcmp(NameStr(plugin), "outbox") != 0)
	{
		relay_blocked("misconfigured", WARNING,
					  "replication slot \"%s\" is not an \"outbox\" slot of database \"%s\" (it uses plugin \"%s\"); drop it or set outbox.slot_name",
					  relay.slot_name, relay.dbname, NameStr(plugin));
		return false;
	}
	if (invalidated)
	{
		/*
		 * The slot can never decode again.  A new one is created, and the
		 * rows of outbox.messages the watermark does not cover are published
		 * before it streams (src/watermark.c).
		 */
		ereport(WARNING,
				(errmsg("outbox relay: replication slot \"%s\" was invalidated because %s; dropping it and recovering from outbox.messages",
						relay.slot_name, cause),
				 errdetail("Rows of outbox.messages not covered by the delivery watermark are published again before the relay streams from a new slot; events written only to the WAL (outbox.emit()) that Kafka had not acknowledged are lost.")));
		outbox_status_error("replication slot \"%s\" was invalidated because %s; recovered from outbox.messages",
							relay.slot_name, cause);
		outbox_status_set_state("slot_invalidated");
		ReplicationSlotDrop(relay.slot_name, true);
		return relay_acquire_slot();
	}
	if (active_pid != 0)
	{
		relay_blocked("slot_busy", WARNING,
					  "replication slot \"%s\" is in use by process %d; waiting for it to be released",
					  relay.slot_name, (int) active_pid);
		return false;
	}

	outbox_slot_acquire(relay.slot_name, true);
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
	changed = relay.delivery != outbox_delivery ||
		strcmp(relay.progress_topic, outbox_progress_topic) != 0 ||
		strcmp(relay.brokers, outbox_kafka_brokers) != 0 ||
		strcmp(relay.guc_props, outbox_kafka_properties) != 0 ||
		file_props == NULL || strcmp(relay.file_props, file_props) != 0;
	if (file_props)
		pfree(file_props);
	else
		pfree(problem);
	return changed;
}

static bool
relay_start_sink(void)
{
	char	   *problem;
	char	   *file_props;
	char	   *errstr = NULL;
	char		txn_id[EOS_KEY_LEN];
	uint8		mac_key[EOS_MAC_LEN];
	bool		have_mac_key = false;

	file_props = read_config_file(outbox_kafka_config_file, &problem);
	if (file_props == NULL)
	{
		relay_blocked("misconfigured", WARNING, "%s", problem);
		pfree(problem);
		return false;
	}
	if (outbox_delivery == OUTBOX_DELIVERY_EXACTLY_ONCE)
	{
		char		incarnation[OUTBOX_INCARNATION_LEN + 1];
		MemoryContext cxt;

		/* bound to this history: see eos.h and incarnation.h */
		outbox_incarnation(incarnation);
		outbox_eos_key(txn_id, sizeof(txn_id), relay.slot_name, incarnation);
		cxt = relay_begin_xact();
		have_mac_key = outbox_message_key_derive(EOS_MAC_LABEL, mac_key);
		relay_commit_xact(cxt);
		if (!have_mac_key)
		{
			/* no extension yet (or one without a key): nothing to sign with */
			pfree(file_props);
			relay_blocked("waiting_for_extension", LOG,
						  "exactly-once delivery waits for the extension: this database has no outbox message key to authenticate progress records with");
			return false;
		}
	}
	relay.sink = outbox_sink_create(outbox_kafka_brokers, file_props,
									outbox_kafka_properties,
									outbox_delivery == OUTBOX_DELIVERY_EXACTLY_ONCE ?
									txn_id : NULL,
									relay.acked, relay.pipe_wr, &errstr);
	relay.acked = NULL;			/* taken over by the sink */
	if (relay.sink == NULL)
	{
		pfree(file_props);
		relay_blocked("misconfigured", WARNING,
					  "invalid Kafka producer configuration: %s",
					  errstr ? errstr : "unknown error");
		free(errstr);
		return false;
	}
	if (have_mac_key)
		outbox_sink_set_progress_key(relay.sink, mac_key);

	/*
	 * exactly_once: fence older producers of our transactional.id and read
	 * what Kafka has committed, before anything is produced.
	 */
	if (!outbox_sink_start_transactions(relay.sink, outbox_progress_topic,
										&errstr))
	{
		pfree(file_props);
		relay_destroy_sink();
		relay_blocked("kafka_unreachable", WARNING,
					  "exactly-once delivery cannot start: %s",
					  errstr ? errstr : "unknown error");
		free(errstr);
		return false;
	}
	outbox_sink_check_history(relay.sink, GetXLogInsertRecPtr());
	relay.delivery = outbox_delivery;
	relay.progress_topic = MemoryContextStrdup(TopMemoryContext, outbox_progress_topic);
	relay.brokers = MemoryContextStrdup(TopMemoryContext, outbox_kafka_brokers);
	relay.guc_props = MemoryContextStrdup(TopMemoryContext, outbox_kafka_properties);
	relay.file_props = MemoryContextStrdup(TopMemoryContext, file_props);
	pfree(file_props);
	return true;
}

static RelayStop
relay_stream(void)
{
	static List *options = NIL;
	WatermarkReplay replay;
	uint64		replay_rows = 0;
	bool		replay_pending;
	RelayStop	stop;

	/*
	 * A new slot of a database with rows: publish the rows no watermark
	 * covers first (src/watermark.c).  Acknowledgements kept over a rewind
	 * name transactions by commit LSN, which replayed rows share: not used.
	 */
	replay_pending = relay_read_replay(&replay, &replay_rows);
	if (replay_pending && relay.acked != NULL &&
		outbox_delivery != OUTBOX_DELIVERY_EXACTLY_ONCE)
	{
		outbox_sink_free_acked(relay.acked);
		relay.acked = NULL;
	}
	if (!relay_start_sink())
		return RELAY_RESTART;
	/* a clone's, a copy's or a promoted standby's id: re-drawn (identity.c) */
	{
		MemoryContext cxt = relay_begin_xact();

		outbox_installation_rebind();
		relay_commit_xact(cxt);
	}
	outbox_sink_set_wait_hook(relay.sink, relay_wait_hook, NULL);
	outbox_sink_set_database(relay.sink, relay.dbname);
	outbox_watermark_forget();
	if (replay_pending)
	{
		ereport(LOG,
				(errmsg("outbox relay: slot \"%s\" starts at %X/%X; publishing the " UINT64_FORMAT " row(s) of outbox.messages committed before it that the delivery watermark does not cover",
						relay.slot_name, LSN_FORMAT_ARGS(replay.boundary_lsn),
						replay_rows),
				 replay.has_covered ? 0 :
				 errdetail("There is no delivery watermark of this system yet: every row without a verdict or dead letter is published.")));
		relay_replay_in_kafka(&replay, &replay_rows);
		outbox_status_replay_left(replay_rows);
		/* exactly_once: the progress record fences replayed rows by id */
		outbox_sink_set_replay(relay.sink, replay.boundary_lsn);
		stop = relay_replay(&replay, replay_rows);
		if (stop != RELAY_CONTINUE)
			return stop;
		outbox_sink_set_replay(relay.sink, InvalidXLogRecPtr);
		outbox_sink_set_replay_source(relay.sink, NULL);
	}

	/*
	 * Only now is a blocked state over: relay_ready() and the slot may well
	 * pass while the producer cannot be built, and a problem that persists
	 * must be logged once, not on every retry.
	 */
	relay.logged_state[0] = '\0';
	relay.logged_msg[0] = '\0';

	if (options == NIL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		/* built once: CreateDecodingContext() keeps the list */
		options = list_make1(makeDefElem("format", (Node *) makeString("binary"), -1));
		MemoryContextSwitchTo(old);
	}
	relay.ctx = CreateDecodingContext(InvalidXLogRecPtr, options, false,
									  XL_ROUTINE(.page_read = read_local_xlog_page,
												 .segment_open = wal_segment_open,
												 .segment_close = wal_segment_close),
									  relay_prepare_write, relay_do_write,
									  relay_update_progress);
	XLogBeginRead(relay.ctx->reader, MyReplicationSlot->data.restart_lsn);

	relay.extension_checked = 0;
	relay_check_extension();
	/* from now on committing backends wake the relay */
	outbox_status_listen(true);
	ereport(LOG,
			(errmsg("outbox relay streaming slot \"%s\" from %X/%X to Kafka at %s",
					relay.slot_name,
					LSN_FORMAT_ARGS(MyReplicationSlot->data.confirmed_flush),
					outbox_kafka_brokers)));

	for (;;)
	{
		XLogRecPtr	flush;
		TimestampTz batch_start;
		uint64		n = 0;
		MemoryContext old;
		MemoryContext decode_cxt;

		stop = relay_service(false);
		if (stop != RELAY_CONTINUE)
			return stop;

		/*
		 * Decode what is flushed, in bounded batches.  The WAL reader keeps
		 * its decode buffer in the memory context current at its first read,
		 * so read in the decoding context's, never in the per-loop one.  The
		 * wait hook may leave the decoder (see the file header).
		 */
		old = MemoryContextSwitchTo(relay.ctx->context);
		decode_cxt = CurrentMemoryContext;
		flush = relay_decode_limit();
		batch_start = GetCurrentTimestamp();
		relay.leave_with = RELAY_CONTINUE;
		PG_TRY();
		{
			while (relay.ctx->reader->EndRecPtr < flush)
			{
				XLogRecord *record;
				char	   *errm = NULL;
				const char *why;

				record = XLogReadRecord(relay.ctx->reader, &errm);
				if (errm)
					ereport(ERROR,
							(errcode(ERRCODE_DATA_CORRUPTED),
							 errmsg("outbox relay could not read WAL at %X/%X: %s",
									LSN_FORMAT_ARGS(relay.ctx->reader->EndRecPtr),
									errm)));
				if (record != NULL && relay.standby_gate &&
					relay.ctx->reader->EndRecPtr > flush)
				{
					/*
					 * It ends past what the standbys were asked to confirm
					 * (the flush position was inside it): read it again once
					 * they confirmed a newer target, which covers it.
					 */
					XLogBeginRead(relay.ctx->reader, relay.ctx->reader->ReadRecPtr);
					relay.standby_target = InvalidXLogRecPtr;
					break;
				}
				if (record != NULL)
				{
					relay.in_decoder = true;
					LogicalDecodingProcessRecord(relay.ctx, relay.ctx->reader);
					relay.in_decoder = false;
				}

				if (outbox_sink_failed(relay.sink, &why))
					break;
				relay_write_dead_letters();
				if ((++n & 255) == 0)
				{
					stop = relay_service(false);
					if (stop != RELAY_CONTINUE)
						break;
					if (TimestampDifferenceExceeds(batch_start, GetCurrentTimestamp(),
												   RELAY_BATCH_MS))
						break;
				}
			}
		}
		PG_CATCH();
		{
			stop = relay_left_decoder(decode_cxt);
		}
		PG_END_TRY();
		MemoryContextSwitchTo(old);
		if (stop != RELAY_CONTINUE)
			return stop;

		stop = relay_service(false);
		if (stop != RELAY_CONTINUE)
			return stop;
		relay_watermark_tick();
		relay_eos_capture_tick();
		outbox_schedule_step(relay_try_xact, !outbox_sink_unreachable(relay.sink));
		relay_reply_tick();
		relay_publish_status(n == 0);

		if (relay.ctx->reader->EndRecPtr >= flush)
		{
			/* Caught up: check the slot, then sleep until woken. */
			bool		invalidated;
			const char *why;

			SpinLockAcquire(&MyReplicationSlot->mutex);
			invalidated = outbox_slot_is_invalidated(MyReplicationSlot);
			SpinLockRelease(&MyReplicationSlot->mutex);
			if (invalidated)
				return RELAY_RESTART;
			relay_check_extension();
			UpdateDecodingStats(relay.ctx);
			/* exactly_once: end the Kafka transaction, nothing more is coming */
			outbox_sink_flush(relay.sink);
			if (outbox_sink_failed(relay.sink, &why))
				continue;
			if (relay_all_databases() && !relay.have_extension &&
				TimestampDifferenceExceeds(relay.absent_since, GetCurrentTimestamp(),
										   RELAY_ABSENT_GRACE_MS) &&
				outbox_sink_idle(relay.sink) && !relay.dead_letters_blocked)
				relay_leave_absent();	/* all delivered: nothing is lost */
			{
				long		timeout = relay.reply_more ? 0 :
					(relay.standby_gate && flush < outbox_flush_rec_ptr()) ||
					relay.poll_wal ? RELAY_POLL_MS : RELAY_IDLE_TIMEOUT_MS;
				long		held = outbox_reply_wait_ms();

				/* a verdict waiting for a row lock is tried again in time */
				if (held >= 0 && held < timeout)
					timeout = held;
				relay_wait(timeout);
			}
		}
	}
}

/*
 * The service step: everything that must keep happening, whether the relay
 * decodes, waits for WAL, or waits inside the decoder for room in the
 * in-flight window (in_decoder).  Live transactions happen only outside the
 * decoder.  Returns what the stream must do next.
 */
static RelayStop
relay_service(bool in_decoder)
{
	const char *why;
	MemoryContext old;
	RelayStop	stop = RELAY_CONTINUE;

	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		if (outbox_kafka_brokers[0] == '\0')
		{
			ereport(LOG,
					(errmsg("outbox relay: outbox.kafka_brokers was emptied, stopping the producer")));
			return RELAY_RESTART;
		}
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
	if (outbox_sink_unreachable(relay.sink) &&
		TimestampDifferenceExceeds(relay.last_probe, GetCurrentTimestamp(),
								   RELAY_PROBE_MS))
	{
		outbox_sink_probe(relay.sink, RELAY_PROBE_TIMEOUT_MS);
		relay.last_probe = GetCurrentTimestamp();
	}
	if (!in_decoder)
		relay_write_dead_letters();
	if (outbox_sink_failed(relay.sink, &why))
	{
		ereport(WARNING,
				(errmsg("outbox relay: %s; rebuilding the producer and resuming from the slot's confirmed position",
						why)));
		outbox_status_error("%s", why);
		relay.fenced = outbox_sink_fenced(relay.sink);
		stop = RELAY_REWIND;
	}
	else
	{
		relay_advance(false);
		relay_publish_status(in_decoder);
	}

	MemoryContextSwitchTo(old);
	return stop;
}

/*
 * In a PG_CATCH around decoding (or the replay's hand-over to the sink):
 * the wait hook left it (RELAY_LEAVE_DECODING), so clean up and return
 * why; any other error is thrown on.
 */
static RelayStop
relay_left_decoder(MemoryContext cxt)
{
	relay.in_decoder = false;
	if (geterrcode() != RELAY_LEAVE_DECODING)
		PG_RE_THROW();
	FlushErrorState();
	relay_abort_xact(cxt);
	return relay.leave_with;
}

/*
 * Runs while the sink waits for room inside the decoder: the service step,
 * and a way out when the producer must go.
 */
static void
relay_wait_hook(void *arg)
{
	RelayStop	stop;

	if (!relay.in_decoder)
		return;
	stop = relay_service(true);
	if (stop != RELAY_CONTINUE)
	{
		relay.leave_with = stop;
		ereport(ERROR,
				(errcode(RELAY_LEAVE_DECODING),
				 errmsg("outbox relay leaves the decoder to rebuild its producer")));
	}
}

/*
 * Are tables adopted (outbox.adopt())?  Their inserts call no outbox
 * function, so no commit wakes the relay: while there are any, it looks for
 * new WAL every RELAY_POLL_MS instead of sleeping up to a second.
 */
static bool
relay_have_adoptions(void)
{
	Oid			nsp = get_namespace_oid(OUTBOX_SCHEMA_NAME, true);
	bool		found;

	if (!OidIsValid(nsp) ||
		!OidIsValid(get_relname_relid(OUTBOX_ADOPTED_TABLE_NAME, nsp)))
		return false;
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	found = SPI_execute("SELECT 1 FROM outbox.adopted LIMIT 1", true, 1) == SPI_OK_SELECT &&
		SPI_processed > 0;
	PopActiveSnapshot();
	SPI_finish();
	return found;
}

/*
 * Is the extension installed?  Looked up at most once a second, while
 * caught up: relay_status follows CREATE and DROP EXTENSION.  Decoding goes
 * on either way (without the extension there is nothing to find).
 */
static void
relay_check_extension(void)
{
	TimestampTz now;
	MemoryContext cxt;
	bool		had = relay.have_extension;

	now = GetCurrentTimestamp();
	if (relay.extension_checked != 0 &&
		!TimestampDifferenceExceeds(relay.extension_checked, now,
									RELAY_EXTENSION_CHECK_MS))
		return;
	relay.extension_checked = now;

	cxt = relay_begin_xact();
	relay.have_extension = OidIsValid(get_extension_oid("outbox", true));
	relay.poll_wal = relay.have_extension && relay_have_adoptions();
	relay_commit_xact(cxt);
	if (relay.have_extension)
		relay.absent_since = 0;
	else if (relay.absent_since == 0)
		relay.absent_since = now;

	if (!relay.have_extension && (had || strcmp(relay.logged_state, "waiting_for_extension") != 0))
	{
		ereport(LOG,
				(errmsg("outbox relay: extension \"outbox\" is not installed in database \"%s\"; the slot is ready and events will be relayed once CREATE EXTENSION outbox has run",
						relay.dbname)));
		strlcpy(relay.logged_state, "waiting_for_extension", sizeof(relay.logged_state));
	}
	else if (relay.have_extension && !had)
		relay.logged_state[0] = '\0';
	relay_set_state();
}

/*
 * The streaming states, decided in one place: waiting_for_extension,
 * kafka_unreachable, dead_letters_blocked, or streaming.
 */
static void
relay_set_state(void)
{
	if (relay.replaying)
		outbox_status_set_state("recovering");
	else if (!relay.have_extension)
		outbox_status_set_state("waiting_for_extension");
	else if (relay.sink != NULL && outbox_sink_unreachable(relay.sink))
		outbox_status_set_state("kafka_unreachable");
	else if (relay.standby_waiting)
		outbox_status_set_state("waiting_for_standbys");
	else if (relay.dead_letters_blocked)
		outbox_status_set_state("dead_letters_blocked");
	else
		outbox_status_set_state("streaming");
}

/* Destroy the producer, keeping its counters for relay_status. */
static void
relay_destroy_sink(void)
{
	uint64		delivered;
	uint64		dead_lettered;
	TimestampTz last_commit;
	TimestampTz oldest;

	if (relay.sink == NULL)
		return;
	outbox_sink_stats(relay.sink, &delivered, &dead_lettered, &last_commit, &oldest);
	relay.delivered_base += delivered;
	relay.dead_lettered_base += dead_lettered;
	/* events known acknowledged are not produced again after a rewind */
	relay.acked = outbox_sink_take_acked(relay.sink);
	outbox_sink_destroy(relay.sink);
	relay.sink = NULL;
}

/* Free the producer and the decoding context; optionally the slot too. */
static void
relay_teardown(bool release_slot)
{
	outbox_status_listen(false);
	outbox_reply_stop();
	relay.reply_more = false;
	relay_destroy_sink();
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
	if (relay.progress_topic)
		pfree(relay.progress_topic);
	relay.brokers = relay.guc_props = relay.file_props = NULL;
	relay.progress_topic = NULL;
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
	/* replaying rows after slot loss: the slot waits until they are acked */
	if (relay.ctx == NULL)
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
	relay_check_unused_slot();
	outbox_sink_stats(relay.sink, &delivered, &dead_lettered, &last_commit, &oldest);
	if (relay.ctx == NULL)
	{
		/* replaying: nothing decoded yet */
		outbox_status_progress(MyReplicationSlot->data.confirmed_flush,
							   InvalidXLogRecPtr,
							   relay.delivered_base + delivered,
							   outbox_sink_in_flight(relay.sink),
							   relay.dead_lettered_base + dead_lettered,
							   last_commit, oldest);
		return;
	}
	SpinLockAcquire(&MyReplicationSlot->mutex);
	confirmed = MyReplicationSlot->data.confirmed_flush;
	SpinLockRelease(&MyReplicationSlot->mutex);
	/* counters are monotonic for the life of the worker */
	outbox_status_progress(confirmed, relay.ctx->reader->EndRecPtr,
						   relay.delivered_base + delivered,
						   outbox_sink_in_flight(relay.sink),
						   relay.dead_lettered_base + dead_lettered,
						   last_commit, oldest);
	relay_set_state();
}

/* ---------------------------------------------------------------------
 * Delivery watermark and slot-loss recovery (src/watermark.c)
 * ---------------------------------------------------------------------
 */

/*
 * Run fn(arg) in a transaction of the relay's own (between WAL records).  On
 * an error, abort it and return the error's message, allocated in cxt (the
 * caller's context, made current again either way); NULL on success.
 * catalogs: fn may read catalogs, so the caches are invalidated around it
 * (relay_begin_xact()); false only for what reads none.
 */
static char *
relay_try_xact_ex(void (*fn) (void *), void *arg, MemoryContext cxt,
				  bool catalogs)
{
	char	   *failure = NULL;

	PG_TRY();
	{
		(void) relay_begin_xact_ex(catalogs);
		fn(arg);
		relay_commit_xact_ex(cxt, catalogs);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		relay_abort_xact(cxt);
		failure = pstrdup(edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return failure;
}

static char *
relay_try_xact(void (*fn) (void *), void *arg, MemoryContext cxt)
{
	return relay_try_xact_ex(fn, arg, cxt, true);
}

/* What relay_watermark_tick() hands to watermark_step(). */
typedef struct WatermarkArgs
{
	XLogRecPtr	confirmed;
	uint64		delivered;
} WatermarkArgs;

static void
watermark_step(void *arg)
{
	WatermarkArgs *a = (WatermarkArgs *) arg;

	if (outbox_watermark_available())
		outbox_watermark_step(a->confirmed, a->delivered, relay.slot_name);
}

/* Events acknowledged since the worker started. */
static uint64
relay_delivered(void)
{
	uint64		delivered = 0;
	uint64		dead_lettered;
	TimestampTz last_commit;
	TimestampTz oldest;

	if (relay.sink != NULL)
		outbox_sink_stats(relay.sink, &delivered, &dead_lettered,
						  &last_commit, &oldest);
	return relay.delivered_base + delivered;
}

/*
 * Take a watermark capture and write the newest one the slot confirmed
 * past, at most once a second and only while events are delivered.  A
 * failure is logged once and costs nothing but duplicates after a slot
 * loss; the relay streams on.
 */
static void
relay_watermark_tick(void)
{
	XLogRecPtr	confirmed;
	uint64		delivered = relay_delivered();
	MemoryContext cxt = CurrentMemoryContext;
	char	   *failure;
	WatermarkArgs args;

	if (!relay.have_extension)
		return;
	SpinLockAcquire(&MyReplicationSlot->mutex);
	confirmed = MyReplicationSlot->data.confirmed_flush;
	SpinLockRelease(&MyReplicationSlot->mutex);
	if (!outbox_watermark_due(confirmed, delivered))
		return;

	args.confirmed = confirmed;
	args.delivered = delivered;
	failure = relay_try_xact(watermark_step, &args, cxt);

	if (failure != NULL && !relay.watermark_failed)
	{
		ereport(WARNING,
				(errmsg("outbox relay could not write its delivery watermark: %s", failure),
				 errdetail("Streaming goes on; should the slot be lost before a watermark is written, more rows are published twice.")));
		outbox_status_error("could not write the delivery watermark: %s", failure);
	}
	else if (failure == NULL && relay.watermark_failed)
		ereport(LOG,
				(errmsg("outbox relay: the delivery watermark can be written again")));
	relay.watermark_failed = (failure != NULL);
	if (failure)
		pfree(failure);
}

/* Take a snapshot for the progress records (relay_eos_capture_tick()). */
static void
eos_capture_step(void *arg)
{
	WatermarkSnapshot snap;
	XLogRecPtr	reached;

	if (outbox_watermark_capture(&snap, &reached))
		outbox_sink_eos_capture(relay.sink, reached, snap.xmin, snap.xmax,
								snap.xip, snap.nxip);
}

/*
 * exactly_once: while events are delivered, take a snapshot every
 * EOS_CAPTURE_MS for the progress records, which name the transactions in
 * Kafka by it (so that a replay after slot loss skips their rows).  A
 * failure costs only duplicates after a slot loss: it is not reported.
 */
static void
relay_eos_capture_tick(void)
{
#define EOS_CAPTURE_MS 100
	MemoryContext cxt = CurrentMemoryContext;
	uint64		delivered;
	TimestampTz now;
	char	   *failure;

	if (!relay.have_extension || relay.sink == NULL ||
		relay.delivery != OUTBOX_DELIVERY_EXACTLY_ONCE)
		return;
	now = GetCurrentTimestamp();
	if (!TimestampDifferenceExceeds(relay.eos_captured_at, now, EOS_CAPTURE_MS))
		return;
	delivered = relay_delivered();
	if (delivered == relay.eos_captured_delivered)
		return;
	relay.eos_captured_at = now;
	relay.eos_captured_delivered = delivered;
	/* a snapshot reads no catalog: the caches are kept */
	failure = relay_try_xact_ex(eos_capture_step, NULL, cxt, false);
	if (failure != NULL)
	{
		elog(DEBUG1, "outbox relay: no snapshot for the progress record: %s", failure);
		pfree(failure);
	}
}

/*
 * Apply a bounded batch of replies from outbox.reply_topic (src/reply.c),
 * with the Kafka settings the producer was built with.
 */
static void
relay_reply_tick(void)
{
	MemoryContext old;

	relay.reply_more = false;
	if (!relay.have_extension)
	{
		outbox_reply_stop();
		return;
	}
	/* reset by the next relay_service() */
	old = MemoryContextSwitchTo(relay.loop_cxt);
	relay.reply_more = outbox_reply_step(relay_try_xact, relay.dbname,
										 relay.brokers, relay.file_props,
										 relay.guc_props, relay.pipe_wr);
	MemoryContextSwitchTo(old);
}

/* Is a replay pending?  If so, count its rows.  Allocates in the caller's context. */
static bool
relay_read_replay(WatermarkReplay *replay, uint64 *count)
{
	MemoryContext cxt = CurrentMemoryContext;
	bool		pending = false;

	*count = 0;
	MemoryContextReset(relay.replay_cxt);
	(void) relay_begin_xact();
	if (OidIsValid(get_extension_oid("outbox", true)) &&
		outbox_watermark_available())
	{
		MemoryContextSwitchTo(relay.replay_cxt);
		pending = outbox_watermark_replay_pending(replay);
		if (pending)
			*count = outbox_watermark_replay_count(replay);
	}
	relay_commit_xact(cxt);
	return pending;
}

/*
 * exactly_once: the last committed progress record names the transactions
 * whose events are in Kafka, newer than the watermark: the replay skips
 * their rows (a copy in the replay's context, for the sink may be rebuilt
 * while it runs).  Counts the rows again.
 */
static void
relay_replay_in_kafka(WatermarkReplay *replay, uint64 *count)
{
	const EosDelivered *in_kafka = outbox_sink_eos_delivered(relay.sink);
	MemoryContext cxt = CurrentMemoryContext;
	EosDelivered *copy;
	uint64		before = *count;

	if (in_kafka == NULL || (!in_kafka->has_snapshot && in_kafka->nxids == 0))
		return;
	copy = MemoryContextAllocZero(relay.replay_cxt, sizeof(EosDelivered));
	*copy = *in_kafka;
	copy->xip = MemoryContextAlloc(relay.replay_cxt, sizeof(uint64) * (in_kafka->nxip + 1));
	if (in_kafka->nxip > 0)
		memcpy(copy->xip, in_kafka->xip, sizeof(uint64) * in_kafka->nxip);
	copy->xids = MemoryContextAlloc(relay.replay_cxt, sizeof(uint64) * (in_kafka->nxids + 1));
	if (in_kafka->nxids > 0)
		memcpy(copy->xids, in_kafka->xids, sizeof(uint64) * in_kafka->nxids);
	replay->in_kafka = copy;

	(void) relay_begin_xact();
	*count = outbox_watermark_replay_count(replay);
	relay_commit_xact(cxt);
	ereport(LOG,
			(errmsg("outbox relay: exactly-once: " UINT64_FORMAT " of those row(s) are in Kafka by the last committed progress record and are not published again",
					before - Min(before, *count))));
}

/*
 * Publish the rows a new slot will never decode and no watermark covers,
 * in id order, then make the slot's start the watermark.  Runs before the
 * decoding context exists; the service step keeps running (the wait hook
 * serves it while the sink waits for room), but the slot does not move.
 */
/*
 * relay_status.replay_left while replaying: rows not yet produced, plus rows
 * produced and not yet acknowledged (all that is in flight is replayed rows).
 */
static void
relay_replay_status(uint64 total, uint64 produced)
{
	uint64		left = total > produced ? total - produced : 0;

	outbox_status_replay_left(left + outbox_sink_in_flight(relay.sink));
}

static RelayStop
relay_replay(WatermarkReplay *replay, uint64 total)
{
#define REPLAY_CHUNK 1000
	MemoryContext cxt = CurrentMemoryContext;
	MemoryContext chunk_cxt;
	StringInfoData frames;
	int		   *lengths;
	uint64		replayed = 0;
	RelayStop	stop = RELAY_CONTINUE;

	chunk_cxt = AllocSetContextCreate(cxt, "outbox replay chunk",
									  ALLOCSET_DEFAULT_SIZES);
	relay.replaying = true;
	relay_set_state();
	for (;;)
	{
		int			examined;
		int			published;
		int			i;
		Size		off = 0;

		MemoryContextReset(chunk_cxt);
		MemoryContextSwitchTo(chunk_cxt);
		initStringInfo(&frames);
		lengths = palloc(sizeof(int) * 2 * REPLAY_CHUNK);
		(void) relay_begin_xact();
		MemoryContextSwitchTo(chunk_cxt);
		examined = outbox_watermark_replay_chunk(replay, REPLAY_CHUNK, &frames,
												 lengths, &published);
		{
			/* rows of this installation: its (rebound) id, read now */
			char		source[OUTBOX_INSTALLATION_ID_LEN + 1];

			outbox_sink_set_replay_source(relay.sink,
										  outbox_installation_id(source) ? source : NULL);
		}
		relay_commit_xact(chunk_cxt);
		if (examined == 0)
			break;

		/* hand the frames over; the wait hook serves while there is no room */
		relay.leave_with = RELAY_CONTINUE;
		PG_TRY();
		{
			relay.in_decoder = true;
			for (i = 0; i < 2 * published; i++)
			{
				outbox_sink_add_frame(relay.sink, frames.data + off, lengths[i]);
				off += lengths[i];
			}
			relay.in_decoder = false;
		}
		PG_CATCH();
		{
			stop = relay_left_decoder(chunk_cxt);
		}
		PG_END_TRY();
		if (stop != RELAY_CONTINUE)
			break;

		replayed += published;
		relay_replay_status(total, replayed);
		stop = relay_service(false);
		if (stop != RELAY_CONTINUE)
			break;
	}

	/* everything acknowledged (or dead-lettered) before the slot may move */
	while (stop == RELAY_CONTINUE && !outbox_sink_idle(relay.sink))
	{
		outbox_sink_flush(relay.sink);
		relay_replay_status(total, replayed);
		relay_wait(100);
		stop = relay_service(false);
	}
	MemoryContextSwitchTo(cxt);
	MemoryContextDelete(chunk_cxt);
	relay.replaying = false;
	if (stop != RELAY_CONTINUE)
	{
		ereport(LOG,
				(errmsg("outbox relay: replay interrupted after " UINT64_FORMAT " row(s); it starts over",
						replayed)));
		return stop;
	}

	(void) relay_begin_xact();
	outbox_watermark_finish_replay(replay);
	relay_commit_xact(cxt);
	outbox_status_replay_left(0);
	ereport(LOG,
			(errmsg("outbox relay: published " UINT64_FORMAT " row(s) of outbox.messages again after the slot change; streaming from slot \"%s\"",
					replayed, relay.slot_name)));
	return RELAY_CONTINUE;
}

/*
 * How far the relay may decode: the flushed WAL, and with a failover slot
 * (17 and later) no further than every standby in synchronized_standby_slots
 * confirmed, as a walsender would, so that no event reaches Kafka that a
 * promoted standby does not have.
 */
static XLogRecPtr
relay_decode_limit(void)
{
	XLogRecPtr	flush = outbox_flush_rec_ptr();

	relay.standby_gate = outbox_slot_waits_for_standbys(MyReplicationSlot);
	if (!relay.standby_gate)
		return flush;
	if (XLogRecPtrIsInvalid(relay.standby_target) ||
		relay.standby_target <= relay.ctx->reader->EndRecPtr)
		relay.standby_target = flush;
	if (outbox_standbys_confirmed(relay.standby_target, DEBUG1))
	{
		if (relay.standby_waiting)
			ereport(LOG,
					(errmsg("outbox relay: the standbys in synchronized_standby_slots confirmed %X/%X; decoding goes on",
							LSN_FORMAT_ARGS(relay.standby_target))));
		relay.standby_wait_since = 0;
		relay.standby_waiting = false;
		return relay.standby_target;
	}

	/* a standby that lags or a slot that is missing: say so, once */
	if (relay.standby_wait_since == 0)
		relay.standby_wait_since = GetCurrentTimestamp();
	else if (!relay.standby_waiting &&
			 TimestampDifferenceExceeds(relay.standby_wait_since,
										GetCurrentTimestamp(),
										RELAY_STANDBY_WARN_MS))
	{
		(void) outbox_standbys_confirmed(relay.standby_target, WARNING);
		ereport(WARNING,
				(errmsg("outbox relay: waiting for the standbys in synchronized_standby_slots to confirm %X/%X before decoding further",
						LSN_FORMAT_ARGS(relay.standby_target)),
				 errhint("Events reach Kafka only once every standby named there has them; fix or remove the standby's slot from synchronized_standby_slots.")));
		outbox_status_error("waiting for the standbys in synchronized_standby_slots to confirm %X/%X",
							LSN_FORMAT_ARGS(relay.standby_target));
		relay.standby_waiting = true;
	}
	return relay.ctx->reader->EndRecPtr;
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

/* The dead letters insert_dead_letters() writes. */
typedef struct DeadLetterArgs
{
	SinkDeadLetter *dls;
	int			n;
} DeadLetterArgs;

/* Insert the dead letters handed out by the sink, through SPI. */
static void
insert_dead_letters(void *arg)
{
	SinkDeadLetter *dls = ((DeadLetterArgs *) arg)->dls;
	int			n = ((DeadLetterArgs *) arg)->n;
	SPIPlanPtr	plan;
	Oid			types[10] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
	LSNOID, INT8OID, TIMESTAMPTZOID, TEXTOID, TEXTOID};
	int			i;

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
	}

	PopActiveSnapshot();
	SPI_finish();
}

/*
 * Write the events Kafka rejected permanently to outbox.dead_letters, in one
 * transaction, before their transactions may be confirmed: the commit is
 * synchronous (relay_force_settings()), so the slot never passes a dead
 * letter a crash could lose.  Runs between WAL records, never inside the
 * decoder.  A write that fails (database read-only, extension dropped, a
 * lock) is logged once and retried with backoff; the events stay unsettled
 * meanwhile, so nothing is confirmed past them.
 */
static void
relay_write_dead_letters(void)
{
	SinkDeadLetter *dls;
	int			n;
	MemoryContext cxt;
	MemoryContext old;
	char	   *failure = NULL;
	int64		first_id;
	char	   *first_topic;
	const char *first_error;
	TimestampTz now;
	DeadLetterArgs args;

	if (relay.sink == NULL)
		return;
	n = outbox_sink_dead_letters(relay.sink, &dls);
	if (n == 0)
		return;
	now = GetCurrentTimestamp();
	if (relay.dead_letters_blocked && now < relay.dead_letters_retry)
		return;

	/* everything here lives in the per-loop context, not SPI's */
	old = MemoryContextSwitchTo(relay.loop_cxt);
	cxt = relay.loop_cxt;
	first_id = dls[0].event.id;
	first_topic = pnstrdup(dls[0].event.topic, dls[0].event.topic_len);
	first_error = dls[0].error;

	args.dls = dls;
	args.n = n;
	failure = relay_try_xact(insert_dead_letters, &args, cxt);

	if (failure != NULL)
	{
		if (!relay.dead_letters_blocked)
		{
			ereport(WARNING,
					(errmsg("outbox relay could not write %d dead letter(s) to outbox.dead_letters: %s",
							n, failure),
					 errdetail("Their transactions stay unconfirmed; the relay retries with backoff."),
					 errhint("Make the database writable and outbox.dead_letters insertable again.")));
			outbox_status_error("could not write dead letters: %s", failure);
			relay.dead_letters_backoff_ms = RELAY_DEAD_LETTER_RETRY_MIN_MS;
		}
		else
			relay.dead_letters_backoff_ms = Min(relay.dead_letters_backoff_ms * 2,
												RELAY_DEAD_LETTER_RETRY_MAX_MS);
		relay.dead_letters_blocked = true;
		relay.dead_letters_retry = TimestampTzPlusMilliseconds(now,
															   relay.dead_letters_backoff_ms);
		relay_set_state();
		MemoryContextSwitchTo(old);
		return;
	}

	if (relay.dead_letters_blocked)
		ereport(LOG,
				(errmsg("outbox relay: dead letters can be written again")));
	relay.dead_letters_blocked = false;
	ereport(WARNING,
			(errmsg("outbox relay: Kafka rejected %d event(s) permanently; written to outbox.dead_letters",
					n),
			 errdetail("First: message id " INT64_FORMAT " for topic \"%s\": %s.",
					   first_id, first_topic, first_error)));
	outbox_status_error("Kafka rejected %d event(s) permanently (first: topic \"%s\": %s); see outbox.dead_letters",
						n, first_topic, first_error);
	outbox_sink_dead_letters_written(relay.sink);
	relay_set_state();
	MemoryContextSwitchTo(old);
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
