/*-------------------------------------------------------------------------
 *
 * watermark.c
 *	  The relay's durable delivery watermark (outbox.relay_watermark) and
 *	  the replay, after the slot was lost, of the rows it does not cover.
 *
 * The watermark says which rows of outbox.messages Kafka acknowledged,
 * without a write per event: a row was acknowledged when the transaction
 * that published it last is visible in the watermark's snapshot.  That
 * transaction is the row's published_xid (the INSERT's, by default, or the
 * redeliver() / redrive() that published it again), not its xmin: any later
 * UPDATE (a verdict, a column of the user's, a table rewrite) changes xmin
 * without publishing anything.  Rows written before 0.3.0 have no
 * published_xid; for them the raw xmin is used.
 *
 * How a watermark is made.  Now and then (outbox_watermark_due()) the relay
 * takes its transaction snapshot S and then reads the WAL insert position W.
 * Every transaction visible in S had inserted its commit record before S was
 * taken, so its commit record ends at or before W.  The slot's confirmed
 * position passes W only once every transaction that committed before W and
 * had events was acknowledged.  So once the slot confirmed past W, S is a
 * watermark: it is written then, in one small UPDATE (at most one a second,
 * and only while events are delivered).  A snapshot whose subtransaction
 * list overflowed cannot tell subtransactions apart and is not used.
 *
 * How a lost slot is recovered.  A new slot starts at a consistent point;
 * its initial snapshot B (SnapBuildInitialSnapshot(), the one a walsender
 * exports) shows exactly the transactions the slot will never decode.  B is
 * recorded as the replay boundary in the transaction that creates the slot,
 * before the slot is made persistent (the relay commits synchronously:
 * relay_force_settings()).  Before the relay streams from the new slot it
 * publishes, in id order, every row whose publishing transaction is visible
 * in B and not in the watermark, and that has no verdict and no dead letter; once Kafka
 * acknowledged them all, B becomes the watermark.  A relay that dies while
 * replaying replays again (duplicates, never a gap).
 *
 * Transaction ids are compared as full 64-bit ids.  published_xid is one;
 * a raw xmin (rows from before 0.3.0) is widened with the epoch of the next
 * transaction id, which is wrong for a row older than 2^31 transactions.  A
 * published_xid from the future (a dump restored into another cluster) is
 * not trusted: xmin is used.  A watermark written on another system (a
 * restored dump; pg_upgrade) is ignored: its ids mean nothing here, so every
 * unanswered row is published again.
 *
 * src/watermark.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "eos.h"
#include "event.h"
#include "outbox.h"
#include "watermark.h"
#include "wire.h"

/* Captures kept while the slot has not yet confirmed past them. */
#define WM_MAX_PENDING		8
/* Take a capture at most this often. */
#define WM_INTERVAL_MS		1000

/* A capture: a snapshot and the WAL insert position read after it. */
typedef struct WmCapture
{
	XLogRecPtr	lsn;			/* W */
	char	   *snapshot;		/* S as pg_snapshot text, in wm_cxt */
} WmCapture;

static struct
{
	MemoryContext cxt;			/* holds the captures' text */
	WmCapture	pending[WM_MAX_PENDING];	/* oldest first */
	int			npending;
	uint64		delivered_at_capture;	/* delivered count at the last one */
	bool		forced;			/* capture at the next step */
	TimestampTz last_step;		/* last capture or write */
} wm;

/* ---------------------------------------------------------------------
 * Transaction ids and snapshots
 * ---------------------------------------------------------------------
 */

/*
 * A snapshot as full ids: the running transactions and subtransactions
 * within [xmin, xmax), sorted, once each (palloc'd).
 */
