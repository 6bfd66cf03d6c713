/*-------------------------------------------------------------------------
 *
 * kafka_sink.c
 *	  The relay's Kafka producer (librdkafka) and in-flight bookkeeping.
 *
 * Every event is copied once, from the decoder's output buffer into a
 * malloc'd SinkRecord, and handed to librdkafka without a further copy; the
 * record lives until its delivery report has been worked off.  Transactions
 * are kept in commit order; a transaction is settled when its commit frame
 * was seen and each of its events was acknowledged or dead-lettered.
 *
 * A record refused with a usually transient error (unknown or unauthorized
 * topic, leader moves) pauses the stream: nothing new is produced until the
 * refused records, produced again in their original order after a backoff,
 * are acknowledged, so no record overtakes an earlier one of its key
 * (resume_stream()).  Each unsettled transaction keeps a bitmap of its
 * acknowledged events, which outlives the producer over a rewind so that the
 * next one does not produce them again (outbox_sink_take_acked()).
 *
 * Callbacks (delivery reports, errors, logs) are served by rd_kafka_poll()
 * on the relay's own thread, but even so they only record what happened in
 * preallocated memory; logging, counting and freeing happen afterwards.
 *
 * src/kafka_sink.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <pthread.h>
#include <librdkafka/rdkafka.h>

#include "common/hashfn.h"
#include "lib/ilist.h"
#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "storage/pmsignal.h"
#include "storage/ipc.h"

#include "compat.h"
#include "eos.h"
#include "event.h"
#include "kafka_sink.h"
#include "outbox.h"
#include "relay_shmem.h"
#include "wire.h"

/* In-flight bytes are bounded too, so that large events cannot pile up. */
#define SINK_MAX_IN_FLIGHT_BYTES	((Size) 64 * 1024 * 1024)
/* librdkafka log lines and errors kept between two polls. */
#define SINK_LOG_LEN		OUTBOX_KAFKA_LOG_LEN
/* Pauses before producing records again after a transient error. */
#define SINK_RETRY_MIN_MS	100
#define SINK_RETRY_MAX_MS	5000
/* Longest wait for a topic's metadata before a retry. */
#define SINK_METADATA_TIMEOUT_MS	1000
/* Repeat the "still retrying" warning this often. */
#define SINK_RETRY_REPORT_MS	60000
/* Most bitmap bytes handed over a rewind (1 bit per event). */
#define SINK_MAX_ACKED_BYTES	((Size) 16 * 1024 * 1024)
/* exactly_once: transactional producers taking turns (see eos_commit()). */
#define SINK_MAX_PRODUCERS	2
/* ... and what the transactional.id of the second one appends to the key. */
#define SINK_SECOND_ID_SUFFIX	":2"

/* A transaction with events, in commit order. */
typedef struct SinkTxn
{
	XLogRecPtr	end_lsn;		/* LSN past its commit record */
	XLogRecPtr	commit_lsn;		/* its commit record */
	TimestampTz commit_time;	/* its commit time */
	uint64		pending;		/* events not yet settled */
	bool		complete;		/* commit frame seen */
	bool		committed;		/* exactly_once: in a committed Kafka
								 * transaction, or needed none */
	uint32		nevents;		/* events seen: the next one's ordinal */
	uint8	   *acked;			/* bit per ordinal: acknowledged by Kafka or
								 * written to dead_letters; NULL if none */
	uint32		acked_cap;		/* bytes allocated for acked */
	uint32		nacked;			/* bits set in acked */
	struct SinkTxn *next;		/* next in commit order */
	char		lsn_header[24]; /* outbox-lsn value, formatted once */
	char		xid_header[12]; /* outbox-xid value, formatted once */
	TransactionId xid;			/* its transaction id */
	bool		has_source;		/* source_header is set */
	char		source_header[OUTBOX_INSTALLATION_ID_LEN + 1];	/* outbox-source */
} SinkTxn;

/* One produced event. */
typedef struct SinkRecord
{
	dlist_node	node;			/* in sink->records */
	SinkTxn    *txn;			/* transaction it belongs to */
	rd_kafka_resp_err_t err;	/* delivery result */
	bool		reported;		/* delivery report seen */
	uint64		seq;			/* production order, kept across retries */
	uint32		ordinal;		/* its place in its transaction, from 0 */
	int			failures;		/* deliveries that failed and were retried */
	bool		reserved;		/* its topic is the relay's own: never produced */
	bool		alone;			/* retry it in a request of its own */
	struct SinkRecord *next_done;	/* completion, retry, held or dead list */
	Size		len;			/* frame length */
	char		frame[FLEXIBLE_ARRAY_MEMBER];	/* copy of the 'E' frame */
} SinkRecord;

/* A topic handle, cached per sink (see topic_slot()). */
typedef struct SinkTopic
{
	bool		used;			/* false for an empty slot */
	uint32		hash;			/* hash of name */
	rd_kafka_topic_t *rkt[SINK_MAX_PRODUCERS];	/* handle per producer, made
												 * on first use */
	TimestampTz failing_since;	/* first transient error since the last
								 * acknowledgement, or 0 */
	char		name[OUTBOX_TOPIC_MAX_LEN + 1];	/* topic name */
} SinkTopic;

/* What is known to be acknowledged of one unsettled transaction. */
typedef struct SinkAckedTxn
{
	XLogRecPtr	commit_lsn;		/* the transaction */
	uint8	   *bits;			/* SinkTxn.acked, taken over */
	uint32		nbytes;			/* its size */
	uint32		nacked;			/* bits set */
} SinkAckedTxn;

/*
 * exactly_once: an event Kafka refused inside a transaction, which was
 * therefore aborted.  Remembered over the rewind, so that the next attempt
 * produces it alone (size errors: batch-mates fail with it), again later
 * (transient errors) or not at all but into dead_letters (definite).
 */
typedef struct SinkPoison
{
	XLogRecPtr	commit_lsn;		/* its transaction */
	uint32		ordinal;		/* its place there */
	int64		id;				/* its outbox id, or -1 */
	rd_kafka_resp_err_t err;	/* the last refusal */
	TimestampTz first_failed;	/* the first one */
	bool		definite;		/* goes to dead_letters, unproduced */
} SinkPoison;

/*
 * exactly_once: a snapshot of the relay's (outbox_sink_eos_capture()) that
 * can say which transactions are in Kafka once the Kafka transactions
 * committed reach past the WAL position read after it.
 */
typedef struct SinkCapture
{
	XLogRecPtr	reached;		/* every commit visible in it ended here */
	EosDelivered snap;			/* its snapshot, no xids */
} SinkCapture;

#define SINK_MAX_CAPTURES	8

/* Handed from a sink to the next one over a rewind (kafka_sink.h). */
struct SinkAcked
{
	SinkPoison *poison;			/* exactly_once: refused events (malloc'd) */
	int			npoison;
	int			ntxns;			/* entries, in commit order */
	int			next;			/* first entry not yet matched or passed */
	SinkAckedTxn txns[FLEXIBLE_ARRAY_MEMBER];
};

struct OutboxSink
{
	rd_kafka_t *rk;				/* the producer: rks[cur] */
	rd_kafka_t *rks[SINK_MAX_PRODUCERS];	/* exactly_once: two, else one */
	int			nrks;
	int			cur;			/* the one producing now */
	char		database[NAMEDATALEN];	/* outbox-db header value */
	dlist_head	records;		/* every live SinkRecord */
	SinkTxn    *head;			/* oldest unsettled transaction */
	SinkTxn    *tail;			/* newest transaction */
	uint64		in_flight;		/* records handed to librdkafka, unreported */
	Size		in_flight_bytes;	/* their frame bytes */
	SinkRecord *done_head;		/* reported, not yet worked off */
	SinkRecord *done_tail;
	SinkRecord *dead_head;		/* rejected, waiting for dead_letters */
	SinkRecord *dead_tail;
	int			ndead;			/* length of the dead list */
	SinkRecord *retry_head;		/* failed transiently, to be produced again,
								 * in production order */
	int			nretry;			/* length of the retry list */
	SinkRecord *held_head;		/* not produced yet: the stream is paused */
	SinkRecord *held_tail;
	uint64		nheld;			/* length of the held list */
	Size		held_bytes;		/* their frame bytes */
	uint64		next_seq;		/* next SinkRecord.seq */
	TimestampTz retry_at;		/* when to produce the retry list again */
	int			backoff_ms;		/* current pause between retries */
	int			nfailing;		/* topics with failing_since set */
	bool		paused;			/* records wait for a retry or its outcome:
								 * new ones are held back */
	bool		retry_reported; /* this episode was logged */
	TimestampTz retry_reported_at;	/* when */
	SinkDeadLetter *dead_array; /* handed to the caller */
	int			dead_array_cap; /* allocated entries */
	int			dead_handed;	/* entries handed out */
	XLogRecPtr	settled_lsn;	/* newest settled end LSN since last asked */
	uint64		delivered;		/* acknowledged events */
	uint64		dead_lettered;	/* dead-lettered events */
	SinkAcked  *acked;			/* from the previous sink, or NULL */
	uint64		skipped;		/* events not produced: acknowledged before */
	uint64		skipped_reported;	/* skipped when last logged */
	TimestampTz last_delivered_commit_time; /* of the newest acknowledged */
	bool		failed;			/* producer must be rebuilt */
	bool		unreachable;	/* all brokers down, no delivery since */
	void		(*wait_hook) (void *);	/* run while waiting for room */
	void	   *wait_arg;		/* its argument */
	char		failed_reason[SINK_LOG_LEN];	/* why */
	SinkTopic  *topics;			/* open-addressing table of topic handles */
	int			topics_size;	/* slots, a power of two */
	int			ntopics;		/* used slots */
	OutboxKafkaLog log;			/* recorded by callbacks */
	/* exactly_once (outbox.delivery): see "Kafka transactions" below */
	bool		eos;			/* transactional producer? */
	bool		eos_ready;		/* transactions initialised, progress read */
	bool		fenced;			/* a newer producer took our transactional.id */
	bool		txn_open;		/* a Kafka transaction is open */
	bool		committing;		/* inside eos_commit() */
	TimestampTz txn_began;		/* when it began */
	uint64		txn_events;		/* events produced in it */
	rd_kafka_resp_err_t progress_err;	/* the progress record's delivery */
	EosProgress progress;		/* what Kafka has: read at start, then ours */
	EosProgress pending_progress;	/* what the open transaction will say */
	EosDelivered in_kafka;		/* transactions in Kafka: read, then ours */
	EosDelivered next_in_kafka; /* what the committing transaction says */
	SinkCapture captures[SINK_MAX_CAPTURES];	/* oldest first */
	int			ncaptures;
	XLogRecPtr	replay_boundary;	/* replaying rows after slot loss */
	rd_kafka_topic_t *progress_rkt[SINK_MAX_PRODUCERS];	/* the progress
														 * topic, per producer */
	int32		progress_partition; /* our key's partition there */
	bool		skip_over;		/* an event past the progress record came */
	SinkPoison *poison;			/* refused events, over rewinds */
	int			npoison;
	int			poison_cap;
	char		eos_key[EOS_KEY_LEN];	/* progress key = first transactional.id */
	char		txn_ids[SINK_MAX_PRODUCERS][EOS_KEY_LEN + sizeof(SINK_SECOND_ID_SUFFIX)];
	bool		has_replay_source;	/* replay_source is set */
	char		replay_source[OUTBOX_INSTALLATION_ID_LEN + 1];	/* outbox-source
																 * of replayed rows */
	uint8		progress_mac_key[EOS_MAC_LEN];	/* authenticates progress records */
	bool		has_progress_mac_key;	/* set by outbox_sink_set_progress_key() */
	char	   *client_brokers; /* settings, for the progress reader */
	char	   *client_file_props;
	char	   *client_guc_props;
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg,
						void *opaque);
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque);
static void on_log(const rd_kafka_t *rk, int level, const char *fac,
				   const char *buf);
