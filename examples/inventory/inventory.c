/*-------------------------------------------------------------------------
 *
 * inventory.c
 *	  The inventory service of the outbox demo: it consumes order events,
 *	  reserves stock in its own database and answers on the reply topic,
 *	  where the outbox relay (outbox.reply_topic) records the verdict on the
 *	  order service's message.
 *
 * For each record of the order topic (consumer group "inventory", offsets
 * committed by hand) it
 *
 *	 1. reads the headers outbox-id and outbox-db that the relay puts on
 *		every record (a record without them is not an outbox message: it is
 *		reported and skipped);
 *	 2. in ONE transaction of its own database: claims (outbox-db,
 *		outbox-id) in the table processed; if an earlier delivery already
 *		claimed it, takes the verdict stored then (Kafka delivers at least
 *		once, and the relay redelivers messages left unanswered), unless the
 *		header outbox-source shows a new installation of the extension (ids
 *		start at 1 again after DROP and CREATE EXTENSION); otherwise
 *		reserves the ordered quantity if there is enough stock (verdict
 *		"confirmed") or reserves nothing (verdict "failed", with the reason in
 *		the detail), and stores the verdict;
 *	 3. after that transaction committed, produces the reply to the reply
 *		topic, key = the order record's key, value =
 *		{"db": outbox-db, "id": outbox-id, "source": outbox-source,
 *		"status": ..., "detail": ...},
 *		and waits for its delivery report;
 *	 4. only then commits the record's offset.
 *
 * A crash between any two steps therefore repeats at most steps 2-4 for the
 * same record, and step 2 then answers with the stored verdict: stock is
 * reserved once per message however often it arrives.
 *
 * Order payloads look like {"event":"order_placed","order":7,"sku":"...",
 * "qty":2}.  A payload that is not such an order (not JSON, another event,
 * no sku, a quantity that is not a positive integer) is answered "failed"
 * with the reason: the order service learns of it instead of waiting.
 *
 * Records are handled one at a time, so memory stays bounded whatever the
 * backlog.  --ignore-first ID processes the first delivery of outbox id ID
 * but drops its reply, as if the reply had been lost: the relay's scheduled
 * redelivery then brings the message again, and the stored verdict answers
 * it.  That is remembered in memory only.
 *
 * The tables are in examples/inventory/schema.sql.  SIGTERM or SIGINT stop
 * the service after the record in hand (its reply's delivery is awaited for
 * at most SHUTDOWN_GRACE_MS; an unanswered record's offset is not committed).
 *
 * Exit status: 0 after SIGTERM/SIGINT, 1 on a fatal error, 2 on a usage
 * error.
 *
 * examples/inventory/inventory.c
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#define PROGNAME			"inventory"

#define POLL_MS				200
#define RETRY_MS			1000		/* pause before retrying a failed step */
#define SHUTDOWN_GRACE_MS	5000		/* wait for a reply's delivery when stopping */
#define MAX_IGNORE			64			/* --ignore-first ids */

static const char usage_text[] =
"Usage:\n"
"  " PROGNAME " [--brokers HOST:PORT,...] [--topic TOPIC] [--reply-topic TOPIC]\n"
"            [--conninfo CONNINFO] [--group GROUP] [--ignore-first ID ...]\n"
"            [-X key=value ...]\n"
"\n"
"Consumes order events, reserves stock in the database and answers each on\n"
"the reply topic (see examples/inventory/inventory.c).\n"
"  --brokers          bootstrap servers (default localhost:9092)\n"
"  --topic            order topic (default orders)\n"
"  --reply-topic      reply topic (default order_replies)\n"
"  --conninfo         libpq connection string (default dbname=inventory)\n"
"  --group            consumer group (default inventory)\n"
"  --ignore-first ID  drop the reply to the first delivery of outbox id ID\n"
"                     (may be repeated)\n"
"  -X key=value       a librdkafka property for consumer and producer\n";

