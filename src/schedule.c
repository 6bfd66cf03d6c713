/*-------------------------------------------------------------------------
 *
 * schedule.c
 *	  The relay's scheduled work on outbox.messages: redelivery of
 *	  unanswered messages (and their expiry), and retention.
 *
 * Both run as passes over outbox.messages in id order, cut into small
 * transactions (a batch each), a few batches per service step of the relay,
 * so that a backlog never makes one long transaction, never holds row locks
 * for long, and decoding keeps going between the batches.  While a pass is
 * unfinished the relay's latch is set, so that an idle relay comes straight
 * back for the next batches instead of sleeping until WAL arrives.
 *
 * Scheduled redelivery (outbox.redeliver_interval > 0): every interval, a
 * pass of outbox._redeliver_batch() (the SQL function redeliver() uses too)
 * publishes again, through the WAL, the messages without a verdict last
 * published at least outbox.redeliver_after ago, up to outbox.max_attempts
 * publications, and marks expired (expired_at) those that had them all.  A
 * verdict of either kind stops it.  It waits while Kafka is unreachable:
 * publications that cannot be delivered would only use up attempts.
 *
 * Retention (outbox.retention > 0): a pass deletes the rows created at
 * least that long ago that Kafka acknowledged (the delivery watermark covers
 * their last publication: src/watermark.c) and whose verdict is confirmed,
 * or that have no verdict while scheduled redelivery is off.  It keeps rows
 * with a failed verdict or a dead letter, expired rows without a verdict,
 * and, while scheduled redelivery is on, every unanswered row (it may still
 * be published again, or expire).  A pass stops at the first row younger than the setting: ids
 * follow creation closely enough that the few older rows behind it (from
 * transactions that ran long) wait for a later pass.  Rows are deleted by
 * id and tuple id, locked with SKIP LOCKED: a row changed or locked since
 * it was read is left for the next pass.  At the end of a pass it also
 * deletes the rows of outbox.rejected_replies received that long ago.
 *
 * src/schedule.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "commands/extension.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "outbox.h"
#include "relay_shmem.h"
#include "schedule.h"
#include "watermark.h"

/* Rows handled per redelivery transaction. */
#define SCHEDULE_REDELIVER_ROWS		200
/* Rows examined per retention transaction. */
#define SCHEDULE_RETENTION_ROWS		500
/* Rejected replies deleted at most at the end of a retention pass. */
#define SCHEDULE_REJECTED_ROWS		5000
/* Transactions of each kind per service step. */
#define SCHEDULE_BATCHES_PER_STEP	4
/* Start a retention pass at most this often (or every outbox.retention). */
#define SCHEDULE_RETENTION_PASS_MS	10000

PG_FUNCTION_INFO_V1(outbox_retention_batch_sql);

/* A pass over outbox.messages: where it is, and when the next one starts. */
typedef struct SchedulePass
{
	bool		active;			/* in the middle of a pass? */
	int64		after_id;		/* the pass goes on above this id */
	TimestampTz next_start;		/* when the next pass may begin */
	uint64		done_a;			/* rows redelivered / deleted this pass */
	uint64		done_b;			/* rows expired this pass */
	bool		failed;			/* did the last batch fail (logged once)? */
} SchedulePass;

static struct
{
	SchedulePass redeliver;
	SchedulePass retention;
	bool		missing_logged; /* said that the extension is too old? */
} sched;

/* What a batch transaction is given and gives back. */
typedef struct BatchArgs
{
	int64		after_id;		/* in: continue above this id */
	bool		available;		/* out: does the extension have 0.4.0's objects? */
	int64		last_id;		/* out: the pass goes on above this id */
	int64		count_a;		/* out: redelivered / deleted */
	int64		count_b;		/* out: expired */
	bool		done;			/* out: the pass is over */
} BatchArgs;

static void retention_rejected_replies(Interval *older_than);

static Interval *
interval_ms(int64 ms)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->time = ms * INT64CONST(1000);
	return iv;
}

static bool
schedule_extension_installed(void)
{
	return OidIsValid(get_extension_oid("outbox", true));
}

/*
 * Does this database have 0.4.0's outbox.messages.expired_at?  (Without the
 * extension there is nothing to do: the caller checks get_extension_oid().)
 */
static bool
schedule_available(void)
{
	Oid			nsp = get_namespace_oid(OUTBOX_SCHEMA_NAME, true);
	Oid			rel;

	if (!OidIsValid(nsp))
		return false;
	rel = get_relname_relid("messages", nsp);
	return OidIsValid(rel) && get_attnum(rel, "expired_at") != InvalidAttrNumber;
}

