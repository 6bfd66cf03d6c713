/*-------------------------------------------------------------------------
 *
 * reply.c
 *	  The reply topic's consumer: verdicts applied as outbox.confirm()
 *	  would, exactly once (see reply.h).
 *
 * A reply is a JSON object {"db": text, "id": number, "source": text,
 * "status": "confirmed" or "failed", "detail": text}; db may be left out
 * while outbox.databases names one database alone, source (the installation
 * answered; or the record's header outbox-source) may be left out.  Every
 * relay reads every reply (each has its own consumer group) and decides the
 * same way whose it is:
 *	  - db names this relay's database (or is left out and outbox.databases
 *		names this database alone): applied here if it answers this
 *		installation (source names it, or names none and the record is not
 *		older than the installation), else rejected here (another
 *		installation, unknown id, bad fields);
 *	  - db names another database this cluster relays: skipped, that
 *		database's relay deals with it;
 *	  - anything else (not JSON, db of no relayed database, db left out
 *		otherwise): a stray, kept by the one relay that
 *		outbox_relay_keeps_strays().
 * Rejected replies go to outbox.rejected_replies and count in relay_status;
 * nothing stops the loop.
 *
 * Exactly once: one transaction applies a batch (at most REPLY_BATCH_MAX
 * replies or REPLY_BATCH_BYTES), writes what it rejects and stores each
 * partition's next offset in outbox.reply_offsets, whose rows it locks
 * first.  Partitions are assigned at the stored offsets (a cache of them,
 * which only this relay writes), so a restart reads on where the database
 * says; a reply below the stored offset therefore means that Kafka no longer
 * has it (the topic was created again): said, and the partition is read on
 * from there.  Kafka's committed offsets follow after the database commit
 * and only serve consumer-group tools: a crash in between costs nothing.
 *
 * A verdict never waits for its message's row: the row is locked with SKIP
 * LOCKED first, and a verdict whose row another session holds is kept in
 * memory, with the replies behind it in its partition, whose stored offset
 * stays at it; they are tried again with a short backoff, while the other
 * partitions, and the relay, go on.  Other locks are waited for at most
 * REPLY_LOCK_TIMEOUT, then the batch fails.
 *
 * Should a batch fail (a trigger of yours raising an error, say), it is
 * tried again with each verdict in a subtransaction of its own: a verdict
 * whose error is about its data is rejected with the error, while any
 * other error (deadlock, a missing table, a lock timeout, shutdown) fails
 * the batch again, which is retried with backoff and applied once the
 * cause is gone.
 *
 * librdkafka callbacks run inside rd_kafka_consumer_poll(), in the relay's
 * thread; they never palloc, elog or free: the rebalance callback assigns
 * at the cached offsets, the others record text reported after the poll.
 *
 * src/reply.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "compat.h"
#include "kafka_sink.h"
#include "outbox.h"
#include "relay_shmem.h"
#include "reply.h"

/* Most replies, and most bytes of their keys and values, in one step. */
#define REPLY_BATCH_MAX			500
#define REPLY_BATCH_BYTES		(1024 * 1024)
/* A verdict whose message row is locked: tried again after this, doubling. */
#define REPLY_HELD_MIN_MS		50
#define REPLY_HELD_MAX_MS		1000
/* Longest wait for any other lock while applying; then the batch is retried. */
#define REPLY_LOCK_TIMEOUT		"100ms"
/* Largest reply value parsed; a larger one is rejected. */
#define REPLY_MAX_VALUE			65536
/* Most bytes of a rejected reply's key and value kept. */
#define REPLY_KEEP_BYTES		8192
/* Deepest JSON nesting parsed (the parser recurses). */
#define REPLY_MAX_DEPTH			64
/* Backoff after a failed batch or consumer start. */
#define REPLY_RETRY_MIN_MS		1000
#define REPLY_RETRY_MAX_MS		30000
/* Longest wait for the consumer to leave its group when it is closed. */
#define REPLY_CLOSE_MS			2000
#define REPLY_LOG_LEN			OUTBOX_KAFKA_LOG_LEN

/* The consumer; malloc'd, one per relay. */
typedef struct ReplyConsumer
{
	rd_kafka_t *rk;				/* the consumer */
	rd_kafka_queue_t *queue;	/* its consumer queue (wakes the relay) */
	char	   *topic;			/* outbox.reply_topic it consumes */
	char	   *brokers;		/* settings it was built with */
	char	   *file_props;
	char	   *guc_props;
	char		group[NAMEDATALEN + 16];	/* outbox-reply-<database> */
	bool		subscribed;		/* positions loaded, topic subscribed */
	int64	   *next;			/* stored next offset by partition, -1 none */
	int			nnext;			/* entries of next */
	rd_kafka_message_t *batch[REPLY_BATCH_MAX];	/* polled, not yet applied */
	bool		held[REPLY_BATCH_MAX];	/* batch[i]'s message row was locked */
	int			nbatch;			/* entries of batch */
	size_t		nbytes;			/* bytes of the batch's keys and values */
	bool		any_held;		/* some held[i] set */
	TimestampTz held_retry_at;	/* when held verdicts are tried again */
	int			held_backoff_ms;	/* and the wait before that */
	bool		careful;		/* last batch failed: one subxact per reply */
	bool		failed;			/* fatal consumer error: rebuild */
	char		failed_reason[REPLY_LOG_LEN];	/* why */
	OutboxKafkaLog log;			/* recorded by callbacks */
} ReplyConsumer;

/* The fields of one reply, as parsed (pg_parse_json's semantic state). */
typedef struct ReplyFields
{
	int			depth;			/* nesting of the current token */
	const char *field;			/* top-level field whose value comes next */
	bool		not_object;		/* the value is not a JSON object */
	char	   *db;				/* "db" if a string */
	bool		has_db;			/* "db" present (any type) */
	char	   *id;				/* "id" token if a number */
	bool		has_id;
	char	   *status;			/* "status" if a string */
	bool		has_status;
	char	   *detail;			/* "detail" if a string */
	bool		detail_bad;		/* "detail" neither string nor null */
	char	   *source;			/* "source" if a string */
	bool		has_source;
} ReplyFields;

/* What a reply is judged by: this relay's database and installation. */
typedef struct ReplyJudge
{
	const char *database;		/* this relay's database */
	bool		db_alone;		/* outbox.databases names it alone */
	char	   *installation;	/* outbox.installation's id, NULL if none */
	int64		installed_ms;	/* its created_at, Unix ms */
} ReplyJudge;

/* What to do with one reply. */
typedef enum ReplyFate
{
	REPLY_APPLY,				/* ours: apply the verdict */
	REPLY_REJECT,				/* ours, or a stray we keep: reject it */
	REPLY_SKIP					/* another relay's, or a stray it keeps */
} ReplyFate;