static bool is_fenced_error(rd_kafka_resp_err_t err);
static void eos_reject(OutboxSink *sink, SinkRecord *rec);
static bool eos_produce_event(OutboxSink *sink, SinkTxn *txn, SinkRecord *rec,
							  const SinkEvent *ev);
static void eos_maybe_commit(OutboxSink *sink, bool now);
static void push_dead(OutboxSink *sink, SinkRecord *rec);
static void serve_while_waiting(OutboxSink *sink);
static bool eos_covered(OutboxSink *sink, const SinkEvent *ev);
static bool is_record_error(rd_kafka_resp_err_t err);
static bool is_size_error(rd_kafka_resp_err_t err);
static void report_skipped(OutboxSink *sink);
static bool is_transient_error(rd_kafka_resp_err_t err);
static void reject(OutboxSink *sink, SinkRecord *rec);
static void send_record(OutboxSink *sink, SinkRecord *rec);
static void resume_stream(OutboxSink *sink);
static void poll_reports(OutboxSink *sink, int timeout_ms);
static void settle(OutboxSink *sink);
static void pop_settled(OutboxSink *sink);
static SinkTxn *txn_for_event(OutboxSink *sink, const SinkEvent *ev);
static void produce_event(OutboxSink *sink, const char *frame, Size len);
static void free_record(OutboxSink *sink, SinkRecord *rec);
static void adopt_acked(OutboxSink *sink, SinkTxn *txn);

/* ---------------------------------------------------------------------
 * Producer life cycle
 * ---------------------------------------------------------------------
 */

/*
 * Set one property.  librdkafka's own message may quote the value (for
 * example 'Invalid value "..." for configuration property "acks"'), and a
 * value may be a password, so the error we return names the property only.
 */
bool
outbox_kafka_conf_set(rd_kafka_conf_t *conf, const char *name,
					  const char *value, char **errstr)
{
	char		buf[512];
	char		msg[SINK_LOG_LEN];
	rd_kafka_conf_res_t res;

	res = rd_kafka_conf_set(conf, name, value, buf, sizeof(buf));
	if (res == RD_KAFKA_CONF_OK)
		return true;
	if (res == RD_KAFKA_CONF_UNKNOWN)
		snprintf(msg, sizeof(msg), "unknown librdkafka property \"%s\"", name);
	else
		snprintf(msg, sizeof(msg),
				 "invalid value for librdkafka property \"%s\" (the value is not shown)",
				 name);
	*errstr = strdup(msg);
	return false;
}

/*
 * Split the next item off *cursor at an unescaped separator (any of seps),
 * into dst, which has room for the whole rest of the list.  With escapes,
 * "\;" stands for ";" and "\\" for "\"; a backslash before anything else
 * is kept as it is.  Returns false at the end of the list.
 */
static bool
conf_next_item(const char **cursor, const char *seps, bool escapes, char *dst)
{
	const char *p = *cursor;

	if (*p == '\0')
		return false;
	while (*p != '\0' && strchr(seps, *p) == NULL)
	{
		if (escapes && p[0] == '\\' && (p[1] == ';' || p[1] == '\\'))
			p++;
		*dst++ = *p++;
	}
	*dst = '\0';
	if (*p != '\0')
		p++;					/* the separator */
	*cursor = p;
	return true;
}

/*
 * Apply "name=value" items separated by any of seps (what separates them is
 * named by "what", for messages).  Blank items and items starting with '#'
 * are skipped.  No message ever quotes a value or an item that is not a
 * well-formed "name=value": either may hold (part of) a password.
 */
static bool
conf_apply_list(rd_kafka_conf_t *conf, const char *list, const char *seps,
				bool escapes, const char *what, char **errstr)
{
	char	   *item;
	const char *cursor = list;
	bool		ok = true;
	int			n = 0;

	if (list == NULL || list[0] == '\0')
		return true;
	item = malloc(strlen(list) + 1);
	if (item == NULL)
	{
		*errstr = strdup("out of memory");
		return false;
	}
	while (ok && conf_next_item(&cursor, seps, escapes, item))
	{
		char	   *eq;
		char	   *name = item;
		char	   *value;
		char	   *e;

		n++;
		while (*name == ' ' || *name == '\t' || *name == '\r')
			name++;
		if (*name == '\0' || *name == '#')
			continue;
		eq = strchr(name, '=');
		if (eq == NULL)
		{
			char		buf[SINK_LOG_LEN];

			snprintf(buf, sizeof(buf),
					 "item %d of %s is not of the form name=value (its text is not shown)",
					 n, what);
			*errstr = strdup(buf);
			ok = false;
			break;
		}
		*eq = '\0';
		value = eq + 1;
		for (e = eq - 1; e >= name && (*e == ' ' || *e == '\t'); e--)
			*e = '\0';
		while (*value == ' ' || *value == '\t')
			value++;
		for (e = value + strlen(value) - 1;
			 e >= value && (*e == ' ' || *e == '\t' || *e == '\r'); e--)
			*e = '\0';
		ok = outbox_kafka_conf_set(conf, name, value, errstr);
	}
	free(item);
	return ok;
}

/*
 * Apply the user's properties: outbox.kafka_config_file's lines, then
 * outbox.kafka_properties' items (later ones win).
 */
bool
outbox_kafka_conf_apply(rd_kafka_conf_t *conf, const char *file_properties,
						const char *guc_properties, char **errstr)
{
	return conf_apply_list(conf, file_properties, "\n", false,
						   "outbox.kafka_config_file", errstr) &&
		conf_apply_list(conf, guc_properties, ";", true,
						"outbox.kafka_properties", errstr);
}

/*
 * rd_kafka_new() with every signal blocked: librdkafka's threads inherit
 * our signal mask, and PostgreSQL's signals must reach only our thread.
 */
rd_kafka_t *
outbox_kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, char *errbuf,
				 size_t errbuf_size)
{
	sigset_t	all;
	sigset_t	saved;
	rd_kafka_t *rk;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &saved);
	rk = rd_kafka_new(type, conf, errbuf, errbuf_size);
	pthread_sigmask(SIG_SETMASK, &saved, NULL);
	return rk;
}

/*
 * A producer's configuration: ours, the user's properties, ours again where
 * they must not be overridden.  NULL with *errstr set on error.
 */
static rd_kafka_conf_t *
sink_conf(OutboxSink *sink, const char *brokers, const char *file_properties,
		  const char *guc_properties, const char *transactional_id,
		  char **errstr)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char		num[32];

	snprintf(num, sizeof(num), "%d", Min(outbox_max_in_flight * 2, 10000000));
	if (!outbox_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr) ||
		!outbox_kafka_conf_set(conf, "client.id", "outbox-relay", errstr) ||
		!outbox_kafka_conf_set(conf, "enable.idempotence", "true", errstr) ||
		!outbox_kafka_conf_set(conf, "partitioner", "murmur2_random", errstr) ||
		/* a transactional producer's bound is transaction.timeout.ms */
		(transactional_id == NULL &&
		 !outbox_kafka_conf_set(conf, "message.timeout.ms", "0", errstr)) ||
		!outbox_kafka_conf_set(conf, "linger.ms", "0", errstr) ||
		!outbox_kafka_conf_set(conf, "socket.nagle.disable", "true", errstr) ||
		!outbox_kafka_conf_set(conf, "queue.buffering.max.messages", num, errstr) ||
		!outbox_kafka_conf_set(conf, "log.queue", "true", errstr) ||
		!outbox_kafka_conf_apply(conf, file_properties, guc_properties, errstr) ||
		(transactional_id != NULL &&
		 !outbox_kafka_conf_set(conf, "transactional.id", transactional_id, errstr)))
	{
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	rd_kafka_conf_set_opaque(conf, sink);
	rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
	rd_kafka_conf_set_error_cb(conf, on_error);
	rd_kafka_conf_set_log_cb(conf, on_log);
	return conf;
}

/* Undo a half-made outbox_sink_create(). */
static void
sink_create_failed(OutboxSink *sink, SinkAcked *acked)
{
	int			i;

	for (i = 0; i < sink->nrks; i++)
		rd_kafka_destroy(sink->rks[i]);
	free(sink->poison);
	free(sink->client_brokers);
	free(sink->client_file_props);
	free(sink->client_guc_props);
	free(sink);
	outbox_sink_free_acked(acked);
}

/*
 * With a transactional_id (exactly_once), two transactional producers take
 * turns, the second one's transactional.id being the first one's with ":2"
 * appended (eos_commit() says why).
 */
OutboxSink *
outbox_sink_create(const char *brokers, const char *file_properties,
				   const char *guc_properties, const char *transactional_id,
				   SinkAcked *acked, int wake_fd, char **errstr)
{
	OutboxSink *sink;
	rd_kafka_queue_t *mainq;
	char		buf[512];
	int			nrks = (transactional_id != NULL) ? SINK_MAX_PRODUCERS : 1;
	int			i;

	*errstr = NULL;
	sink = calloc(1, sizeof(OutboxSink));
	if (sink == NULL)
	{
		*errstr = strdup("out of memory");
		outbox_sink_free_acked(acked);
		return NULL;
	}
	dlist_init(&sink->records);

	if (transactional_id == NULL && acked != NULL && acked->ntxns == 0)
	{
		/* refused events of an exactly_once sink: at least once retries them */
		outbox_sink_free_acked(acked);
		acked = NULL;
	}
	if (transactional_id != NULL)
	{
		sink->eos = true;
		strlcpy(sink->eos_key, transactional_id, sizeof(sink->eos_key));
		for (i = 0; i < nrks; i++)
			snprintf(sink->txn_ids[i], sizeof(sink->txn_ids[i]), "%s%s",
					 transactional_id, i == 0 ? "" : SINK_SECOND_ID_SUFFIX);
		sink->client_brokers = strdup(brokers);
		sink->client_file_props = strdup(file_properties ? file_properties : "");
		sink->client_guc_props = strdup(guc_properties ? guc_properties : "");
		if (acked != NULL)
		{
			/* only the refused events matter: no acknowledgement survives an abort */
			sink->poison = acked->poison;
			sink->npoison = sink->poison_cap = acked->npoison;
			acked->poison = NULL;
			acked->npoison = 0;
			outbox_sink_free_acked(acked);
			acked = NULL;
		}
	}

	for (i = 0; i < nrks; i++)
	{
		rd_kafka_conf_t *conf;

		conf = sink_conf(sink, brokers, file_properties, guc_properties,
						 transactional_id ? sink->txn_ids[i] : NULL, errstr);
		if (conf == NULL)
		{
			sink_create_failed(sink, acked);
			return NULL;
		}
		sink->rks[i] = outbox_kafka_new(RD_KAFKA_PRODUCER, conf, buf, sizeof(buf));
		if (sink->rks[i] == NULL)
		{
			/* rd_kafka_new() frees conf only on success */
			rd_kafka_conf_destroy(conf);
			*errstr = strdup(buf);
			sink_create_failed(sink, acked);
			return NULL;
		}
		sink->nrks++;

		/* Serve logs from rd_kafka_poll(), and wake us when anything is queued. */
		rd_kafka_set_log_queue(sink->rks[i], NULL);
		if (wake_fd >= 0)
		{
			mainq = rd_kafka_queue_get_main(sink->rks[i]);
			rd_kafka_queue_io_event_enable(mainq, wake_fd, "1", 1);
			rd_kafka_queue_destroy(mainq);
		}
	}
	sink->cur = 0;
	sink->rk = sink->rks[0];

	sink->acked = acked;
	if (acked != NULL)
	{
		uint64		events = 0;

		for (i = 0; i < acked->ntxns; i++)
			events += acked->txns[i].nacked;
		ereport(LOG,
				(errmsg("outbox relay: %llu event(s) of %d unsettled transaction(s) were acknowledged before the rewind and will not be produced again",
						(unsigned long long) events, acked->ntxns)));
	}
	return sink;
}