/*
 * The start of either pass's transaction: false (the pass is over) while
 * the extension is missing, or lacks 0.4.0's objects (a->available false).
 */
static bool
batch_may_run(BatchArgs *a)
{
	a->done = true;
	if (!schedule_extension_installed())
	{
		a->available = true;	/* nothing to do until it is back */
		return false;
	}
	a->available = schedule_available();
	return a->available;
}

/* ---------------------------------------------------------------------
 * Retention
 * ---------------------------------------------------------------------
 */

/*
 * One retention batch: examine up to max_rows rows above after_id in id
 * order, delete those due (see the file header).  Sets *deleted and
 * *last_id (the last id examined); returns whether the pass is over.  In a
 * live transaction; connects SPI itself.
 */
static bool
retention_batch(Interval *older_than, bool keep_unanswered, int64 after_id,
				int max_rows, int64 *deleted, int64 *last_id)
{
	Oid			types[3] = {INT8OID, INTERVALOID, INT4OID};
	Datum		values[3];
	WatermarkSnapshot covered;
	FullTransactionId next;
	Datum	   *ids;
	Datum	   *tids;
	int			ndelete = 0;
	bool		done;
	uint64		i;

	*deleted = 0;
	*last_id = after_id;
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());

	/* nothing acknowledged, nothing to delete */
	if (!outbox_watermark_covered(&covered))
	{
		PopActiveSnapshot();
		SPI_finish();
		return true;
	}

	values[0] = Int64GetDatum(after_id);
	values[1] = IntervalPGetDatum(older_than);
	values[2] = Int32GetDatum(max_rows);
	next = ReadNextFullTransactionId();
	if (SPI_execute_with_args("SELECT m.id, m.ctid, "
							  "m.created_at <= pg_catalog.now() - $2, "
							  "m.confirm_status, m.expired_at IS NOT NULL, "
							  "EXISTS (SELECT 1 FROM outbox.dead_letters d "
							  "WHERE d.message_id = m.id), "
							  "m.xmin, m.published_xid "
							  "FROM outbox.messages m WHERE m.id > $1 "
							  "ORDER BY m.id LIMIT $3",
							  3, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "outbox relay: could not read outbox.messages for retention");
	done = SPI_processed < (uint64) max_rows;
	ids = palloc(sizeof(Datum) * (SPI_processed + 1));
	tids = palloc(sizeof(Datum) * (SPI_processed + 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		Datum		tid = SPI_getbinval(tup, desc, 2, &isnull);
		bool		old = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
		char	   *status = SPI_getvalue(tup, desc, 4);
		bool		expired = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
		bool		dead = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));

		if (!old)
		{
			done = true;		/* the young end of the table */
			break;
		}
		*last_id = id;
		if (dead)
			continue;			/* for redrive() */
		if (status == NULL ? (expired || keep_unanswered) :
			strcmp(status, "confirmed") != 0)
			continue;			/* expired, may be redelivered, or failed */
		if (!outbox_watermark_row_acked(&covered, tup, desc, 7, next))
			continue;
		ids[ndelete] = Int64GetDatum(id);
		tids[ndelete] = tid;
		ndelete++;
	}

	if (ndelete > 0)
	{
		Oid			dtypes[2] = {INT8ARRAYOID, TIDARRAYOID};
		Datum		dvalues[2];

		dvalues[0] = PointerGetDatum(construct_array(ids, ndelete, INT8OID,
													 sizeof(int64), FLOAT8PASSBYVAL,
													 TYPALIGN_DOUBLE));
		dvalues[1] = PointerGetDatum(construct_array(tids, ndelete, TIDOID,
													 sizeof(ItemPointerData), false,
													 TYPALIGN_SHORT));
		/* a row changed since it was read has another tuple id: left alone */
		if (SPI_execute_with_args("DELETE FROM outbox.messages m WHERE m.id IN ("
								  "SELECT x.id FROM outbox.messages x, "
								  "ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS a(id, t) "
								  "WHERE x.id = a.id AND x.ctid = a.t "
								  "FOR UPDATE OF x SKIP LOCKED)",
								  2, dtypes, dvalues, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "outbox relay: could not delete from outbox.messages for retention");
		*deleted = (int64) SPI_processed;
	}
	PopActiveSnapshot();
	SPI_finish();
	return done;
}