/* What reply_apply_batch() works with, and reports. */
typedef struct ReplyBatchArgs
{
	ReplyConsumer *c;
	const char *database;		/* this relay's database */
	int64	   *positions;		/* next offset per partition after the batch */
	int			npositions;
	bool		retry_held;		/* try held verdicts again (else keep them) */
	bool	   *keep;			/* per batch entry: kept for a later step */
	bool	   *held;			/* per batch entry: its message row is locked */
	MemoryContext cxt;			/* the caller's, for what follows */
	char	   *recreated;		/* a partition found below its stored offset */
	uint64		applied;		/* verdicts applied */
	uint64		rejected;		/* replies rejected */
} ReplyBatchArgs;

static ReplyConsumer *consumer = NULL;
/* Retry after a failure: not before, and how long the next wait is. */
static TimestampTz retry_at = 0;
static int	retry_backoff_ms = 0;
/* The last problem logged, so that a lasting one is logged once. */
static char last_problem[REPLY_LOG_LEN];

static void reply_problem(int elevel, const char *fmt,...) pg_attribute_printf(2, 3);
static void reply_backoff(void);
static ReplyConsumer *reply_create(const char *database, const char *brokers,
								   const char *file_properties,
								   const char *guc_properties, int wake_fd,
								   char **errstr);
static void reply_destroy(ReplyConsumer *c);
static void reply_forget_batch(ReplyConsumer *c);
static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
						 rd_kafka_topic_partition_list_t *parts, void *opaque);
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque);
static void on_log(const rd_kafka_t *rk, int level, const char *fac,
				   const char *buf);
static bool reply_poll(ReplyConsumer *c);
static bool reply_unheld_work(ReplyConsumer *c);
static void reply_load_positions(void *arg);
static void reply_apply_batch(void *arg);
static void reply_commit_kafka(ReplyConsumer *c, ReplyBatchArgs *args);

/* ---------------------------------------------------------------------
 * The step
 * ---------------------------------------------------------------------
 */

static bool
same_setting(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

bool
outbox_reply_step(OutboxXactRunner run_xact, const char *database,
				  const char *brokers, const char *file_properties,
				  const char *guc_properties, int wake_fd)
{
	MemoryContext cxt = CurrentMemoryContext;
	char	   *failure;
	bool		full;
	bool		retry_held;

	if (outbox_reply_topic == NULL || outbox_reply_topic[0] == '\0')
	{
		if (consumer != NULL)
			ereport(LOG,
					(errmsg("outbox relay: outbox.reply_topic was emptied, stopping the reply consumer")));
		outbox_reply_stop();
		return false;
	}
	if (consumer != NULL &&
		(strcmp(consumer->topic, outbox_reply_topic) != 0 ||
		 !same_setting(consumer->brokers, brokers) ||
		 !same_setting(consumer->file_props, file_properties) ||
		 !same_setting(consumer->guc_props, guc_properties) ||
		 consumer->failed))
	{
		if (consumer->failed)
			reply_problem(WARNING, "the reply consumer failed: %s; rebuilding it",
						  consumer->failed_reason);
		else
			ereport(LOG,
					(errmsg("outbox relay: reply topic or Kafka settings changed, rebuilding the reply consumer")));
		outbox_reply_stop();
	}
	if (retry_at != 0 && GetCurrentTimestamp() < retry_at)
		return false;

	if (consumer == NULL)
	{
		char	   *errstr = NULL;

		consumer = reply_create(database, brokers, file_properties,
								guc_properties, wake_fd, &errstr);
		if (consumer == NULL)
		{
			reply_problem(WARNING, "invalid Kafka configuration for the reply consumer: %s",
						  errstr ? errstr : "unknown error");
			free(errstr);
			reply_backoff();
			return false;
		}
	}

	if (!consumer->subscribed)
	{
		rd_kafka_topic_partition_list_t *topics;
		rd_kafka_resp_err_t err;

		failure = run_xact(reply_load_positions, consumer, cxt);
		if (failure != NULL)
		{
			reply_problem(WARNING, "the reply consumer cannot read outbox.reply_offsets: %s",
						  failure);
			pfree(failure);
			reply_backoff();
			return false;
		}
		topics = rd_kafka_topic_partition_list_new(1);
		rd_kafka_topic_partition_list_add(topics, consumer->topic,
										  RD_KAFKA_PARTITION_UA);
		err = rd_kafka_subscribe(consumer->rk, topics);
		rd_kafka_topic_partition_list_destroy(topics);
		if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			reply_problem(WARNING, "the reply consumer cannot subscribe to topic \"%s\": %s",
						  consumer->topic, rd_kafka_err2str(err));
			reply_backoff();
			return false;
		}
		consumer->subscribed = true;
		ereport(LOG,
				(errmsg("outbox relay: consuming reply topic \"%s\" in consumer group \"%s\"",
						consumer->topic, consumer->group)));
	}

	/*
	 * A batch that failed is applied again before anything new is read;
	 * otherwise what is waiting joins the replies kept from the last step
	 * (held ones, and those behind them in their partitions).
	 */
	full = false;
	if (!consumer->careful)
		full = reply_poll(consumer);
	outbox_kafka_log_report(&consumer->log, "reply consumer: ");
	if (consumer->nbatch == 0)
		return false;
	retry_held = consumer->any_held &&
		GetCurrentTimestamp() >= consumer->held_retry_at;
	if (!retry_held && !reply_unheld_work(consumer))
		return false;			/* only held replies, not yet due */

	{
		ReplyBatchArgs args;
		int			i;
		int			j;

		memset(&args, 0, sizeof(args));
		args.c = consumer;
		args.database = database;
		args.retry_held = retry_held;
		args.cxt = cxt;
		for (i = 0; i < consumer->nbatch; i++)
			args.npositions = Max(args.npositions, consumer->batch[i]->partition + 1);
		/* allocated here: the transaction's memory is gone after commit */
		args.positions = palloc(sizeof(int64) * args.npositions);
		args.keep = palloc0(sizeof(bool) * consumer->nbatch);
		args.held = palloc0(sizeof(bool) * consumer->nbatch);
		failure = run_xact(reply_apply_batch, &args, cxt);

		/*
		 * A lock wait in there (at most REPLY_LOCK_TIMEOUT) resets the latch:
		 * a commit's wake-up may have been swallowed, so the relay must look
		 * for WAL again before it sleeps.
		 */
		SetLatch(MyLatch);
		if (failure != NULL)
		{
			reply_problem(WARNING, "the reply consumer could not apply %d replies: %s; trying again, one at a time",
						  consumer->nbatch, failure);
			pfree(failure);
			pfree(args.positions);
			pfree(args.keep);
			pfree(args.held);
			consumer->careful = true;
			reply_backoff();
			return false;
		}
		reply_commit_kafka(consumer, &args);
		pfree(args.positions);
		if (args.applied > 0)
			outbox_status_count(OUTBOX_COUNT_REPLIES_APPLIED, args.applied);
		if (args.rejected > 0)
			outbox_status_count(OUTBOX_COUNT_REPLIES_REJECTED, args.rejected);
		if (args.recreated != NULL)
		{
			ereport(WARNING,
					(errmsg("outbox relay: %s", args.recreated),
					 errdetail("The reply topic was deleted and created again, or emptied: its partition is read again from its beginning."),
					 errhint("Replies that name another installation in \"source\" are kept in outbox.rejected_replies.")));
			outbox_status_error("%s", args.recreated);
		}

		/* keep what waits for a row lock, forget the rest */
		consumer->any_held = false;
		for (i = 0, j = 0; i < consumer->nbatch; i++)
		{
			rd_kafka_message_t *msg = consumer->batch[i];

			if (args.keep[i])
			{
				consumer->batch[j] = msg;
				consumer->held[j] = args.held[i];
				consumer->any_held |= args.held[i];
				j++;
				continue;
			}
			consumer->nbytes -= msg->len + msg->key_len;
			rd_kafka_message_destroy(msg);
		}
		consumer->nbatch = j;
		pfree(args.keep);
		pfree(args.held);
	}
	if (!consumer->any_held)
	{
		consumer->held_backoff_ms = 0;
		consumer->held_retry_at = 0;
	}
	else if (retry_held || consumer->held_backoff_ms == 0)
	{
		consumer->held_backoff_ms = consumer->held_backoff_ms == 0 ?
			REPLY_HELD_MIN_MS :
			Min(consumer->held_backoff_ms * 2, REPLY_HELD_MAX_MS);
		consumer->held_retry_at =
			TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										consumer->held_backoff_ms);
	}
	consumer->careful = false;
	retry_at = 0;
	retry_backoff_ms = 0;
	if (last_problem[0] != '\0')
	{
		ereport(LOG,
				(errmsg("outbox relay: the reply consumer applies replies again")));
		last_problem[0] = '\0';
	}
	/* more waiting in Kafka, and room to take it */
	return full && consumer->nbatch < REPLY_BATCH_MAX &&
		consumer->nbytes < REPLY_BATCH_BYTES;
}