static void
snapshot_ids(Snapshot snap, WatermarkSnapshot *out)
{
	FullTransactionId next = ReadNextFullTransactionId();
	uint64	   *ids;
	int			n = 0;
	int			i;

	out->xmin = outbox_eos_widen_xid(next, snap->xmin);
	out->xmax = outbox_eos_widen_xid(next, snap->xmax);
	ids = palloc(sizeof(uint64) * (snap->xcnt + snap->subxcnt + 1));
	for (i = 0; i < snap->xcnt; i++)
		ids[n++] = outbox_eos_widen_xid(next, snap->xip[i]);
	for (i = 0; i < snap->subxcnt; i++)
		ids[n++] = outbox_eos_widen_xid(next, snap->subxip[i]);
	qsort(ids, n, sizeof(uint64), outbox_eos_cmp_xid);
	out->nxip = 0;
	for (i = 0; i < n; i++)
	{
		if (ids[i] < out->xmin || ids[i] >= out->xmax ||
			(out->nxip > 0 && ids[i] == ids[out->nxip - 1]))
			continue;
		ids[out->nxip++] = ids[i];
	}
	out->xip = ids;
}

/* A snapshot as pg_snapshot text, "xmin:xmax:xip,...". */
static char *
snapshot_text(Snapshot snap)
{
	WatermarkSnapshot ws;
	StringInfoData out;
	int			i;

	snapshot_ids(snap, &ws);
	initStringInfo(&out);
	appendStringInfo(&out, UINT64_FORMAT ":" UINT64_FORMAT ":", ws.xmin, ws.xmax);
	for (i = 0; i < ws.nxip; i++)
	{
		if (i > 0)
			appendStringInfoChar(&out, ',');
		appendStringInfo(&out, UINT64_FORMAT, ws.xip[i]);
	}
	pfree(ws.xip);
	return out.data;
}

/* Parse pg_snapshot text (as pg_snapshot_out writes it). */
static void
parse_snapshot(const char *text, WatermarkSnapshot *snap)
{
	const char *p = text;
	char	   *end;
	int			cap = 16;

	snap->nxip = 0;
	snap->xip = palloc(sizeof(uint64) * cap);
	snap->xmin = strtou64(p, &end, 10);
	if (*end != ':')
		goto bad;
	p = end + 1;
	snap->xmax = strtou64(p, &end, 10);
	if (*end != ':')
		goto bad;
	p = end + 1;
	while (*p != '\0')
	{
		uint64		v = strtou64(p, &end, 10);

		if (end == p)
			goto bad;
		if (snap->nxip == cap)
		{
			cap *= 2;
			snap->xip = repalloc(snap->xip, sizeof(uint64) * cap);
		}
		snap->xip[snap->nxip++] = v;
		p = end;
		if (*p == ',')
			p++;
		else if (*p != '\0')
			goto bad;
	}
	return;

bad:
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("invalid snapshot \"%s\" in outbox.relay_watermark", text)));
}

/* Was a transaction (a full id) complete in snap? */
static bool
xid_visible(const WatermarkSnapshot *snap, uint64 full)
{
	return outbox_eos_snapshot_shows(snap->xmin, snap->xmax, snap->xip,
									 snap->nxip, full);
}

/*
 * The transaction that last published a row: published_xid (its INSERT, or
 * the redeliver() / redrive() that published it again), or for a row
 * written before 0.3.0 its raw xmin.  A published_xid from the future (a
 * dump restored into another cluster) is not trusted either.
 */
static uint64
row_publisher(FullTransactionId next, bool has_published, uint64 published,
			  TransactionId xmin)
{
	if (has_published && published < U64FromFullTransactionId(next))
		return published;
	return outbox_eos_widen_xid(next, xmin);
}

/* Should the replay publish a row published by that transaction? */
static bool
row_to_publish(const WatermarkReplay *replay, uint64 publisher)
{
	if (!xid_visible(&replay->boundary, publisher))
		return false;			/* the new slot decodes it */
	if (replay->has_covered && xid_visible(&replay->covered, publisher))
		return false;			/* acknowledged before the slot was lost */
	if (replay->in_kafka != NULL &&
		outbox_eos_delivered_has(replay->in_kafka, publisher))
		return false;			/* in Kafka by the progress record */
	return true;
}