static void
retention_xact(void *arg)
{
	BatchArgs  *a = (BatchArgs *) arg;

	if (!batch_may_run(a))
		return;

	/*
	 * A deletion lost in a crash is simply done again: no need to wait for
	 * the WAL flush that the relay's session otherwise asks for (dead
	 * letters), and the writers' flushes are not delayed by ours.
	 */
	(void) set_config_option("synchronous_commit", "off", PGC_SUSET,
							 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
	a->done = retention_batch(interval_ms((int64) outbox_retention_s * 1000),
							  outbox_redeliver_interval_ms > 0,
							  a->after_id, SCHEDULE_RETENTION_ROWS,
							  &a->count_a, &a->last_id);
	if (a->done)
		retention_rejected_replies(interval_ms((int64) outbox_retention_s * 1000));
}

/*
 * The end of a retention pass: delete the rejected replies received at least
 * outbox.retention ago, oldest first, at most SCHEDULE_REJECTED_ROWS (the
 * rest go in later passes).  They were kept for inspection only.
 */
static void
retention_rejected_replies(Interval *older_than)
{
	Oid			types[2] = {INTERVALOID, INT4OID};
	Datum		values[2];

	values[0] = IntervalPGetDatum(older_than);
	values[1] = Int32GetDatum(SCHEDULE_REJECTED_ROWS);
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_execute_with_args("DELETE FROM outbox.rejected_replies r WHERE r.id IN ("
							  "SELECT x.id FROM outbox.rejected_replies x "
							  "WHERE x.received_at <= pg_catalog.now() - $1 "
							  "ORDER BY x.id LIMIT $2 FOR UPDATE OF x SKIP LOCKED)",
							  2, types, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "outbox relay: could not delete from outbox.rejected_replies for retention");
	PopActiveSnapshot();
	SPI_finish();
}

/*
 * outbox._retention_batch(older_than, keep_unanswered, after_id, max_rows,
 * OUT deleted, OUT last_id, OUT done): one batch, as the relay runs it.
 */
Datum
outbox_retention_batch_sql(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	int64		deleted;
	int64		last_id;
	bool		done;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(3) ||
		PG_GETARG_INT32(3) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("older_than, keep_unanswered and max_rows must not be null, max_rows at least 1")));
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	done = retention_batch(PG_GETARG_INTERVAL_P(0), PG_GETARG_BOOL(1),
						   PG_ARGISNULL(2) ? PG_INT64_MIN : PG_GETARG_INT64(2),
						   PG_GETARG_INT32(3), &deleted, &last_id);
	values[0] = Int64GetDatum(deleted);
	values[1] = Int64GetDatum(last_id);
	nulls[1] = (last_id == PG_INT64_MIN);
	values[2] = BoolGetDatum(done);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc),
													  values, nulls)));
}

/* ---------------------------------------------------------------------
 * Redelivery
 * ---------------------------------------------------------------------
 */

static void
redeliver_xact(void *arg)
{
	BatchArgs  *a = (BatchArgs *) arg;
	Oid			types[4] = {INTERVALOID, INT4OID, INT8OID, INT4OID};
	Datum		values[4];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;

	if (!batch_may_run(a))
		return;
	values[0] = IntervalPGetDatum(interval_ms(outbox_redeliver_after_ms));
	values[1] = Int32GetDatum(outbox_max_attempts);
	values[2] = Int64GetDatum(a->after_id);
	values[3] = Int32GetDatum(SCHEDULE_REDELIVER_ROWS);
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_execute_with_args("SELECT b.redelivered, b.expired, b.last_id "
							  "FROM outbox._redeliver_batch($1, $2, false, $3, $4) AS b",
							  4, types, values, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "outbox relay: outbox._redeliver_batch() failed");
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	a->count_a = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	a->count_b = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
	a->last_id = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
	a->done = a->count_a + a->count_b < SCHEDULE_REDELIVER_ROWS;
	PopActiveSnapshot();
	SPI_finish();
}

/* ---------------------------------------------------------------------
 * The step
 * ---------------------------------------------------------------------
 */

/* What schedule_pass() did. */
typedef enum PassResult
{
	PASS_IDLE,					/* nothing was due, or a batch failed */
	PASS_GOING,					/* batches ran, the pass goes on */
	PASS_FINISHED,				/* batches ran, the pass is over */
	PASS_UNAVAILABLE			/* the extension lacks 0.4.0's objects */
} PassResult;

/*
 * Run up to SCHEDULE_BATCHES_PER_STEP batches of a pass that is due or
 * going on.  counter_b may be OUTBOX_NUM_COUNTERS: none.
 */