void
outbox_sink_destroy(OutboxSink *sink)
{
	dlist_mutable_iter iter;
	SinkTxn    *txn;
	int			i;

	if (sink == NULL)
		return;

	/*
	 * An open Kafka transaction is aborted (its records stay invisible to
	 * read_committed consumers); should that fail, the next producer's
	 * init_transactions() aborts it.
	 */
	if (sink->eos && sink->txn_open && !sink->fenced)
	{
		rd_kafka_error_t *error = rd_kafka_abort_transaction(sink->rk, 2000);

		if (error != NULL)
			rd_kafka_error_destroy(error);
		sink->txn_open = false;
	}

	/* Drop whatever is queued or in flight; delivery reports say "purged". */
	for (i = 0; i < sink->nrks; i++)
	{
		int			j;

		rd_kafka_purge(sink->rks[i], RD_KAFKA_PURGE_F_QUEUE |
					   RD_KAFKA_PURGE_F_INFLIGHT | RD_KAFKA_PURGE_F_NON_BLOCKING);
		rd_kafka_poll(sink->rks[i], 0);
		for (j = 0; j < sink->topics_size; j++)
			if (sink->topics[j].rkt[i] != NULL)
				rd_kafka_topic_destroy(sink->topics[j].rkt[i]);
		if (sink->progress_rkt[i] != NULL)
			rd_kafka_topic_destroy(sink->progress_rkt[i]);
		rd_kafka_destroy(sink->rks[i]);
	}
	free(sink->topics);

	dlist_foreach_modify(iter, &sink->records)
	{
		SinkRecord *rec = dlist_container(SinkRecord, node, iter.cur);

		dlist_delete(&rec->node);
		free(rec);
	}
	while ((txn = sink->head) != NULL)
	{
		sink->head = txn->next;
		free(txn->acked);
		free(txn);
	}
	outbox_sink_free_acked(sink->acked);
	free(sink->dead_array);
	free(sink->poison);
	outbox_eos_delivered_free(&sink->in_kafka);
	outbox_eos_delivered_free(&sink->next_in_kafka);
	for (i = 0; i < sink->ncaptures; i++)
		outbox_eos_delivered_free(&sink->captures[i].snap);
	free(sink->client_brokers);
	free(sink->client_file_props);
	free(sink->client_guc_props);
	free(sink);
}

/* ---------------------------------------------------------------------
 * librdkafka callbacks: record, never palloc/elog/free
 * ---------------------------------------------------------------------
 */

static void
on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
	OutboxSink *sink = (OutboxSink *) opaque;
	SinkRecord *rec = (SinkRecord *) msg->_private;

	if (rec == NULL)
	{
		/* the progress record of a Kafka transaction */
		if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR)
			sink->progress_err = msg->err;
		return;
	}
	rec->err = msg->err;
	rec->reported = true;
	rec->next_done = NULL;
	if (sink->done_tail)
		sink->done_tail->next_done = rec;
	else
		sink->done_head = rec;
	sink->done_tail = rec;
}

void
outbox_kafka_log_record(OutboxKafkaLog *log, int level, bool is_error,
						const char *fmt,...)
{
	va_list		ap;

	if (log->n >= OUTBOX_KAFKA_LOG_SLOTS)
	{
		log->dropped++;
		return;
	}
	log->slots[log->n].level = level;
	log->slots[log->n].is_error = is_error;
	va_start(ap, fmt);
	vsnprintf(log->slots[log->n].text, OUTBOX_KAFKA_LOG_LEN, fmt, ap);
	va_end(ap);
	log->n++;
}

static void
on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	OutboxSink *sink = (OutboxSink *) opaque;

	if (err == RD_KAFKA_RESP_ERR__FATAL)
	{
		char		fatal[SINK_LOG_LEN];
		rd_kafka_resp_err_t orig;

		orig = rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
		sink->failed = true;
		if (is_fenced_error(orig))
		{
			int			i;

			for (i = 0; i < sink->nrks - 1 && sink->rks[i] != rk; i++)
				;
			sink->fenced = true;
			snprintf(sink->failed_reason, sizeof(sink->failed_reason),
					 "fenced: a newer producer with transactional.id \"%s\" took over (%s: %s)",
					 sink->txn_ids[i], rd_kafka_err2name(orig), fatal);
		}
		else
			snprintf(sink->failed_reason, sizeof(sink->failed_reason),
					 "fatal producer error %s: %s", rd_kafka_err2name(orig), fatal);
		return;
	}
	if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
		sink->unreachable = true;
	outbox_kafka_log_record(&sink->log, 3, true, "%s: %s",
							rd_kafka_err2name((rd_kafka_resp_err_t) err), reason);
}

static void
on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	OutboxSink *sink = (OutboxSink *) rd_kafka_opaque(rk);

	outbox_kafka_log_record(&sink->log, level, false, "%s: %s", fac, buf);
}

/* ---------------------------------------------------------------------
 * Producing
 * ---------------------------------------------------------------------
 */

/*
 * Errors about the record itself: no retry will cure them.  Such a record
 * goes to dead_letters at once (or blocks the stream, with
 * outbox.on_permanent_error = block), except for the size errors below.
 */
static bool
is_size_error(rd_kafka_resp_err_t err)
{
	return err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ||
		err == RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE;
}

static bool
is_record_error(rd_kafka_resp_err_t err)
{
	switch (err)
	{
		case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
		case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
		case RD_KAFKA_RESP_ERR_INVALID_RECORD:
		case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:	/* invalid topic name */
		case RD_KAFKA_RESP_ERR__INVALID_ARG:
			return true;
		default:
			return false;
	}
}

/*
 * Errors about the topic or partition that are usually transient: a missing
 * ACL or topic that an operator adds, a topic being created, a leader that
 * moves.  The record is produced again after a pause, holding back every
 * later record, until outbox.dead_letter_after has passed since the topic's
 * first such error.  Any other error that reaches a delivery report
 * (librdkafka retries the rest itself, forever with our message.timeout.ms
 * = 0) fails the producer, which the relay rebuilds before resuming from the
 * slot's confirmed position.
 */
static bool
is_transient_error(rd_kafka_resp_err_t err)
{
	switch (err)
	{
		case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
		case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
		case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
		case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
		case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
		case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
		case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
		case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
		case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
			return true;
		default:
			return false;
	}
}

static void
push_dead(OutboxSink *sink, SinkRecord *rec)
{
	rec->next_done = NULL;
	if (sink->dead_tail)
		sink->dead_tail->next_done = rec;
	else
		sink->dead_head = rec;
	sink->dead_tail = rec;
	sink->ndead++;
}

static void
free_record(OutboxSink *sink, SinkRecord *rec)
{
	dlist_delete(&rec->node);
	free(rec);
}

/*
 * Wait, serving delivery reports, until there is room for one more event.
 * This runs inside the decoder's write callback; the relay's wait hook
 * keeps everything else going meanwhile (reloads, status, errors) and may
 * leave the decoder altogether (see relay_worker.c).
 */
static void
wait_for_room(OutboxSink *sink, Size len)
{
	while (!sink->failed &&
		   (sink->in_flight + sink->nheld >= (uint64) outbox_max_in_flight ||
			(sink->in_flight + sink->nheld > 0 &&
			 sink->in_flight_bytes + sink->held_bytes + len > SINK_MAX_IN_FLIGHT_BYTES)))
	{
		outbox_sink_poll(sink, 100);
		serve_while_waiting(sink);
	}
}

/* Between two looks at librdkafka while the sink waits: the rest of the world. */
static void
serve_while_waiting(OutboxSink *sink)
{
	CHECK_FOR_INTERRUPTS();
	if (!PostmasterIsAlive())
		proc_exit(1);
	if (sink->wait_hook)
		sink->wait_hook(sink->wait_arg);
}

void
outbox_sink_set_database(OutboxSink *sink, const char *database)
{
	strlcpy(sink->database, database, sizeof(sink->database));
}

void
outbox_sink_set_wait_hook(OutboxSink *sink, void (*hook) (void *), void *arg)
{
	sink->wait_hook = hook;
	sink->wait_arg = arg;
}

bool
outbox_sink_unreachable(OutboxSink *sink)
{
	return sink->unreachable;
}

/*
 * While the cluster is marked unreachable, ask it for metadata (waiting at
 * most timeout_ms): an answer means a broker is back, even when nothing is
 * in flight to prove it.
 */
