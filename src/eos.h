/*-------------------------------------------------------------------------
 *
 * eos.h
 *	  Exactly-once delivery: the relay's transactional.id and its progress
 *	  records in the progress topic (outbox.progress_topic).
 *
 * In exactly_once mode every Kafka transaction of the relay holds the
 * records of whole PostgreSQL transactions plus one progress record: its
 * key names the relay (system identifier, database OID, slot), its value
 * the commit LSN of the last PostgreSQL transaction inside (and, while rows
 * are published again after a slot loss, the replay's boundary and the
 * last replayed outbox id).  Because the progress record commits atomically
 * with the events, the last committed one says exactly what Kafka has; on
 * start the relay reads it (read_committed) and skips what it covers.
 *
 * Nothing here runs inside a librdkafka callback; errors come back as text
 * in a caller's buffer, never through ereport(), so that the sink can keep
 * all its librdkafka objects in order.
 *
 * src/eos.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_EOS_H
#define OUTBOX_EOS_H

#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "access/transam.h"
#include "access/xlogdefs.h"
#include "lib/stringinfo.h"

/* Longest key (and transactional.id) we build. */
#define EOS_KEY_LEN			(NAMEDATALEN + 112)
/* The header carrying a progress record's authentication code. */
#define EOS_MAC_HEADER		"outbox-progress-mac"
/* Length of that code (and of its key), bytes; in hexadecimal. */
#define EOS_MAC_LEN			32
#define EOS_MAC_HEX_LEN		(2 * EOS_MAC_LEN)
/* What the progress records' key is derived with from the message key. */
#define EOS_MAC_LABEL		"outbox progress record v2"
/* Longest progress value we accept (what we write stays far below). */
#define EOS_VALUE_LEN		(1024 * 1024)
/*
 * Most ids a progress record's snapshot or list carries (each): with 20
 * digits at most an id, both stay below librdkafka's default
 * message.max.bytes and EOS_VALUE_LEN.
 */
#define EOS_MAX_XIDS		16384

/* What the last committed progress record says. */
typedef struct EosProgress
{
	bool		found;			/* was there one? */
	XLogRecPtr	commit_lsn;		/* newest PostgreSQL transaction in Kafka */
	XLogRecPtr	end_lsn;		/* its end */
	XLogRecPtr	replay_boundary;	/* a replay's slot start, or invalid */
	int64		replay_last_id; /* last row of that replay in Kafka */
} EosProgress;

/*
 * The PostgreSQL transactions whose events are in Kafka (a progress record
 * says it besides its commit LSN): every transaction visible in a snapshot
 * of the relay's, taken when all that had committed before it was in Kafka,
 * and the transactions delivered since that the snapshot does not show.  A
 * replay after slot loss skips their rows (src/watermark.c).  Any subset of
 * what is in Kafka is correct (it only skips less): so is an empty one.
 * Transaction ids are full 64-bit ids; arrays are sorted and malloc'd.
 */
typedef struct EosDelivered
{
	bool		has_snapshot;	/* xmin, xmax, xip are set */
	uint64		xmin;			/* below: complete at the snapshot */
	uint64		xmax;			/* at or above: not yet started */
	uint64	   *xip;			/* running at the snapshot */
	int			nxip;
	uint64	   *xids;			/* delivered since, not in the snapshot */
	int			nxids;
} EosDelivered;

/* The full id of a recent 32-bit transaction id, relative to next. */
extern uint64 outbox_eos_widen_xid(FullTransactionId next, TransactionId xid);

/* qsort() / bsearch() order of full transaction ids (uint64). */
extern int	outbox_eos_cmp_xid(const void *a, const void *b);

/*
 * Is a transaction (a full id) complete in the snapshot xmin, xmax, xip
 * (running ids, sorted)?  The one visibility test of the delivery
 * watermark, a replay's boundary and the progress record's snapshot.
 */
extern bool outbox_eos_snapshot_shows(uint64 xmin, uint64 xmax,
									  const uint64 *xip, int nxip, uint64 xid);

/* Is a transaction's every event in Kafka, by d? */
extern bool outbox_eos_delivered_has(const EosDelivered *d, uint64 xid);
/*
 * Are all of d's ids below next (the server's next transaction id)?  A set
 * naming later ids comes from elsewhere (another history, a foreign record):
 * trusting it could skip rows that are not in Kafka.
 */
extern bool outbox_eos_delivered_before(const EosDelivered *d, uint64 next);
/* Free d's arrays; d is empty after. */
extern void outbox_eos_delivered_free(EosDelivered *d);

/*
 * The key of this relay's progress records, also its transactional.id:
 * "outbox:<system identifier>:<database OID>:<slot>:<incarnation>".  The
 * incarnation (incarnation.h) keeps every other history of this system (a
 * copy, a restore, a promoted standby) from reading our records as its
 * own, and from fencing our producers.
 */
extern void outbox_eos_key(char *buf, Size len, const char *slot_name,
						   const char *incarnation);

/*
 * The authentication code of a progress record (key and value) under
 * mac_key (EOS_MAC_LEN bytes), as EOS_MAC_HEX_LEN hexadecimal digits and a
 * NUL into hex.  False if it could not be computed.
 */
extern bool outbox_eos_mac(const uint8 *mac_key, const char *key,
						   Size key_len, const char *value, Size len,
						   char *hex);

/*
 * Encode / decode a progress value (a JSON object).  The delivered set is
 * optional both ways (NULL: none written, none wanted).
 */
extern void outbox_eos_encode(StringInfo buf, const char *key,
							  const EosProgress *p, const EosDelivered *d);
extern bool outbox_eos_decode(const char *buf, Size len, EosProgress *p,
							  EosDelivered *d);

/* The partition of the progress topic that holds a key's records. */
extern int32 outbox_eos_partition(const char *key, int partitions);

/*
 * Make sure the progress topic exists (1 partition, cleanup.policy=compact,
 * the cluster's default replication factor) and return its partition count
 * in *partitions.  rk is any client handle (the producer).  Returns false
 * with a message in err on failure.
 */
extern bool outbox_eos_ensure_topic(rd_kafka_t *rk, const char *topic,
									int *partitions, int timeout_ms,
									char *err, Size errlen);

/*
 * Read the last committed progress record of key that authenticates under
 * mac_key, with a read_committed consumer built from conf (consumed:
 * destroyed here either way).  Reads the key's partition backwards in
 * growing windows from its end; *unauthentic counts the records of key
 * passed over for want of a valid code.  Returns false with a message in
 * err on failure (no record is not a failure).
 */
extern bool outbox_eos_read_progress(rd_kafka_conf_t *conf, const char *topic,
									 int partitions, const char *key,
									 const uint8 *mac_key, EosProgress *out,
									 EosDelivered *delivered, int *unauthentic,
									 int timeout_ms, char *err, Size errlen);

#endif							/* OUTBOX_EOS_H */
