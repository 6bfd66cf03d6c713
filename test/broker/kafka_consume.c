/*-------------------------------------------------------------------------
 *
 * kafka_consume.c
 *	  A small Kafka consumer for the outbox tests and benchmarks.
 *
 * It joins no consumer group: it looks up every partition of the given
 * topics through metadata (waiting for the topics to exist), starts them
 * all at the beginning (or the end) and prints one tab-separated line per
 * record on stdout:
 *
 *	  topic  partition  offset  key  value  headers  recv_us
 *
 * Key and value are escaped C-style (\t, \n, \\, other bytes outside
 * 0x20..0x7e as \xHH); a null key or value prints as \N.  Headers print as a
 * compact JSON object in record order, with a null value as JSON null.
 * recv_us is the CLOCK_REALTIME time of receipt in microseconds.
 *
 * Usage:
 *	  kafka_consume -b BOOTSTRAP -t TOPIC [-t TOPIC ...] [-n COUNT]
 *	                [--idle-ms MS] [--timeout-ms MS]
 *	                [--from-beginning | --from-end] [-X key=value ...]
 *
 * Without a group.id librdkafka 2.0.2 refuses rd_kafka_assign() (it returns
 * "Unknown group"), and with one the consumer would send FindCoordinator
 * requests that take errors injected into the mock broker for the code under
 * test.  So the partitions are started with the simple (legacy) consumer,
 * rd_kafka_consume_start_queue(), all feeding one queue: no group, no
 * coordinator, no offset commits.  The start offsets are resolved first, in
 * one batch with rd_kafka_offsets_for_times(): started at a logical offset
 * right after the topic appeared, a partition whose leader librdkafka has
 * not attached yet waits 500 ms before querying its offset again.
 *
 * Exit status: 0 once COUNT records arrived (with -n), or, without -n, once
 * every partition reached its end at least once and no record arrived for
 * --idle-ms; 1 when --timeout-ms passes first or on a fatal error; 2 on a
 * usage or configuration error.
 *
 * test/broker/kafka_consume.c
 *
 *-------------------------------------------------------------------------
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "broker_util.h"

#define PROGNAME			"kafka_consume"

#define DEFAULT_IDLE_MS		3000
#define DEFAULT_TIMEOUT_MS	60000
#define METADATA_RETRY_MS	100

static const char usage_text[] =
"Usage:\n"
"  " PROGNAME " -b BOOTSTRAP -t TOPIC [-t TOPIC ...] [-n COUNT]\n"
"                [--idle-ms MS] [--timeout-ms MS]\n"
"                [--from-beginning | --from-end] [-X key=value ...]\n"
"\n"
"Prints one line per record: topic, partition, offset, key, value, headers\n"
"(JSON), receive time (CLOCK_REALTIME microseconds), tab-separated.\n"
"  -n COUNT          exit 0 after COUNT records\n"
"  --idle-ms MS      without -n: exit 0 when every partition reached its end\n"
"                    and no record came for MS ms (default 3000)\n"
"  --timeout-ms MS   exit 1 if not done after MS ms (default 60000, 0: never)\n"
"  --from-beginning  start at the first offset of each partition (default)\n"
"  --from-end        start at the end of each partition\n"
"  -X key=value      any librdkafka property, applied last\n";

/* A growable output line. */
typedef struct Buf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} Buf;

/* One consumed partition. */
typedef struct PartState
{
	rd_kafka_topic_t *rkt;		/* borrowed from the topic table */
	int32_t		partition;
	int64_t		start_offset;	/* absolute, or a logical RD_KAFKA_OFFSET_* */
	int			started;		/* consume_start succeeded */
	int			eof;			/* reached the end at least once */
} PartState;

typedef struct Options
{
	const char *bootstrap;
	const char **topics;
	int			ntopics;
	long long	count;			/* -1: no -n */
	long		idle_ms;
	long		timeout_ms;		/* 0: no timeout */
	int			from_end;
	const char **props;			/* "key=value" from -X */
	int			nprops;
} Options;