void
outbox_sink_probe(OutboxSink *sink, int timeout_ms)
{
	const struct rd_kafka_metadata *md = NULL;

	if (!sink->unreachable)
		return;
	if (rd_kafka_metadata(sink->rk, 0, NULL, &md, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR)
		sink->unreachable = false;
	if (md != NULL)
		rd_kafka_metadata_destroy(md);
}

/*
 * The producer's handle for a topic, created on first use and kept.
 * Producing by topic name instead makes librdkafka wait for its periodic
 * metadata refresh (up to a second) before the first record of each new
 * topic leaves, after every start and rebuild of the producer.
 */
static SinkTopic *
topic_slot(OutboxSink *sink, const char *name, int len)
{
	uint32		hash = hash_bytes((const unsigned char *) name, len);
	int			i;
	SinkTopic  *slot;

	if (sink->ntopics * 2 >= sink->topics_size)
	{
		/* grow (or create) the table, keeping it at most half full */
		int			old_size = sink->topics_size;
		SinkTopic  *old = sink->topics;
		int			new_size = old_size ? old_size * 2 : 16;
		SinkTopic  *grown = calloc(new_size, sizeof(SinkTopic));

		if (grown == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory")));
		for (i = 0; i < old_size; i++)
		{
			int			j;

			if (!old[i].used)
				continue;
			for (j = old[i].hash & (new_size - 1); grown[j].used;
				 j = (j + 1) & (new_size - 1))
				;
			grown[j] = old[i];
		}
		free(old);
		sink->topics = grown;
		sink->topics_size = new_size;
	}

	for (i = hash & (sink->topics_size - 1);; i = (i + 1) & (sink->topics_size - 1))
	{
		slot = &sink->topics[i];
		if (!slot->used)
			break;
		if (slot->hash == hash && strcmp(slot->name, name) == 0)
		{
			/* the other producer's handle, the first time it produces here */
			if (slot->rkt[sink->cur] == NULL)
				slot->rkt[sink->cur] = rd_kafka_topic_new(sink->rk, name, NULL);
			return slot->rkt[sink->cur] ? slot : NULL;
		}
	}

	slot->rkt[sink->cur] = rd_kafka_topic_new(sink->rk, name, NULL);
	if (slot->rkt[sink->cur] == NULL)
		return NULL;			/* invalid name: the caller dead-letters */
	slot->used = true;
	slot->hash = hash;
	slot->failing_since = 0;
	strlcpy(slot->name, name, sizeof(slot->name));
	sink->ntopics++;
	return slot;
}

/*
 * The topic slot of a record's event, or NULL for an invalid topic name.
 * The pointer is good until the next topic is added.
 */
static SinkTopic *
record_topic(OutboxSink *sink, SinkRecord *rec)
{
	SinkEvent	ev;
	const char *problem;
	char		topic[OUTBOX_TOPIC_MAX_LEN + 1];

	if (!outbox_wire_parse_event(rec->frame, rec->len, &ev, &problem) ||
		ev.topic_len > OUTBOX_TOPIC_MAX_LEN || ev.topic_len == 0)
		return NULL;
	memcpy(topic, ev.topic, ev.topic_len);
	topic[ev.topic_len] = '\0';
	return topic_slot(sink, topic, ev.topic_len);
}



/* Remember that a transaction's event was acknowledged or dead-lettered. */
static void
txn_mark_acked(SinkTxn *txn, uint32 ordinal)
{
	uint32		byte = ordinal / 8;
	uint8		bit = (uint8) (1 << (ordinal % 8));

	if (byte >= txn->acked_cap)
	{
		uint32		cap = Max(txn->acked_cap * 2, 16);
		uint8	   *bits;

		while (cap <= byte)
			cap *= 2;
		bits = realloc(txn->acked, cap);
		if (bits == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory")));
		memset(bits + txn->acked_cap, 0, cap - txn->acked_cap);
		txn->acked = bits;
		txn->acked_cap = cap;
	}
	if ((txn->acked[byte] & bit) == 0)
	{
		txn->acked[byte] |= bit;
		txn->nacked++;
	}
}

static bool
txn_is_acked(SinkTxn *txn, uint32 ordinal)
{
	uint32		byte = ordinal / 8;

	return byte < txn->acked_cap &&
		(txn->acked[byte] & (1 << (ordinal % 8))) != 0;
}

/*
 * A new transaction: if the previous sink knew some of its events to be
 * acknowledged, take that over.  Transactions arrive in commit order, so
 * entries for earlier ones (settled, or confirmed by the slot) are dropped.
 */
static void
adopt_acked(OutboxSink *sink, SinkTxn *txn)
{
	SinkAcked  *acked = sink->acked;

	while (acked->next < acked->ntxns &&
		   acked->txns[acked->next].commit_lsn < txn->commit_lsn)
		free(acked->txns[acked->next++].bits);
	if (acked->next < acked->ntxns &&
		acked->txns[acked->next].commit_lsn == txn->commit_lsn)
	{
		SinkAckedTxn *a = &acked->txns[acked->next++];

		txn->acked = a->bits;
		txn->acked_cap = a->nbytes;
		txn->nacked = a->nacked;
		a->bits = NULL;
	}
	if (acked->next >= acked->ntxns)
	{
		free(acked);
		sink->acked = NULL;
	}
}

void
outbox_sink_free_acked(SinkAcked *acked)
{
	int			i;

	if (acked == NULL)
		return;
	for (i = acked->next; i < acked->ntxns; i++)
		free(acked->txns[i].bits);
	free(acked->poison);
	free(acked);
}

SinkAcked *
outbox_sink_take_acked(OutboxSink *sink)
{
	SinkAcked  *acked;
	SinkTxn    *txn;
	int			n = 0;
	Size		bytes = 0;

	if (sink == NULL)
		return NULL;
	if (sink->eos)
	{
		/* an aborted transaction's acknowledgements mean nothing */
		if (sink->npoison == 0)
			return NULL;
		acked = calloc(1, offsetof(SinkAcked, txns));
		if (acked == NULL)
			return NULL;
		acked->poison = sink->poison;
		acked->npoison = sink->npoison;
		sink->poison = NULL;
		sink->npoison = sink->poison_cap = 0;
		return acked;
	}
	for (txn = sink->head; txn != NULL; txn = txn->next)
	{
		if (txn->nacked == 0)
			continue;
		if (bytes + txn->acked_cap > SINK_MAX_ACKED_BYTES)
			break;
		bytes += txn->acked_cap;
		n++;
	}
	if (n == 0)
		return NULL;
	acked = malloc(offsetof(SinkAcked, txns) + n * sizeof(SinkAckedTxn));
	if (acked == NULL)
		return NULL;			/* only duplicates are at stake */
	acked->ntxns = n;
	acked->next = 0;
	acked->poison = NULL;
	acked->npoison = 0;
	n = 0;
	for (txn = sink->head; txn != NULL && n < acked->ntxns; txn = txn->next)
	{
		SinkAckedTxn *a;

		if (txn->nacked == 0)
			continue;
		a = &acked->txns[n++];
		a->commit_lsn = txn->commit_lsn;
		a->bits = txn->acked;
		a->nbytes = txn->acked_cap;
		a->nacked = txn->nacked;
		txn->acked = NULL;
		txn->acked_cap = 0;
		txn->nacked = 0;
	}
	return acked;
}

/* The transaction an event belongs to: the newest one, or a new one. */
static SinkTxn *
txn_for_event(OutboxSink *sink, const SinkEvent *ev)
{
	SinkTxn    *txn = sink->tail;

	if (txn != NULL && !txn->complete && txn->commit_lsn == ev->commit_lsn)
		return txn;

	txn = calloc(1, sizeof(SinkTxn));
	if (txn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	txn->commit_lsn = ev->commit_lsn;
	txn->end_lsn = ev->end_lsn;
	txn->commit_time = ev->commit_time;
	snprintf(txn->lsn_header, sizeof(txn->lsn_header), "%X/%X",
			 LSN_FORMAT_ARGS(ev->commit_lsn));
	snprintf(txn->xid_header, sizeof(txn->xid_header), "%u", ev->xid);
	txn->xid = ev->xid;
	/* read under the decoded transaction's snapshot: see identity.c */
	txn->has_source = outbox_installation_id(txn->source_header);
	if (!txn->has_source && sink->has_replay_source)
	{
		/* a row replayed after slot loss, outside any transaction */
		memcpy(txn->source_header, sink->replay_source, sizeof(txn->source_header));
		txn->has_source = true;
	}
	if (sink->acked != NULL)
		adopt_acked(sink, txn);
	if (sink->tail)
		sink->tail->next = txn;
	else
		sink->head = txn;
	sink->tail = txn;
	return txn;
}

static void
produce_event(OutboxSink *sink, const char *frame, Size len)
{
	SinkRecord *rec;
	SinkEvent	ev;
	const char *problem;
	SinkTxn    *txn;
	uint32		ordinal;

	if (sink->failed)
		return;					/* the relay rewinds; nothing to produce */
	if (!outbox_wire_parse_event(frame, len, &ev, &problem))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("outbox relay received a malformed frame from the decoder: %s",
						problem)));
	txn = txn_for_event(sink, &ev);
	ordinal = txn->nevents++;

	if (sink->eos)
	{
		if (!XLogRecPtrIsInvalid(sink->replay_boundary) && ev.has_id &&
			ev.id > sink->pending_progress.replay_last_id)
			sink->pending_progress.replay_last_id = ev.id;
		/* in Kafka already, by the last committed progress record */
		if (eos_covered(sink, &ev))
		{
			sink->skipped++;
			return;
		}
		sink->skip_over = true;
	}

	/* acknowledged before a rewind: producing it again would only repeat it */
	if (txn->acked != NULL && txn_is_acked(txn, ordinal))
	{
		sink->skipped++;
		return;
	}

	wait_for_room(sink, len);
	if (sink->failed)
		return;

	rec = malloc(offsetof(SinkRecord, frame) + len);
	if (rec == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory for an in-flight event of %zu bytes", len)));
	memset(rec, 0, offsetof(SinkRecord, frame));
	rec->len = len;
	rec->seq = sink->next_seq++;
	memcpy(rec->frame, frame, len);
	dlist_push_tail(&sink->records, &rec->node);
	rec->ordinal = ordinal;
	rec->txn = txn;
	txn->pending++;

	if (sink->eos)
	{
		eos_produce_event(sink, txn, rec, &ev);
		return;
	}

	/*
	 * While records wait for a retry, later ones are held back unproduced,
	 * or they could overtake them (resume_stream() produces them).
	 */
	if (sink->paused)
	{
		rec->next_done = NULL;
		if (sink->held_tail)
			sink->held_tail->next_done = rec;
		else
			sink->held_head = rec;
		sink->held_tail = rec;
		sink->nheld++;
		sink->held_bytes += len;
		return;
	}
	send_record(sink, rec);
}

/*
 * Hand a record to librdkafka.  A record it refuses at once is dealt with
 * like one that failed in its delivery report.
 */
static void
send_record(OutboxSink *sink, SinkRecord *rec)
{
	SinkEvent	ev;
	const char *problem;
	char		topic[OUTBOX_TOPIC_MAX_LEN + 1];
	char		num[64];
	rd_kafka_headers_t *hdrs;
	rd_kafka_resp_err_t err;
	const char *cursor;
	uint32		i;
	SinkTopic  *slot;
	SinkTxn    *txn = rec->txn;

	/* parsed in our copy, which librdkafka references until delivery */
	if (!outbox_wire_parse_event(rec->frame, rec->len, &ev, &problem))
		elog(ERROR, "in-flight event frame went bad: %s", problem);
	rec->reported = false;
	rec->err = RD_KAFKA_RESP_ERR_NO_ERROR;

	if (ev.topic_len > OUTBOX_TOPIC_MAX_LEN || ev.topic_len == 0)
	{
		rec->err = RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION;
		reject(sink, rec);
		return;
	}
	memcpy(topic, ev.topic, ev.topic_len);
	topic[ev.topic_len] = '\0';
	if (outbox_topic_reserved(topic) != NULL)
	{
		/* a forged progress record or verdict: never, in any mode */
		rec->reserved = true;
		rec->err = RD_KAFKA_RESP_ERR__INVALID_ARG;
		push_dead(sink, rec);
		return;
	}
	slot = topic_slot(sink, topic, ev.topic_len);
	if (slot == NULL)
	{
		rec->err = rd_kafka_last_error();
		if (!is_record_error(rec->err))
			rec->err = RD_KAFKA_RESP_ERR__INVALID_ARG;	/* the name is bad */
		reject(sink, rec);
		return;
	}

	hdrs = rd_kafka_headers_new(ev.nheaders + 6);
	cursor = ev.headers;
	for (i = 0; i < ev.nheaders; i++)
	{
		const char *name;
		const char *value;
		uint32		name_len;
		uint32		value_len;

		outbox_wire_next_header(&cursor, &name, &name_len, &value, &value_len);
		rd_kafka_header_add(hdrs, name, name_len, value, value_len);
	}
	if (ev.has_id)
	{
		snprintf(num, sizeof(num), INT64_FORMAT, ev.id);
		rd_kafka_header_add(hdrs, "outbox-id", -1, num, -1);
	}
	rd_kafka_header_add(hdrs, "outbox-lsn", -1, txn->lsn_header, -1);
	rd_kafka_header_add(hdrs, "outbox-xid", -1, txn->xid_header, -1);
	if (txn->has_source)
		rd_kafka_header_add(hdrs, OUTBOX_SOURCE_HEADER, -1, txn->source_header, -1);
	if (sink->database[0] != '\0')
		rd_kafka_header_add(hdrs, "outbox-db", -1, sink->database, -1);
	if (ev.attempts > 1)
	{
		/* a redelivery or redrive: which publication of the event this is */
		snprintf(num, sizeof(num), "%d", (int) ev.attempts);
		rd_kafka_header_add(hdrs, "outbox-attempt", -1, num, -1);
	}

	for (;;)
	{
		err = rd_kafka_producev(sink->rk,
								RD_KAFKA_V_RKT(slot->rkt[sink->cur]),
								RD_KAFKA_V_PARTITION(RD_KAFKA_PARTITION_UA),
								RD_KAFKA_V_MSGFLAGS(0),
								RD_KAFKA_V_KEY(ev.key, ev.key_len),
								RD_KAFKA_V_VALUE((void *) ev.payload, ev.payload_len),
								RD_KAFKA_V_HEADERS(hdrs),
								RD_KAFKA_V_OPAQUE(rec),
								RD_KAFKA_V_END);
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			break;
		/* librdkafka's own queue is full: serve reports and retry */
		poll_reports(sink, 100);
		CHECK_FOR_INTERRUPTS();
		if (!PostmasterIsAlive())
			proc_exit(1);
	}

	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		sink->in_flight++;
		sink->in_flight_bytes += rec->len;
		return;
	}

	/* Not accepted: the headers are still ours. */
	rd_kafka_headers_destroy(hdrs);
	rec->err = err;
	reject(sink, rec);
}

/*
 * A record failed (rec->err): dead-letter it, keep it for a retry, or fail
 * the producer.
 */
static void
reject(OutboxSink *sink, SinkRecord *rec)
{
	bool		block = (outbox_on_permanent_error == OUTBOX_ON_ERROR_BLOCK);
	TimestampTz now;
	SinkTopic  *slot;
	SinkRecord **link;
	bool		expired = false;

	if (sink->eos)
	{
		eos_reject(sink, rec);
		return;
	}

	/*
	 * A broker refuses a whole batch when one record of it is too large, so
	 * the records batched with it fail too.  The first time, every such
	 * record is retried alone, one request each, in order: only the one
	 * that is too large by itself fails again and goes to dead_letters.
	 */
	if (is_size_error(rec->err) && rec->failures == 0 && !block)
		rec->alone = true;
	else if (is_record_error(rec->err) && !block)
	{
		push_dead(sink, rec);
		return;
	}
	if (!is_record_error(rec->err) && !is_transient_error(rec->err))
	{
		if (!sink->failed)
		{
			sink->failed = true;
			snprintf(sink->failed_reason, sizeof(sink->failed_reason),
					 "delivery failed: %s", rd_kafka_err2str(rec->err));
		}
		/* leave txn->pending: nothing past it may be confirmed */
		free_record(sink, rec);
		return;
	}

	/* transient, or blocking: how long has the topic been failing? */
	now = GetCurrentTimestamp();
	if (rec->alone)
		goto retry;
	slot = record_topic(sink, rec);
	if (slot != NULL && slot->failing_since == 0)
	{
		slot->failing_since = now;
		sink->nfailing++;
	}
	expired = !block && slot != NULL &&
		TimestampDifferenceExceeds(slot->failing_since, now,
								   outbox_dead_letter_after_ms);

	/*
	 * Past the topic's time, a record goes to dead_letters once it failed
	 * again after a retry, which refreshes the topic's metadata: librdkafka
	 * may fail a record at once on the remembered error of an earlier one.
	 */
	if (expired && (rec->failures > 0 || outbox_dead_letter_after_ms == 0))
	{
		push_dead(sink, rec);
		return;
	}

	/* keep it for a retry, in production order */
retry:
	rec->failures++;
	for (link = &sink->retry_head; *link != NULL && (*link)->seq < rec->seq;
		 link = &(*link)->next_done)
		;
	rec->next_done = *link;
	*link = rec;
	sink->nretry++;
	sink->paused = true;
	if (sink->retry_at == 0)
	{
		/* a topic past its time is only checked once more: no backoff */
		sink->backoff_ms = (sink->backoff_ms == 0 || expired) ? SINK_RETRY_MIN_MS :
			Min(sink->backoff_ms * 2, SINK_RETRY_MAX_MS);
		sink->retry_at = TimestampTzPlusMilliseconds(now, sink->backoff_ms);
	}
}

/*
 * Ask the cluster for a topic's metadata now, so that a retry does not fail
 * at once on what librdkafka remembers of the last error until its next
 * periodic refresh (topic.metadata.refresh.interval.ms).
 */
static void
refresh_topic(OutboxSink *sink, SinkTopic *slot)
{
	const struct rd_kafka_metadata *md = NULL;

	if (rd_kafka_metadata(sink->rk, 0, slot->rkt[sink->cur], &md,
						  SINK_METADATA_TIMEOUT_MS) == RD_KAFKA_RESP_ERR_NO_ERROR)
		rd_kafka_metadata_destroy(md);
}

/*
 * Log, once per change, how many events a rewind did not produce again
 * because Kafka had acknowledged them (once the carried-over set is used up).
 */
static void
report_skipped(OutboxSink *sink)
{
	/* exactly_once: once the covered transactions are behind (skip_over) */
	if (sink->eos && !sink->skip_over)
		return;
	if (sink->skipped != sink->skipped_reported && sink->acked == NULL)
	{
		if (sink->eos)
			ereport(LOG,
					(errmsg("outbox relay: skipped %llu event(s) that the last committed progress record covers",
							(unsigned long long) sink->skipped)));
		else
			ereport(LOG,
					(errmsg("outbox relay: skipped %llu event(s) acknowledged before the rewind",
							(unsigned long long) sink->skipped)));
		sink->skipped_reported = sink->skipped;
	}
}

/*
 * Produce the records waiting for a retry once their pause is over and
 * every record produced before them has been reported; then, once the
 * retried records have all been acknowledged, the held ones.  So a record
 * is never overtaken by a later one on its partition, whatever happens.
 */
static void
resume_stream(OutboxSink *sink)
{
	SinkRecord *rec;
	SinkRecord *next;

	if (sink->failed || sink->in_flight > 0)
		return;

	report_skipped(sink);
	if (sink->retry_head != NULL)
	{
		TimestampTz now = GetCurrentTimestamp();
		SinkTopic  *last = NULL;

		if (now < sink->retry_at)
			return;
		rec = sink->retry_head;
		sink->retry_head = NULL;
		sink->nretry = 0;
		sink->retry_at = 0;
		for (; rec != NULL && !sink->failed; rec = next)
		{
			SinkTopic  *slot = record_topic(sink, rec);

			next = rec->next_done;
			if (slot != NULL && slot != last && !rec->alone)
				refresh_topic(sink, slot);
			last = slot;
			if (rec->alone)
			{
				/* one request of its own: the rest wait for its report */
				rec->alone = false;
				sink->retry_head = next;
				for (; next != NULL; next = next->next_done)
					sink->nretry++;
				send_record(sink, rec);
				return;
			}
			send_record(sink, rec);
		}
		/* after a failure the rest are dropped with the producer */
		return;
	}

	if (sink->paused)
	{
		/* the last retries went through: produce what was held back */
		sink->paused = false;
		sink->backoff_ms = 0;
		sink->retry_reported = false;
		while ((rec = sink->held_head) != NULL &&
			   !sink->paused && !sink->failed)
		{
			sink->held_head = rec->next_done;
			if (sink->held_head == NULL)
				sink->held_tail = NULL;
			sink->nheld--;
			sink->held_bytes -= rec->len;
			send_record(sink, rec);
		}
	}
}

void
outbox_sink_add_frame(OutboxSink *sink, const char *frame, Size len)
{
	SinkTxn    *txn;
	const char *problem;

	if (len < 1)
		elog(ERROR, "empty frame from the outbox decoder");

	if (frame[0] == OUTBOX_WIRE_COMMIT)
	{
		XLogRecPtr	commit_lsn;
		XLogRecPtr	end_lsn;
		uint32		nevents;

		if (!outbox_wire_parse_commit(frame, len, &commit_lsn, &end_lsn,
									  &nevents, &problem))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("outbox relay received a malformed frame from the decoder: %s",
							problem)));
		txn = sink->tail;
		if (txn == NULL || txn->commit_lsn != commit_lsn || txn->complete)
		{
			/* events were all skipped (failed producer): nothing to track */
			if (sink->failed)
				return;
			elog(ERROR, "commit frame at %X/%X without its events",
				 LSN_FORMAT_ARGS(commit_lsn));
		}
		if (!sink->failed && txn->nevents != nevents)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("outbox relay received %u events for the transaction committed at %X/%X, but its commit frame counts %u",
							txn->nevents, LSN_FORMAT_ARGS(commit_lsn), nevents)));
		txn->complete = true;
		if (sink->eos)
		{
			/* nothing of it is in an open Kafka transaction: nothing to wait for */
			if (!sink->txn_open)
				txn->committed = true;
			eos_maybe_commit(sink, false);
		}
		pop_settled(sink);
		return;
	}

	produce_event(sink, frame, len);
}

