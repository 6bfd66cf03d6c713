/*-------------------------------------------------------------------------
 *
 * eos.c
 *	  Exactly-once delivery: transactional.id, progress topic, progress
 *	  records (see eos.h).
 *
 * The progress value is a JSON object, readable with any consumer:
 *
 *	  {"version":1,"key":"outbox:7301...:16384:outbox_16384",
 *	   "commit_lsn":"0/1A2B3C8","end_lsn":"0/1A2B400",
 *	   "replay_boundary":null,"replay_last_id":null,
 *	   "delivered_snapshot":"7410:7415:7412","delivered_xids":"7413-7420,7423"}
 *
 * The last two name the PostgreSQL transactions whose events are in Kafka
 * (EosDelivered in eos.h), as a snapshot and a list of ids where runs of
 * consecutive ids are ranges; either may be null.  A record without them
 * (or with a malformed one) is read as naming none.
 *
 * Only this file writes it, so decoding looks for the fields it wrote
 * rather than parsing JSON in general.
 *
 * The progress topic is read with librdkafka's simple (legacy) consumer:
 * no group, no coordinator, no offset commits, one partition.
 *
 * src/eos.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <errno.h>
#include <signal.h>
#include <pthread.h>

#include "access/transam.h"
#include "access/xlog.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "utils/timestamp.h"

#include "eos.h"

/* First window read back from the end of the partition, in offsets. */
#define EOS_FIRST_WINDOW	256

void
outbox_eos_key(char *buf, Size len, const char *slot_name)
{
	snprintf(buf, len, "outbox:" UINT64_FORMAT ":%u:%s",
			 GetSystemIdentifier(), MyDatabaseId, slot_name);
}

static void
append_lsn(StringInfo buf, const char *name, XLogRecPtr lsn)
{
	if (XLogRecPtrIsInvalid(lsn))
		appendStringInfo(buf, ",\"%s\":null", name);
	else
		appendStringInfo(buf, ",\"%s\":\"%X/%X\"", name, LSN_FORMAT_ARGS(lsn));
}

/* Sorted ids as "a-b,c,d-e": runs of consecutive ids are one range. */
static void
append_ranges(StringInfo buf, const uint64 *ids, int n)
{
	int			i = 0;

	while (i < n)
	{
		int			j = i;

		while (j + 1 < n && ids[j + 1] == ids[j] + 1)
			j++;
		if (i > 0)
			appendStringInfoChar(buf, ',');
		if (j > i)
			appendStringInfo(buf, UINT64_FORMAT "-" UINT64_FORMAT, ids[i], ids[j]);
		else
			appendStringInfo(buf, UINT64_FORMAT, ids[i]);
		i = j + 1;
	}
}

void
outbox_eos_encode(StringInfo buf, const char *key, const EosProgress *p,
				  const EosDelivered *d)
{
	appendStringInfo(buf, "{\"version\":1,\"key\":\"%s\"", key);
	append_lsn(buf, "commit_lsn", p->commit_lsn);
	append_lsn(buf, "end_lsn", p->end_lsn);
	append_lsn(buf, "replay_boundary", p->replay_boundary);
	if (XLogRecPtrIsInvalid(p->replay_boundary))
		appendStringInfoString(buf, ",\"replay_last_id\":null");
	else
		appendStringInfo(buf, ",\"replay_last_id\":" INT64_FORMAT, p->replay_last_id);
	if (d != NULL && d->has_snapshot)
	{
		appendStringInfo(buf, ",\"delivered_snapshot\":\"" UINT64_FORMAT ":" UINT64_FORMAT ":",
						 d->xmin, d->xmax);
		append_ranges(buf, d->xip, d->nxip);
		appendStringInfoChar(buf, '"');
	}
	else
		appendStringInfoString(buf, ",\"delivered_snapshot\":null");
	if (d != NULL && d->nxids > 0)
	{
		appendStringInfoString(buf, ",\"delivered_xids\":\"");
		append_ranges(buf, d->xids, d->nxids);
		appendStringInfoChar(buf, '"');
	}
	else
		appendStringInfoString(buf, ",\"delivered_xids\":null");
	appendStringInfoChar(buf, '}');
}