/*
 * How long until a verdict held by a row lock is tried again: -1 when none
 * is held.  Not before a failed batch's retry either (outbox_reply_step()
 * does nothing until then).
 */
long
outbox_reply_wait_ms(void)
{
	TimestampTz at;
	long		secs;
	int			usecs;

	if (consumer == NULL || !consumer->any_held)
		return -1;
	at = Max(consumer->held_retry_at, retry_at);
	TimestampDifference(GetCurrentTimestamp(), at, &secs, &usecs);
	return secs * 1000 + (usecs + 999) / 1000;
}

/*
 * Is there a reply in the batch outside the partitions whose next reply is
 * held by a row lock?
 */
static bool
reply_unheld_work(ReplyConsumer *c)
{
	int			i;
	int			j;

	for (i = 0; i < c->nbatch; i++)
	{
		bool		held = false;

		for (j = 0; j < c->nbatch && !held; j++)
			held = c->held[j] && c->batch[j]->partition == c->batch[i]->partition;
		if (!held)
			return true;
	}
	return false;
}

void
outbox_reply_stop(void)
{
	if (consumer == NULL)
		return;
	reply_destroy(consumer);
	consumer = NULL;
	retry_at = 0;
	retry_backoff_ms = 0;
}

/* Log a problem once (and show it in relay_status) until it changes. */
static void
reply_problem(int elevel, const char *fmt,...)
{
	char		buf[REPLY_LOG_LEN];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (strcmp(buf, last_problem) == 0)
		return;
	strlcpy(last_problem, buf, sizeof(last_problem));
	ereport(elevel, (errmsg("outbox relay: %s", buf)));
	outbox_status_error("%s", buf);
}

static void
reply_backoff(void)
{
	retry_backoff_ms = retry_backoff_ms == 0 ? REPLY_RETRY_MIN_MS :
		Min(retry_backoff_ms * 2, REPLY_RETRY_MAX_MS);
	retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										   retry_backoff_ms);
}

/* ---------------------------------------------------------------------
 * Consumer life cycle
 * ---------------------------------------------------------------------
 */

static char *
strdup_or_empty(const char *s)
{
	return strdup(s ? s : "");
}

static ReplyConsumer *
reply_create(const char *database, const char *brokers,
			 const char *file_properties, const char *guc_properties,
			 int wake_fd, char **errstr)
{
	ReplyConsumer *c;
	rd_kafka_conf_t *conf;
	char		buf[512];

	*errstr = NULL;
	c = calloc(1, sizeof(ReplyConsumer));
	if (c == NULL)
	{
		*errstr = strdup("out of memory");
		return NULL;
	}
	snprintf(c->group, sizeof(c->group), "outbox-reply-%s", database);

	/*
	 * The user's properties may hold producer-only ones, which librdkafka
	 * ignores here (on_log() drops its warnings about them).  What makes
	 * the consumer exactly-once comes after them and wins.  A short
	 * session lets a restarted relay take its partitions back soon after a
	 * crash (a clean stop leaves the group at once); a small prefetch (at
	 * most 2000 replies or 4 MB per partition, against librdkafka's 100000
	 * and 64 MB) keeps the relay's memory bounded while it applies 500 per
	 * step.
	 */
	conf = rd_kafka_conf_new();
	if (!outbox_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr) ||
		!outbox_kafka_conf_set(conf, "client.id", "outbox-reply", errstr) ||
		!outbox_kafka_conf_set(conf, "socket.nagle.disable", "true", errstr) ||
		!outbox_kafka_conf_set(conf, "log.queue", "true", errstr) ||
		!outbox_kafka_conf_set(conf, "session.timeout.ms", "10000", errstr) ||
		!outbox_kafka_conf_set(conf, "queued.min.messages", "2000", errstr) ||
		!outbox_kafka_conf_set(conf, "queued.max.messages.kbytes", "4096", errstr) ||
		!outbox_kafka_conf_apply(conf, file_properties, guc_properties, errstr) ||
		!outbox_kafka_conf_set(conf, "group.id", c->group, errstr) ||
		!outbox_kafka_conf_set(conf, "enable.auto.commit", "false", errstr) ||
		!outbox_kafka_conf_set(conf, "enable.auto.offset.store", "false", errstr) ||
		!outbox_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr) ||
		!outbox_kafka_conf_set(conf, "enable.partition.eof", "false", errstr) ||
		!outbox_kafka_conf_set(conf, "isolation.level", "read_committed", errstr))
	{
		rd_kafka_conf_destroy(conf);
		free(c);
		return NULL;
	}
	rd_kafka_conf_set_opaque(conf, c);
	rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
	rd_kafka_conf_set_error_cb(conf, on_error);
	rd_kafka_conf_set_log_cb(conf, on_log);

	c->rk = outbox_kafka_new(RD_KAFKA_CONSUMER, conf, buf, sizeof(buf));
	if (c->rk == NULL)
	{
		rd_kafka_conf_destroy(conf);
		*errstr = strdup(buf);
		free(c);
		return NULL;
	}
	/* logs, errors and rebalances are all served by rd_kafka_consumer_poll() */
	rd_kafka_set_log_queue(c->rk, NULL);
	rd_kafka_poll_set_consumer(c->rk);
	c->queue = rd_kafka_queue_get_consumer(c->rk);
	if (wake_fd >= 0)
		rd_kafka_queue_io_event_enable(c->queue, wake_fd, "1", 1);
	c->topic = strdup_or_empty(outbox_reply_topic);
	c->brokers = strdup_or_empty(brokers);
	c->file_props = strdup_or_empty(file_properties);
	c->guc_props = strdup_or_empty(guc_properties);
	if (c->topic == NULL || c->brokers == NULL || c->file_props == NULL ||
		c->guc_props == NULL)
	{
		reply_destroy(c);
		*errstr = strdup("out of memory");
		return NULL;
	}
	return c;
}

