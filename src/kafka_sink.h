/*-------------------------------------------------------------------------
 *
 * kafka_sink.h
 *	  The relay's Kafka producer and its bookkeeping of what is in flight.
 *
 * Events arrive as frames of decoder/wire.h, grouped by transaction in
 * commit order.  The sink produces each event to Kafka and tracks every
 * transaction until all of its events are settled: acknowledged by Kafka, or
 * rejected permanently and recorded as a dead letter.  A record refused with
 * an error that is usually transient is produced again after a pause, and
 * no later record is produced meanwhile (per-key order); it becomes a dead
 * letter only after outbox.dead_letter_after, or never with
 * outbox.on_permanent_error = block.  The relay may confirm
 * a transaction's end LSN to the slot only once the transaction and all
 * transactions before it are settled (outbox_sink_settled_lsn()).
 *
 * librdkafka callbacks never palloc, elog or free: they only mark records
 * and link them into a completion list, which the sink works off after
 * rd_kafka_poll() returns.  All sink memory is malloc'd, outside PostgreSQL
 * memory contexts, because librdkafka references it until the delivery
 * report.
 *
 * src/kafka_sink.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_KAFKA_SINK_H
#define OUTBOX_KAFKA_SINK_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"

#include <librdkafka/rdkafka.h>

#include "eos.h"
#include "wire.h"

typedef struct OutboxSink OutboxSink;

/*
 * What a sink knew to be acknowledged (or dead-lettered) of the transactions
 * it had not settled yet: one bit per event, by the event's ordinal in its
 * transaction.  A rewind decodes from the slot's confirmed position again,
 * so the first transactions it sees may be partly in Kafka already; the
 * next sink takes this over and does not produce those events again.
 * Acknowledgements within a transaction need not be a prefix (its events go
 * to several partitions, each acknowledged on its own), hence a bitmap.
 * Bounded: 1 bit per event of unsettled transactions, at most 16 MB.
 */
typedef struct SinkAcked SinkAcked;

/* A decoded event, parsed from an 'E' frame (decoder/wire.h). */
typedef OutboxWireEvent SinkEvent;

/* A permanently rejected event waiting to be written to dead_letters. */
typedef struct SinkDeadLetter
{
	SinkEvent	event;			/* the event (borrows frame) */
	const char *error_code;		/* librdkafka error name */
	const char *error;			/* librdkafka error text */
} SinkDeadLetter;



/*
 * librdkafka configuration shared by the producer and the reply consumer
 * (reply.c).  Each returns false and a malloc'd message in *errstr on a bad
 * property; no message ever quotes a value.  outbox_kafka_conf_apply() sets
 * the user's properties: "name=value" lines (file_properties, '#'
 * comments), then "name=value" items separated by ';' (guc_properties,
 * where "\;" and "\\" escape); later ones win.  outbox_kafka_new() is
 * rd_kafka_new() with every signal blocked while librdkafka's threads start.
 */
extern bool outbox_kafka_conf_set(rd_kafka_conf_t *conf, const char *name,
								  const char *value, char **errstr);
extern bool outbox_kafka_conf_apply(rd_kafka_conf_t *conf,
									const char *file_properties,
									const char *guc_properties, char **errstr);
extern rd_kafka_t *outbox_kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf,
									char *errbuf, size_t errbuf_size);

/*
 * librdkafka log lines and errors, recorded by callbacks (which never elog)
 * and logged after the poll by outbox_kafka_log_report(): errors at LOG and
 * in relay_status, log lines at LOG (syslog level warning or worse) or
 * DEBUG1; each message starts with "outbox relay: " and who.
 */
#define OUTBOX_KAFKA_LOG_SLOTS	32
#define OUTBOX_KAFKA_LOG_LEN	512
typedef struct OutboxKafkaLog
{
	struct
	{
		int			level;		/* syslog level */
		bool		is_error;	/* from error_cb */
		char		text[OUTBOX_KAFKA_LOG_LEN]; /* message */
	}			slots[OUTBOX_KAFKA_LOG_SLOTS];
	int			n;				/* used slots */
	int			dropped;		/* lines that found no slot */
} OutboxKafkaLog;

extern void outbox_kafka_log_record(OutboxKafkaLog *log, int level,
									bool is_error, const char *fmt,...)
			pg_attribute_printf(4, 5);
extern void outbox_kafka_log_report(OutboxKafkaLog *log, const char *who);

/*
 * Create a producer for the given bootstrap servers.  Extra librdkafka
 * properties come as "name=value" lines (file_properties, '#' comments) and
 * as "name=value" items separated by ';' (guc_properties, where "\;" and
 * "\\" escape); later ones win.  acked (or NULL) comes from the previous
 * sink's outbox_sink_take_acked() and is taken over, also on failure.
 * Returns NULL and a malloc'd message in *errstr on bad configuration; the
 * message never quotes a property value.  wake_fd (or -1) is written to
 * whenever librdkafka queues a delivery report or an error for
 * rd_kafka_poll().  With a transactional_id (outbox.delivery = exactly_once)
 * two transactional producers take turns, with transactional_id and
 * transactional_id followed by ":2"; outbox_sink_start_transactions() must
 * succeed before the first frame is added.
 */
