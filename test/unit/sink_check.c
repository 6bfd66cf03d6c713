/*-------------------------------------------------------------------------
 *
 * sink_check.c
 *	  Unit check of the Kafka sink's frame intake: a commit frame whose
 *	  event count differs from the events received for its transaction is
 *	  refused (issue 6, point 16).
 *
 * The relay feeds the sink only from its own decoder, which never writes a
 * wrong count, so no SQL can make the relay see one.  This program links
 * the sink (src/kafka_sink.o, src/eos.o, decoder/wire.o, as built for the module) with
 * librdkafka and with stand-ins for the few backend functions the sink
 * calls: ereport() records the error and, at ERROR, jumps back here; the
 * clock, interrupts and the postmaster check are trivial; the GUCs have
 * their defaults.  The producer points at a closed port: events are queued
 * in librdkafka, never sent, which is all the intake needs.
 *
 * It feeds hand-built frames (decoder/wire.h) and prints one TAP line per
 * check; test/e2e/t/125_commit_frame_count.pl runs it.  With the argument
 * "progress" it checks the progress record's value instead (src/eos.c);
 * test/e2e/t/126_progress_record.pl runs that.
 *
 * test/unit/sink_check.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <setjmp.h>
#include <unistd.h>
#include <sys/time.h>

#include "access/transam.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "storage/ipc.h"
#include "storage/pmsignal.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "eos.h"
#include "kafka_sink.h"
#include "outbox.h"
#include "relay_shmem.h"
#include "wire.h"

/* ---------------------------------------------------------------------
 * Stand-ins for what the sink uses of the server and of outbox.so
 * ---------------------------------------------------------------------
 */

int			outbox_max_in_flight = 100000;
int			outbox_dead_letter_after_ms = 300000;
int			outbox_on_permanent_error = OUTBOX_ON_ERROR_DEAD_LETTER;
int			outbox_transaction_linger_ms = 100;
int			outbox_transaction_max_events = 10000;
Oid			MyDatabaseId = InvalidOid;
ResourceOwner CurrentResourceOwner = NULL;	/* the frontend HMAC uses none */
ResourceOwner AuxProcessResourceOwner = NULL;

uint64
GetSystemIdentifier(void)
{
	return 0;
}

FullTransactionId
ReadNextFullTransactionId(void)
{
	return FullTransactionIdFromEpochAndXid(0, FirstNormalTransactionId);
}

volatile sig_atomic_t InterruptPending = false;
volatile sig_atomic_t postmaster_possibly_dead = false;

static sigjmp_buf *error_jump = NULL;	/* where an ERROR lands */
static int	error_elevel;		/* level of the report being built */
static int	error_sqlstate;		/* its errcode() */
static char error_message[1024];	/* its errmsg() */

bool
outbox_installation_id(char *buf)
{
	return false;
}

/* No topic is reserved here: the sink's reserved-topic path is e2e-tested. */
const char *
outbox_topic_reserved(const char *topic)
{
	return NULL;
}

void
outbox_status_error(const char *fmt,...)
{
}

void
ProcessInterrupts(void)
{
}

bool
PostmasterIsAliveInternal(void)
{
	return true;
}

void
proc_exit(int code)
{
	exit(code);
}