/*
 * Leave the group (waiting at most REPLY_CLOSE_MS, so that a cluster that
 * cannot be reached does not hold up the relay), then drop the consumer.
 * Nothing is committed here: the database holds the positions.
 */
static void
reply_destroy(ReplyConsumer *c)
{
	reply_forget_batch(c);
	if (c->rk != NULL && c->subscribed)
	{
		rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
		rd_kafka_error_t *error = rd_kafka_consumer_close_queue(c->rk, q);
		TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														REPLY_CLOSE_MS);

		if (error != NULL)
			rd_kafka_error_destroy(error);
		else
		{
			while (!rd_kafka_consumer_closed(c->rk) &&
				   GetCurrentTimestamp() < until)
			{
				rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);

				if (ev == NULL)
					continue;
				/* the revocation of the closing consumer's partitions */
				if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
				{
					if (strcmp(rd_kafka_rebalance_protocol(c->rk), "COOPERATIVE") == 0)
					{
						error = rd_kafka_incremental_unassign(c->rk,
															  rd_kafka_event_topic_partition_list(ev));
						if (error != NULL)
							rd_kafka_error_destroy(error);
					}
					else
						(void) rd_kafka_assign(c->rk, NULL);
				}
				rd_kafka_event_destroy(ev);
			}
		}
		rd_kafka_queue_destroy(q);
	}
	if (c->queue)
		rd_kafka_queue_destroy(c->queue);
	if (c->rk)
		rd_kafka_destroy_flags(c->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	free(c->topic);
	free(c->brokers);
	free(c->file_props);
	free(c->guc_props);
	free(c->next);
	free(c);
}

static void
reply_forget_batch(ReplyConsumer *c)
{
	int			i;

	for (i = 0; i < c->nbatch; i++)
		rd_kafka_message_destroy(c->batch[i]);
	c->nbatch = 0;
	c->nbytes = 0;
	c->any_held = false;
	c->held_retry_at = 0;
	c->held_backoff_ms = 0;
}

/* ---------------------------------------------------------------------
 * librdkafka callbacks: in rd_kafka_consumer_poll(); no palloc/elog/free
 * ---------------------------------------------------------------------
 */

/*
 * Assign at the positions the database holds; a partition without one
 * starts at the group's committed offset, or at the earliest for a new
 * group.
 */
static void
on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
			 rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	ReplyConsumer *c = (ReplyConsumer *) opaque;
	bool		cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
	rd_kafka_error_t *error = NULL;
	rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;
	int			i;

	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
	{
		for (i = 0; i < parts->cnt; i++)
		{
			rd_kafka_topic_partition_t *p = &parts->elems[i];

			if (strcmp(p->topic, c->topic) == 0 && p->partition >= 0 &&
				p->partition < c->nnext && c->next[p->partition] >= 0)
				p->offset = c->next[p->partition];
		}
		if (cooperative)
			error = rd_kafka_incremental_assign(rk, parts);
		else
			aerr = rd_kafka_assign(rk, parts);
		outbox_kafka_log_record(&c->log, 6, false, "assigned %d partition(s) of the reply topic",
				   parts->cnt);
	}
	else
	{
		if (cooperative)
			error = rd_kafka_incremental_unassign(rk, parts);
		else
			aerr = rd_kafka_assign(rk, NULL);
	}
	if (error != NULL)
	{
		outbox_kafka_log_record(&c->log, 3, true, "rebalance: %s", rd_kafka_error_string(error));
		rd_kafka_error_destroy(error);
	}
	else if (aerr != RD_KAFKA_RESP_ERR_NO_ERROR)
		outbox_kafka_log_record(&c->log, 3, true, "rebalance: %s", rd_kafka_err2str(aerr));
}

static void
on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	ReplyConsumer *c = (ReplyConsumer *) opaque;

	if (err == RD_KAFKA_RESP_ERR__FATAL)
	{
		char		fatal[REPLY_LOG_LEN];
		rd_kafka_resp_err_t orig;

		orig = rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
		c->failed = true;
		snprintf(c->failed_reason, sizeof(c->failed_reason),
				 "fatal consumer error %s: %s", rd_kafka_err2name(orig), fatal);
		return;
	}
	outbox_kafka_log_record(&c->log, 3, true, "%s: %s",
			   rd_kafka_err2name((rd_kafka_resp_err_t) err), reason);
}

static void
on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	ReplyConsumer *c = (ReplyConsumer *) rd_kafka_opaque(rk);

	/* outbox.kafka_properties are the producer's too */
	if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "producer property") != NULL)
		return;
	outbox_kafka_log_record(&c->log, level, false, "%s: %s", fac, buf);
}

/* ---------------------------------------------------------------------
 * Polling
 * ---------------------------------------------------------------------
 */

/*
 * Take what is waiting, without blocking, until the batch holds
 * REPLY_BATCH_MAX replies or REPLY_BATCH_BYTES bytes of keys and values (the
 * reply that crosses the bound is the last one taken).  Returns whether it
 * stopped at the bound, so that more may be waiting.
 */