/* The text after "name": in a value we wrote, or NULL. */
static const char *
find_field(const char *buf, const char *name)
{
	char		pattern[64];
	const char *at;

	snprintf(pattern, sizeof(pattern), "\"%s\":", name);
	at = strstr(buf, pattern);
	return at ? at + strlen(pattern) : NULL;
}

static bool
decode_lsn(const char *buf, const char *name, XLogRecPtr *lsn)
{
	const char *v = find_field(buf, name);
	uint32		hi;
	uint32		lo;

	*lsn = InvalidXLogRecPtr;
	if (v == NULL)
		return false;
	if (strncmp(v, "null", 4) == 0)
		return true;
	if (sscanf(v, "\"%X/%X\"", &hi, &lo) != 2)
		return false;
	*lsn = ((uint64) hi << 32) | lo;
	return true;
}

/* An unsigned decimal at *v (digits only, no overflow); moves *v past it. */
static bool
parse_u64(const char **v, uint64 *out)
{
	char	   *end;

	if (**v < '0' || **v > '9')
		return false;
	errno = 0;
	*out = strtou64(*v, &end, 10);
	if (errno != 0)
		return false;
	*v = end;
	return true;
}

/*
 * Parse "a-b,c,..." up to the closing quote into a sorted malloc'd array of
 * at most max ids.  False if malformed, unsorted or too long.
 */
static bool
decode_ranges(const char *v, uint64 **out, int *n, int max)
{
	int			cap = 0;
	uint64	   *ids = NULL;

	*out = NULL;
	*n = 0;
	while (*v != '"')
	{
		uint64		lo;
		uint64		hi;
		uint64		k;

		if (!parse_u64(&v, &lo))
			goto bad;
		hi = lo;
		if (*v == '-')
		{
			v++;
			if (!parse_u64(&v, &hi))
				goto bad;
		}
		if (hi < lo || hi - lo >= (uint64) max ||
			(*n > 0 && lo <= ids[*n - 1]) || *n + (int) (hi - lo) >= max)
			goto bad;
		for (k = 0; k <= hi - lo; k++)
		{
			if (*n == cap)
			{
				uint64	   *grown;

				cap = Max(cap * 2, 64);
				grown = realloc(ids, sizeof(uint64) * cap);
				if (grown == NULL)
					goto bad;
				ids = grown;
			}
			ids[(*n)++] = lo + k;
		}
		if (*v == ',')
			v++;
		else if (*v != '"')
			goto bad;
	}
	*out = ids;
	return true;

bad:
	free(ids);
	*n = 0;
	return false;
}

/*
 * The delivered set of a progress value; left empty (which is always
 * correct) when the value has none or a malformed one.
 */
static void
decode_delivered(const char *buf, EosDelivered *d)
{
	const char *v = find_field(buf, "delivered_snapshot");

	memset(d, 0, sizeof(*d));
	if (v != NULL && *v == '"')
	{
		v++;
		if (parse_u64(&v, &d->xmin) && *v++ == ':' &&
			parse_u64(&v, &d->xmax) && *v++ == ':' && d->xmin <= d->xmax &&
			decode_ranges(v, &d->xip, &d->nxip, EOS_MAX_XIDS))
			d->has_snapshot = true;
		else
		{
			outbox_eos_delivered_free(d);
			return;
		}
	}
	v = find_field(buf, "delivered_xids");
	if (v != NULL && *v == '"' &&
		!decode_ranges(v + 1, &d->xids, &d->nxids, EOS_MAX_XIDS))
		outbox_eos_delivered_free(d);
}