/* The publishing transaction of a replay query's row (columns xcol, xcol+1). */
static uint64
tuple_publisher(HeapTuple tup, TupleDesc desc, int xcol, FullTransactionId next)
{
	bool		isnull;
	bool		pub_null;
	TransactionId xmin = DatumGetTransactionId(SPI_getbinval(tup, desc, xcol, &isnull));
	Datum		pub = SPI_getbinval(tup, desc, xcol + 1, &pub_null);

	return row_publisher(next, !pub_null,
						 pub_null ? 0 : U64FromFullTransactionId(DatumGetFullTransactionId(pub)),
						 xmin);
}

/* ---------------------------------------------------------------------
 * SPI helpers
 * ---------------------------------------------------------------------
 */

static void
wm_spi_begin(void)
{
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
wm_spi_end(void)
{
	PopActiveSnapshot();
	SPI_finish();
}

/* Run a statement with parameters (none null); it must return expected. */
static void
wm_execute(const char *sql, int nargs, Oid *types, Datum *values, int expected)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, NULL,
										   false, 0);

	if (rc != expected)
		elog(ERROR, "outbox relay: watermark statement failed: %s",
			 SPI_result_code_string(rc));
}

bool
outbox_watermark_available(void)
{
	Oid			nsp = get_namespace_oid(OUTBOX_SCHEMA_NAME, true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("relay_watermark", nsp));
}

/* ---------------------------------------------------------------------
 * Normal operation
 * ---------------------------------------------------------------------
 */

/* A new stream: drop the captures, take one at the next step. */
void
outbox_watermark_forget(void)
{
	if (wm.cxt == NULL)
		wm.cxt = AllocSetContextCreate(TopMemoryContext,
									   "outbox watermark",
									   ALLOCSET_SMALL_SIZES);
	MemoryContextReset(wm.cxt);
	wm.npending = 0;
	wm.forced = true;
	wm.last_step = 0;
}

/* Position at or before which a commit record visible at a capture ended. */
static XLogRecPtr
capture_reached_at(XLogRecPtr lsn)
{
	/* the insert position may point past a page header; a record ended before it */
	if (lsn % XLOG_BLCKSZ == SizeOfXLogShortPHD)
		return lsn - SizeOfXLogShortPHD;
	if (lsn % XLOG_BLCKSZ == SizeOfXLogLongPHD &&
		lsn % wal_segment_size == SizeOfXLogLongPHD)
		return lsn - SizeOfXLogLongPHD;
	return lsn;
}

/* Newest capture the slot confirmed past, or -1. */
static int
newest_reached(XLogRecPtr confirmed)
{
	int			i;

	for (i = wm.npending - 1; i >= 0; i--)
		if (capture_reached_at(wm.pending[i].lsn) <= confirmed)
			return i;
	return -1;
}

/* Is there something to capture or to write?  Cheap; no transaction. */
bool
outbox_watermark_due(XLogRecPtr confirmed, uint64 delivered)
{
	TimestampTz now = GetCurrentTimestamp();

	if (wm.cxt == NULL)
		outbox_watermark_forget();
	if (!TimestampDifferenceExceeds(wm.last_step, now, WM_INTERVAL_MS))
		return false;
	return newest_reached(confirmed) >= 0 ||
		wm.forced || delivered != wm.delivered_at_capture;
}

/*
 * Capture (when events were delivered since the last capture) and write the
 * newest capture the slot confirmed past.  In the caller's transaction.
 */