/* Command-line options. */
typedef struct Options
{
	const char *brokers;		/* bootstrap servers */
	const char *topic;			/* order topic */
	const char *reply_topic;	/* reply topic */
	const char *conninfo;		/* libpq connection string */
	const char *group;			/* consumer group id */
	long long	ignore_ids[MAX_IGNORE]; /* --ignore-first ids */
	int			ignore_done[MAX_IGNORE];	/* their first delivery was dropped */
	int			nignore;		/* number of --ignore-first ids */
	char	  **props;			/* -X key=value */
	int			nprops;			/* number of -X */
} Options;

/* What became of one record. */
typedef enum Outcome
{
	OUTCOME_ANSWER,				/* verdict stored (or found): answer it */
	OUTCOME_SKIP,				/* not an answerable outbox message: skip it */
	OUTCOME_RETRY,				/* transient failure: try the record again */
	OUTCOME_FATAL				/* cannot go on */
} Outcome;

/* The verdict on one message. */
typedef struct Verdict
{
	char		status[16];		/* confirmed or failed */
	char	   *detail;			/* malloc'd; NULL when none */
	char	   *reply;			/* the reply's JSON value, malloc'd */
	int			reused;			/* stored by an earlier delivery */
} Verdict;

/* The delivery report of the reply in flight (one at a time). */
typedef struct Delivery
{
	int			done;			/* the report arrived */
	rd_kafka_resp_err_t err;	/* its error */
} Delivery;

/* Counters for the closing line. */
typedef struct Counts
{
	long long	confirmed;		/* replies "confirmed" sent */
	long long	failed;			/* replies "failed" sent */
	long long	reused;			/* of those, from a stored verdict */
	long long	dropped;		/* replies dropped by --ignore-first */
	long long	skipped;		/* records that are not outbox messages */
} Counts;

static volatile sig_atomic_t stop_requested = 0;

/*
 * The delivery report of the reply in flight: static, not on a stack frame
 * that a purged reply's late report could outlive.
 */
static Delivery delivery;

/* The last database step failed transiently (see classify_error()). */
static int	db_trouble = 0;


/* ---------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------
 */

static void
on_signal(int signo)
{
	stop_requested = 1;
}

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleep up to ms milliseconds; returns early when a stop is requested. */
static void
pause_ms(int ms)
{
	while (ms > 0 && !stop_requested)
	{
		struct timespec ts = {0, 100 * 1000000L};

		nanosleep(&ts, NULL);
		ms -= 100;
	}
}

