/*-------------------------------------------------------------------------
 *
 * watermark.h
 *	  The relay's durable delivery watermark and the replay of the rows of
 *	  outbox.messages that it does not cover, after the slot was lost.
 *
 * src/watermark.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_WATERMARK_H
#define OUTBOX_WATERMARK_H

#include "postgres.h"

#include "access/htup.h"
#include "access/transam.h"
#include "access/tupdesc.h"
#include "access/xlogdefs.h"
#include "lib/stringinfo.h"
#include "utils/snapshot.h"

#include "eos.h"

/* A snapshot in full transaction ids, as pg_snapshot keeps it. */
typedef struct WatermarkSnapshot
{
	uint64		xmin;			/* every id below was complete */
	uint64		xmax;			/* every id from here on was not */
	int			nxip;			/* ids in between still running, sorted */
	uint64	   *xip;
} WatermarkSnapshot;

/* A pending replay, as read from outbox.relay_watermark. */
typedef struct WatermarkReplay
{
	bool		has_covered;	/* is there a watermark of this system? */
	WatermarkSnapshot covered;	/* rows visible here were acknowledged */
	WatermarkSnapshot boundary; /* rows visible here the new slot skips */
	XLogRecPtr	boundary_lsn;	/* the new slot's start */
	int64		after_id;		/* rows with larger ids are left to publish */
	/* exactly_once: rows of these transactions are in Kafka (or NULL) */
	const EosDelivered *in_kafka;
} WatermarkReplay;

/* Does this database have outbox.relay_watermark (extension 0.3.0+)? */
extern bool outbox_watermark_available(void);

/*
 * Normal operation.  A capture remembers the transaction snapshot and the
 * WAL insert position; it becomes the watermark once the slot confirmed past
 * that position.  All in a live transaction of the caller's.
 */
extern void outbox_watermark_forget(void);
extern bool outbox_watermark_due(XLogRecPtr confirmed, uint64 delivered);
/*
 * exactly_once: the transaction snapshot as full ids (palloc'd) and the WAL
 * position at or before which every commit it shows ended; false if its
 * subtransactions overflowed.  In a live transaction of the caller's.
 */
extern bool outbox_watermark_capture(WatermarkSnapshot *snap,
									 XLogRecPtr *reached);
extern void outbox_watermark_step(XLogRecPtr confirmed, uint64 delivered,
								  const char *slot_name);

/*
 * What Kafka acknowledged, for retention (src/schedule.c): read the stored
 * watermark of this system into *covered (palloc'd in the current context;
 * false when there is none), then test rows against it.  xcol is the column
 * of the row's xmin in tup; published_xid must follow it.  In a live
 * transaction with SPI connected.
 */
extern bool outbox_watermark_covered(WatermarkSnapshot *covered);
extern bool outbox_watermark_row_acked(const WatermarkSnapshot *covered,
									   HeapTuple tup, TupleDesc desc, int xcol,
									   FullTransactionId next);

/*
 * Slot creation: record the new slot's initial snapshot (it tells which
 * rows the slot will never decode) as the boundary of a replay.
 */
extern void outbox_watermark_begin_replay(Snapshot initial,
										  XLogRecPtr start_lsn,
										  const char *slot_name);
/* Is a replay pending?  Fills *replay (palloc'd in the current context). */
extern bool outbox_watermark_replay_pending(WatermarkReplay *replay);
/* Rows the replay will publish. */
extern uint64 outbox_watermark_replay_count(const WatermarkReplay *replay);
/*
 * Append the frames (decoder/wire.h) of up to max_rows rows to publish,
 * after replay->after_id, to frames; their lengths go to lengths.  Returns
 * the number of rows examined (0 at the end); *published counts frames
 * pairs appended.  Moves replay->after_id.
 */
extern int	outbox_watermark_replay_chunk(WatermarkReplay *replay, int max_rows,
										  StringInfo frames, int *lengths,
										  int *published);
/* Every row is published and acknowledged: the boundary is the watermark. */
extern void outbox_watermark_finish_replay(const WatermarkReplay *replay);

#endif							/* OUTBOX_WATERMARK_H */