extern OutboxSink *outbox_sink_create(const char *brokers,
									  const char *file_properties,
									  const char *guc_properties,
									  const char *transactional_id,
									  SinkAcked *acked,
									  int wake_fd, char **errstr);
/* Take what is known acknowledged of unsettled transactions (or NULL). */
extern SinkAcked *outbox_sink_take_acked(OutboxSink *sink);
extern void outbox_sink_free_acked(SinkAcked *acked);
extern void outbox_sink_destroy(OutboxSink *sink);

/* Add one frame ('E' or 'C') from the decoder.  May block for backpressure. */
extern void outbox_sink_add_frame(OutboxSink *sink, const char *frame, Size len);

/* The database name every record carries as header outbox-db. */
extern void outbox_sink_set_database(OutboxSink *sink, const char *database);

/*
 * A function the sink calls while it waits for room inside
 * outbox_sink_add_frame(), after serving librdkafka's queue; it may throw
 * to leave the decoder.
 */
extern void outbox_sink_set_wait_hook(OutboxSink *sink, void (*hook) (void *),
									  void *arg);

/*
 * Did librdkafka report every broker down with no successful delivery
 * since?  outbox_sink_probe() asks the cluster for metadata to clear it.
 */
extern bool outbox_sink_unreachable(OutboxSink *sink);
extern void outbox_sink_probe(OutboxSink *sink, int timeout_ms);

/* Serve librdkafka's queue for up to timeout_ms and settle completions. */
extern void outbox_sink_poll(OutboxSink *sink, int timeout_ms);

/*
 * The end LSN of the newest transaction such that it and every earlier one
 * are settled, or InvalidXLogRecPtr if none was settled since the last call.
 */
extern XLogRecPtr outbox_sink_settled_lsn(OutboxSink *sink);

/* Events produced and not yet settled. */
extern uint64 outbox_sink_in_flight(OutboxSink *sink);
/* Is nothing at all unsettled (no transaction, no dead letter pending)? */
extern bool outbox_sink_idle(OutboxSink *sink);

/* Dead letters waiting to be written; the caller writes them, then acks. */
extern int	outbox_sink_dead_letters(OutboxSink *sink, SinkDeadLetter **out);
extern void outbox_sink_dead_letters_written(OutboxSink *sink);

/* Has the producer failed so that it must be rebuilt (and decoding rewound)? */
extern bool outbox_sink_failed(OutboxSink *sink, const char **why);

/* Counters for relay_status. */
extern void outbox_sink_stats(OutboxSink *sink, uint64 *delivered,
							  uint64 *dead_lettered,
							  TimestampTz *last_delivered_commit_time,
							  TimestampTz *oldest_in_flight_commit_time);

/*
 * exactly_once (see "Kafka transactions" in kafka_sink.c): initialise
 * transactions (fencing older producers of the same transactional.ids),
 * create the progress topic if missing and read the last committed progress
 * record; false with a malloc'd message on failure.  Events it covers are
 * skipped; transactions settle only once their Kafka transaction committed.
 */
extern bool outbox_sink_start_transactions(OutboxSink *sink,
										   const char *progress_topic,
										   char **errstr);
/* Commit the open Kafka transaction now if it may end here. */
extern void outbox_sink_flush(OutboxSink *sink);
/* Was the producer fenced by a newer one with its transactional.id? */
extern bool outbox_sink_fenced(OutboxSink *sink);
/*
 * Forget a progress record that names an LSN past insert_lsn (this
 * server's WAL insert position): it comes from another history of the
 * system, and skipping by it would lose events.
 */
extern void outbox_sink_check_history(OutboxSink *sink, XLogRecPtr insert_lsn);
/*
 * exactly_once: the key (EOS_MAC_LEN bytes) that authenticates this relay's
 * progress records; set before outbox_sink_start_transactions().
 */
extern void outbox_sink_set_progress_key(OutboxSink *sink, const uint8 *key);
/*
 * The outbox-source of frames added outside a transaction (rows replayed
 * after slot loss: the installation id read by the caller), or NULL.
 */
extern void outbox_sink_set_replay_source(OutboxSink *sink, const char *id);
/* Frames are rows replayed after slot loss from this boundary (or none). */
extern void outbox_sink_set_replay(OutboxSink *sink, XLogRecPtr boundary);

/*
 * exactly_once: a snapshot of the relay's, as full ids, and the WAL
 * position at or before which every commit it shows ended.  Once a
 * committed Kafka transaction reaches past that position, the progress
 * record names the transactions in Kafka by it (EosDelivered, eos.h).
 */
extern void outbox_sink_eos_capture(OutboxSink *sink, XLogRecPtr reached,
									uint64 xmin, uint64 xmax,
									const uint64 *xip, int nxip);
/*
 * exactly_once: the transactions whose events are in Kafka, by the last
 * committed progress record (or ours since); NULL if there is none or the
 * sink is not transactional.  Valid until the sink commits or is destroyed.
 */
extern const EosDelivered *outbox_sink_eos_delivered(OutboxSink *sink);

/* Log librdkafka messages and errors queued by callbacks (outside them). */
extern void outbox_sink_report(OutboxSink *sink);

#endif							/* OUTBOX_KAFKA_SINK_H */
