/*-------------------------------------------------------------------------
 *
 * eos.c
 *	  Exactly-once delivery: transactional.id, progress topic, progress
 *	  records (see eos.h).
 *
 * The progress value is a JSON object, readable with any consumer:
 *
 *	  {"version":2,"key":"outbox:7301...:16384:outbox_16384:5f0c...",
 *	   "commit_lsn":"0/1A2B3C8","end_lsn":"0/1A2B400",
 *	   "replay_boundary":null,"replay_last_id":null,
 *	   "delivered_snapshot":"7410:7415:7412","delivered_xids":"7413-7420,7423"}
 *
 * The last two name the PostgreSQL transactions whose events are in Kafka
 * (EosDelivered in eos.h), as a snapshot and a list of ids where runs of
 * consecutive ids are ranges; either may be null.  A record without them
 * (or with a malformed one) is read as naming none.
 *
 * Anyone who may produce to the progress topic could write a record under
 * our key (the key is no secret), so every record carries header
 * outbox-progress-mac: the HMAC-SHA-256, in hexadecimal, of the key, a zero
 * byte and the whole value, under a key derived from the installation's
 * message key (outbox._message_key, which only the relay and superusers
 * read).  A record without a valid code is never decoded.  One with a
 * valid code is parsed as a JSON object: its top-level members only, a
 * member named twice makes it invalid.
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
#include "common/hmac.h"
#include "miscadmin.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "eos.h"

/* First window read back from the end of the partition, in offsets. */
#define EOS_FIRST_WINDOW	256

void
outbox_eos_key(char *buf, Size len, const char *slot_name,
			   const char *incarnation)
{
	snprintf(buf, len, "outbox:" UINT64_FORMAT ":%u:%s:%s",
			 GetSystemIdentifier(), MyDatabaseId, slot_name, incarnation);
}