static bool
reply_poll(ReplyConsumer *c)
{
	while (c->nbatch < REPLY_BATCH_MAX && c->nbytes < REPLY_BATCH_BYTES)
	{
		rd_kafka_message_t *msg = rd_kafka_consumer_poll(c->rk, 0);

		if (msg == NULL)
			return false;
		if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
				outbox_kafka_log_record(&c->log, 3, true, "%s: %s", rd_kafka_err2name(msg->err),
						   rd_kafka_message_errstr(msg));
			rd_kafka_message_destroy(msg);
			continue;
		}
		c->held[c->nbatch] = false;
		c->batch[c->nbatch++] = msg;
		c->nbytes += msg->len + msg->key_len;
	}
	return true;
}

/* Kafka learns the positions after the database commit, asynchronously. */
static void
reply_commit_kafka(ReplyConsumer *c, ReplyBatchArgs *args)
{
	rd_kafka_topic_partition_list_t *list;
	int			p;

	list = rd_kafka_topic_partition_list_new(4);
	for (p = 0; p < args->npositions; p++)
	{
		if (args->positions[p] < 0)
			continue;
		rd_kafka_topic_partition_list_add(list, c->topic, p)->offset =
			args->positions[p];
		/* the cache the rebalance callback assigns from */
		if (p >= c->nnext)
		{
			int			n = Max(p + 1, c->nnext * 2);
			int64	   *next = realloc(c->next, n * sizeof(int64));
			int			i;

			if (next == NULL)
			{
				/* rebuilt, it reads the positions from the database */
				c->failed = true;
				snprintf(c->failed_reason, sizeof(c->failed_reason),
						 "out of memory for the reply topic's positions");
				continue;
			}
			for (i = c->nnext; i < n; i++)
				next[i] = -1;
			c->next = next;
			c->nnext = n;
		}
		c->next[p] = args->positions[p];
	}
	if (list->cnt > 0)
		(void) rd_kafka_commit(c->rk, list, 1);
	rd_kafka_topic_partition_list_destroy(list);
}

/* ---------------------------------------------------------------------
 * Reading a reply
 * ---------------------------------------------------------------------
 */

/*
 * The value of the top-level field f->field: a scalar token of the given
 * type, or (token NULL) an object or array.
 */
static void
fields_value(ReplyFields *f, char *token, JsonTokenType type)
{
	bool		is_string = (token != NULL && type == JSON_TOKEN_STRING);

	if (strcmp(f->field, "db") == 0)
	{
		f->has_db = true;
		f->db = is_string ? token : NULL;
	}
	else if (strcmp(f->field, "id") == 0)
	{
		f->has_id = true;
		f->id = (token != NULL && type == JSON_TOKEN_NUMBER) ? token : NULL;
	}
	else if (strcmp(f->field, "status") == 0)
	{
		f->has_status = true;
		f->status = is_string ? token : NULL;
	}
	else if (strcmp(f->field, "detail") == 0)
	{
		f->detail = is_string ? token : NULL;
		f->detail_bad = !is_string && (token == NULL || type != JSON_TOKEN_NULL);
	}
	else if (strcmp(f->field, "source") == 0)
	{
		/* null: names no installation, as if left out */
		f->has_source = !(token != NULL && type == JSON_TOKEN_NULL);
		f->source = is_string ? token : NULL;
	}
	f->field = NULL;
}

static OUTBOX_JSON_ACTION
fields_object_start(void *state)
{
	ReplyFields *f = (ReplyFields *) state;

	if (f->depth == 1 && f->field != NULL)
		fields_value(f, NULL, JSON_TOKEN_OBJECT_START);
	f->depth++;
	OUTBOX_JSON_ACTION_DONE;
}

static OUTBOX_JSON_ACTION
fields_array_start(void *state)
{
	ReplyFields *f = (ReplyFields *) state;

	if (f->depth == 0)
		f->not_object = true;
	return fields_object_start(state);
}

static OUTBOX_JSON_ACTION
fields_end(void *state)
{
	((ReplyFields *) state)->depth--;
	OUTBOX_JSON_ACTION_DONE;
}

static OUTBOX_JSON_ACTION
fields_field_start(void *state, char *fname, bool isnull)
{
	ReplyFields *f = (ReplyFields *) state;

	if (f->depth == 1)
		f->field = fname;
	OUTBOX_JSON_ACTION_DONE;
}

static OUTBOX_JSON_ACTION
fields_scalar(void *state, char *token, JsonTokenType type)
{
	ReplyFields *f = (ReplyFields *) state;

	if (f->depth == 0)
		f->not_object = true;
	else if (f->depth == 1 && f->field != NULL)
		fields_value(f, token, type);
	OUTBOX_JSON_ACTION_DONE;
}

/*
 * How deep is the JSON text nested?  Counted before parsing: the parser
 * recurses, and running out of stack would be an error for the batch.
 */
static int
json_depth(const char *s, int len)
{
	int			depth = 0;
	int			deepest = 0;
	bool		in_string = false;
	int			i;

	for (i = 0; i < len; i++)
	{
		char		ch = s[i];

		if (in_string)
		{
			if (ch == '\\')
				i++;
			else if (ch == '"')
				in_string = false;
		}
		else if (ch == '"')
			in_string = true;
		else if (ch == '{' || ch == '[')
			deepest = Max(deepest, ++depth);
		else if (ch == '}' || ch == ']')
			depth--;
	}
	return deepest;
}

/* An integer in int8 range, written as a JSON number without fraction. */
static bool
parse_id(const char *token, int64 *id)
{
	const char *p = token;
	char	   *end;
	long long	v;

	if (*p == '-')
		p++;
	if (*p < '0' || *p > '9')
		return false;
	for (; *p; p++)
		if (*p < '0' || *p > '9')
			return false;
	errno = 0;
	v = strtoll(token, &end, 10);
	if (errno != 0 || *end != '\0')
		return false;
	*id = (int64) v;
	return true;
}

/*
 * The installation a reply answers, as text (palloc'd), from its "source"
 * field or else its header outbox-source; NULL if it names none.  Sets
 * *reason when they are not usable.
 */