bool
outbox_eos_decode(const char *value, Size len, EosProgress *p, EosDelivered *d)
{
	char	   *buf;
	const char *v;
	bool		ok = false;

	memset(p, 0, sizeof(*p));
	if (d != NULL)
		memset(d, 0, sizeof(*d));
	if (len > EOS_VALUE_LEN)
		return false;
	buf = malloc(len + 1);
	if (buf == NULL)
		return false;
	memcpy(buf, value, len);
	buf[len] = '\0';
	if (strncmp(buf, "{\"version\":1,", 13) != 0 ||
		!decode_lsn(buf, "commit_lsn", &p->commit_lsn) ||
		!decode_lsn(buf, "end_lsn", &p->end_lsn) ||
		!decode_lsn(buf, "replay_boundary", &p->replay_boundary))
		goto done;
	v = find_field(buf, "replay_last_id");
	if (v == NULL)
		goto done;
	if (strncmp(v, "null", 4) != 0)
	{
		long long	id;

		if (sscanf(v, "%lld", &id) != 1)
			goto done;
		p->replay_last_id = (int64) id;
	}
	p->found = true;
	ok = true;
	if (d != NULL)
		decode_delivered(buf, d);
done:
	free(buf);
	return ok;
}

uint64
outbox_eos_widen_xid(FullTransactionId next, TransactionId xid)
{
	uint32		back;

	if (!TransactionIdIsNormal(xid))
		return (uint64) xid;	/* bootstrap and frozen ids: the oldest */
	back = XidFromFullTransactionId(next) - xid;
	if ((uint64) back > U64FromFullTransactionId(next))
		return (uint64) FirstNormalTransactionId;
	return U64FromFullTransactionId(next) - back;
}

int
outbox_eos_cmp_xid(const void *a, const void *b)
{
	uint64		x = *(const uint64 *) a;
	uint64		y = *(const uint64 *) b;

	return (x > y) - (x < y);
}

bool
outbox_eos_snapshot_shows(uint64 xmin, uint64 xmax, const uint64 *xip,
						  int nxip, uint64 xid)
{
	if (xid < xmin)
		return true;
	if (xid >= xmax)
		return false;
	return nxip == 0 ||
		bsearch(&xid, xip, nxip, sizeof(uint64), outbox_eos_cmp_xid) == NULL;
}

bool
outbox_eos_delivered_has(const EosDelivered *d, uint64 xid)
{
	if (d->has_snapshot &&
		outbox_eos_snapshot_shows(d->xmin, d->xmax, d->xip, d->nxip, xid))
		return true;
	return d->nxids > 0 &&
		bsearch(&xid, d->xids, d->nxids, sizeof(uint64), outbox_eos_cmp_xid) != NULL;
}

bool
outbox_eos_delivered_before(const EosDelivered *d, uint64 next)
{
	if (d->has_snapshot && d->xmax > next)
		return false;
	if (d->nxip > 0 && d->xip[d->nxip - 1] >= next)
		return false;
	return d->nxids == 0 || d->xids[d->nxids - 1] < next;
}

void
outbox_eos_delivered_free(EosDelivered *d)
{
	free(d->xip);
	free(d->xids);
	memset(d, 0, sizeof(*d));
}

int32
outbox_eos_partition(const char *key, int partitions)
{
	if (partitions <= 1)
		return 0;
	return (int32) (hash_bytes((const unsigned char *) key, strlen(key)) %
					(uint32) partitions);
}

/* Partitions of a topic from the cluster's metadata: >0, 0 if missing, -1 on error. */
static int
topic_partitions(rd_kafka_t *rk, const char *topic, int timeout_ms,
				 char *err, Size errlen)
{
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t e;
	int			n = -1;

	if (rkt == NULL)
	{
		snprintf(err, errlen, "invalid progress topic name \"%s\"", topic);
		return -1;
	}
	e = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
		snprintf(err, errlen, "could not read the metadata of progress topic \"%s\": %s",
				 topic, rd_kafka_err2str(e));
	else if (md->topic_cnt != 1)
		snprintf(err, errlen, "no metadata for progress topic \"%s\"", topic);
	else if (md->topics[0].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
			 md->topics[0].err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC)
		n = 0;
	else if (md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR)
		snprintf(err, errlen, "progress topic \"%s\": %s", topic,
				 rd_kafka_err2str(md->topics[0].err));
	else
		n = md->topics[0].partition_cnt;
	if (md != NULL)
		rd_kafka_metadata_destroy(md);
	rd_kafka_topic_destroy(rkt);
	return n;
}