TimestampTz
GetCurrentTimestamp(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (TimestampTz) (tv.tv_sec -
						  ((POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY)) *
		USECS_PER_SEC + tv.tv_usec;
}

bool
TimestampDifferenceExceeds(TimestampTz start_time, TimestampTz stop_time,
						   int msec)
{
	return stop_time - start_time >= (TimestampTz) msec * 1000;
}

bool
errstart(int elevel, const char *domain)
{
	if (elevel < ERROR)
		return false;			/* logs are not checked here */
	error_elevel = elevel;
	error_sqlstate = 0;
	error_message[0] = '\0';
	return true;
}

bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

int
errcode(int sqlerrcode)
{
	error_sqlstate = sqlerrcode;
	return 0;
}

/* errmsg() and errmsg_internal() both set the report's message. */
#define DEFINE_ERRMSG(name) \
int \
name(const char *fmt,...) \
{ \
	va_list		ap; \
 \
	va_start(ap, fmt); \
	vsnprintf(error_message, sizeof(error_message), fmt, ap); \
	va_end(ap); \
	return 0; \
}

DEFINE_ERRMSG(errmsg)
DEFINE_ERRMSG(errmsg_internal)

int
errdetail(const char *fmt,...)
{
	return 0;
}

int
errhint(const char *fmt,...)
{
	return 0;
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	if (error_elevel >= ERROR)
	{
		if (error_jump == NULL)
		{
			fprintf(stderr, "unexpected ERROR: %s\n", error_message);
			exit(2);
		}
		siglongjmp(*error_jump, 1);
	}
}

/* ---------------------------------------------------------------------
 * Frames (decoder/wire.h)
 * ---------------------------------------------------------------------
 */

static char *
put32(char *p, uint32 v)
{
	v = pg_hton32(v);
	memcpy(p, &v, 4);
	return p + 4;
}

static char *
put64(char *p, uint64 v)
{
	v = pg_hton64(v);
	memcpy(p, &v, 8);
	return p + 8;
}

static char *
put_bytes(char *p, const char *s)
{
	p = put32(p, strlen(s));
	memcpy(p, s, strlen(s));
	return p + strlen(s);
}

/* An event frame of transaction xid committed at commit_lsn. */
static Size
event_frame(char *buf, int64 id, XLogRecPtr commit_lsn, uint32 xid)
{
	char	   *p = buf;

	*p++ = OUTBOX_WIRE_EVENT;
	*p++ = OUTBOX_WIRE_VERSION;
	*p++ = 0;
	*p++ = OUTBOX_WIRE_HAS_ID | OUTBOX_WIRE_HAS_KEY | OUTBOX_WIRE_HAS_PAYLOAD;
	p = put64(p, id);
	p = put64(p, commit_lsn);
	p = put64(p, commit_lsn + 0x30);
	p = put32(p, xid);
	p = put64(p, 0);			/* commit_time */
	p = put32(p, 1);			/* attempts */
	p = put_bytes(p, "orders");
	p = put_bytes(p, "k1");
	p = put_bytes(p, "{\"n\":1}");
	p = put32(p, 0);			/* nheaders */
	return p - buf;
}

/* The commit frame of that transaction, counting nevents. */
static Size
commit_frame(char *buf, XLogRecPtr commit_lsn, uint32 xid, uint32 nevents)
{
	char	   *p = buf;

	*p++ = OUTBOX_WIRE_COMMIT;
	*p++ = OUTBOX_WIRE_VERSION;
	*p++ = 0;
	*p++ = 0;
	p = put64(p, commit_lsn);
	p = put64(p, commit_lsn + 0x30);
	p = put32(p, xid);
	p = put64(p, 0);
	p = put32(p, nevents);
	return p - buf;
}

/*
 * Feed a transaction of nsent events whose commit frame counts ncounted.
 * Returns true if the sink took it; false with error_message set if it
 * raised an ERROR.
 */
static bool
feed(OutboxSink *sink, XLogRecPtr commit_lsn, uint32 xid, int nsent,
	 uint32 ncounted)
{
	static int64 next_id = 1;
	sigjmp_buf	jump;
	char		buf[256];
	int			i;

	error_message[0] = '\0';
	if (sigsetjmp(jump, 0) != 0)
	{
		error_jump = NULL;
		return false;
	}
	error_jump = &jump;
	for (i = 0; i < nsent; i++)
		outbox_sink_add_frame(sink, buf, event_frame(buf, next_id++, commit_lsn, xid));
	outbox_sink_add_frame(sink, buf, commit_frame(buf, commit_lsn, xid, ncounted));
	error_jump = NULL;
	return true;
}

static int	checks = 0;
static int	failures = 0;

static void
check(bool ok, const char *what)
{
	checks++;
	if (!ok)
		failures++;
	printf("%sok %d - %s\n", ok ? "" : "not ", checks, what);
}

/*
 * "sink_check progress": the progress record's value (src/eos.c), written
 * and read back, and values a relay must not trust (issue 11, point 4).
 */
static int
progress_checks(void)
{
	EosProgress p;
	EosProgress q;
	EosDelivered d;
	EosDelivered r;
	uint64		xip[2] = {103, 105};
	uint64		xids[4] = {110, 111, 112, 120};
	StringInfoData buf;
	const char *head = "{\"version\":2,\"key\":\"k\",\"commit_lsn\":\"0/10\",\"end_lsn\":\"0/20\",\"replay_boundary\":null,\"replay_last_id\":null";
	char		value[512];
	bool		ok;

	/* a range loop that never ends must fail the check, not hang it */
	alarm(10);

	memset(&p, 0, sizeof(p));
	p.commit_lsn = 0x1000;
	p.end_lsn = 0x1040;
	memset(&d, 0, sizeof(d));
	d.has_snapshot = true;
	d.xmin = 100;
	d.xmax = 110;
	d.xip = xip;
	d.nxip = 2;
	d.xids = xids;
	d.nxids = 4;
	initStringInfo(&buf);
	outbox_eos_encode(&buf, "k", &p, &d);
	printf("# %s\n", buf.data);
	check(strstr(buf.data, "\"delivered_snapshot\":\"100:110:103,105\"") != NULL &&
		  strstr(buf.data, "\"delivered_xids\":\"110-112,120\"") != NULL,
		  "progress: the delivered set is written, consecutive ids as ranges");
	ok = outbox_eos_decode(buf.data, buf.len, &q, &r);
	check(ok && q.found && q.commit_lsn == 0x1000 && q.end_lsn == 0x1040 &&
		  r.has_snapshot && r.xmin == 100 && r.xmax == 110 && r.nxip == 2 &&
		  r.xip[0] == 103 && r.xip[1] == 105 && r.nxids == 4 &&
		  r.xids[0] == 110 && r.xids[2] == 112 && r.xids[3] == 120,
		  "progress: read back as written");
	check(outbox_eos_delivered_has(&r, 99) && outbox_eos_delivered_has(&r, 104) &&
		  outbox_eos_delivered_has(&r, 111) && outbox_eos_delivered_has(&r, 120) &&
		  !outbox_eos_delivered_has(&r, 103) && !outbox_eos_delivered_has(&r, 113) &&
		  !outbox_eos_delivered_has(&r, 121),
		  "progress: in Kafka: below xmin, complete in the snapshot, or listed; nothing else");
	check(outbox_eos_delivered_before(&r, 121) && !outbox_eos_delivered_before(&r, 120),
		  "progress: a set naming ids from the server's next one on is told apart");
	outbox_eos_delivered_free(&r);

	snprintf(value, sizeof(value), "%s}", head);
	ok = outbox_eos_decode(value, strlen(value), &q, &r);
	check(ok && q.found && !r.has_snapshot && r.nxids == 0,
		  "progress: a record without the set is read, naming no transaction");

	snprintf(value, sizeof(value), "%s,\"delivered_snapshot\":null,\"delivered_xids\":\"7-9\"}", head);
	ok = outbox_eos_decode(value, strlen(value), &q, &r);
	check(ok && !r.has_snapshot && r.nxids == 3 && outbox_eos_delivered_has(&r, 8),
		  "progress: a list without a snapshot is read");
	outbox_eos_delivered_free(&r);

	snprintf(value, sizeof(value), "%s,\"delivered_snapshot\":null,\"delivered_xids\":\"18446744073709551614-18446744073709551615\"}", head);
	ok = outbox_eos_decode(value, strlen(value), &q, &r);
	check(ok && r.nxids == 2 && r.xids[1] == PG_UINT64_MAX,
		  "progress: a range ending at the largest id ends");
	outbox_eos_delivered_free(&r);

	snprintf(value, sizeof(value), "%s,\"delivered_snapshot\":null,\"delivered_xids\":\"18446744073709551616\"}", head);
	ok = outbox_eos_decode(value, strlen(value), &q, &r);
	check(ok && q.found && r.nxids == 0, "progress: an id past 64 bits names nothing");

	snprintf(value, sizeof(value), "%s,\"delivered_snapshot\":\"-1:-1:\",\"delivered_xids\":null}", head);
	ok = outbox_eos_decode(value, strlen(value), &q, &r);
	check(ok && q.found && !r.has_snapshot && !outbox_eos_delivered_has(&r, 5),
		  "progress: a signed snapshot names nothing");

	snprintf(value, sizeof(value), "%s,\"delivered_snapshot\":\"1:9:\",\"delivered_xids\":\"12,11\"}", head);
	ok = outbox_eos_decode(value, strlen(value), &q, &r);
	check(ok && q.found && !r.has_snapshot && r.nxids == 0,
		  "progress: an unsorted list makes the whole set name nothing");

	/* issue 23, point 2: top-level members only, one of each */
	snprintf(value, sizeof(value), "{\"version\":2,\"x\":{\"commit_lsn\":\"F/0\"},\"y\":\"\\\"commit_lsn\\\":\\\"F/0\\\"\",\"commit_lsn\":\"0/10\",\"end_lsn\":\"0/20\",\"replay_boundary\":null,\"replay_last_id\":null}");
	printf("# %s\n", value);
	ok = outbox_eos_decode(value, strlen(value), &q, &r);
	check(ok && q.found && q.commit_lsn == 0x10,
		  "progress: members nested in an object or quoted in a string are not read");
	outbox_eos_delivered_free(&r);

	snprintf(value, sizeof(value), "{\"version\":2,\"x\":{\"commit_lsn\":\"F/0\"},\"end_lsn\":\"0/20\",\"replay_boundary\":null,\"replay_last_id\":null}");
	ok = outbox_eos_decode(value, strlen(value), &q, &r);
	check(!ok && !q.found,
		  "progress: a value whose commit_lsn is only nested is refused");

	snprintf(value, sizeof(value), "%s,\"commit_lsn\":\"F/0\"}", head);
	ok = outbox_eos_decode(value, strlen(value), &q, &r);
	check(!ok && !q.found, "progress: a member given twice makes the value invalid");

	snprintf(value, sizeof(value), "%s} trailing", head);
	ok = outbox_eos_decode(value, strlen(value), &q, &r);
	check(!ok, "progress: text after the object makes the value invalid");

	snprintf(value, sizeof(value), "{\"version\":1,\"key\":\"k\",\"commit_lsn\":\"0/10\",\"end_lsn\":\"0/20\",\"replay_boundary\":null,\"replay_last_id\":null}");
	ok = outbox_eos_decode(value, strlen(value), &q, &r);
	check(!ok, "progress: a version 1 value (no authentication) is not read");

	{
		uint8		key1[EOS_MAC_LEN];
		uint8		key2[EOS_MAC_LEN];
		char		mac1[EOS_MAC_HEX_LEN + 1];
		char		mac2[EOS_MAC_HEX_LEN + 1];
		char		mac3[EOS_MAC_HEX_LEN + 1];
		char		mac4[EOS_MAC_HEX_LEN + 1];

		memset(key1, 1, sizeof(key1));
		memset(key2, 2, sizeof(key2));
		ok = outbox_eos_mac(key1, "k", 1, value, strlen(value), mac1) &&
			outbox_eos_mac(key2, "k", 1, value, strlen(value), mac2) &&
			outbox_eos_mac(key1, "k2", 2, value, strlen(value), mac3) &&
			outbox_eos_mac(key1, "k", 1, value, strlen(value) - 1, mac4);
		check(ok && strlen(mac1) == EOS_MAC_HEX_LEN &&
			  strcmp(mac1, mac2) != 0 && strcmp(mac1, mac3) != 0 &&
			  strcmp(mac1, mac4) != 0,
			  "progress: the code depends on the secret, the key and the whole value");
	}

	alarm(0);
	printf("1..%d\n", checks);
	return failures == 0 ? 0 : 1;
}

int
main(int argc, char **argv)
{
	OutboxSink *sink;
	char	   *errstr = NULL;
	bool		took;

	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc > 1 && strcmp(argv[1], "progress") == 0)
		return progress_checks();
	sink = outbox_sink_create("127.0.0.1:9", "", "", NULL, NULL, -1, &errstr);
	if (sink == NULL)
	{
		printf("Bail out! could not create the sink: %s\n", errstr ? errstr : "?");
		return 2;
	}

	took = feed(sink, 0x1000000, 700, 3, 3);
	check(took, "3 events and a commit frame counting 3: accepted");
	if (!took)
		printf("# error: %s\n", error_message);
	check(outbox_sink_in_flight(sink) == 3, "the 3 events are in flight");

	took = feed(sink, 0x2000000, 701, 2, 3);
	check(!took, "2 events and a commit frame counting 3: refused");
	printf("# error: %s\n", error_message);
	check(error_sqlstate == ERRCODE_DATA_CORRUPTED,
		  "refused as data corrupted (XX001)");
	check(strstr(error_message, "received 2 events") != NULL &&
		  strstr(error_message, "counts 3") != NULL,
		  "the error names both counts");

	took = feed(sink, 0x3000000, 702, 4, 1);
	check(!took, "4 events and a commit frame counting 1: refused");
	printf("# error: %s\n", error_message);

	outbox_sink_destroy(sink);
	printf("1..%d\n", checks);
	return failures == 0 ? 0 : 1;
}