void
outbox_watermark_step(XLogRecPtr confirmed, uint64 delivered,
					  const char *slot_name)
{
	int			reached;
	MemoryContext old;

	wm.last_step = GetCurrentTimestamp();

	/* capture first: a write below would put our own xid in the snapshot */
	if (wm.forced || delivered != wm.delivered_at_capture)
	{
		Snapshot	snap = GetTransactionSnapshot();

		if (!snap->suboverflowed)
		{
			char	   *text;

			old = MemoryContextSwitchTo(wm.cxt);
			text = snapshot_text(snap);
			MemoryContextSwitchTo(old);
			if (wm.npending == WM_MAX_PENDING)
			{
				/* keep the oldest (due soonest) and the newest */
				pfree(wm.pending[1].snapshot);
				memmove(&wm.pending[1], &wm.pending[2],
						sizeof(WmCapture) * (WM_MAX_PENDING - 2));
				wm.npending--;
			}
			wm.pending[wm.npending].snapshot = text;
			wm.pending[wm.npending].lsn = GetXLogInsertRecPtr();
			wm.npending++;
			wm.delivered_at_capture = delivered;
			wm.forced = false;
		}
	}

	reached = newest_reached(confirmed);
	if (reached >= 0)
	{
		Oid			types[4] = {INT8OID, TEXTOID, TEXTOID, LSNOID};
		Datum		values[4];
		int			i;

		values[0] = Int64GetDatum((int64) GetSystemIdentifier());
		values[1] = CStringGetTextDatum(slot_name);
		values[2] = CStringGetTextDatum(wm.pending[reached].snapshot);
		values[3] = LSNGetDatum(wm.pending[reached].lsn);
		wm_spi_begin();
		wm_execute("INSERT INTO outbox.relay_watermark AS w "
				   "(system_identifier, slot_name, snapshot, lsn, updated_at) "
				   "VALUES ($1, $2::pg_catalog.name, $3::pg_catalog.pg_snapshot, $4, "
				   "pg_catalog.now()) "
				   "ON CONFLICT (one_row) DO UPDATE SET "
				   "system_identifier = excluded.system_identifier, "
				   "slot_name = excluded.slot_name, snapshot = excluded.snapshot, "
				   "lsn = excluded.lsn, updated_at = excluded.updated_at "
				   "WHERE w.replay_snapshot IS NULL",
				   4, types, values, SPI_OK_INSERT);
		wm_spi_end();

		for (i = 0; i <= reached; i++)
			pfree(wm.pending[i].snapshot);
		memmove(&wm.pending[0], &wm.pending[reached + 1],
				sizeof(WmCapture) * (wm.npending - reached - 1));
		wm.npending -= reached + 1;
	}
}

bool
outbox_watermark_capture(WatermarkSnapshot *snap, XLogRecPtr *reached)
{
	Snapshot	s = GetTransactionSnapshot();

	if (s->suboverflowed)
		return false;
	snapshot_ids(s, snap);
	*reached = capture_reached_at(GetXLogInsertRecPtr());
	return true;
}

/* ---------------------------------------------------------------------
 * What Kafka acknowledged (retention)
 * ---------------------------------------------------------------------
 */

/*
 * The stored watermark, if it was written on this system.  While a replay
 * is pending the watermark of before the slot loss still holds: the rows it
 * covers were acknowledged.  The caller has SPI connected.
 */