/* ---------------------------------------------------------------------
 * Settling
 * ---------------------------------------------------------------------
 */

static void
pop_settled(OutboxSink *sink)
{
	SinkTxn    *txn;

	/*
	 * A failed producer drops events instead of producing them: from then
	 * on no transaction may count as settled, or the slot could be confirmed
	 * past events that never reached Kafka.  The relay rebuilds and rewinds.
	 */
	if (sink->failed)
		return;

	while ((txn = sink->head) != NULL && txn->complete && txn->pending == 0 &&
		   (txn->committed || !sink->eos))
	{
		sink->settled_lsn = txn->end_lsn;
		sink->head = txn->next;
		if (sink->head == NULL)
			sink->tail = NULL;
		free(txn->acked);
		free(txn);
	}
}

/* Work off the delivery reports recorded by on_delivery(). */
static void
settle(OutboxSink *sink)
{
	SinkRecord *rec;
	SinkRecord *next;

	rec = sink->done_head;
	sink->done_head = sink->done_tail = NULL;
	for (; rec != NULL; rec = next)
	{
		next = rec->next_done;
		sink->in_flight--;
		sink->in_flight_bytes -= rec->len;

		if (rec->err == RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			sink->unreachable = false;
			if (sink->nfailing > 0)
			{
				/* the topic works again: its dead-letter clock stops */
				SinkTopic  *slot = record_topic(sink, rec);

				if (slot != NULL && slot->failing_since != 0)
				{
					slot->failing_since = 0;
					sink->nfailing--;
				}
			}
			txn_mark_acked(rec->txn, rec->ordinal);
			rec->txn->pending--;
			sink->delivered++;
			sink->last_delivered_commit_time = rec->txn->commit_time;
			free_record(sink, rec);
		}
		else
			reject(sink, rec);
	}
	pop_settled(sink);
}

