/*-------------------------------------------------------------------------
 *
 * reply.h
 *	  The reply topic's consumer, owned by a relay (outbox.reply_topic).
 *
 * Each relay consumes the reply topic in consumer group
 * outbox-reply-<database> and applies the verdicts meant for its database
 * as outbox.confirm() would.  Exactly once: the position reached in each
 * partition is stored in outbox.reply_offsets in the same transaction that
 * applies the verdicts, and partitions are assigned at the stored
 * positions; Kafka's committed offsets follow after the database commit,
 * for consumer-group tools only.  A verdict whose message row another
 * session holds waits (with its partition) without holding up the relay.
 * Only replies answering this installation (outbox-source) are applied.
 * Replies that cannot be applied are counted in relay_status and kept in
 * outbox.rejected_replies.
 *
 * src/reply.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_REPLY_H
#define OUTBOX_REPLY_H

#include "postgres.h"

#include "schedule.h"			/* OutboxXactRunner */

/*
 * One bounded step of the reply consumer, from the relay's service loop
 * between WAL records: starts, rebuilds or stops the consumer as
 * outbox.reply_topic says, applies the replies waiting (at most a batch), and
 * commits their offsets.  The Kafka settings are those the relay's producer
 * was built with.  wake_fd is written to when replies arrive.  Returns true
 * if more replies may be waiting, so the caller should not sleep.
 */
extern bool outbox_reply_step(OutboxXactRunner run_xact, const char *database,
							  const char *brokers, const char *file_properties,
							  const char *guc_properties, int wake_fd);

/*
 * Milliseconds until a verdict whose message row was locked by another
 * session is tried again (the relay should not sleep longer), or -1 when
 * none waits.
 */
extern long outbox_reply_wait_ms(void);

/* Close the consumer (nothing unapplied is kept; it is consumed again). */
extern void outbox_reply_stop(void);

#endif							/* OUTBOX_REPLY_H */