bool
outbox_eos_ensure_topic(rd_kafka_t *rk, const char *topic, int *partitions,
						int timeout_ms, char *err, Size errlen)
{
	rd_kafka_NewTopic_t *nt;
	rd_kafka_queue_t *q;
	rd_kafka_event_t *ev;
	rd_kafka_AdminOptions_t *opts;
	char		errstr[256];
	bool		ok = true;
	int			n;

	n = topic_partitions(rk, topic, timeout_ms, err, errlen);
	if (n < 0)
		return false;
	if (n > 0)
	{
		*partitions = n;
		return true;
	}

	/* missing: create it, compacted, with the cluster's replication */
	nt = rd_kafka_NewTopic_new(topic, 1, -1, errstr, sizeof(errstr));
	if (nt == NULL)
	{
		snprintf(err, errlen, "could not create progress topic \"%s\": %s",
				 topic, errstr);
		return false;
	}
	rd_kafka_NewTopic_set_config(nt, "cleanup.policy", "compact");
	q = rd_kafka_queue_new(rk);
	opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
	rd_kafka_AdminOptions_set_operation_timeout(opts, timeout_ms, errstr,
												sizeof(errstr));
	rd_kafka_CreateTopics(rk, &nt, 1, opts, q);
	ev = rd_kafka_queue_poll(q, timeout_ms + 1000);
	if (ev == NULL)
	{
		snprintf(err, errlen, "timed out creating progress topic \"%s\"", topic);
		ok = false;
	}
	else
	{
		const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
		size_t		nres = 0;
		const rd_kafka_topic_result_t **tr = res ? rd_kafka_CreateTopics_result_topics(res, &nres) : NULL;
		rd_kafka_resp_err_t e = rd_kafka_event_error(ev);

		if (e == RD_KAFKA_RESP_ERR_NO_ERROR && nres == 1)
			e = rd_kafka_topic_result_error(tr[0]);
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR &&
			e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
		{
			snprintf(err, errlen, "could not create progress topic \"%s\": %s",
					 topic, rd_kafka_err2str(e));
			ok = false;
		}
		rd_kafka_event_destroy(ev);
	}
	rd_kafka_AdminOptions_destroy(opts);
	rd_kafka_queue_destroy(q);
	rd_kafka_NewTopic_destroy(nt);
	if (!ok)
		return false;

	/* the metadata may lag behind the creation a little */
	for (n = 0; n < 50; n++)
	{
		int			p = topic_partitions(rk, topic, timeout_ms, err, errlen);

		if (p > 0)
		{
			*partitions = p;
			return true;
		}
		pg_usleep(100 * 1000L);
	}
	snprintf(err, errlen, "progress topic \"%s\" was created but has no partitions yet",
			 topic);
	return false;
}

/*
 * Read offsets [start, stop) of the partition (stop = -1: to its end), and
 * keep the value of the last record of key.  Returns false on error.
 */
static bool
read_window(rd_kafka_t *rk, rd_kafka_topic_t *rkt, int32 partition,
			int64 start, int64 stop, const char *key, EosProgress *out,
			EosDelivered *delivered, bool *found, TimestampTz deadline,
			char *err, Size errlen)
{
	bool		ok = true;
	bool		done = false;

	if (rd_kafka_consume_start(rkt, partition, start) != 0)
	{
		snprintf(err, errlen, "could not read the progress topic: %s",
				 rd_kafka_err2str(rd_kafka_last_error()));
		return false;
	}
	while (!done)
	{
		rd_kafka_message_t *m;
		if (GetCurrentTimestamp() > deadline)
		{
			snprintf(err, errlen, "timed out reading the progress topic");
			ok = false;
			break;
		}
		m = rd_kafka_consume(rkt, partition, 200);
		if (m == NULL)
			continue;
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
			done = true;
		else if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			/* transient fetch errors are retried by librdkafka itself */
			if (m->err != RD_KAFKA_RESP_ERR__TRANSPORT &&
				m->err != RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION &&
				m->err != RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE)
			{
				snprintf(err, errlen, "could not read the progress topic: %s",
						 rd_kafka_err2str(m->err));
				ok = false;
				done = true;
			}
		}
		else if (stop >= 0 && m->offset >= stop)
			done = true;
		else if (m->key_len == strlen(key) &&
				 memcmp(m->key, key, m->key_len) == 0)
		{
			EosProgress p;
			EosDelivered d;

			if (m->payload != NULL &&
				outbox_eos_decode((const char *) m->payload, m->len, &p, &d))
			{
				*out = p;
				outbox_eos_delivered_free(delivered);
				*delivered = d;
				*found = true;
			}
		}
		rd_kafka_message_destroy(m);
	}
	rd_kafka_consume_stop(rkt, partition);
	(void) rk;
	return ok;
}