static char *
reply_source(const rd_kafka_message_t *msg, const ReplyFields *f,
			 char **reason)
{
	rd_kafka_headers_t *hdrs = NULL;
	const void *value = NULL;
	size_t		size = 0;
	char	   *header = NULL;

	if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
		rd_kafka_header_get_last(hdrs, "outbox-source", &value, &size) ==
		RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		if (value == NULL || size > 64 ||
			!pg_verify_mbstr(GetDatabaseEncoding(), value, (int) size, true))
		{
			*reason = "header outbox-source is not an installation id";
			return NULL;
		}
		header = pnstrdup(value, size);
	}
	if (f->has_source)
	{
		if (f->source == NULL)
		{
			*reason = "\"source\" is not a string";
			return NULL;
		}
		if (header != NULL && pg_strcasecmp(header, f->source) != 0)
		{
			*reason = psprintf("\"source\" (%s) and header outbox-source (%s) disagree",
							   f->source, header);
			return NULL;
		}
		return f->source;
	}
	return header;
}

/*
 * Decide a reply's fate.  For REPLY_APPLY, *id, *status and *detail are
 * set; for REPLY_REJECT, *reason.  Allocates in the current context.
 */
static ReplyFate
reply_classify(const rd_kafka_message_t *msg, const ReplyJudge *judge,
			   int64 *id, char **status, char **detail, char **reason)
{
	ReplyFields f;
	JsonSemAction sem;
	JsonLexContext *lex;
	JsonParseErrorType perr;
	char	   *text;
	char	   *source;
	const char *stray = NULL;
	int			len = (int) msg->len;

	*reason = NULL;
	if (msg->payload == NULL)
		stray = "the record has no value (a tombstone)";
	else if (msg->len > REPLY_MAX_VALUE)
		stray = psprintf("the value is larger than %d bytes", REPLY_MAX_VALUE);
	else if (!pg_verify_mbstr(GetDatabaseEncoding(), msg->payload, len, true))
		stray = "the value is not valid text in the database's encoding";
	else if (json_depth(msg->payload, len) > REPLY_MAX_DEPTH)
		stray = psprintf("the value is nested deeper than %d levels", REPLY_MAX_DEPTH);
	if (stray != NULL)
		goto stray;

	memset(&f, 0, sizeof(f));
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &f;
	sem.object_start = fields_object_start;
	sem.object_end = fields_end;
	sem.array_start = fields_array_start;
	sem.array_end = fields_end;
	sem.object_field_start = fields_field_start;
	sem.scalar = fields_scalar;
	text = pnstrdup(msg->payload, len);
	lex = outbox_json_lexer(text, len, GetDatabaseEncoding());
	perr = pg_parse_json(lex, &sem);
	if (perr != JSON_SUCCESS)
	{
		stray = psprintf("the value is not JSON: %s", json_errdetail(perr, lex));
		goto stray;
	}
	if (f.not_object)
	{
		stray = "the value is not a JSON object";
		goto stray;
	}

	/*
	 * Whose is it?  A reply without "db" is this relay's only while
	 * outbox.databases names this database alone: a fixed rule, the same
	 * whichever relays run at the moment.
	 */
	if (f.has_db)
	{
		if (f.db == NULL)
		{
			stray = "\"db\" is not a string";
			goto stray;
		}
		if (strcmp(f.db, judge->database) != 0)
		{
			if (outbox_relays_know_database(f.db))
				return REPLY_SKIP;
			stray = psprintf("database \"%s\" is not relayed by this cluster", f.db);
			goto stray;
		}
	}
	else if (!judge->db_alone)
	{
		stray = "\"db\" is missing, and outbox.databases does not name one database alone";
		goto stray;
	}

	/*
	 * Ours by name; but does it answer this installation?  A reply naming
	 * another one (a database of the same name dropped and created again, an
	 * extension re-created) is a stray of that installation.  One naming
	 * none is taken for this installation unless Kafka says it was written
	 * before this installation existed.
	 */
	source = reply_source(msg, &f, reason);
	if (*reason != NULL)
		return REPLY_REJECT;
	if (source != NULL)
	{
		if (judge->installation == NULL ||
			pg_strcasecmp(source, judge->installation) != 0)
		{
			*reason = psprintf("the reply answers installation %s, not this one (%s)",
							   source,
							   judge->installation ? judge->installation : "none");
			return REPLY_REJECT;
		}
	}
	else if (judge->installation != NULL)
	{
		rd_kafka_timestamp_type_t tstype;
		int64		ts = rd_kafka_message_timestamp(msg, &tstype);

		if (tstype != RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && ts >= 0 &&
			ts < judge->installed_ms)
		{
			*reason = psprintf("the reply names no \"source\" and was written before this installation (%s) was created",
							   judge->installation);
			return REPLY_REJECT;
		}
	}

	/* ours */
	if (!f.has_id)
		*reason = "\"id\" is missing";
	else if (f.id == NULL || !parse_id(f.id, id))
		*reason = "\"id\" is not an integer";
	else if (!f.has_status)
		*reason = "\"status\" is missing";
	else if (f.status == NULL ||
			 (strcmp(f.status, "confirmed") != 0 && strcmp(f.status, "failed") != 0))
		*reason = "\"status\" is neither \"confirmed\" nor \"failed\"";
	else if (f.detail_bad)
		*reason = "\"detail\" is not a string";
	if (*reason != NULL)
		return REPLY_REJECT;
	*status = f.status;
	*detail = f.detail;
	return REPLY_APPLY;

stray:
	if (!outbox_relay_keeps_strays())
		return REPLY_SKIP;
	*reason = (char *) stray;
	return REPLY_REJECT;
}

/*
 * Key or value as text for outbox.rejected_replies: at most
 * REPLY_KEEP_BYTES, cut at a character boundary; bytes that are not text in
 * the database's encoding are kept as \x and hex digits.
 */
static Datum
reply_text(const void *data, size_t len)
{
	const char *s = (const char *) data;
	int			n = (int) Min(len, (size_t) REPLY_KEEP_BYTES);
	StringInfoData buf;
	int			i;

	if (len <= (size_t) PG_INT32_MAX &&
		pg_verify_mbstr(GetDatabaseEncoding(), s, (int) len, true))
		return PointerGetDatum(cstring_to_text_with_len(s, pg_mbcliplen(s, (int) len, n)));
	n = Min(n, REPLY_KEEP_BYTES / 2);
	initStringInfo(&buf);
	appendStringInfoString(&buf, "\\x");
	for (i = 0; i < n; i++)
		appendStringInfo(&buf, "%02x", (unsigned char) s[i]);
	return PointerGetDatum(cstring_to_text(buf.data));
}

/* ---------------------------------------------------------------------
 * Applying a batch (in the relay's transaction)
 * ---------------------------------------------------------------------
 */

