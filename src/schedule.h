/*-------------------------------------------------------------------------
 *
 * schedule.h
 *	  The relay's scheduled work on outbox.messages: redelivery of
 *	  unanswered messages (and their expiry), and retention.
 *
 * src/schedule.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_SCHEDULE_H
#define OUTBOX_SCHEDULE_H

#include "postgres.h"

#include "fmgr.h"

/*
 * Runs fn(arg) in a transaction of the relay's own, between WAL records;
 * returns NULL, or the error's message (allocated in cxt) after aborting.
 * The relay's relay_try_xact().
 */
typedef char *(*OutboxXactRunner) (void (*fn) (void *), void *arg,
								   MemoryContext cxt);

/*
 * One step of the schedule, from the relay's loop (outside the decoder):
 * a bounded number of small transactions of redelivery and of retention
 * when they are due.  kafka_up: the producer reaches Kafka (redelivery
 * waits otherwise; retention deletes only what Kafka acknowledged anyway).
 */
extern void outbox_schedule_step(OutboxXactRunner run_xact, bool kafka_up);

extern PGDLLEXPORT Datum outbox_retention_batch_sql(PG_FUNCTION_ARGS);

#endif							/* OUTBOX_SCHEDULE_H */