static void
say(const char *fmt,...)
{
	va_list		ap;

	printf(PROGNAME ": ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void
complain(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, PROGNAME ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

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

static char *
xstrdup(const char *s)
{
	char	   *p = strdup(s);

	if (p == NULL)
	{
		complain("out of memory");
		exit(1);
	}
	return p;
}

/*
 * The value of header name as a NUL-terminated string in buf, or NULL when
 * the record has no such header or its value does not fit or holds a NUL.
 */
static const char *
header_text(const rd_kafka_message_t *msg, const char *name,
			char *buf, size_t bufsize)
{
	rd_kafka_headers_t *hdrs;
	const void *value;
	size_t		size;

	if (rd_kafka_message_headers(msg, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
		rd_kafka_header_get_last(hdrs, name, &value, &size) !=
		RD_KAFKA_RESP_ERR_NO_ERROR ||
		value == NULL || size >= bufsize || memchr(value, '\0', size) != NULL)
		return NULL;
	memcpy(buf, value, size);
	buf[size] = '\0';
	return buf;
}

/* A whole string as a positive decimal int64, else -1. */
static long long
parse_id(const char *s)
{
	char	   *end;
	long long	v;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v <= 0)
		return -1;
	return v;
}


/* ---------------------------------------------------------------------
 * Database
 * ---------------------------------------------------------------------
 */

/*
 * The reply's JSON value, from a row of processed: "source" names the
 * installation answered (header outbox-source), so that the relay applies
 * it only there.
 */
#define REPLY_JSON \
	"json_strip_nulls(json_build_object('db', db, 'id', outbox_id, " \
	"'source', source, 'status', status, 'detail', detail))::text"

/* Silence NOTICEs; errors are reported where they happen. */
static void
ignore_notice(void *arg, const char *message)
{
}

/*
 * What to do about a failed statement: retry when the connection or the
 * server had a transient problem, skip the record when it was its data
 * (SQLSTATE class 22: say, an outbox-db header that is not valid text),
 * give up otherwise (missing tables, privileges: fix and restart; the
 * record's offset was not committed).
 */
static Outcome
classify_error(PGconn *conn, const PGresult *res, const char *what)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	char		text[512];
	size_t		n;

	/* one line: the primary message, else libpq's, without its newline */
	snprintf(text, sizeof(text), "%s", msg ? msg : PQerrorMessage(conn));
	n = strcspn(text, "\n");
	text[n] = '\0';

	if (PQstatus(conn) != CONNECTION_OK || state == NULL ||
		strncmp(state, "08", 2) == 0 ||	/* connection exception */
		strncmp(state, "40", 2) == 0 ||	/* serialization failure, deadlock */
		strncmp(state, "53", 2) == 0 ||	/* insufficient resources */
		strncmp(state, "57", 2) == 0)	/* operator intervention */
	{
		/* report the first of a run of failures, not one a second */
		if (!db_trouble)
			complain("%s failed (retrying every %d ms): %s",
					 what, RETRY_MS, text);
		db_trouble = 1;
		return OUTCOME_RETRY;
	}
	if (strncmp(state, "22", 2) == 0)
	{
		complain("%s failed on the record's data, skipping the record: %s",
				 what, text);
		return OUTCOME_SKIP;
	}
	complain("%s failed (SQLSTATE %s): %s", what, state, text);
	return OUTCOME_FATAL;
}

/* Run a statement without parameters; 0 on success. */
static int
db_command(PGconn *conn, const char *sql, PGresult **err)
{
	PGresult   *res = PQexec(conn, sql);

	if (PQresultStatus(res) == PGRES_COMMAND_OK ||
		PQresultStatus(res) == PGRES_TUPLES_OK)
	{
		PQclear(res);
		return 0;
	}
	*err = res;
	return -1;
}

static PGconn *
db_connect(const char *conninfo)
{
	PGconn	   *conn = PQconnectdb(conninfo);
	PGresult   *res = NULL;

	if (PQstatus(conn) != CONNECTION_OK)
	{
		complain("cannot connect to the inventory database (%s): %s",
				 conninfo, PQerrorMessage(conn));
		PQfinish(conn);
		return NULL;
	}
	PQsetNoticeProcessor(conn, ignore_notice, NULL);
	if (db_command(conn, "SELECT sku, on_hand FROM stock LIMIT 0", &res) != 0 ||
		db_command(conn, "SELECT db, outbox_id, source, status, detail FROM processed LIMIT 0",
				   &res) != 0)
	{
		complain("database %s is not set up for the inventory service: %s\n"
				 "Create its tables with examples/inventory/schema.sql.",
				 PQdb(conn), PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
		PQclear(res);
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

/*
 * Check the payload outside any transaction (a cast error would abort one).
 * Sets *invalid to why it is not an order (malloc'd), or sku and qty.
 */
static Outcome
parse_order(PGconn *conn, const rd_kafka_message_t *msg, char **invalid,
			char **sku, char **qty, char **order)
{
	static const char sql[] =
		"SELECT CASE"
		" WHEN jsonb_typeof(j) <> 'object' THEN 'payload is not a JSON object'"
		" WHEN j->>'event' IS DISTINCT FROM 'order_placed' THEN"
		"  format('not an order: event %s', coalesce(left(j->>'event', 100), 'missing'))"
		" WHEN jsonb_typeof(j->'sku') IS DISTINCT FROM 'string' THEN 'order has no sku'"
		" WHEN jsonb_typeof(j->'qty') IS DISTINCT FROM 'number'"
		"      OR j->>'qty' !~ '^[1-9][0-9]{0,8}$' THEN"
		"  format('qty must be a positive integer, not %s', coalesce(left((j->'qty')::text, 100), 'missing'))"
		" END, j->>'sku', j->>'qty', left(j->>'order', 40)"
		" FROM (SELECT $1::jsonb AS j) s";
	char	   *text;
	const char *params[1];
	PGresult   *res;

	*invalid = *sku = *qty = *order = NULL;
	if (msg->payload == NULL)
	{
		*invalid = xstrdup("no payload (a tombstone)");
		return OUTCOME_ANSWER;
	}
	if (memchr(msg->payload, '\0', msg->len) != NULL)
	{
		*invalid = xstrdup("payload is not valid JSON");
		return OUTCOME_ANSWER;
	}
	text = malloc(msg->len + 1);
	if (text == NULL)
	{
		complain("out of memory");
		return OUTCOME_FATAL;
	}
	memcpy(text, msg->payload, msg->len);
	text[msg->len] = '\0';
	params[0] = text;
	res = PQexecParams(conn, sql, 1, NULL, params, NULL, NULL, 0);
	free(text);

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		Outcome		o;

		/* not JSON, or not valid text: the order is answered "failed" */
		if (state != NULL && strncmp(state, "22", 2) == 0)
		{
			PQclear(res);
			*invalid = xstrdup("payload is not valid JSON");
			return OUTCOME_ANSWER;
		}
		o = classify_error(conn, res, "reading the payload");
		PQclear(res);
		return o;
	}
	if (!PQgetisnull(res, 0, 0))
		*invalid = xstrdup(PQgetvalue(res, 0, 0));
	else
	{
		*sku = xstrdup(PQgetvalue(res, 0, 1));
		*qty = xstrdup(PQgetvalue(res, 0, 2));
	}
	if (!PQgetisnull(res, 0, 3))
		*order = xstrdup(PQgetvalue(res, 0, 3));
	PQclear(res);
	return OUTCOME_ANSWER;
}

/*
 * Reserve qty of sku, or find out why not: sets status and detail
 * (malloc'd).  Runs inside the caller's transaction.
 */
static PGresult *
reserve_stock(PGconn *conn, const char *sku, const char *qty, Verdict *v)
{
	const char *params[2] = {sku, qty};
	PGresult   *res;

	res = PQexecParams(conn,
					   "UPDATE stock SET on_hand = on_hand - $2::int"
					   " WHERE sku = $1 AND on_hand >= $2::int"
					   " RETURNING format('sku %s: %s reserved, %s left', sku, $2::int, on_hand)",
					   2, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		return res;
	if (PQntuples(res) == 1)
	{
		strcpy(v->status, "confirmed");
		v->detail = xstrdup(PQgetvalue(res, 0, 0));
		PQclear(res);
		return NULL;
	}
	PQclear(res);

	res = PQexecParams(conn,
					   "SELECT coalesce("
					   " (SELECT format('sku %s: %s on hand, %s ordered', sku, on_hand, $2::int)"
					   "    FROM stock WHERE sku = $1),"
					   " format('sku %s: not stocked', left($1, 100)))",
					   2, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		return res;
	strcpy(v->status, "failed");
	v->detail = xstrdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return NULL;
}

/*
 * Step 2 of the file header: decide the verdict on message (db, id) in one
 * transaction, or find the one stored by an earlier delivery.
 */
static Outcome
decide(PGconn *conn, const rd_kafka_message_t *msg, const char *db,
	   const char *id, const char *source, Verdict *v, char **order)
{
	char	   *invalid = NULL;
	char	   *sku = NULL;
	char	   *qty = NULL;
	const char *params[4];
	PGresult   *res = NULL;
	Outcome		o;
	const char *what = "the inventory transaction";

	memset(v, 0, sizeof(*v));
	o = parse_order(conn, msg, &invalid, &sku, &qty, order);
	if (o != OUTCOME_ANSWER)
		goto done;

	if (db_command(conn, "BEGIN", &res) != 0)
		goto failed;

	/*
	 * Claim the message: a new row, or the row of an earlier installation's
	 * message with the same id, taken over.  A concurrent delivery of it
	 * (another instance of the group, during a rebalance) waits here for
	 * this transaction and then finds the verdict stored.
	 */
	params[0] = db;
	params[1] = id;
	params[2] = source;
	res = PQexecParams(conn,
					   "INSERT INTO processed AS p (db, outbox_id, source, status)"
					   " VALUES ($1, $2::bigint, $3, 'pending')"
					   " ON CONFLICT (db, outbox_id) DO UPDATE"
					   " SET source = excluded.source, status = 'pending', detail = NULL,"
					   "     processed_at = now()"
					   " WHERE p.source IS DISTINCT FROM excluded.source",
					   3, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		goto failed;

	if (strcmp(PQcmdTuples(res), "0") == 0)
	{
		/* processed before: the stored verdict */
		PQclear(res);
		res = PQexecParams(conn,
						   "SELECT status, detail, " REPLY_JSON
						   " FROM processed WHERE db = $1 AND outbox_id = $2::bigint",
						   2, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
			goto failed;
		snprintf(v->status, sizeof(v->status), "%s", PQgetvalue(res, 0, 0));
		if (!PQgetisnull(res, 0, 1))
			v->detail = xstrdup(PQgetvalue(res, 0, 1));
		v->reply = xstrdup(PQgetvalue(res, 0, 2));
		v->reused = 1;
	}
	else
	{
		PQclear(res);
		res = NULL;
		if (invalid != NULL)
		{
			strcpy(v->status, "failed");
			v->detail = invalid;
			invalid = NULL;
		}
		else if ((res = reserve_stock(conn, sku, qty, v)) != NULL)
			goto failed;

		params[2] = v->status;
		params[3] = v->detail;
		res = PQexecParams(conn,
						   "UPDATE processed SET status = $3, detail = $4"
						   " WHERE db = $1 AND outbox_id = $2::bigint"
						   " RETURNING " REPLY_JSON,
						   4, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
			goto failed;
		v->reply = xstrdup(PQgetvalue(res, 0, 0));
	}
	PQclear(res);
	res = NULL;

	what = "COMMIT";
	if (db_command(conn, "COMMIT", &res) != 0)
		goto failed;
	o = OUTCOME_ANSWER;
	goto done;

failed:
	o = classify_error(conn, res, what);
	PQclear(res);
	res = NULL;
	if (PQstatus(conn) == CONNECTION_OK &&
		PQtransactionStatus(conn) != PQTRANS_IDLE &&
		db_command(conn, "ROLLBACK", &res) != 0)
	{
		PQclear(res);
		res = NULL;
	}
	free(v->detail);
	free(v->reply);
	v->detail = v->reply = NULL;

done:
	PQclear(res);
	free(invalid);
	free(sku);
	free(qty);
	return o;
}


/* ---------------------------------------------------------------------
 * Kafka
 * ---------------------------------------------------------------------
 */

static void
on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
	Delivery   *d = msg->_private;

	d->err = msg->err;
	d->done = 1;
}

/*
 * Take or give up partitions, and say so (the demo waits for the first
 * assignment before it writes orders).
 */
static void
on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
			 rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	int			cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
	int			assign = err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
	rd_kafka_error_t *error = NULL;
	rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;
	int			i;

	printf(PROGNAME ": partitions %s:", assign ? "assigned" : "revoked");
	for (i = 0; i < parts->cnt; i++)
		printf(" %s[%" PRId32 "]", parts->elems[i].topic, parts->elems[i].partition);
	putchar('\n');
	fflush(stdout);

	if (cooperative)
		error = assign ? rd_kafka_incremental_assign(rk, parts)
			: rd_kafka_incremental_unassign(rk, parts);
	else
		aerr = rd_kafka_assign(rk, assign ? parts : NULL);
	if (error != NULL)
	{
		complain("rebalance: %s", rd_kafka_error_string(error));
		rd_kafka_error_destroy(error);
	}
	else if (aerr != RD_KAFKA_RESP_ERR_NO_ERROR)
		complain("rebalance: %s", rd_kafka_err2str(aerr));
}

static void
conf_set(rd_kafka_conf_t *conf, const char *key, const char *value)
{
	char		errstr[512];

	if (rd_kafka_conf_set(conf, key, value, errstr, sizeof(errstr)) !=
		RD_KAFKA_CONF_OK)
		usage_error("%s", errstr);
}

/* The common configuration, then -X properties. */
static rd_kafka_conf_t *
new_conf(const Options *o)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char		errstr[512];
	int			i;

	conf_set(conf, "bootstrap.servers", o->brokers);
	conf_set(conf, "client.id", PROGNAME);
	/* librdkafka 2.5 and later: no client metrics push (older: no such key) */
	(void) rd_kafka_conf_set(conf, "enable.metrics.push", "false",
							 errstr, sizeof(errstr));
	for (i = 0; i < o->nprops; i++)
	{
		char	   *eq = strchr(o->props[i], '=');

		*eq = '\0';
		conf_set(conf, o->props[i], eq + 1);
		*eq = '=';
	}
	return conf;
}

static rd_kafka_t *
new_client(rd_kafka_type_t type, rd_kafka_conf_t *conf)
{
	char		errstr[512];
	rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));

	if (rk == NULL)
	{
		complain("cannot create the Kafka %s: %s",
				 type == RD_KAFKA_CONSUMER ? "consumer" : "producer", errstr);
		rd_kafka_conf_destroy(conf);
	}
	return rk;
}

/*
 * Step 3: produce the reply and wait for its delivery report, producing it
 * again after a failure.  0 once delivered; -1 when stopped first.
 */
static int
send_reply(rd_kafka_t *producer, const char *reply_topic,
		   const rd_kafka_message_t *msg, const Verdict *v, const char *label)
{
	Delivery   *d = &delivery;

	for (;;)
	{
		int64_t		give_up = 0;
		rd_kafka_resp_err_t err;

		d->done = 0;
		d->err = RD_KAFKA_RESP_ERR_NO_ERROR;

		err = rd_kafka_producev(producer,
								RD_KAFKA_V_TOPIC(reply_topic),
								RD_KAFKA_V_KEY(msg->key, msg->key_len),
								RD_KAFKA_V_VALUE(v->reply, strlen(v->reply)),
								RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
								RD_KAFKA_V_OPAQUE(d),
								RD_KAFKA_V_END);
		if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			d->done = 1;
			d->err = err;
		}
		while (!d->done)
		{
			rd_kafka_poll(producer, POLL_MS);
			if (stop_requested && give_up == 0)
				give_up = mono_ms() + SHUTDOWN_GRACE_MS;
			if (give_up != 0 && !d->done && mono_ms() >= give_up)
			{
				complain("%s: stopping before the reply was delivered; "
						 "offset not committed", label);
				return -1;
			}
		}
		if (d->err == RD_KAFKA_RESP_ERR_NO_ERROR)
			return 0;
		complain("%s: reply to %s not delivered (will retry): %s",
				 label, reply_topic, rd_kafka_err2str(d->err));
		if (d->err == RD_KAFKA_RESP_ERR__FATAL || stop_requested)
			return -1;
		pause_ms(RETRY_MS);
		if (stop_requested)
			return -1;
	}
}


/* ---------------------------------------------------------------------
 * main
 * ---------------------------------------------------------------------
 */

static void
parse_options(int argc, char **argv, Options *o)
{
	static const struct option longopts[] = {
		{"brokers", required_argument, NULL, 'b'},
		{"topic", required_argument, NULL, 't'},
		{"reply-topic", required_argument, NULL, 'r'},
		{"conninfo", required_argument, NULL, 'd'},
		{"group", required_argument, NULL, 'g'},
		{"ignore-first", required_argument, NULL, 'i'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			c;

	memset(o, 0, sizeof(*o));
	o->brokers = "localhost:9092";
	o->topic = "orders";
	o->reply_topic = "order_replies";
	o->conninfo = "dbname=inventory";
	o->group = "inventory";
	o->props = calloc((size_t) argc, sizeof(*o->props));
	if (o->props == NULL)
	{
		complain("out of memory");
		exit(1);
	}

	while ((c = getopt_long(argc, argv, "hX:", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'b':
				o->brokers = optarg;
				break;
			case 't':
				o->topic = optarg;
				break;
			case 'r':
				o->reply_topic = optarg;
				break;
			case 'd':
				o->conninfo = optarg;
				break;
			case 'g':
				o->group = optarg;
				break;
			case 'i':
				if (o->nignore == MAX_IGNORE)
					usage_error("at most %d --ignore-first ids", MAX_IGNORE);
				if ((o->ignore_ids[o->nignore++] = parse_id(optarg)) < 0)
					usage_error("--ignore-first wants an outbox id, not '%s'", optarg);
				break;
			case 'X':
				if (strchr(optarg, '=') == NULL || *optarg == '=')
					usage_error("-X wants key=value, not '%s'", optarg);
				o->props[o->nprops++] = optarg;
				break;
			case 'h':
				fputs(usage_text, stdout);
				exit(0);
			default:
				fprintf(stderr, "\n%s", usage_text);
				exit(2);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (*o->topic == '\0' || *o->reply_topic == '\0' || *o->group == '\0')
		usage_error("topics and group must not be empty");
}

/* Is this the first delivery of an id given to --ignore-first?  Marks it. */
static int
drop_this_reply(Options *o, long long id)
{
	int			i;

	for (i = 0; i < o->nignore; i++)
	{
		if (o->ignore_ids[i] == id && !o->ignore_done[i])
		{
			o->ignore_done[i] = 1;
			return 1;
		}
	}
	return 0;
}

/*
 * Handle one record: steps 1 to 4 of the file header.  Returns 0 when done
 * with it (the caller polls the next), -1 to stop.
 */
static int
handle_record(Options *o, PGconn *conn, rd_kafka_t *consumer,
			  rd_kafka_t *producer, const rd_kafka_message_t *msg,
			  Counts *counts)
{
	char		label[256];
	char		idbuf[32];
	char		dbbuf[256];
	char		sourcebuf[64];
	const char *idtext = header_text(msg, "outbox-id", idbuf, sizeof(idbuf));
	const char *db = header_text(msg, "outbox-db", dbbuf, sizeof(dbbuf));
	const char *source = header_text(msg, "outbox-source", sourcebuf, sizeof(sourcebuf));
	long long	id = parse_id(idtext);
	Verdict		v;
	char	   *order = NULL;
	Outcome		outcome;
	rd_kafka_resp_err_t err;

	snprintf(label, sizeof(label), "%s[%" PRId32 "]@%" PRId64,
			 rd_kafka_topic_name(msg->rkt), msg->partition, msg->offset);

	/* 1. an outbox message? */
	if (id < 0 || db == NULL || *db == '\0')
	{
		complain("%s: no valid outbox-id and outbox-db headers: not an outbox "
				 "message, skipped", label);
		counts->skipped++;
		outcome = OUTCOME_SKIP;
	}
	else
	{
		snprintf(label, sizeof(label), "%s/%lld", db, id);

		/* 2. the verdict, retried while the database has trouble */
		for (;;)
		{
			free(order);
			order = NULL;
			outcome = decide(conn, msg, db, idtext, source, &v, &order);
			if (outcome != OUTCOME_RETRY)
				break;
			pause_ms(RETRY_MS);
			if (stop_requested)
			{
				free(order);
				return -1;
			}
			if (PQstatus(conn) != CONNECTION_OK)
				PQreset(conn);
		}
		if (outcome != OUTCOME_RETRY && db_trouble)
		{
			say("the database answers again");
			db_trouble = 0;
		}
		if (outcome == OUTCOME_FATAL)
		{
			free(order);
			return -1;
		}
		if (outcome == OUTCOME_SKIP)
			counts->skipped++;
		if (outcome != OUTCOME_ANSWER)
			free(order);
	}

	if (outcome == OUTCOME_ANSWER)
	{
		int			drop = drop_this_reply(o, id);

		say("%s order %s: %s%s%s%s%s", label, order ? order : "?", v.status,
			v.detail ? " (" : "", v.detail ? v.detail : "", v.detail ? ")" : "",
			drop ? "; reply dropped (--ignore-first)"
			: v.reused ? "; delivered again: the stored verdict" : "");
		free(order);

		/* 3. the reply, unless dropped */
		if (drop)
			counts->dropped++;
		else if (send_reply(producer, o->reply_topic, msg, &v, label) != 0)
		{
			free(v.detail);
			free(v.reply);
			return -1;
		}
		else
		{
			if (strcmp(v.status, "confirmed") == 0)
				counts->confirmed++;
			else
				counts->failed++;
			if (v.reused)
				counts->reused++;
		}
		free(v.detail);
		free(v.reply);
	}

	/* 4. the offset */
	err = rd_kafka_commit_message(consumer, msg, 0);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		complain("%s: offset %" PRId64 " not committed (the record will come "
				 "again and get the stored verdict): %s",
				 label, msg->offset, rd_kafka_err2str(err));
	return 0;
}

int
main(int argc, char **argv)
{
	Options		o;
	Counts		counts = {0};
	PGconn	   *conn;
	rd_kafka_conf_t *cconf;
	rd_kafka_conf_t *pconf;
	rd_kafka_t *consumer;
	rd_kafka_t *producer;
	rd_kafka_topic_partition_list_t *topics;
	rd_kafka_resp_err_t err;
	rd_kafka_resp_err_t last_err = RD_KAFKA_RESP_ERR_NO_ERROR;
	int			status = 0;
	struct sigaction sa;

	parse_options(argc, argv, &o);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	/* the order consumer: offsets committed by hand, after the reply */
	cconf = new_conf(&o);
	conf_set(cconf, "group.id", o.group);
	conf_set(cconf, "enable.auto.commit", "false");
	conf_set(cconf, "auto.offset.reset", "earliest");
	conf_set(cconf, "isolation.level", "read_committed");
	/* answer soon also where a broker holds an empty fetch to the end */
	conf_set(cconf, "fetch.wait.max.ms", "100");
	rd_kafka_conf_set_rebalance_cb(cconf, on_rebalance);

	/* the reply producer: idempotent, reports failures within 30 s */
	pconf = new_conf(&o);
	conf_set(pconf, "enable.idempotence", "true");
	conf_set(pconf, "message.timeout.ms", "30000");
	conf_set(pconf, "linger.ms", "0");
	rd_kafka_conf_set_dr_msg_cb(pconf, on_delivery);

	conn = db_connect(o.conninfo);
	if (conn == NULL)
	{
		rd_kafka_conf_destroy(cconf);
		rd_kafka_conf_destroy(pconf);
		return 1;
	}
	producer = new_client(RD_KAFKA_PRODUCER, pconf);
	if (producer == NULL)
	{
		rd_kafka_conf_destroy(cconf);
		PQfinish(conn);
		return 1;
	}
	consumer = new_client(RD_KAFKA_CONSUMER, cconf);
	if (consumer == NULL)
	{
		rd_kafka_destroy(producer);
		PQfinish(conn);
		return 1;
	}
	rd_kafka_poll_set_consumer(consumer);

	topics = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(topics, o.topic, RD_KAFKA_PARTITION_UA);
	err = rd_kafka_subscribe(consumer, topics);
	rd_kafka_topic_partition_list_destroy(topics);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		complain("cannot subscribe to %s: %s", o.topic, rd_kafka_err2str(err));
		status = 1;
		goto out;
	}
	say("consuming %s as group %s at %s, answering on %s; database %s",
		o.topic, o.group, o.brokers, o.reply_topic, PQdb(conn));

	while (!stop_requested)
	{
		rd_kafka_message_t *msg = rd_kafka_consumer_poll(consumer, POLL_MS);

		rd_kafka_poll(producer, 0);
		if (msg == NULL)
			continue;
		if (msg->err)
		{
			/* report each error once, not on every poll */
			if (msg->err != last_err)
				complain("%s: %s", msg->rkt ? rd_kafka_topic_name(msg->rkt) : "consumer",
						 rd_kafka_message_errstr(msg));
			last_err = msg->err;
			if (msg->err == RD_KAFKA_RESP_ERR__FATAL)
				status = 1;
			rd_kafka_message_destroy(msg);
			if (status != 0)
				break;
			continue;
		}
		last_err = RD_KAFKA_RESP_ERR_NO_ERROR;
		if (handle_record(&o, conn, consumer, producer, msg, &counts) != 0 &&
			!stop_requested)
			status = 1;
		rd_kafka_message_destroy(msg);
		if (status != 0)
			break;
	}

out:
	rd_kafka_consumer_close(consumer);
	rd_kafka_destroy(consumer);
	rd_kafka_flush(producer, SHUTDOWN_GRACE_MS);
	rd_kafka_destroy(producer);
	PQfinish(conn);
	say("stopped: replies sent %lld confirmed, %lld failed (%lld of them stored "
		"verdicts); %lld dropped (--ignore-first), %lld records skipped",
		counts.confirmed, counts.failed, counts.reused, counts.dropped,
		counts.skipped);
	free(o.props);
	return status;
}