/* Serve librdkafka's queue and work off what it reported. */
static void
poll_reports(OutboxSink *sink, int timeout_ms)
{
	int			i;

	rd_kafka_poll(sink->rk, timeout_ms);
	/* rd_kafka_poll serves one event per call when it had to wait */
	for (i = 0; i < sink->nrks; i++)
		while (rd_kafka_poll(sink->rks[i], 0) > 0)
			;
	settle(sink);
}

void
outbox_sink_poll(OutboxSink *sink, int timeout_ms)
{
	poll_reports(sink, timeout_ms);
	resume_stream(sink);
	eos_maybe_commit(sink, false);
}

XLogRecPtr
outbox_sink_settled_lsn(OutboxSink *sink)
{
	XLogRecPtr	lsn = sink->settled_lsn;

	sink->settled_lsn = InvalidXLogRecPtr;
	return lsn;
}

uint64
outbox_sink_in_flight(OutboxSink *sink)
{
	uint64		n = 0;
	SinkTxn    *txn;

	for (txn = sink->head; txn != NULL; txn = txn->next)
		n += txn->pending;
	return n;
}

bool
outbox_sink_idle(OutboxSink *sink)
{
	return !sink->failed && sink->head == NULL && sink->ndead == 0;
}

int
outbox_sink_dead_letters(OutboxSink *sink, SinkDeadLetter **out)
{
	SinkRecord *rec;
	int			i = 0;

	if (sink->ndead == 0)
	{
		*out = NULL;
		return 0;
	}
	if (sink->dead_array_cap < sink->ndead)
	{
		SinkDeadLetter *arr = realloc(sink->dead_array,
									  sizeof(SinkDeadLetter) * sink->ndead);

		if (arr == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory")));
		sink->dead_array = arr;
		sink->dead_array_cap = sink->ndead;
	}
	for (rec = sink->dead_head; rec != NULL; rec = rec->next_done)
	{
		SinkDeadLetter *dl = &sink->dead_array[i++];
		const char *problem;

		if (!outbox_wire_parse_event(rec->frame, rec->len, &dl->event, &problem))
			elog(ERROR, "dead letter frame went bad: %s", problem);
		if (rec->reserved)
		{
			dl->error_code = "OUTBOX_RESERVED_TOPIC";
			dl->error = "not produced: the topic is outbox.progress_topic or outbox.reply_topic, which only the relay writes";
		}
		else
		{
			dl->error_code = rd_kafka_err2name(rec->err);
			dl->error = rd_kafka_err2str(rec->err);
		}
	}
	sink->dead_handed = i;
	*out = sink->dead_array;
	return i;
}

/* The dead letters handed out were committed: settle their events. */
void
outbox_sink_dead_letters_written(OutboxSink *sink)
{
	int			i;

	for (i = 0; i < sink->dead_handed; i++)
	{
		SinkRecord *rec = sink->dead_head;

		sink->dead_head = rec->next_done;
		sink->ndead--;
		txn_mark_acked(rec->txn, rec->ordinal);
		rec->txn->pending--;
		sink->dead_lettered++;
		free_record(sink, rec);
	}
	if (sink->dead_head == NULL)
		sink->dead_tail = NULL;
	sink->dead_handed = 0;
	pop_settled(sink);
}

bool
outbox_sink_failed(OutboxSink *sink, const char **why)
{
	if (sink->failed)
		*why = sink->failed_reason;
	return sink->failed;
}

void
outbox_sink_stats(OutboxSink *sink, uint64 *delivered, uint64 *dead_lettered,
				  TimestampTz *last_delivered_commit_time,
				  TimestampTz *oldest_in_flight_commit_time)
{
	*delivered = sink->delivered;
	*dead_lettered = sink->dead_lettered;
	*last_delivered_commit_time = sink->last_delivered_commit_time;
	*oldest_in_flight_commit_time = sink->head ? sink->head->commit_time : 0;
}

/* Log what the callbacks recorded; errors also go to relay_status. */
void
outbox_sink_report(OutboxSink *sink)
{
	outbox_kafka_log_report(&sink->log, "");
	report_skipped(sink);
	if (sink->retry_head != NULL)
	{
		TimestampTz now = GetCurrentTimestamp();

		if (!sink->retry_reported ||
			(outbox_on_permanent_error == OUTBOX_ON_ERROR_BLOCK &&
			 TimestampDifferenceExceeds(sink->retry_reported_at, now,
										SINK_RETRY_REPORT_MS)))
		{
			SinkRecord *rec = sink->retry_head;
			SinkTopic  *slot = record_topic(sink, rec);
			const char *topic = slot ? slot->name : "(invalid)";

			if (outbox_on_permanent_error == OUTBOX_ON_ERROR_BLOCK)
			{
				ereport(WARNING,
						(errmsg("outbox relay: blocked: Kafka refuses an event for topic \"%s\" (%s); retrying, later events wait",
								topic, rd_kafka_err2name(rec->err)),
						 errhint("outbox.on_permanent_error is \"block\": the event is never dead-lettered. Fix the cause, or set outbox.on_permanent_error to \"dead_letter\".")));
				outbox_status_error("blocked: Kafka refuses an event for topic \"%s\" (%s); retrying, later events wait",
									topic, rd_kafka_err2name(rec->err));
			}
			else
			{
				ereport(WARNING,
						(errmsg("outbox relay: Kafka refused %d event(s) for topic \"%s\" (%s); retrying, later events wait",
								sink->nretry, topic, rd_kafka_err2name(rec->err)),
						 errdetail("Events still refused %d ms after the topic's first error go to outbox.dead_letters (outbox.dead_letter_after).",
								   outbox_dead_letter_after_ms)));
				outbox_status_error("Kafka refused %d event(s) for topic \"%s\" (%s); retrying, later events wait",
									sink->nretry, topic, rd_kafka_err2name(rec->err));
			}
			sink->retry_reported = true;
			sink->retry_reported_at = now;
		}
	}
}

/* Log what outbox_kafka_log_record() recorded, and forget it. */
void
outbox_kafka_log_report(OutboxKafkaLog *log, const char *who)
{
	int			i;

	for (i = 0; i < log->n; i++)
	{
		if (log->slots[i].is_error)
		{
			ereport(LOG,
					(errmsg("outbox relay: %sKafka error: %s", who,
							log->slots[i].text)));
			outbox_status_error("%sKafka: %s", who, log->slots[i].text);
		}
		else
			ereport(log->slots[i].level <= 4 ? LOG : DEBUG1,
					(errmsg("outbox relay: %slibrdkafka: %s", who,
							log->slots[i].text)));
	}
	if (log->dropped > 0)
		ereport(LOG,
				(errmsg("outbox relay: %s%d librdkafka messages were not logged",
						who, log->dropped)));
	log->n = 0;
	log->dropped = 0;
}

/* ---------------------------------------------------------------------
 * Kafka transactions (outbox.delivery = exactly_once)
 *
 * A Kafka transaction begins with the first record produced after the last
 * one ended, on the other of two transactional producers (eos_commit() says
 * why), and holds whole PostgreSQL transactions: it is committed only at a
 * commit frame (or later), together with a progress record that names the
 * newest PostgreSQL transaction inside (src/eos.c).  Only then
 * do its PostgreSQL transactions count as settled, so the slot never
 * passes what Kafka has not committed; and whatever Kafka has committed,
 * the progress record says, so that a rewind or a restart skips it
 * (eos_covered()).
 *
 * A record refused inside the transaction makes it abortable: the producer
 * is failed, the relay aborts and rewinds, and the refused record is
 * remembered (SinkPoison, carried over the rewind) to be produced alone
 * next time (a size error fails its batch-mates too), or to go to
 * dead_letters without being produced once it is known to be at fault.
 * ---------------------------------------------------------------------
 */

static bool
is_fenced_error(rd_kafka_resp_err_t err)
{
	return err == RD_KAFKA_RESP_ERR__FENCED ||
		err == RD_KAFKA_RESP_ERR_PRODUCER_FENCED ||
		err == RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH;
}

static void
eos_fail(OutboxSink *sink, const char *fmt,...)
pg_attribute_printf(2, 3);

static void
eos_fail(OutboxSink *sink, const char *fmt,...)
{
	va_list		ap;

	if (sink->failed)
		return;
	sink->failed = true;
	va_start(ap, fmt);
	vsnprintf(sink->failed_reason, sizeof(sink->failed_reason), fmt, ap);
	va_end(ap);
}

/*
 * A transactional call failed: a fenced or otherwise fatal producer must be
 * rebuilt; an abortable transaction is aborted; either way the relay
 * rewinds and the next producer starts from the last committed progress.
 */
static void
eos_txn_error(OutboxSink *sink, rd_kafka_error_t *error, const char *what)
{
	rd_kafka_resp_err_t code = rd_kafka_error_code(error);

	if (rd_kafka_error_is_fatal(error))
	{
		char		fatal[SINK_LOG_LEN];
		rd_kafka_resp_err_t orig = rd_kafka_fatal_error(sink->rk, fatal,
														sizeof(fatal));

		if (is_fenced_error(code) || is_fenced_error(orig))
			sink->fenced = true;
	}
	else if (is_fenced_error(code))
		sink->fenced = true;

	if (sink->fenced)
		eos_fail(sink, "fenced: a newer producer with transactional.id \"%s\" took over (%s: %s)",
				 sink->txn_ids[sink->cur], what, rd_kafka_error_string(error));
	else if (rd_kafka_error_txn_requires_abort(error))
	{
		rd_kafka_error_t *aerr = rd_kafka_abort_transaction(sink->rk, 5000);

		if (aerr == NULL)
			sink->txn_open = false;
		else
			rd_kafka_error_destroy(aerr);
		eos_fail(sink, "Kafka transaction aborted (%s: %s)", what,
				 rd_kafka_error_string(error));
	}
	else
		eos_fail(sink, "Kafka transaction failed (%s: %s)", what,
				 rd_kafka_error_string(error));
}

/* Is an event in Kafka already, by the last committed progress record? */
static bool
eos_covered(OutboxSink *sink, const SinkEvent *ev)
{
	if (!sink->progress.found)
		return false;
	if (!XLogRecPtrIsInvalid(sink->replay_boundary))
		return ev->has_id &&
			sink->progress.replay_boundary == sink->replay_boundary &&
			ev->id <= sink->progress.replay_last_id;
	return ev->commit_lsn <= sink->progress.commit_lsn;
}

static SinkPoison *
poison_find(OutboxSink *sink, XLogRecPtr commit_lsn, uint32 ordinal, int64 id)
{
	int			i;

	for (i = 0; i < sink->npoison; i++)
	{
		SinkPoison *p = &sink->poison[i];

		if (p->commit_lsn == commit_lsn && p->ordinal == ordinal && p->id == id)
			return p;
	}
	return NULL;
}

/*
 * Forget the refused events of PostgreSQL transactions up to commit_lsn,
 * which a committed Kafka transaction covers: no rewind produces them again.
 */
static void
poison_forget(OutboxSink *sink, XLogRecPtr commit_lsn)
{
	int			i;
	int			kept = 0;

	for (i = 0; i < sink->npoison; i++)
	{
		if (sink->poison[i].commit_lsn > commit_lsn)
			sink->poison[kept++] = sink->poison[i];
	}
	sink->npoison = kept;
}

/* Serve delivery reports until everything produced is reported. */
static void
eos_drain(OutboxSink *sink)
{
	while (sink->in_flight > 0 && !sink->failed)
	{
		poll_reports(sink, 100);
		serve_while_waiting(sink);
	}
}

/* Produce a progress record into the open Kafka transaction. */
static rd_kafka_resp_err_t
eos_produce_progress(OutboxSink *sink, const EosProgress *p,
					 const EosDelivered *d)
{
	StringInfoData value;
	rd_kafka_resp_err_t err;
	rd_kafka_headers_t *hdrs;
	char		mac[EOS_MAC_HEX_LEN + 1];

	initStringInfo(&value);
	outbox_eos_encode(&value, sink->eos_key, p, d);
	if (!outbox_eos_mac(sink->progress_mac_key, sink->eos_key,
						strlen(sink->eos_key), value.data, value.len, mac))
	{
		pfree(value.data);
		return RD_KAFKA_RESP_ERR__FAIL;
	}
	hdrs = rd_kafka_headers_new(1);
	rd_kafka_header_add(hdrs, EOS_MAC_HEADER, -1, mac, EOS_MAC_HEX_LEN);
	err = rd_kafka_producev(sink->rk,
							RD_KAFKA_V_RKT(sink->progress_rkt[sink->cur]),
							RD_KAFKA_V_PARTITION(sink->progress_partition),
							RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
							RD_KAFKA_V_KEY(sink->eos_key, strlen(sink->eos_key)),
							RD_KAFKA_V_VALUE(value.data, value.len),
							RD_KAFKA_V_HEADERS(hdrs),
							RD_KAFKA_V_OPAQUE(NULL),
							RD_KAFKA_V_END);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		rd_kafka_headers_destroy(hdrs);	/* owned by the message on success only */
	pfree(value.data);
	return err;
}

static bool
eos_begin(OutboxSink *sink)
{
	rd_kafka_error_t *error;

	if (sink->txn_open)
		return true;
	error = rd_kafka_begin_transaction(sink->rk);
	if (error != NULL)
	{
		eos_txn_error(sink, error, "begin");
		rd_kafka_error_destroy(error);
		return false;
	}
	sink->txn_open = true;
	sink->txn_began = GetCurrentTimestamp();
	sink->txn_events = 0;
	sink->progress_err = RD_KAFKA_RESP_ERR_NO_ERROR;

	/*
	 * The progress record is produced at the commit only, although producing
	 * one earlier would register its partition with the first event's and
	 * save a round trip: every relay's progress records share that one
	 * partition, and a read_committed reader sees nothing past the first
	 * open transaction there; a progress record open for the whole Kafka
	 * transaction could hide another relay's newest committed one from it
	 * while that relay starts, for as long as the transaction lasts.
	 */
	return true;
}

/* Produce an event inside the open Kafka transaction (begun if need be). */
static bool
eos_produce_event(OutboxSink *sink, SinkTxn *txn, SinkRecord *rec,
				  const SinkEvent *ev)
{
	SinkPoison *p = poison_find(sink, txn->commit_lsn, rec->ordinal,
								ev->has_id ? ev->id : -1);

	if (p != NULL && p->definite)
	{
		/* refused before, known at fault: to dead_letters, never produced */
		rec->err = p->err;
		push_dead(sink, rec);
		return true;
	}
	if (!eos_begin(sink))
		return false;
	sink->txn_events++;
	if (p != NULL && is_size_error(p->err))
	{
		/*
		 * In a batch of its own, every time: refused alone, it is the one at
		 * fault; batched again, it could fail with a batch too large for the
		 * topic although it is not.
		 */
		rec->alone = true;
		eos_drain(sink);
		if (sink->failed)
			return false;
		send_record(sink, rec);
		eos_drain(sink);
		return !sink->failed;
	}
	send_record(sink, rec);
	return !sink->failed;
}

/*
 * A record failed inside a Kafka transaction, which cannot commit now:
 * remember it, fail the producer; the relay aborts and rewinds.  A record
 * librdkafka refused at once for a reason of its own never joined the
 * transaction and goes to dead_letters directly.
 */
static void
eos_reject(OutboxSink *sink, SinkRecord *rec)
{
	bool		block = (outbox_on_permanent_error == OUTBOX_ON_ERROR_BLOCK);
	SinkEvent	ev;
	const char *problem;
	SinkPoison *p;
	TimestampTz now = GetCurrentTimestamp();
	int64		id = -1;

	if (!rec->reported && is_record_error(rec->err) && !block)
	{
		push_dead(sink, rec);
		return;
	}
	if (outbox_wire_parse_event(rec->frame, rec->len, &ev, &problem) && ev.has_id)
		id = ev.id;

	if (is_record_error(rec->err) || is_transient_error(rec->err))
	{
		p = poison_find(sink, rec->txn->commit_lsn, rec->ordinal, id);
		if (p == NULL)
		{
			if (sink->npoison >= sink->poison_cap)
			{
				int			cap = Max(sink->poison_cap * 2, 8);
				SinkPoison *grown = realloc(sink->poison, cap * sizeof(SinkPoison));

				if (grown == NULL)
					ereport(ERROR,
							(errcode(ERRCODE_OUT_OF_MEMORY),
							 errmsg("out of memory")));
				sink->poison = grown;
				sink->poison_cap = cap;
			}
			p = &sink->poison[sink->npoison++];
			memset(p, 0, sizeof(*p));
			p->commit_lsn = rec->txn->commit_lsn;
			p->ordinal = rec->ordinal;
			p->id = id;
			p->first_failed = now;
		}
		p->err = rec->err;
		if (!block)
		{
			if (is_size_error(rec->err))
				p->definite = rec->alone;
			else if (is_record_error(rec->err))
				p->definite = true;
			else
				p->definite = TimestampDifferenceExceeds(p->first_failed, now,
														 outbox_dead_letter_after_ms);
		}
	}
	eos_fail(sink, "Kafka refused an event inside a Kafka transaction (%s); the transaction is aborted and produced again%s",
			 rd_kafka_err2name(rec->err),
			 is_record_error(rec->err) || is_transient_error(rec->err) ?
			 " without the refused event once it is known to be at fault" : "");
	/* leave txn->pending: nothing past it may be confirmed */
	free_record(sink, rec);
}

/* A malloc'd copy of n ids (NULL for none, or out of memory). */
static uint64 *
copy_xids(const uint64 *ids, int n)
{
	uint64	   *copy;

	if (n == 0)
		return NULL;
	copy = malloc(sizeof(uint64) * n);
	if (copy != NULL)
		memcpy(copy, ids, sizeof(uint64) * n);
	return copy;
}

/*
 * The delivered set the open Kafka transaction's progress record states
 * (EosDelivered, eos.h): the newest capture that the transaction reaches
 * past, or else the last committed snapshot; and the ids of the
 * transactions delivered since (the last committed list and this Kafka
 * transaction's PostgreSQL transactions) that it does not show.  *reached:
 * the capture used, or -1.  Rows published again after a slot loss add
 * nothing: their replay is fenced by id (replay_last_id).  Out of memory or
 * too many ids: a part is left out, which only means that a replay skips
 * fewer rows.
 */
static void
eos_next_delivered(OutboxSink *sink, EosDelivered *d, int *reached)
{
	const EosDelivered *base = &sink->in_kafka;
	bool		replaying = !XLogRecPtrIsInvalid(sink->replay_boundary);
	FullTransactionId next = ReadNextFullTransactionId();
	SinkTxn    *txn;
	int			n = 0;
	int			cap = sink->in_kafka.nxids;
	int			i;

	memset(d, 0, sizeof(*d));
	*reached = -1;
	for (i = sink->ncaptures - 1; i >= 0 && !replaying; i--)
	{
		if (sink->captures[i].reached <= sink->tail->end_lsn)
		{
			*reached = i;
			base = &sink->captures[i].snap;
			break;
		}
	}
	if (base->has_snapshot && base->nxip <= EOS_MAX_XIDS)
	{
		d->xip = copy_xids(base->xip, base->nxip);
		if (d->xip == NULL && base->nxip > 0)
			return;
		d->has_snapshot = true;
		d->xmin = base->xmin;
		d->xmax = base->xmax;
		d->nxip = base->nxip;
	}

	for (txn = sink->head; txn != NULL && !replaying; txn = txn->next)
		if (!txn->committed)
			cap++;
	if (cap == 0)
		return;
	d->xids = malloc(sizeof(uint64) * cap);
	if (d->xids == NULL)
		return;
	for (i = 0; i < sink->in_kafka.nxids; i++)
		if (!outbox_eos_delivered_has(d, sink->in_kafka.xids[i]))
			d->xids[n++] = sink->in_kafka.xids[i];
	for (txn = sink->head; txn != NULL && !replaying; txn = txn->next)
	{
		uint64		xid;

		if (txn->committed)
			continue;
		xid = outbox_eos_widen_xid(next, txn->xid);
		if (!outbox_eos_delivered_has(d, xid))
			d->xids[n++] = xid;
	}
	qsort(d->xids, n, sizeof(uint64), outbox_eos_cmp_xid);
	for (i = 0; i < n; i++)
		if (d->nxids == 0 || d->xids[i] != d->xids[d->nxids - 1])
			d->xids[d->nxids++] = d->xids[i];
	if (d->nxids > EOS_MAX_XIDS || d->nxids == 0)
	{
		free(d->xids);
		d->xids = NULL;
		d->nxids = 0;
	}
}

/*
 * Commit the open Kafka transaction with its progress record.  On success
 * its PostgreSQL transactions are settled (once every report is served).
 */
static void
eos_commit(OutboxSink *sink)
{
	EosProgress p = sink->progress;
	EosDelivered *d = &sink->next_in_kafka;
	int			reached = -1;
	rd_kafka_resp_err_t err;
	rd_kafka_error_t *error;
	SinkTxn    *txn;
	int			i;

	sink->committing = true;
	if (!XLogRecPtrIsInvalid(sink->replay_boundary))
	{
		p.replay_boundary = sink->replay_boundary;
		p.replay_last_id = sink->pending_progress.replay_last_id;
	}
	else
	{
		p.commit_lsn = sink->tail->commit_lsn;
		p.end_lsn = sink->tail->end_lsn;
		p.replay_boundary = InvalidXLogRecPtr;
		p.replay_last_id = 0;
	}
	p.found = true;
	/* in the sink, not here: an error while committing must not leak it */
	outbox_eos_delivered_free(d);
	eos_next_delivered(sink, d, &reached);
	err = eos_produce_progress(sink, &p, d);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		outbox_eos_delivered_free(d);
		eos_fail(sink, "could not produce the progress record: %s",
				 rd_kafka_err2str(err));
		sink->committing = false;
		return;
	}

	/* librdkafka flushes the transaction's records first, serving reports */
	for (;;)
	{
		error = rd_kafka_commit_transaction(sink->rk, 1000);
		if (error == NULL)
			break;
		if (rd_kafka_error_is_retriable(error) && !sink->failed)
		{
			rd_kafka_error_destroy(error);
			settle(sink);
			serve_while_waiting(sink);
			continue;
		}
		/* refused records first: they are remembered for the next attempt */
		outbox_eos_delivered_free(d);
		poll_reports(sink, 0);
		eos_txn_error(sink, error, "commit");
		rd_kafka_error_destroy(error);
		sink->committing = false;
		return;
	}

	sink->txn_open = false;
	sink->progress = p;
	sink->pending_progress.replay_last_id = p.replay_last_id;
	if (XLogRecPtrIsInvalid(p.replay_boundary))
		poison_forget(sink, p.commit_lsn);
	outbox_eos_delivered_free(&sink->in_kafka);
	sink->in_kafka = *d;
	memset(d, 0, sizeof(*d));
	/* the capture used and every older one are done with */
	for (i = 0; i <= reached; i++)
		outbox_eos_delivered_free(&sink->captures[i].snap);
	if (reached >= 0)
	{
		memmove(&sink->captures[0], &sink->captures[reached + 1],
				sizeof(SinkCapture) * (sink->ncaptures - reached - 1));
		sink->ncaptures -= reached + 1;
	}
	for (txn = sink->head; txn != NULL; txn = txn->next)
		txn->committed = true;

	/*
	 * The next Kafka transaction is the other producer's.  Kafka answers a
	 * commit once it is decided, and only then writes its markers into the
	 * partitions; until they are all written, the same transactional.id
	 * cannot add partitions to its next transaction (the broker refuses with
	 * CONCURRENT_TRANSACTIONS, and librdkafka retries 20 ms later).  The
	 * other transactional.id is not held up by them.  Order is kept: this
	 * transaction's records all precede the next one's in every partition,
	 * and a read_committed consumer reads a partition in offset order.
	 */
	sink->cur = (sink->cur + 1) % sink->nrks;
	sink->rk = sink->rks[sink->cur];
	sink->committing = false;
	poll_reports(sink, 0);
}