bool
outbox_eos_read_progress(rd_kafka_conf_t *conf, const char *topic,
						 int partitions, const char *key, EosProgress *out,
						 EosDelivered *delivered, int timeout_ms, char *err,
						 Size errlen)
{
	rd_kafka_t *rk;
	rd_kafka_topic_t *rkt;
	rd_kafka_topic_conf_t *tconf;
	char		buf[256];
	int32		partition = outbox_eos_partition(key, partitions);
	int64		lo;
	int64		hi;
	int64		end;
	int64		window = EOS_FIRST_WINDOW;
	rd_kafka_resp_err_t e;
	bool		ok = true;
	bool		found = false;
	TimestampTz deadline;
	sigset_t	all;
	sigset_t	saved;

	memset(out, 0, sizeof(*out));
	memset(delivered, 0, sizeof(*delivered));
	if (rd_kafka_conf_set(conf, "isolation.level", "read_committed", buf, sizeof(buf)) != RD_KAFKA_CONF_OK ||
		rd_kafka_conf_set(conf, "enable.partition.eof", "true", buf, sizeof(buf)) != RD_KAFKA_CONF_OK ||
		rd_kafka_conf_set(conf, "enable.auto.commit", "false", buf, sizeof(buf)) != RD_KAFKA_CONF_OK ||
		rd_kafka_conf_set(conf, "enable.auto.offset.store", "false", buf, sizeof(buf)) != RD_KAFKA_CONF_OK)
	{
		rd_kafka_conf_destroy(conf);
		snprintf(err, errlen, "could not configure the progress reader: %s", buf);
		return false;
	}
	/* as for the producer: librdkafka's threads get no PostgreSQL signals */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &saved);
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, buf, sizeof(buf));
	pthread_sigmask(SIG_SETMASK, &saved, NULL);
	if (rk == NULL)
	{
		rd_kafka_conf_destroy(conf);
		snprintf(err, errlen, "could not create the progress reader: %s", buf);
		return false;
	}
	tconf = rd_kafka_topic_conf_new();
	rd_kafka_topic_conf_set(tconf, "auto.offset.reset", "earliest", buf, sizeof(buf));
	rkt = rd_kafka_topic_new(rk, topic, tconf);

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);

	e = rd_kafka_query_watermark_offsets(rk, topic, partition, &lo, &hi,
										 timeout_ms);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		snprintf(err, errlen, "could not read the offsets of progress topic \"%s\": %s",
				 topic, rd_kafka_err2str(e));
		ok = false;
	}

	/* backwards from the end, in growing windows, until a record of ours */
	end = -1;
	while (ok && !found && hi > lo)
	{
		int64		from = (end < 0 ? hi : end) - window;

		if (from < lo)
			from = lo;
		ok = read_window(rk, rkt, partition, from, end, key, out, delivered,
						 &found, deadline, err, errlen);
		if (from == lo)
			break;
		end = from;
		window *= 4;
	}

	rd_kafka_topic_destroy(rkt);
	rd_kafka_destroy(rk);
	if (!ok)
		outbox_eos_delivered_free(delivered);
	return ok;
}
