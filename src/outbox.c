/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  Library entry point: GUCs, shared memory, the relay worker's
 *	  registration, and waking the relay when events commit.
 *
 * The SQL API and the output plugin work without preloading; the relay
 * needs shared_preload_libraries = 'outbox'.
 *
 * src/outbox.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/varlena.h"

#include "compat.h"
#include "event.h"
#include "outbox.h"

PG_MODULE_MAGIC;

/* GUC variables */
int			outbox_max_message_size = 1000000;
char	   *outbox_kafka_brokers = NULL;
char	   *outbox_databases = NULL;
char	   *outbox_slot_name = NULL;
char	   *outbox_kafka_properties = NULL;
char	   *outbox_kafka_config_file = NULL;
char	   *outbox_reply_topic = NULL;
int			outbox_max_in_flight = 20000;
int			outbox_retry_interval_ms = 1000;
int			outbox_dead_letter_after_ms = 300000;
int			outbox_on_permanent_error = OUTBOX_ON_ERROR_DEAD_LETTER;
int			outbox_delivery = OUTBOX_DELIVERY_AT_LEAST_ONCE;
char	   *outbox_progress_topic = NULL;
int			outbox_transaction_linger_ms = 100;
int			outbox_transaction_max_events = 100000;
int			outbox_redeliver_interval_ms = 0;
int			outbox_redeliver_after_ms = 300000;
int			outbox_max_attempts = 10;
int			outbox_retention_s = 0;

static const struct config_enum_entry on_permanent_error_options[] = {
	{"dead_letter", OUTBOX_ON_ERROR_DEAD_LETTER, false},
	{"block", OUTBOX_ON_ERROR_BLOCK, false},
	{NULL, 0, false}
};

static const struct config_enum_entry delivery_options[] = {
	{"at_least_once", OUTBOX_DELIVERY_AT_LEAST_ONCE, false},
	{"exactly_once", OUTBOX_DELIVERY_EXACTLY_ONCE, false},
	{NULL, 0, false}
};

/* Did the current transaction write an event? */
static bool wake_relay_at_commit = false;
/* Did it create the extension (the launcher may have a relay to start)? */
static bool register_at_commit = false;

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
#ifdef OUTBOX_HAVE_SHMEM_REQUEST_HOOK
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif

void		_PG_init(void);
static void outbox_shmem_request(void);
static void outbox_shmem_startup(void);
static void outbox_xact_callback(XactEvent event, void *arg);
static bool check_slot_name(char **newval, void **extra, GucSource source);
static bool check_databases(char **newval, void **extra, GucSource source);
static bool check_reply_topic(char **newval, void **extra, GucSource source);

PG_FUNCTION_INFO_V1(outbox_register_database_sql);