/*
 * Commit the open Kafka transaction if it may end here (its last
 * PostgreSQL transaction is complete, its dead letters are written) and
 * should: now, or after outbox.transaction_linger, or at
 * outbox.transaction_max_events.
 */
static void
eos_maybe_commit(OutboxSink *sink, bool now)
{
	if (!sink->eos || !sink->txn_open || sink->committing || sink->failed)
		return;
	if (sink->tail == NULL || !sink->tail->complete || sink->ndead > 0)
		return;
	if (!now && sink->txn_events < (uint64) outbox_transaction_max_events &&
		!TimestampDifferenceExceeds(sink->txn_began, GetCurrentTimestamp(),
									outbox_transaction_linger_ms))
		return;
	eos_commit(sink);
}

void
outbox_sink_flush(OutboxSink *sink)
{
	if (sink->eos)
	{
		/* caught up: whatever was skipped is behind */
		sink->skip_over = true;
		report_skipped(sink);
	}
	eos_maybe_commit(sink, true);
}

bool
outbox_sink_fenced(OutboxSink *sink)
{
	return sink->fenced;
}

void
outbox_sink_check_history(OutboxSink *sink, XLogRecPtr insert_lsn)
{
	XLogRecPtr	newest;

	if (!sink->eos || !sink->progress.found)
		return;
	newest = Max(sink->progress.commit_lsn,
				 Max(sink->progress.end_lsn, sink->progress.replay_boundary));
	if (newest <= insert_lsn)
		return;
	ereport(WARNING,
			(errmsg("outbox relay: the progress record of \"%s\" names LSN %X/%X, past this server's WAL (%X/%X); it is ignored",
					sink->eos_key, LSN_FORMAT_ARGS(newest),
					LSN_FORMAT_ARGS(insert_lsn)),
			 errdetail("The record comes from another history of this system (a restore to an earlier point in time, or a copy that went on alone): nothing is skipped by it, so events after the slot's position may be delivered again, but none is lost.")));
	memset(&sink->progress, 0, sizeof(sink->progress));
	outbox_eos_delivered_free(&sink->in_kafka);
}