/* ---------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------
 */

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t
realtime_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
buf_reserve(Buf *b, size_t extra)
{
	size_t		need = b->len + extra;

	if (need <= b->cap)
		return;
	if (b->cap == 0)
		b->cap = 256;
	while (b->cap < need)
		b->cap *= 2;
	b->data = realloc(b->data, b->cap);
	if (b->data == NULL)
	{
		fprintf(stderr, PROGNAME ": out of memory\n");
		exit(1);
	}
}

static void
buf_append(Buf *b, const char *s, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->data + b->len, s, n);
	b->len += n;
}

static void
buf_puts(Buf *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

static void
buf_putc(Buf *b, char c)
{
	buf_reserve(b, 1);
	b->data[b->len++] = c;
}

static const char hexdigits[] = "0123456789abcdef";

/* Key or value: \N for null, else C-style escapes (see file header). */
static void
append_escaped(Buf *b, const void *data, size_t len)
{
	const unsigned char *p = data;
	size_t		i;

	if (data == NULL)
	{
		buf_append(b, "\\N", 2);
		return;
	}
	buf_reserve(b, len);
	for (i = 0; i < len; i++)
	{
		unsigned char c = p[i];

		if (c == '\t')
			buf_append(b, "\\t", 2);
		else if (c == '\n')
			buf_append(b, "\\n", 2);
		else if (c == '\\')
			buf_append(b, "\\\\", 2);
		else if (c >= 0x20 && c <= 0x7e)
			buf_putc(b, (char) c);
		else
		{
			char		esc[4] = {'\\', 'x', hexdigits[c >> 4], hexdigits[c & 15]};

			buf_append(b, esc, 4);
		}
	}
}

/*
 * Length of the well-formed UTF-8 sequence (2..4 bytes) starting at s, or 0.
 * Rejects overlong forms, surrogates and code points above U+10FFFF.
 */
static size_t
utf8_sequence(const unsigned char *s, size_t n)
{
	size_t		len;
	size_t		i;
	uint32_t	cp;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
	{
		len = 2;
		cp = s[0] & 0x1f;
	}
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
	{
		len = 3;
		cp = s[0] & 0x0f;
	}
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
	{
		len = 4;
		cp = s[0] & 0x07;
	}
	else
		return 0;
	if (n < len)
		return 0;
	for (i = 1; i < len; i++)
	{
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
		(cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return len;
}

/*
 * A JSON string literal.  The usual short escapes, other control characters
 * as \u00XX, well-formed UTF-8 passed through; a byte that is not part of
 * well-formed UTF-8 is written as \u00XX (XX >= 80), which keeps the output
 * valid JSON and cannot be confused with a real character U+0080..U+00FF
 * (those are passed through as UTF-8).
 */
static void
append_json_string(Buf *b, const void *data, size_t len)
{
	const unsigned char *p = data;
	size_t		i = 0;

	buf_putc(b, '"');
	while (i < len)
	{
		unsigned char c = p[i];
		size_t		seq;

		switch (c)
		{
			case '"':
				buf_append(b, "\\\"", 2);
				break;
			case '\\':
				buf_append(b, "\\\\", 2);
				break;
			case '\b':
				buf_append(b, "\\b", 2);
				break;
			case '\f':
				buf_append(b, "\\f", 2);
				break;
			case '\n':
				buf_append(b, "\\n", 2);
				break;
			case '\r':
				buf_append(b, "\\r", 2);
				break;
			case '\t':
				buf_append(b, "\\t", 2);
				break;
			default:
				if (c >= 0x20 && c < 0x80)
					buf_putc(b, (char) c);
				else if (c >= 0x80 && (seq = utf8_sequence(p + i, len - i)) > 0)
				{
					buf_append(b, (const char *) p + i, seq);
					i += seq;
					continue;
				}
				else
				{
					char		esc[6] = {'\\', 'u', '0', '0',
					hexdigits[c >> 4], hexdigits[c & 15]};

					buf_append(b, esc, 6);
				}
				break;
		}
		i++;
	}
	buf_putc(b, '"');
}

/* Headers as a compact JSON object; {} when there are none. */
static void
append_headers(Buf *b, const rd_kafka_message_t *msg)
{
	rd_kafka_headers_t *hdrs;
	const char *name;
	const void *value;
	size_t		size;
	size_t		i;

	buf_putc(b, '{');
	if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		for (i = 0;
			 rd_kafka_header_get_all(hdrs, i, &name, &value, &size) ==
			 RD_KAFKA_RESP_ERR_NO_ERROR;
			 i++)
		{
			if (i > 0)
				buf_putc(b, ',');
			append_json_string(b, name, strlen(name));
			buf_putc(b, ':');
			if (value == NULL)
				buf_puts(b, "null");
			else
				append_json_string(b, value, size);
		}
	}
	buf_putc(b, '}');
}

/* Write one record line to stdout; -1 if stdout failed. */
static int
print_record(Buf *b, const rd_kafka_message_t *msg, int64_t recv_us)
{
	char		num[64];

	b->len = 0;
	buf_puts(b, rd_kafka_topic_name(msg->rkt));
	snprintf(num, sizeof(num), "\t%" PRId32 "\t%" PRId64 "\t",
			 msg->partition, msg->offset);
	buf_puts(b, num);
	append_escaped(b, msg->key, msg->key_len);
	buf_putc(b, '\t');
	append_escaped(b, msg->payload, msg->len);
	buf_putc(b, '\t');
	append_headers(b, msg);
	snprintf(num, sizeof(num), "\t%" PRId64 "\n", recv_us);
	buf_puts(b, num);

	if (fwrite(b->data, 1, b->len, stdout) != b->len || fflush(stdout) != 0)
		return -1;
	return 0;
}


/* ---------------------------------------------------------------------
 * Setup
 * ---------------------------------------------------------------------
 */

static void
usage_error(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, PROGNAME ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n\n%s", usage_text);
	exit(2);
}

/* Value of "-x VALUE", "--name VALUE" or "--name=VALUE", else NULL. */
static const char *
option_value(int argc, char **argv, int *ip, const char *name)
{
	const char *arg = argv[*ip];
	size_t		n = strlen(name);

	if (strncmp(arg, name, n) != 0)
		return NULL;
	if (arg[n] == '=' && name[1] == '-')
		return arg + n + 1;
	if (arg[n] != '\0')
		return NULL;
	if (*ip + 1 >= argc)
		usage_error("%s needs a value", name);
	return argv[++*ip];
}

static void
parse_options(int argc, char **argv, Options *o)
{
	int			i;

	memset(o, 0, sizeof(*o));
	o->count = -1;
	o->idle_ms = DEFAULT_IDLE_MS;
	o->timeout_ms = DEFAULT_TIMEOUT_MS;
	o->topics = calloc((size_t) argc, sizeof(*o->topics));
	o->props = calloc((size_t) argc, sizeof(*o->props));
	if (o->topics == NULL || o->props == NULL)
	{
		fprintf(stderr, PROGNAME ": out of memory\n");
		exit(1);
	}

	for (i = 1; i < argc; i++)
	{
		const char *v;
		long		n;

		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
		{
			fputs(usage_text, stdout);
			exit(0);
		}
		else if (strcmp(argv[i], "--from-beginning") == 0)
			o->from_end = 0;
		else if (strcmp(argv[i], "--from-end") == 0)
			o->from_end = 1;
		else if ((v = option_value(argc, argv, &i, "-b")) != NULL)
			o->bootstrap = v;
		else if ((v = option_value(argc, argv, &i, "-t")) != NULL)
		{
			if (*v == '\0')
				usage_error("empty topic name");
			o->topics[o->ntopics++] = v;
		}
		else if ((v = option_value(argc, argv, &i, "-n")) != NULL)
		{
			char	   *end;

			errno = 0;
			o->count = strtoll(v, &end, 10);
			if (errno != 0 || *v == '\0' || *end != '\0' || o->count < 0)
				usage_error("bad -n '%s'", v);
		}
		else if ((v = option_value(argc, argv, &i, "-X")) != NULL)
		{
			if (strchr(v, '=') == NULL || *v == '=')
				usage_error("-X wants key=value, not '%s'", v);
			o->props[o->nprops++] = v;
		}
		else if ((v = option_value(argc, argv, &i, "--idle-ms")) != NULL)
		{
			if (parse_long(v, 0, INT_MAX, &n) != 0)
				usage_error("bad --idle-ms '%s'", v);
			o->idle_ms = n;
		}
		else if ((v = option_value(argc, argv, &i, "--timeout-ms")) != NULL)
		{
			if (parse_long(v, 0, INT_MAX, &n) != 0)
				usage_error("bad --timeout-ms '%s'", v);
			o->timeout_ms = n;
		}
		else
			usage_error("unknown argument '%s'", argv[i]);
	}

	if (o->bootstrap == NULL)
		usage_error("-b BOOTSTRAP is required");
	if (o->ntopics == 0)
		usage_error("at least one -t TOPIC is required");
}

static void
conf_set(rd_kafka_conf_t *conf, const char *key, const char *value)
{
	char		errstr[512];

	if (rd_kafka_conf_set(conf, key, value, errstr, sizeof(errstr)) !=
		RD_KAFKA_CONF_OK)
	{
		fprintf(stderr, PROGNAME ": %s\n", errstr);
		exit(2);
	}
}

static rd_kafka_t *
create_consumer(const Options *o)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char		errstr[512];
	rd_kafka_t *rk;
	int			i;

	conf_set(conf, "client.id", PROGNAME);
	conf_set(conf, "bootstrap.servers", o->bootstrap);
	conf_set(conf, "enable.partition.eof", "true");
	conf_set(conf, "fetch.wait.max.ms", "5");
	conf_set(conf, "fetch.error.backoff.ms", "5");
	conf_set(conf, "isolation.level", "read_committed");
	conf_set(conf, "auto.offset.reset", "earliest");
	/*
	 * librdkafka 2.5 and later push client metrics (KIP-714) and, at
	 * rd_kafka_destroy(), wait up to a second for that to end: with 2.8 about
	 * every other run took a second longer to exit.  Older releases do not
	 * know the property, hence no conf_set().
	 */
	(void) rd_kafka_conf_set(conf, "enable.metrics.push", "false",
							 errstr, sizeof(errstr));

	for (i = 0; i < o->nprops; i++)
	{
		size_t		klen = (size_t) (strchr(o->props[i], '=') - o->props[i]);
		char	   *key = malloc(klen + 1);

		if (key == NULL)
			exit(1);
		memcpy(key, o->props[i], klen);
		key[klen] = '\0';
		conf_set(conf, key, o->props[i] + klen + 1);
		free(key);
	}

	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
	{
		fprintf(stderr, PROGNAME ": %s\n", errstr);
		rd_kafka_conf_destroy(conf);
		exit(2);
	}
	return rk;
}

/*
 * Number of partitions of a topic, waiting until it exists; -1 when the
 * deadline (mono_ms() value, 0 for none) passes first.
 */
static int
topic_partitions(rd_kafka_t *rk, const char *topic, int64_t deadline)
{
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
	rd_kafka_resp_err_t last = RD_KAFKA_RESP_ERR_NO_ERROR;
	int			cnt = -1;

	if (rkt == NULL)
	{
		fprintf(stderr, PROGNAME ": topic %s: %s\n", topic,
				rd_kafka_err2str(rd_kafka_last_error()));
		return -1;
	}

	for (;;)
	{
		const struct rd_kafka_metadata *md = NULL;
		int64_t		now = mono_ms();
		int			wait = 5000;
		rd_kafka_resp_err_t err;

		if (deadline != 0)
		{
			if (now >= deadline)
				break;
			if (deadline - now < wait)
				wait = (int) (deadline - now);
		}

		err = rd_kafka_metadata(rk, 0, rkt, &md, wait);
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			if (md->topic_cnt == 1 && md->topics[0].err == 0 &&
				md->topics[0].partition_cnt > 0)
				cnt = md->topics[0].partition_cnt;
			else if (md->topic_cnt == 1)
				err = md->topics[0].err;
			rd_kafka_metadata_destroy(md);
			if (cnt > 0)
				break;
		}
		if (err != last && err != RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			fprintf(stderr, PROGNAME ": waiting for topic %s: %s\n", topic,
					rd_kafka_err2str(err));
			last = err;
		}

		now = mono_ms();
		if (deadline != 0 && now + METADATA_RETRY_MS >= deadline)
			break;
		{
			struct timespec ts = {0, METADATA_RETRY_MS * 1000000L};

			nanosleep(&ts, NULL);
		}
	}

	rd_kafka_topic_destroy(rkt);
	return cnt;
}