void
_PG_init(void)
{
	/*
	 * The relay's database and slot are fixed for the postmaster's life, but
	 * such settings can only be defined while preloading; a backend that
	 * loads the library later (SQL API, decoder) gets them as plain reloadable
	 * settings, which no relay reads.
	 */
	GucContext	relay_fixed = process_shared_preload_libraries_in_progress ?
		PGC_POSTMASTER : PGC_SIGHUP;

	DefineCustomIntVariable("outbox.max_message_size",
							gettext_noop("Largest event accepted by outbox.messages, outbox.enqueue() and outbox.emit()."),
							gettext_noop("Counts topic, key, payload and headers as stored. Keep it below the Kafka broker's message.max.bytes."),
							&outbox_max_message_size,
							1000000, 1, 0x3FFFFFFF,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomStringVariable("outbox.kafka_brokers",
							   gettext_noop("Kafka bootstrap servers the relay produces to; empty disables the relay."),
							   NULL,
							   &outbox_kafka_brokers,
							   "",
							   PGC_SIGHUP, 0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("outbox.databases",
							   gettext_noop("Databases whose outbox is relayed, one relay each: a list of names, or * for every database where the extension is installed."),
							   gettext_noop("Names are separated by commas; quote a name with upper case letters, as an identifier."),
							   &outbox_databases,
							   "*",
							   PGC_SIGHUP, GUC_LIST_INPUT,
							   check_databases, NULL, NULL);

	DefineCustomStringVariable("outbox.slot_name",
							   gettext_noop("Prefix of the relays' logical replication slots, each named <prefix>_<database OID>; created if missing."),
							   gettext_noop("A slot named exactly the prefix, of the outbox plugin and the relay's database, is used instead if it exists (the slot of releases before 0.4.0)."),
							   &outbox_slot_name,
							   "outbox",
							   relay_fixed, 0,
							   check_slot_name, NULL, NULL);

	DefineCustomStringVariable("outbox.kafka_properties",
							   gettext_noop("librdkafka properties for the relay, as 'name=value' pairs separated by ';'."),
							   gettext_noop("Only superusers can read this setting: it may hold SASL passwords."),
							   &outbox_kafka_properties,
							   "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("outbox.kafka_config_file",
							   gettext_noop("File of librdkafka properties for the relay, one 'name=value' per line."),
							   gettext_noop("Read by the relay at start and on reload; keep it readable by the server's OS user only."),
							   &outbox_kafka_config_file,
							   "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("outbox.reply_topic",
							   gettext_noop("Kafka topic of consumer verdicts the relays apply as outbox.confirm() would; empty turns the reply consumer off."),
							   gettext_noop("Each relay consumes it in consumer group outbox-reply-<database>; see docs/relay.md."),
							   &outbox_reply_topic,
							   "",
							   PGC_SIGHUP, 0,
							   check_reply_topic, NULL, NULL);

	DefineCustomIntVariable("outbox.max_in_flight",
							gettext_noop("Most events the relay keeps produced but not yet acknowledged by Kafka."),
							gettext_noop("Decoding pauses at this bound until Kafka acknowledges; it bounds the relay's memory."),
							&outbox_max_in_flight,
							20000, 1, 10000000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("outbox.retry_interval",
							gettext_noop("How long the relay waits before retrying after an error."),
							NULL,
							&outbox_retry_interval_ms,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("outbox.dead_letter_after",
							gettext_noop("How long the relay retries an event whose topic or partition Kafka refuses before it writes the event to outbox.dead_letters."),
							gettext_noop("Applies to errors that are usually transient (authorization, unknown topic or partition, leader moves). The time counts from the topic's first such error; errors that concern the record itself (too large, invalid) do not wait."),
							&outbox_dead_letter_after_ms,
							300000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("outbox.on_permanent_error",
							 gettext_noop("What the relay does with an event Kafka keeps refusing: dead_letter or block."),
							 gettext_noop("dead_letter writes it to outbox.dead_letters and goes on; block retries it forever and holds back every later event, so that per-key order is never broken."),
							 &outbox_on_permanent_error,
							 OUTBOX_ON_ERROR_DEAD_LETTER,
							 on_permanent_error_options,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomEnumVariable("outbox.delivery",
							 gettext_noop("How the relay delivers into Kafka: at_least_once or exactly_once."),
							 gettext_noop("exactly_once produces in Kafka transactions fenced by a progress record (outbox.progress_topic); consumers must read with isolation.level=read_committed."),
							 &outbox_delivery,
							 OUTBOX_DELIVERY_AT_LEAST_ONCE,
							 delivery_options,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("outbox.progress_topic",
							   gettext_noop("Compacted Kafka topic of the relay's progress records (outbox.delivery = exactly_once)."),
							   gettext_noop("Created with cleanup.policy=compact and the cluster's default replication factor if missing."),
							   &outbox_progress_topic,
							   "outbox_progress",
							   PGC_SIGHUP, 0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("outbox.transaction_linger",
							gettext_noop("Longest time a Kafka transaction of the relay stays open (outbox.delivery = exactly_once)."),
							gettext_noop("A transaction is also committed as soon as the relay has decoded all flushed WAL, and when it holds outbox.transaction_max_events events."),
							&outbox_transaction_linger_ms,
							100, 1, 60 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("outbox.transaction_max_events",
							gettext_noop("Events after which the relay commits its Kafka transaction (outbox.delivery = exactly_once)."),
							gettext_noop("Counted at PostgreSQL transaction boundaries: a PostgreSQL transaction with more events still goes out whole, in one Kafka transaction."),
							&outbox_transaction_max_events,
							100000, 1, INT_MAX,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("outbox.redeliver_interval",
							gettext_noop("How often the relay re-publishes messages still unanswered after outbox.redeliver_after; 0 turns scheduled redelivery off."),
							gettext_noop("Messages without a verdict are published again, up to outbox.max_attempts publications, then marked expired (outbox.messages.expired_at)."),
							&outbox_redeliver_interval_ms,
							0, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("outbox.redeliver_after",
							gettext_noop("How long a message stays unanswered after its last publication before scheduled redelivery publishes it again."),
							NULL,
							&outbox_redeliver_after_ms,
							300000, 1000, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("outbox.max_attempts",
							gettext_noop("Most publications of a message by scheduled redelivery, the first one included."),
							gettext_noop("A message that had this many without a verdict is marked expired."),
							&outbox_max_attempts,
							10, 1, INT_MAX,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("outbox.retention",
							gettext_noop("How long the relay keeps rows of outbox.messages that Kafka acknowledged, and rows of outbox.rejected_replies; 0 keeps them forever."),
							gettext_noop("Rows with a failed verdict, an expiry or a dead letter are kept; so are unanswered rows while scheduled redelivery is on."),
							&outbox_retention_s,
							0, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("outbox");

	RegisterXactCallback(outbox_xact_callback, NULL);

	if (!process_shared_preload_libraries_in_progress)
		return;

#ifdef OUTBOX_HAVE_SHMEM_REQUEST_HOOK
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = outbox_shmem_request;
#else
	outbox_shmem_request();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = outbox_shmem_startup;

	outbox_launcher_register();
}

static void
outbox_shmem_request(void)
{
#ifdef OUTBOX_HAVE_SHMEM_REQUEST_HOOK
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(outbox_shmem_size());
}

static void
outbox_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	outbox_shmem_init();
}

static bool
check_slot_name(char **newval, void **extra, GucSource source)
{
	const char *s = *newval;

	if (s == NULL || s[0] == '\0' || strlen(s) > OUTBOX_SLOT_PREFIX_MAX)
	{
		GUC_check_errdetail("The prefix is 1 to %d characters long: a slot name is at most %d, and \"_\" and the database OID are added.",
							OUTBOX_SLOT_PREFIX_MAX, NAMEDATALEN - 1);
		return false;
	}
	for (; *s; s++)
	{
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
		{
			GUC_check_errdetail("Replication slot names may contain only lower case letters, numbers, and the underscore character.");
			return false;
		}
	}
	return true;
}

/* '*', or a list of database names (identifiers: quote upper case). */
static bool
check_databases(char **newval, void **extra, GucSource source)
{
	char	   *copy;
	List	   *names;
	ListCell   *lc;
	bool		ok = true;

	if (strcmp(*newval, "*") == 0)
		return true;
	copy = pstrdup(*newval);
	if (!SplitIdentifierString(copy, ',', &names))
	{
		GUC_check_errdetail("The list of database names is malformed.");
		ok = false;
	}
	else if (names == NIL)
	{
		GUC_check_errdetail("The list is empty; set * for every database with the extension.");
		ok = false;
	}
	else
		foreach(lc, names)
		{
			if (strcmp((char *) lfirst(lc), "*") == 0)
			{
				GUC_check_errdetail("* stands alone: it means every database where the extension is installed.");
				ok = false;
				break;
			}
		}
	list_free(names);
	pfree(copy);
	return ok;
}

/* Empty, or a name Kafka accepts for a topic. */
static bool
check_reply_topic(char **newval, void **extra, GucSource source)
{
	const char *problem;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	problem = outbox_topic_problem(*newval, strlen(*newval));
	if (problem != NULL)
	{
		GUC_check_errdetail("%s", problem);
		return false;
	}
	return true;
}

/* ---------------------------------------------------------------------
 * Waking the relay and the launcher
 * ---------------------------------------------------------------------
 */

/*
 * outbox._register_database(), run by the extension's install and update
 * scripts: at commit, tell the launcher that this database has the
 * extension now (outbox.databases = '*' relays it without a restart).
 */
Datum
outbox_register_database_sql(PG_FUNCTION_ARGS)
{
	register_at_commit = true;
	PG_RETURN_VOID();
}

void
outbox_wake_relay_at_commit(void)
{
	wake_relay_at_commit = true;
}

/*
 * At commit (after the commit record is flushed, with synchronous_commit on)
 * set the relay's latch, so a new event reaches Kafka without waiting for a
 * timer.  A prepared transaction is picked up when its COMMIT PREPARED is
 * decoded, at the latest after the relay's idle timeout.
 */
static void
outbox_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_relay_at_commit)
				outbox_relay_set_latch();
			if (register_at_commit)
				outbox_register_database();
			wake_relay_at_commit = false;
			register_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			wake_relay_at_commit = false;
			register_at_commit = false;
			break;
		default:
			break;
	}
}