static PassResult
schedule_pass(SchedulePass *pass, const char *what, void (*fn) (void *),
			  OutboxXactRunner run_xact, int every_ms,
			  OutboxCounter counter_a, OutboxCounter counter_b)
{
	MemoryContext cxt = CurrentMemoryContext;
	int			i;

	if (!pass->active)
	{
		if (GetCurrentTimestamp() < pass->next_start)
			return PASS_IDLE;
		pass->active = true;
		pass->after_id = PG_INT64_MIN;
		pass->done_a = pass->done_b = 0;
	}

	for (i = 0; i < SCHEDULE_BATCHES_PER_STEP; i++)
	{
		BatchArgs	args;
		char	   *failure;

		memset(&args, 0, sizeof(args));
		args.after_id = pass->after_id;
		failure = run_xact(fn, &args, cxt);
		if (failure != NULL)
		{
			if (!pass->failed)
			{
				ereport(WARNING,
						(errmsg("outbox relay: %s failed: %s", what, failure),
						 errdetail("The relay streams on and tries again after outbox.retry_interval.")));
				outbox_status_error("%s failed: %s", what, failure);
			}
			pass->failed = true;
			pass->active = false;
			pass->next_start = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														   outbox_retry_interval_ms);
			pfree(failure);
			return PASS_IDLE;
		}
		if (pass->failed)
			ereport(LOG, (errmsg("outbox relay: %s works again", what)));
		pass->failed = false;
		if (!args.available)
		{
			pass->active = false;
			pass->next_start = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														   every_ms);
			return PASS_UNAVAILABLE;
		}
		if (args.count_a > 0)
			outbox_status_count(counter_a, (uint64) args.count_a);
		if (args.count_b > 0 && counter_b != OUTBOX_NUM_COUNTERS)
			outbox_status_count(counter_b, (uint64) args.count_b);
		pass->done_a += args.count_a;
		pass->done_b += args.count_b;
		pass->after_id = args.last_id;
		if (args.done)
		{
			pass->active = false;
			pass->next_start = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														   every_ms);
			return PASS_FINISHED;
		}
	}
	/* more to do: the relay must come back soon, not sleep until WAL comes */
	SetLatch(MyLatch);
	return PASS_GOING;
}

/* Say once that the extension is too old, and once that it no longer is. */
static void
schedule_note(PassResult r)
{
	if (r == PASS_UNAVAILABLE && !sched.missing_logged)
		ereport(LOG,
				(errmsg("outbox relay: scheduled redelivery and retention need version 0.4.0 of the extension"),
				 errhint("Run ALTER EXTENSION outbox UPDATE in the relayed database.")));
	if (r != PASS_IDLE)
		sched.missing_logged = (r == PASS_UNAVAILABLE);
}

void
outbox_schedule_step(OutboxXactRunner run_xact, bool kafka_up)
{
	PassResult	r;

	if (outbox_redeliver_interval_ms <= 0)
		sched.redeliver.active = false;
	else if (kafka_up)
	{
		r = schedule_pass(&sched.redeliver, "scheduled redelivery",
						  redeliver_xact, run_xact, outbox_redeliver_interval_ms,
						  OUTBOX_COUNT_REDELIVERED, OUTBOX_COUNT_EXPIRED);
		schedule_note(r);
		if (r == PASS_FINISHED &&
			(sched.redeliver.done_a > 0 || sched.redeliver.done_b > 0))
			ereport(LOG,
					(errmsg("outbox relay: scheduled redelivery published " UINT64_FORMAT " unanswered message(s) again and expired " UINT64_FORMAT,
							sched.redeliver.done_a, sched.redeliver.done_b),
					 sched.redeliver.done_b > 0 ?
					 errdetail("Expired messages had outbox.max_attempts = %d publications without a verdict; see outbox.messages.expired_at.",
							   outbox_max_attempts) : 0));
	}

	if (outbox_retention_s <= 0)
		sched.retention.active = false;
	else
	{
		r = schedule_pass(&sched.retention, "retention", retention_xact, run_xact,
						  (int) Min((int64) outbox_retention_s * 1000,
									SCHEDULE_RETENTION_PASS_MS),
						  OUTBOX_COUNT_PURGED, OUTBOX_NUM_COUNTERS);
		schedule_note(r);
		if (r == PASS_FINISHED && sched.retention.done_a > 0)
			ereport(DEBUG1,
					(errmsg("outbox relay: retention deleted " UINT64_FORMAT " row(s) of outbox.messages",
							sched.retention.done_a)));
	}
}