void
outbox_sink_eos_capture(OutboxSink *sink, XLogRecPtr reached, uint64 xmin,
						uint64 xmax, const uint64 *xip, int nxip)
{
	SinkCapture *c;

	if (sink == NULL || !sink->eos)
		return;
	if (sink->ncaptures == SINK_MAX_CAPTURES)
	{
		/* keep the oldest (due soonest) and the newest */
		outbox_eos_delivered_free(&sink->captures[1].snap);
		memmove(&sink->captures[1], &sink->captures[2],
				sizeof(SinkCapture) * (SINK_MAX_CAPTURES - 2));
		sink->ncaptures--;
	}
	c = &sink->captures[sink->ncaptures];
	memset(c, 0, sizeof(*c));
	c->snap.xip = copy_xids(xip, nxip);
	if (c->snap.xip == NULL && nxip > 0)
		return;					/* only fewer rows skipped by a replay */
	c->snap.nxip = nxip;
	c->snap.xmin = xmin;
	c->snap.xmax = xmax;
	c->snap.has_snapshot = true;
	c->reached = reached;
	sink->ncaptures++;
}

const EosDelivered *
outbox_sink_eos_delivered(OutboxSink *sink)
{
	if (sink == NULL || !sink->eos || !sink->progress.found)
		return NULL;
	return &sink->in_kafka;
}

void
outbox_sink_set_replay(OutboxSink *sink, XLogRecPtr boundary)
{
	sink->replay_boundary = boundary;
	sink->pending_progress.replay_last_id =
		sink->progress.replay_boundary == boundary ? sink->progress.replay_last_id : 0;
}

void
outbox_sink_set_replay_source(OutboxSink *sink, const char *id)
{
	sink->has_replay_source = (id != NULL);
	if (id != NULL)
		strlcpy(sink->replay_source, id, sizeof(sink->replay_source));
}

void
outbox_sink_set_progress_key(OutboxSink *sink, const uint8 *key)
{
	memcpy(sink->progress_mac_key, key, EOS_MAC_LEN);
	sink->has_progress_mac_key = true;
}

/* A client configuration with the producer's connection settings. */
static rd_kafka_conf_t *
eos_client_conf(OutboxSink *sink, char **errstr)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();

	if (!outbox_kafka_conf_set(conf, "bootstrap.servers", sink->client_brokers, errstr) ||
		!outbox_kafka_conf_set(conf, "client.id", "outbox-relay-progress", errstr) ||
		!outbox_kafka_conf_set(conf, "log.connection.close", "false", errstr) ||
		!outbox_kafka_conf_apply(conf, sink->client_file_props,
								 sink->client_guc_props, errstr))
	{
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	return conf;
}

bool
outbox_sink_start_transactions(OutboxSink *sink, const char *progress_topic,
							   char **errstr)
{
	rd_kafka_error_t *error;
	rd_kafka_conf_t *conf;
	char		buf[SINK_LOG_LEN];
	int			partitions;
	int			unauthentic;
	int			i;

	*errstr = NULL;
	if (!sink->eos || sink->eos_ready)
		return true;
	if (!sink->has_progress_mac_key)
	{
		*errstr = strdup("the installation has no message key to authenticate progress records with");
		return false;
	}

	/*
	 * Fence every older producer of our transactional.ids, ending whatever
	 * transaction it had open: aborted if it was not committing yet, else
	 * completed.  Every progress record an older relay could still commit
	 * is then committed, and none can follow.
	 */
	for (i = 0; i < sink->nrks; i++)
	{
		error = rd_kafka_init_transactions(sink->rks[i], 30000);
		if (error != NULL)
		{
			snprintf(buf, sizeof(buf), "could not initialize Kafka transactions for transactional.id \"%s\": %s",
					 sink->txn_ids[i], rd_kafka_error_string(error));
			if (is_fenced_error(rd_kafka_error_code(error)))
				sink->fenced = true;
			rd_kafka_error_destroy(error);
			*errstr = strdup(buf);
			return false;
		}
	}
	if (!outbox_eos_ensure_topic(sink->rk, progress_topic, &partitions, 10000,
								 buf, sizeof(buf)))
	{
		*errstr = strdup(buf);
		return false;
	}
	for (i = 0; i < sink->nrks; i++)
	{
		sink->progress_rkt[i] = rd_kafka_topic_new(sink->rks[i], progress_topic, NULL);
		if (sink->progress_rkt[i] == NULL)
		{
			*errstr = strdup("invalid outbox.progress_topic");
			return false;
		}
	}
	sink->progress_partition = outbox_eos_partition(sink->eos_key, partitions);

	/* only now: our init_transactions() ended any open transaction of ours */
	conf = eos_client_conf(sink, errstr);
	if (conf == NULL)
		return false;
	if (!outbox_eos_read_progress(conf, progress_topic, partitions,
								  sink->eos_key, sink->progress_mac_key,
								  &sink->progress, &sink->in_kafka,
								  &unauthentic, 30000, buf, sizeof(buf)))
	{
		*errstr = strdup(buf);
		return false;
	}
	sink->eos_ready = true;
	if (unauthentic > 0)
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("outbox relay: ignored %d record(s) under the progress key \"%s\" in topic \"%s\" that this relay did not write",
						unauthentic, sink->eos_key, progress_topic),
				 errdetail("Their header %s is missing or does not authenticate them: something other than the relay produced them. Nothing is skipped by them; events they claim to cover may be delivered again, but none is lost.",
						   EOS_MAC_HEADER),
				 errhint("Allow only the relay's Kafka principal to write to the progress topic.")));
	if (!outbox_eos_delivered_before(&sink->in_kafka,
									 U64FromFullTransactionId(ReadNextFullTransactionId())))
	{
		/* ids this server has not given out yet: not about this history */
		ereport(WARNING,
				(errmsg("outbox relay: the progress record of \"%s\" names transactions this server has not started yet; its list of delivered transactions is ignored",
						sink->eos_key),
				 errdetail("After a slot loss, rows that are in Kafka already may be published again, but none is lost.")));
		outbox_eos_delivered_free(&sink->in_kafka);
	}
	if (sink->progress.found)
		ereport(LOG,
				(errmsg("outbox relay: exactly-once: the last committed progress record of \"%s\" covers commit LSN %X/%X%s",
						sink->eos_key, LSN_FORMAT_ARGS(sink->progress.commit_lsn),
						XLogRecPtrIsInvalid(sink->progress.replay_boundary) ? "" :
						psprintf(" and replayed rows up to id " INT64_FORMAT " of the replay from %X/%X",
								 sink->progress.replay_last_id,
								 LSN_FORMAT_ARGS(sink->progress.replay_boundary)))));
	else
		ereport(LOG,
				(errmsg("outbox relay: exactly-once: no progress record of \"%s\" in topic \"%s\" yet",
						sink->eos_key, progress_topic)));
	return true;
}