/* Load the stored positions of the reply topic into the cache. */
static void
reply_load_positions(void *arg)
{
	ReplyConsumer *c = (ReplyConsumer *) arg;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	uint64		i;

	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	values[0] = CStringGetTextDatum(c->topic);
	if (SPI_execute_with_args("SELECT partition, next_offset FROM outbox.reply_offsets WHERE topic = $1",
							  1, argtypes, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read outbox.reply_offsets");
	free(c->next);
	c->next = NULL;
	c->nnext = 0;
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int32		p = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
													SPI_tuptable->tupdesc, 1, &isnull));
		int64		next = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
													   SPI_tuptable->tupdesc, 2, &isnull));

		if (p < 0 || p >= 1000000)
			continue;
		if (p >= c->nnext)
		{
			int			n = Max(p + 1, c->nnext * 2);
			int64	   *grown = realloc(c->next, n * sizeof(int64));
			int			j;

			if (grown == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_OUT_OF_MEMORY),
						 errmsg("out of memory")));
			for (j = c->nnext; j < n; j++)
				grown[j] = -1;
			c->next = grown;
			c->nnext = n;
		}
		c->next[p] = next;
	}
	PopActiveSnapshot();
	SPI_finish();
}

/*
 * Is this error about the verdict itself, so that it is rejected alone?
 * Data exceptions, constraints, errors raised by triggers and routines;
 * anything else (a missing table, privileges, deadlocks, resources,
 * shutdown) fails the batch, which is tried again later.
 */
static bool
error_is_about_data(int sqlerrcode)
{
	switch (ERRCODE_TO_CATEGORY(sqlerrcode))
	{
		case ERRCODE_TO_CATEGORY(ERRCODE_TRIGGERED_ACTION_EXCEPTION):	/* 09 */
		case ERRCODE_TO_CATEGORY(ERRCODE_DATA_EXCEPTION):	/* 22 */
		case ERRCODE_TO_CATEGORY(ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION):	/* 23 */
		case ERRCODE_TO_CATEGORY(ERRCODE_TRIGGERED_DATA_CHANGE_VIOLATION):	/* 27 */
		case ERRCODE_TO_CATEGORY(ERRCODE_SQL_ROUTINE_EXCEPTION):	/* 2F */
		case ERRCODE_TO_CATEGORY(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION):	/* 38 */
		case ERRCODE_TO_CATEGORY(ERRCODE_E_R_I_E_SRF_PROTOCOL_VIOLATED):	/* 39 */
		case ERRCODE_TO_CATEGORY(ERRCODE_WITH_CHECK_OPTION_VIOLATION):	/* 44 */
		case ERRCODE_TO_CATEGORY(ERRCODE_PLPGSQL_ERROR):	/* P0 */
			return true;
		default:
			return false;
	}
}

/*
 * Run the confirm plan for one verdict: returns whether the message exists.
 * In careful mode, in a subtransaction: an error about the data comes back
 * in *reason, any other is thrown on.
 */
static bool
reply_confirm(SPIPlanPtr plan, Datum *values, const char *nulls, bool careful,
			  char **reason)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool found = false;
	bool		isnull;

	*reason = NULL;
	if (!careful)
	{
		if (SPI_execute_plan(plan, values, nulls, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not run outbox.confirm()");
		return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull));
	}

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		if (SPI_execute_plan(plan, values, nulls, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not run outbox.confirm()");
		found = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull));
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (!error_is_about_data(edata->sqlerrcode))
			ReThrowError(edata);
		*reason = psprintf("applying the verdict failed: %s", edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return found;
}

/* Does outbox.databases name this database, and it alone? */
static bool
reply_database_alone(const char *database)
{
	char	   *copy;
	List	   *names = NIL;
	bool		alone;

	if (outbox_databases == NULL || strcmp(outbox_databases, "*") == 0)
		return false;
	copy = pstrdup(outbox_databases);
	alone = SplitIdentifierString(copy, ',', &names) &&
		list_length(names) == 1 &&
		strcmp((const char *) linitial(names), database) == 0;
	list_free(names);
	pfree(copy);
	return alone;
}

/* This installation's id and creation time (Unix ms), if it has one. */
static void
reply_read_installation(ReplyJudge *judge)
{
	bool		isnull;
	TimestampTz created;

	judge->installation = NULL;
	judge->installed_ms = 0;
	if (SPI_execute("SELECT i.id::pg_catalog.text, i.created_at FROM outbox.installation i",
					true, 2) != SPI_OK_SELECT)
		elog(ERROR, "could not read outbox.installation");
	if (SPI_processed != 1)
		return;
	judge->installation = SPI_getvalue(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1);
	created = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 2, &isnull));
	if (isnull)
		return;
	judge->installed_ms = created / 1000 +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;
}

/*
 * Can the verdict take its message's row now?  The row is locked here (FOR
 * NO KEY UPDATE, as the verdict's UPDATE would) if nobody holds it; a row
 * that another session holds is not waited for: false.  A missing row is
 * left to outbox.confirm() to report.
 */
