/*-------------------------------------------------------------------------
 *
 * outbox.h
 *	  Declarations shared by the outbox extension's modules.
 *
 * Module map (what may depend on what):
 *	  outbox.c        _PG_init: GUCs, shared memory hooks, worker registration,
 *	                  wake-the-relay-at-commit
 *	  event.c         event rules shared by SQL API and decoder: topic and
 *	                  header validation, compact JSON, emit() message codec
 *	  msgauth.c       signs and verifies the extension's logical messages
 *	                  (used by sql_api.c and the decoder)
 *	  sql_api.c       SQL-callable C functions (emit, validation trigger)
 *	  capture.c       the capture trigger
 *	  adopt.c         adopted tables: Debezium Outbox Event Router options
 *	                  and the event a row becomes (used by the decoder)
 *	  adopt_sql.c     outbox.adopt() and outbox.unadopt()
 *	  relay_shmem.c   relay status in shared memory, outbox._relay_status()
 *	  launcher.c      the launcher worker: starts and restarts the relay
 *	  relay_worker.c  the relay worker: slot, decoding loop, ack gating
 *	  kafka_sink.c    librdkafka producer and in-flight tracking
 *	  reply.c         the reply topic's consumer: verdicts applied as
 *	                  outbox.confirm() would, exactly once
 *	  decoder/        the `outbox` output plugin; depends on event.c,
 *	                  msgauth.c and adopt.c only,
 *	                  never on relay or Kafka code
 *
 * src/outbox.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_H
#define OUTBOX_H

#include "postgres.h"

#include "fmgr.h"

#include "event.h"

/* Name of the extension, its schema and its outbox table. */
#define OUTBOX_SCHEMA_NAME		"outbox"
#define OUTBOX_TABLE_NAME		"messages"
#define OUTBOX_DEAD_LETTERS_NAME "dead_letters"
#define OUTBOX_KEY_TABLE_NAME	"_message_key"

/* GUCs (outbox.c) */
extern int	outbox_max_message_size;	/* outbox.max_message_size, bytes */
extern char *outbox_kafka_brokers;	/* outbox.kafka_brokers */
extern char *outbox_databases;	/* outbox.databases: names or "*" */
extern char *outbox_slot_name;	/* outbox.slot_name, the slots' prefix */

/* A slot is named <prefix>_<database OID>: room for "_" and 10 digits. */
#define OUTBOX_SLOT_PREFIX_MAX	(NAMEDATALEN - 1 - 11)
extern char *outbox_kafka_properties;	/* outbox.kafka_properties (secret) */
extern char *outbox_kafka_config_file;	/* outbox.kafka_config_file */
extern char *outbox_reply_topic;	/* outbox.reply_topic, "" = off */
extern int	outbox_max_in_flight;	/* outbox.max_in_flight, events */
extern int	outbox_retry_interval_ms;	/* outbox.retry_interval, ms */
extern int	outbox_dead_letter_after_ms;	/* outbox.dead_letter_after, ms */
extern int	outbox_on_permanent_error;	/* outbox.on_permanent_error */
extern int	outbox_redeliver_interval_ms;	/* outbox.redeliver_interval, 0 = off */
extern int	outbox_redeliver_after_ms;	/* outbox.redeliver_after, ms */
extern int	outbox_max_attempts;	/* outbox.max_attempts, publications */
extern int	outbox_retention_s;	/* outbox.retention, seconds, 0 = off */

extern int	outbox_delivery;	/* outbox.delivery */
extern char *outbox_progress_topic; /* outbox.progress_topic */
extern int	outbox_transaction_linger_ms;	/* outbox.transaction_linger, ms */
extern int	outbox_transaction_max_events;	/* outbox.transaction_max_events */

/* Values of outbox.delivery. */
typedef enum OutboxDelivery
{
	OUTBOX_DELIVERY_AT_LEAST_ONCE,	/* idempotent producer, acks gate the slot */
	OUTBOX_DELIVERY_EXACTLY_ONCE	/* Kafka transactions with progress records */
} OutboxDelivery;

/* Values of outbox.on_permanent_error. */
typedef enum OutboxOnError
{
	OUTBOX_ON_ERROR_DEAD_LETTER,	/* write to outbox.dead_letters, go on */
	OUTBOX_ON_ERROR_BLOCK		/* retry forever, hold back later events */
} OutboxOnError;

/*
 * Ask for the relay worker to be woken when the current transaction commits
 * (outbox.c).  Cheap; call it for every event written.
 */
extern void outbox_wake_relay_at_commit(void);

/* sql_api.c: the validation trigger of outbox.messages (enqueue.c knows it) */
extern Datum outbox_messages_check(PG_FUNCTION_ARGS);

/* sql_api.c: an event from the arguments of emit() or enqueue() */
extern void outbox_require_topic_arg(FunctionCallInfo fcinfo, int argno);
extern void outbox_event_from_args(FunctionCallInfo fcinfo, int first_arg,
								   OutboxEvent *ev);

/*
 * identity.c: the installation id (outbox.installation), sent as Kafka
 * header outbox-source; read under the caller's (historic) catalog snapshot.
 */
#define OUTBOX_INSTALLATION_ID_LEN	36	/* uuid as text */
#define OUTBOX_SOURCE_HEADER		"outbox-source"
extern bool outbox_installation_id(char *buf);
/*
 * Rewrite an installation row drawn for another database, data directory
 * or timeline with its replacement id and the current binding (identity.c).
 * The relay calls it in a transaction of its own, before it decodes.
 */
extern void outbox_installation_rebind(void);

/* relay_shmem.c */
extern Size outbox_shmem_size(void);
extern void outbox_shmem_init(void);
extern void outbox_relay_set_latch(void);
extern void outbox_register_database(void);

/* launcher.c */
extern void outbox_launcher_register(void);
extern PGDLLEXPORT void outbox_launcher_main(Datum main_arg);

/* relay_worker.c: started by the launcher; main_arg is the database OID */
extern PGDLLEXPORT void outbox_relay_main(Datum main_arg);

#endif							/* OUTBOX_H */