/*
 * Turn the logical start offset of every partition into an absolute one
 * (see the file header).  A partition that cannot be resolved keeps its
 * logical offset, which librdkafka resolves itself, just more slowly.
 */
static void
resolve_start_offsets(rd_kafka_t *rk, PartState *parts, int nparts,
					  int64_t deadline)
{
	rd_kafka_topic_partition_list_t *list;
	rd_kafka_resp_err_t err;
	int64_t		wait = 10000;
	int			i;

	if (nparts == 0)
		return;
	if (deadline != 0 && deadline - mono_ms() < wait)
		wait = deadline - mono_ms();
	if (wait <= 0)
		return;

	/* ListOffsets takes the logical offsets -2 and -1 as timestamps. */
	list = rd_kafka_topic_partition_list_new(nparts);
	for (i = 0; i < nparts; i++)
		rd_kafka_topic_partition_list_add(list,
										  rd_kafka_topic_name(parts[i].rkt),
										  parts[i].partition)->offset =
			parts[i].start_offset;

	err = rd_kafka_offsets_for_times(rk, list, (int) wait);
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		for (i = 0; i < nparts; i++)
		{
			rd_kafka_topic_partition_t *tp =
				rd_kafka_topic_partition_list_find(list,
												   rd_kafka_topic_name(parts[i].rkt),
												   parts[i].partition);

			if (tp != NULL && tp->err == RD_KAFKA_RESP_ERR_NO_ERROR &&
				tp->offset >= 0)
				parts[i].start_offset = tp->offset;
		}
	}
	rd_kafka_topic_partition_list_destroy(list);
}