bool
outbox_eos_mac(const uint8 *mac_key, const char *key, Size key_len,
			   const char *value, Size len, char *hex)
{
	ResourceOwner saved = CurrentResourceOwner;
	pg_hmac_ctx *ctx;
	uint8		mac[EOS_MAC_LEN];
	uint8		sep = 0;
	bool		ok;
	int			i;

	/*
	 * The server's OpenSSL contexts are remembered by the current resource
	 * owner, which the relay has none of between transactions (decoding
	 * ends its own): lend it the process's.
	 */
	if (CurrentResourceOwner == NULL)
		CurrentResourceOwner = AuxProcessResourceOwner;
	ctx = pg_hmac_create(PG_SHA256);
	if (ctx == NULL)
	{
		CurrentResourceOwner = saved;
		return false;
	}
	ok = pg_hmac_init(ctx, mac_key, EOS_MAC_LEN) >= 0 &&
		pg_hmac_update(ctx, (const uint8 *) key, key_len) >= 0 &&
		pg_hmac_update(ctx, &sep, 1) >= 0 &&
		pg_hmac_update(ctx, (const uint8 *) value, len) >= 0 &&
		pg_hmac_final(ctx, mac, sizeof(mac)) >= 0;
	pg_hmac_free(ctx);
	CurrentResourceOwner = saved;
	if (!ok)
		return false;
	for (i = 0; i < EOS_MAC_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", mac[i]);
	return true;
}

/* Does hex (len bytes) equal the code of key and value?  Constant time. */
static bool
mac_matches(const uint8 *mac_key, const char *key, Size key_len,
			const char *value, Size len, const void *given, size_t given_len)
{
	char		hex[EOS_MAC_HEX_LEN + 1];
	uint8		diff = 0;
	int			i;

	if (given == NULL || given_len != EOS_MAC_HEX_LEN ||
		!outbox_eos_mac(mac_key, key, key_len, value, len, hex))
		return false;
	for (i = 0; i < EOS_MAC_HEX_LEN; i++)
		diff |= hex[i] ^ ((const char *) given)[i];
	return diff == 0;
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
	appendStringInfo(buf, "{\"version\":2,\"key\":\"%s\"", key);
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

/* The top-level members of a progress value that decoding reads. */
typedef enum EosField
{
	F_VERSION,
	F_COMMIT_LSN,
	F_END_LSN,
	F_REPLAY_BOUNDARY,
	F_REPLAY_LAST_ID,
	F_DELIVERED_SNAPSHOT,
	F_DELIVERED_XIDS,
	F_COUNT
} EosField;

static const char *const field_names[F_COUNT] = {
	"version", "commit_lsn", "end_lsn", "replay_boundary", "replay_last_id",
	"delivered_snapshot", "delivered_xids"
};

static const char *
skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* Past a JSON string starting at p (at its quote), or NULL if malformed. */
static const char *
skip_string(const char *p, const char *end, bool *escaped)
{
	*escaped = false;
	p++;
	while (p < end)
	{
		unsigned char c = (unsigned char) *p;

		if (c == '"')
			return p + 1;
		if (c < 0x20)
			return NULL;
		if (c == '\\')
		{
			*escaped = true;
			p++;
			if (p >= end)
				return NULL;
		}
		p++;
	}
	return NULL;
}

/*
 * Past one JSON value at p, or NULL if malformed.  Nested objects and
 * arrays are skipped whole (their brackets balanced outside strings).
 */
static const char *
skip_value(const char *p, const char *end)
{
	bool		escaped;

	if (p >= end)
		return NULL;
	if (*p == '"')
		return skip_string(p, end, &escaped);
	if (*p == '{' || *p == '[')
	{
		int			depth = 0;

		while (p < end)
		{
			if (*p == '"')
			{
				p = skip_string(p, end, &escaped);
				if (p == NULL)
					return NULL;
				continue;
			}
			if (*p == '{' || *p == '[')
			{
				if (++depth > 1000)
					return NULL;
			}
			else if (*p == '}' || *p == ']')
			{
				if (--depth == 0)
					return p + 1;
			}
			p++;
		}
		return NULL;
	}
	{
		const char *start = p;

		while (p < end && ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
						   *p == '-' || *p == '+' || *p == '.' || *p == 'E'))
			p++;
		return p > start ? p : NULL;
	}
}

/*
 * Parse value (len bytes) as one JSON object and point values[f] at the
 * value of each top-level member named field_names[f] (NULL if absent).
 * Nothing nested is looked at.  False if it is not a well-formed object,
 * or names one of our members twice (or with escapes, which we never
 * write): such a value is not one of ours.
 */
static bool
parse_top_level(const char *value, Size len, const char **values)
{
	const char *p = value;
	const char *end = value + len;
	int			f;

	for (f = 0; f < F_COUNT; f++)
		values[f] = NULL;
	p = skip_ws(p, end);
	if (p >= end || *p != '{')
		return false;
	p = skip_ws(p + 1, end);
	if (p < end && *p == '}')
		return skip_ws(p + 1, end) == end;
	for (;;)
	{
		const char *name;
		const char *name_end;
		bool		escaped;

		if (p >= end || *p != '"')
			return false;
		name = p + 1;
		p = skip_string(p, end, &escaped);
		if (p == NULL)
			return false;
		name_end = p - 1;
		p = skip_ws(p, end);
		if (p >= end || *p != ':')
			return false;
		p = skip_ws(p + 1, end);
		for (f = 0; f < F_COUNT; f++)
		{
			if (strlen(field_names[f]) == (size_t) (name_end - name) &&
				memcmp(field_names[f], name, name_end - name) == 0)
			{
				if (values[f] != NULL)
					return false;	/* twice */
				values[f] = p;
				break;
			}
		}
		if (escaped)
			return false;
		p = skip_value(p, end);
		if (p == NULL)
			return false;
		p = skip_ws(p, end);
		if (p < end && *p == ',')
		{
			p = skip_ws(p + 1, end);
			continue;
		}
		if (p < end && *p == '}')
			return skip_ws(p + 1, end) == end;
		return false;
	}
}

static bool
decode_lsn(const char *v, XLogRecPtr *lsn)
{
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
decode_delivered(const char **values, EosDelivered *d)
{
	const char *v = values[F_DELIVERED_SNAPSHOT];

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
	v = values[F_DELIVERED_XIDS];
	if (v != NULL && *v == '"' &&
		!decode_ranges(v + 1, &d->xids, &d->nxids, EOS_MAX_XIDS))
		outbox_eos_delivered_free(d);
}

bool
outbox_eos_decode(const char *value, Size len, EosProgress *p, EosDelivered *d)
{
	char	   *buf;
	const char *v;
	const char *values[F_COUNT];
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
	if (!parse_top_level(buf, len, values) ||
		values[F_VERSION] == NULL || values[F_VERSION][0] != '2' ||
		(values[F_VERSION][1] >= '0' && values[F_VERSION][1] <= '9') ||
		!decode_lsn(values[F_COMMIT_LSN], &p->commit_lsn) ||
		!decode_lsn(values[F_END_LSN], &p->end_lsn) ||
		!decode_lsn(values[F_REPLAY_BOUNDARY], &p->replay_boundary))
		goto done;
	v = values[F_REPLAY_LAST_ID];
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
		decode_delivered(values, d);
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
			int64 start, int64 stop, const char *key, const uint8 *mac_key,
			EosProgress *out, EosDelivered *delivered, bool *found,
			int *unauthentic, TimestampTz deadline, char *err, Size errlen)
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
			rd_kafka_headers_t *hdrs = NULL;
			const void *mac = NULL;
			size_t		mac_len = 0;

			if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
				rd_kafka_header_get_last(hdrs, EOS_MAC_HEADER, &mac, &mac_len) != RD_KAFKA_RESP_ERR_NO_ERROR ||
				m->payload == NULL ||
				!mac_matches(mac_key, key, strlen(key), (const char *) m->payload,
							 m->len, mac, mac_len))
				(*unauthentic)++;	/* not the relay's: never trusted */
			else if (outbox_eos_decode((const char *) m->payload, m->len, &p, &d))
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
						 int partitions, const char *key, const uint8 *mac_key,
						 EosProgress *out, EosDelivered *delivered,
						 int *unauthentic, int timeout_ms, char *err,
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
	*unauthentic = 0;
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
		ok = read_window(rk, rkt, partition, from, end, key, mac_key, out,
						 delivered, &found, unauthentic, deadline, err, errlen);
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