bool
outbox_watermark_covered(WatermarkSnapshot *covered)
{
	MemoryContext caller_cxt = CurrentMemoryContext;
	Oid			types[1] = {INT8OID};
	Datum		values[1];
	bool		found = false;

	values[0] = Int64GetDatum((int64) GetSystemIdentifier());
	if (SPI_execute_with_args("SELECT snapshot::pg_catalog.text "
							  "FROM outbox.relay_watermark "
							  "WHERE system_identifier = $1 AND snapshot IS NOT NULL",
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "outbox relay: could not read outbox.relay_watermark");
	if (SPI_processed == 1)
	{
		char	   *text = SPI_getvalue(SPI_tuptable->vals[0],
										SPI_tuptable->tupdesc, 1);
		MemoryContext old = MemoryContextSwitchTo(caller_cxt);

		parse_snapshot(text, covered);
		MemoryContextSwitchTo(old);
		found = true;
	}
	return found;
}

/* Did Kafka acknowledge the row's last publication? */
bool
outbox_watermark_row_acked(const WatermarkSnapshot *covered, HeapTuple tup,
						   TupleDesc desc, int xcol, FullTransactionId next)
{
	return xid_visible(covered, tuple_publisher(tup, desc, xcol, next));
}

/* ---------------------------------------------------------------------
 * Recovery after slot loss
 * ---------------------------------------------------------------------
 */

void
outbox_watermark_begin_replay(Snapshot initial, XLogRecPtr start_lsn,
							  const char *slot_name)
{
	Oid			types[4] = {INT8OID, TEXTOID, TEXTOID, LSNOID};
	Datum		values[4];

	values[0] = Int64GetDatum((int64) GetSystemIdentifier());
	values[1] = CStringGetTextDatum(slot_name);
	values[2] = CStringGetTextDatum(snapshot_text(initial));
	values[3] = LSNGetDatum(start_lsn);
	wm_spi_begin();
	/* a watermark of another system is dropped: its ids mean nothing here */
	wm_execute("INSERT INTO outbox.relay_watermark AS w "
			   "(system_identifier, slot_name, replay_snapshot, replay_lsn, updated_at) "
			   "VALUES ($1, $2::pg_catalog.name, $3::pg_catalog.pg_snapshot, $4, "
			   "pg_catalog.now()) "
			   "ON CONFLICT (one_row) DO UPDATE SET "
			   "snapshot = CASE WHEN w.system_identifier = excluded.system_identifier "
			   "THEN w.snapshot END, "
			   "lsn = CASE WHEN w.system_identifier = excluded.system_identifier "
			   "THEN w.lsn END, "
			   "system_identifier = excluded.system_identifier, "
			   "slot_name = excluded.slot_name, "
			   "replay_snapshot = excluded.replay_snapshot, "
			   "replay_lsn = excluded.replay_lsn, updated_at = excluded.updated_at",
			   4, types, values, SPI_OK_INSERT);
	wm_spi_end();
}

bool
outbox_watermark_replay_pending(WatermarkReplay *replay)
{
	MemoryContext caller_cxt = CurrentMemoryContext;
	bool		found = false;
	Oid			types[1] = {INT8OID};
	Datum		values[1];

	memset(replay, 0, sizeof(*replay));
	replay->after_id = PG_INT64_MIN;
	values[0] = Int64GetDatum((int64) GetSystemIdentifier());
	wm_spi_begin();
	/* a watermark written on another system covers nothing here */
	if (SPI_execute_with_args("SELECT CASE WHEN system_identifier = $1 "
							  "THEN snapshot END::pg_catalog.text, "
							  "replay_snapshot::pg_catalog.text, replay_lsn "
							  "FROM outbox.relay_watermark "
							  "WHERE replay_snapshot IS NOT NULL",
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "outbox relay: could not read outbox.relay_watermark");
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *covered = SPI_getvalue(tup, desc, 1);
		char	   *boundary = SPI_getvalue(tup, desc, 2);
		bool		isnull;
		Datum		lsn = SPI_getbinval(tup, desc, 3, &isnull);
		MemoryContext old = MemoryContextSwitchTo(caller_cxt);

		found = true;
		replay->has_covered = (covered != NULL);
		if (covered != NULL)
			parse_snapshot(covered, &replay->covered);
		parse_snapshot(boundary, &replay->boundary);
		replay->boundary_lsn = isnull ? InvalidXLogRecPtr : DatumGetLSN(lsn);
		MemoryContextSwitchTo(old);
	}
	wm_spi_end();
	return found;
}

/* The rows a replay looks at: unanswered, not dead-lettered, by id. */
#define REPLAY_ROWS \
	"FROM outbox.messages m WHERE m.confirm_status IS NULL " \
	"AND NOT EXISTS (SELECT 1 FROM outbox.dead_letters d " \
	"WHERE d.message_id = m.id) "

uint64
outbox_watermark_replay_count(const WatermarkReplay *replay)
{
	FullTransactionId next;
	Portal		portal;
	uint64		count = 0;

	wm_spi_begin();
	next = ReadNextFullTransactionId();
	portal = SPI_cursor_open_with_args(NULL, "SELECT m.xmin, m.published_xid " REPLAY_ROWS,
									   0, NULL, NULL, NULL, true, 0);
	for (;;)
	{
		uint64		i;

		SPI_cursor_fetch(portal, true, 10000);
		if (SPI_processed == 0)
			break;
		for (i = 0; i < SPI_processed; i++)
		{
			if (row_to_publish(replay, tuple_publisher(SPI_tuptable->vals[i],
													   SPI_tuptable->tupdesc,
													   1, next)))
				count++;
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	wm_spi_end();
	return count;
}

/* A column of the replay query as text bytes (borrowed), or NULL. */
static const char *
text_column(HeapTuple tup, TupleDesc desc, int col, int *len)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);
	text	   *t;

	if (isnull)
	{
		*len = 0;
		return NULL;
	}
	t = DatumGetTextPP(d);
	*len = VARSIZE_ANY_EXHDR(t);
	return VARDATA_ANY(t);
}

int
outbox_watermark_replay_chunk(WatermarkReplay *replay, int max_rows,
							  StringInfo frames, int *lengths, int *published)
{
	MemoryContext caller_cxt = CurrentMemoryContext;
	FullTransactionId next;
	Oid			types[2] = {INT8OID, INT4OID};
	Datum		values[2];
	uint64		i;
	int			examined;

	*published = 0;
	values[0] = Int64GetDatum(replay->after_id);
	values[1] = Int32GetDatum(max_rows);
	wm_spi_begin();
	next = ReadNextFullTransactionId();
	if (SPI_execute_with_args("SELECT m.id, m.xmin, m.published_xid, m.topic, m.key, "
							  "m.payload, m.headers, m.attempts, m.created_at "
							  REPLAY_ROWS "AND m.id > $1 ORDER BY m.id LIMIT $2",
							  2, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "outbox relay: could not read outbox.messages for the replay");
	examined = (int) SPI_processed;
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		TransactionId xmin = DatumGetTransactionId(SPI_getbinval(tup, desc, 2, &isnull));
		OutboxEvent ev;
		OutboxWireTxn txn;
		Datum		d;
		MemoryContext old;
		int			start;

		replay->after_id = id;
		if (!row_to_publish(replay, tuple_publisher(tup, desc, 2, next)))
			continue;

		memset(&ev, 0, sizeof(ev));
		ev.has_id = true;
		ev.id = id;
		ev.topic = text_column(tup, desc, 4, &ev.topic_len);
		ev.key = text_column(tup, desc, 5, &ev.key_len);
		d = SPI_getbinval(tup, desc, 6, &isnull);
		ev.payload = isnull ? NULL : DatumGetJsonbP(d);
		d = SPI_getbinval(tup, desc, 7, &isnull);
		ev.headers = isnull ? NULL : DatumGetJsonbP(d);
		d = SPI_getbinval(tup, desc, 8, &isnull);
		ev.attempts = isnull ? 1 : DatumGetInt32(d);
		if (ev.topic == NULL)
			continue;			/* cannot be: topic is NOT NULL */

		/*
		 * Each row is a transaction of its own in the frames: its commit LSN
		 * is unknown, so the frames carry the new slot's start, which no
		 * event decoded from the new slot precedes.
		 */
		txn.commit_lsn = replay->boundary_lsn;
		txn.end_lsn = replay->boundary_lsn;
		txn.xid = xmin;
		d = SPI_getbinval(tup, desc, 9, &isnull);
		txn.commit_time = isnull ? GetCurrentTimestamp() : DatumGetTimestampTz(d);

		old = MemoryContextSwitchTo(caller_cxt);
		start = frames->len;
		outbox_wire_append_event(frames, &txn, &ev);
		lengths[2 * *published] = frames->len - start;
		start = frames->len;
		outbox_wire_append_commit(frames, &txn, 1);
		lengths[2 * *published + 1] = frames->len - start;
		MemoryContextSwitchTo(old);
		(*published)++;
	}
	wm_spi_end();
	return examined;
}

void
outbox_watermark_finish_replay(const WatermarkReplay *replay)
{
	wm_spi_begin();
	wm_execute("UPDATE outbox.relay_watermark SET snapshot = replay_snapshot, "
			   "lsn = replay_lsn, replay_snapshot = NULL, replay_lsn = NULL, "
			   "updated_at = pg_catalog.now() WHERE replay_snapshot IS NOT NULL",
			   0, NULL, NULL, SPI_OK_UPDATE);
	wm_spi_end();
}