/* ---------------------------------------------------------------------
 * main
 * ---------------------------------------------------------------------
 */

int
main(int argc, char **argv)
{
	Options		o;
	rd_kafka_t *rk;
	rd_kafka_queue_t *queue;
	rd_kafka_topic_t **rkts;
	PartState  *parts = NULL;
	int			nparts = 0;
	int			neof = 0;
	int64_t		start;
	int64_t		deadline;
	int64_t		idle_since = 0;
	long long	received = 0;
	rd_kafka_resp_err_t last_err = RD_KAFKA_RESP_ERR_NO_ERROR;
	int64_t		last_err_ms = 0;
	Buf			line = {NULL, 0, 0};
	int			status = 0;
	int			i;

	parse_options(argc, argv, &o);
	start = mono_ms();
	deadline = o.timeout_ms > 0 ? start + o.timeout_ms : 0;

	rk = create_consumer(&o);
	queue = rd_kafka_queue_new(rk);
	rkts = calloc((size_t) o.ntopics, sizeof(*rkts));
	if (rkts == NULL)
	{
		fprintf(stderr, PROGNAME ": out of memory\n");
		exit(1);
	}

	for (i = 0; i < o.ntopics; i++)
	{
		int			cnt;
		int			p;
		int			j;
		PartState  *grown;

		/* The same topic given twice is consumed once. */
		for (j = 0; j < i; j++)
			if (strcmp(o.topics[j], o.topics[i]) == 0)
				break;
		if (j < i)
			continue;

		cnt = topic_partitions(rk, o.topics[i], deadline);
		if (cnt < 0)
		{
			fprintf(stderr, PROGNAME ": timed out after %ld ms waiting for "
					"topic %s\n", o.timeout_ms, o.topics[i]);
			status = 1;
			goto done;
		}
		rkts[i] = rd_kafka_topic_new(rk, o.topics[i], NULL);
		if (rkts[i] == NULL)
		{
			fprintf(stderr, PROGNAME ": topic %s: %s\n", o.topics[i],
					rd_kafka_err2str(rd_kafka_last_error()));
			status = 1;
			goto done;
		}
		grown = realloc(parts, sizeof(*parts) * (size_t) (nparts + cnt));
		if (grown == NULL)
		{
			fprintf(stderr, PROGNAME ": out of memory\n");
			exit(1);
		}
		parts = grown;
		for (p = 0; p < cnt; p++)
		{
			PartState  *ps = &parts[nparts++];

			ps->rkt = rkts[i];
			ps->partition = p;
			ps->start_offset = o.from_end ? RD_KAFKA_OFFSET_END
				: RD_KAFKA_OFFSET_BEGINNING;
			ps->started = 0;
			ps->eof = 0;
		}
	}

	resolve_start_offsets(rk, parts, nparts, deadline);
	for (i = 0; i < nparts; i++)
	{
		PartState  *ps = &parts[i];

		if (rd_kafka_consume_start_queue(ps->rkt, ps->partition,
										 ps->start_offset, queue) != 0)
		{
			fprintf(stderr, PROGNAME ": cannot consume %s [%" PRId32 "]: %s\n",
					rd_kafka_topic_name(ps->rkt), ps->partition,
					rd_kafka_err2str(rd_kafka_last_error()));
			status = 1;
			goto done;
		}
		ps->started = 1;
	}

	for (;;)
	{
		int64_t		now = mono_ms();
		int64_t		wait = 100;
		rd_kafka_message_t *msg;

		if (o.count >= 0 && received >= o.count)
			break;
		if (deadline != 0 && now >= deadline)
		{
			if (o.count >= 0)
				fprintf(stderr, PROGNAME ": timed out after %ld ms: received "
						"%lld of %lld records\n",
						o.timeout_ms, received, o.count);
			else
				fprintf(stderr, PROGNAME ": timed out after %ld ms before "
						"the topics went idle: received %lld records\n",
						o.timeout_ms, received);
			status = 1;
			break;
		}
		if (o.count < 0 && neof == nparts && now - idle_since >= o.idle_ms)
			break;

		if (deadline != 0 && deadline - now < wait)
			wait = deadline - now;
		if (o.count < 0 && neof == nparts &&
			idle_since + o.idle_ms - now < wait)
			wait = idle_since + o.idle_ms - now;
		if (wait < 0)
			wait = 0;

		msg = rd_kafka_consume_queue(queue, (int) wait);
		if (msg == NULL)
			continue;

		if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
		{
			for (i = 0; i < nparts; i++)
			{
				if (parts[i].rkt == msg->rkt &&
					parts[i].partition == msg->partition)
				{
					if (!parts[i].eof)
					{
						parts[i].eof = 1;
						if (++neof == nparts)
							idle_since = mono_ms();
					}
					break;
				}
			}
		}
		else if (msg->err)
		{
			int64_t		t = mono_ms();

			/* Report each error, but not the same one over and over. */
			if (msg->err != last_err || t - last_err_ms >= 1000)
			{
				if (msg->rkt != NULL)
					fprintf(stderr, PROGNAME ": %s [%" PRId32 "]: %s\n",
							rd_kafka_topic_name(msg->rkt), msg->partition,
							rd_kafka_message_errstr(msg));
				else
					fprintf(stderr, PROGNAME ": %s\n",
							rd_kafka_message_errstr(msg));
				last_err = msg->err;
				last_err_ms = t;
			}
			if (msg->err == RD_KAFKA_RESP_ERR__FATAL)
			{
				rd_kafka_message_destroy(msg);
				status = 1;
				break;
			}
		}
		else
		{
			int64_t		recv_us = realtime_us();

			if (print_record(&line, msg, recv_us) != 0)
			{
				fprintf(stderr, PROGNAME ": cannot write to stdout: %s\n",
						strerror(errno));
				rd_kafka_message_destroy(msg);
				status = 1;
				break;
			}
			received++;
			idle_since = mono_ms();
		}
		rd_kafka_message_destroy(msg);
	}

done:
	for (i = 0; i < nparts; i++)
		if (parts[i].started)
			rd_kafka_consume_stop(parts[i].rkt, parts[i].partition);
	rd_kafka_queue_destroy(queue);
	for (i = 0; i < o.ntopics; i++)
		if (rkts[i] != NULL)
			rd_kafka_topic_destroy(rkts[i]);
	rd_kafka_destroy(rk);
	fprintf(stderr, "consumed %lld records\n", received);
	free(rkts);
	free(parts);
	free(line.data);
	free(o.topics);
	free(o.props);
	return status;
}