static bool
reply_row_free(SPIPlanPtr lock_plan, SPIPlanPtr exists_plan, int64 id)
{
	Datum		values[1];

	values[0] = Int64GetDatum(id);
	if (SPI_execute_plan(lock_plan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not lock a row of outbox.messages");
	if (SPI_processed > 0)
		return true;
	if (SPI_execute_plan(exists_plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read outbox.messages");
	return SPI_processed == 0;
}

static void
reply_apply_batch(void *arg)
{
	ReplyBatchArgs *a = (ReplyBatchArgs *) arg;
	ReplyConsumer *c = a->c;
	Oid			confirm_types[3] = {INT8OID, TEXTOID, TEXTOID};
	Oid			reject_types[7] = {TEXTOID, INT4OID, INT8OID, TEXTOID, TEXTOID, INT4OID, TEXTOID};
	Oid			pos_types[3] = {TEXTOID, INT4OID, INT8OID};
	Oid			id_types[1] = {INT8OID};
	SPIPlanPtr	confirm_plan;
	SPIPlanPtr	reject_plan;
	SPIPlanPtr	read_plan;
	SPIPlanPtr	store_plan;
	SPIPlanPtr	lock_plan;
	SPIPlanPtr	exists_plan;
	ReplyJudge	judge;
	Datum		topic;
	int			maxp = a->npositions;
	int64	   *stored;
	int64	   *held_from;
	int			i;
	int			p;

	/*
	 * A verdict never waits for its message's row (reply_row_free()); any
	 * other lock (a table lock, a row a trigger of yours touches) is waited
	 * for briefly, then the batch fails and is tried again later: the relay
	 * goes on delivering in between.
	 */
	(void) set_config_option("lock_timeout", REPLY_LOCK_TIMEOUT, PGC_SUSET,
							 PGC_S_OVERRIDE, GUC_ACTION_LOCAL, true, 0, false);

	stored = palloc(sizeof(int64) * maxp);
	held_from = palloc(sizeof(int64) * maxp);
	for (p = 0; p < maxp; p++)
	{
		a->positions[p] = -2;	/* not in the batch */
		held_from[p] = -1;		/* nothing held */
	}
	/* held verdicts not yet due keep their partitions where they are */
	if (!a->retry_held)
		for (i = 0; i < c->nbatch; i++)
		{
			p = c->batch[i]->partition;
			if (c->held[i] &&
				(held_from[p] < 0 || c->batch[i]->offset < held_from[p]))
				held_from[p] = c->batch[i]->offset;
		}

	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	confirm_plan = SPI_prepare("SELECT outbox.confirm($1, $2, $3)", 3, confirm_types);
	reject_plan = SPI_prepare("INSERT INTO outbox.rejected_replies "
							  "(topic, partition, kafka_offset, key, value, value_length, reason) "
							  "VALUES ($1, $2, $3, $4, $5, $6, $7)", 7, reject_types);
	read_plan = SPI_prepare("SELECT next_offset FROM outbox.reply_offsets "
							"WHERE topic = $1 AND partition = $2 FOR UPDATE", 2, pos_types);
	store_plan = SPI_prepare("INSERT INTO outbox.reply_offsets AS o (topic, partition, next_offset) "
							 "VALUES ($1, $2, $3) ON CONFLICT (topic, partition) DO UPDATE "
							 "SET next_offset = excluded.next_offset, updated_at = pg_catalog.now()",
							 3, pos_types);
	lock_plan = SPI_prepare("SELECT 1 FROM outbox.messages m WHERE m.id = $1 "
							"FOR NO KEY UPDATE OF m SKIP LOCKED", 1, id_types);
	exists_plan = SPI_prepare("SELECT 1 FROM outbox.messages m WHERE m.id = $1",
							  1, id_types);
	if (!confirm_plan || !reject_plan || !read_plan || !store_plan ||
		!lock_plan || !exists_plan)
		elog(ERROR, "could not prepare the reply consumer's statements: %s",
			 SPI_result_code_string(SPI_result));
	topic = CStringGetTextDatum(c->topic);
	judge.database = a->database;
	judge.db_alone = reply_database_alone(a->database);
	reply_read_installation(&judge);

	/* Lock and read the stored positions of the batch's partitions. */
	for (i = 0; i < c->nbatch; i++)
	{
		Datum		values[2];

		p = c->batch[i]->partition;
		if (a->positions[p] != -2)
			continue;
		values[0] = topic;
		values[1] = Int32GetDatum(p);
		if (SPI_execute_plan(read_plan, values, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read outbox.reply_offsets");
		a->positions[p] = -1;
		if (SPI_processed > 0)
		{
			bool		isnull;

			a->positions[p] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
														  SPI_tuptable->tupdesc, 1, &isnull));
		}
		stored[p] = a->positions[p];
	}

	for (i = 0; i < c->nbatch; i++)
	{
		rd_kafka_message_t *msg = c->batch[i];
		int64		id = 0;
		char	   *status = NULL;
		char	   *detail = NULL;
		char	   *reason = NULL;
		ReplyFate	fate;

		p = msg->partition;
		if (held_from[p] >= 0 && msg->offset >= held_from[p])
		{
			/* behind a held verdict of its partition: kept, in order */
			a->keep[i] = true;
			a->held[i] = c->held[i] && !a->retry_held;
			continue;
		}
		if (msg->offset < stored[p])
		{
			/*
			 * The partition was assigned at the stored offset, and Kafka
			 * went back to its start: the offset is no longer there.  Read
			 * on from here; the installation check keeps out replies that
			 * are not this installation's.
			 */
			if (a->recreated == NULL)
			{
				MemoryContext old = MemoryContextSwitchTo(a->cxt);

				a->recreated = psprintf("partition %d of reply topic \"%s\" has offset " INT64_FORMAT " below the stored next offset " INT64_FORMAT,
										p, c->topic, (int64) msg->offset, stored[p]);
				MemoryContextSwitchTo(old);
			}
			stored[p] = msg->offset;
			a->positions[p] = msg->offset;
		}
		if (msg->offset < a->positions[p])
			continue;			/* a second copy in the batch */

		fate = reply_classify(msg, &judge, &id, &status, &detail, &reason);
		if (fate == REPLY_APPLY &&
			!reply_row_free(lock_plan, exists_plan, id))
		{
			/*
			 * Another session holds the message's row: the verdict waits,
			 * and so do the replies behind it in its partition, whose
			 * stored offset stays at it.  The other partitions go on.
			 */
			held_from[p] = msg->offset;
			a->keep[i] = true;
			a->held[i] = true;
			continue;
		}
		a->positions[p] = msg->offset + 1;
		if (fate == REPLY_APPLY)
		{
			Datum		values[3];
			char		nulls[3] = {' ', ' ', ' '};

			values[0] = Int64GetDatum(id);
			values[1] = CStringGetTextDatum(status);
			values[2] = detail ? CStringGetTextDatum(detail) : (Datum) 0;
			if (detail == NULL)
				nulls[2] = 'n';
			if (reply_confirm(confirm_plan, values, nulls, c->careful, &reason))
				a->applied++;
			else
			{
				if (reason == NULL)
					reason = psprintf("there is no message with id " INT64_FORMAT, id);
				fate = REPLY_REJECT;
			}
		}
		if (fate == REPLY_REJECT)
		{
			Datum		values[7];
			char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

			values[0] = topic;
			values[1] = Int32GetDatum(p);
			values[2] = Int64GetDatum(msg->offset);
			if (msg->key != NULL)
				values[3] = reply_text(msg->key, msg->key_len);
			else
				nulls[3] = 'n';
			if (msg->payload != NULL)
				values[4] = reply_text(msg->payload, msg->len);
			else
				nulls[4] = 'n';
			values[5] = Int32GetDatum((int32) Min(msg->len, (size_t) PG_INT32_MAX));
			values[6] = CStringGetTextDatum(reason);
			if (SPI_execute_plan(reject_plan, values, nulls, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not insert into outbox.rejected_replies");
			a->rejected++;
		}
	}

	/* Store the positions reached, in this same transaction. */
	for (p = 0; p < maxp; p++)
	{
		Datum		values[3];

		if (a->positions[p] < 0)
			continue;
		values[0] = topic;
		values[1] = Int32GetDatum(p);
		values[2] = Int64GetDatum(a->positions[p]);
		if (SPI_execute_plan(store_plan, values, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not write outbox.reply_offsets");
	}
	PopActiveSnapshot();
	SPI_finish();
}
