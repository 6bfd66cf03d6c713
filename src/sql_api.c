/*-------------------------------------------------------------------------
 *
 * sql_api.c
 *	  SQL-callable C functions of the outbox: the validation trigger on
 *	  outbox.messages, outbox.emit() and its internal twin
 *	  outbox._emit_stored(), and outbox._check_topic().  outbox.enqueue()
 *	  is in enqueue.c.
 *
 * The rules themselves live in event.c, shared with the decoder; this file
 * only turns rows and arguments into an OutboxEvent and applies them.
 *
 * src/sql_api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"

#include "compat.h"
#include "event.h"
#include "msgauth.h"
#include "outbox.h"

PG_FUNCTION_INFO_V1(outbox_messages_check);
PG_FUNCTION_INFO_V1(outbox_check_topic_sql);
PG_FUNCTION_INFO_V1(outbox_emit);
PG_FUNCTION_INFO_V1(outbox_emit_stored);

/*
 * Where the event columns sit in outbox.messages, looked up once per
 * statement (fn_extra lives as long as the trigger's FmgrInfo).
 */
typedef struct MessagesColumns
{
	Oid			relid;			/* outbox.messages, for a sanity check */
	int			topic;			/* attnum of topic */
	int			key;			/* attnum of key */
	int			payload;		/* attnum of payload */
	int			headers;		/* attnum of headers */
} MessagesColumns;

static MessagesColumns *messages_columns(FunctionCallInfo fcinfo,
										 Relation rel);
static int	messages_column(Relation rel, const char *name);
static XLogRecPtr emit_event(FunctionCallInfo fcinfo, int first_arg,
							 bool has_id, int64 id, int32 attempts);

/* ---------------------------------------------------------------------
 * Validation trigger
 * ---------------------------------------------------------------------
 */

static int
messages_column(Relation rel, const char *name)
{
	int			attnum = SPI_fnumber(RelationGetDescr(rel), name);

	if (attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						name, RelationGetRelationName(rel)),
				 errdetail("The outbox validation trigger expects the columns of outbox.messages."),
				 errhint("Reinstall the outbox extension.")));
	return attnum;
}

static MessagesColumns *
messages_columns(FunctionCallInfo fcinfo, Relation rel)
{
	MessagesColumns *cols = (MessagesColumns *) fcinfo->flinfo->fn_extra;

	if (cols == NULL || cols->relid != RelationGetRelid(rel))
	{
		cols = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt,
								  sizeof(MessagesColumns));
		cols->relid = RelationGetRelid(rel);
		cols->topic = messages_column(rel, "topic");
		cols->key = messages_column(rel, "key");
		cols->payload = messages_column(rel, "payload");
		cols->headers = messages_column(rel, "headers");
		fcinfo->flinfo->fn_extra = cols;
	}
	return cols;
}

/*
 * BEFORE INSERT OR UPDATE row trigger on outbox.messages: reject rows that
 * break the event rules, and wake the relay at commit for new rows.
 *
 * It runs for every row, so it detoasts only what it must read: topic and
 * key stay packed (short values are read in place); headers and payload are
 * read in full, because the size that counts is that of the Kafka record
 * (compact JSON text, see outbox_event_size()), which the stored jsonb size
 * does not bound: escapes and numerics can print much longer.
 */
Datum
outbox_messages_check(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	tuple;
	TupleDesc	tupdesc;
	MessagesColumns *cols;
	OutboxEvent ev;
	Datum		d;
	bool		isnull;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("outbox.messages_check() was not called by trigger manager")));
	if (!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ||
		  TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("outbox.messages_check() must be fired BEFORE INSERT OR UPDATE FOR EACH ROW")));

	tuple = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
		trigdata->tg_newtuple : trigdata->tg_trigtuple;
	tupdesc = RelationGetDescr(trigdata->tg_relation);
	cols = messages_columns(fcinfo, trigdata->tg_relation);

	memset(&ev, 0, sizeof(ev));
	ev.attempts = 1;

	/* A null topic is left to the NOT NULL constraint to report. */
	d = heap_getattr(tuple, cols->topic, tupdesc, &isnull);
	if (isnull)
		return PointerGetDatum(tuple);
	{
		text	   *topic = DatumGetTextPP(d);

		ev.topic = VARDATA_ANY(topic);
		ev.topic_len = VARSIZE_ANY_EXHDR(topic);
	}

	d = heap_getattr(tuple, cols->key, tupdesc, &isnull);
	if (!isnull)
	{
		text	   *key = DatumGetTextPP(d);

		ev.key = VARDATA_ANY(key);
		ev.key_len = VARSIZE_ANY_EXHDR(key);
	}

	d = heap_getattr(tuple, cols->headers, tupdesc, &isnull);
	if (!isnull)
		ev.headers = DatumGetJsonbP(d);

	/*
	 * The payload is measured as the compact JSON text Kafka will get, which
	 * needs the jsonb itself: a compressed or out-of-line one is expanded.
	 */
	d = heap_getattr(tuple, cols->payload, tupdesc, &isnull);
	if (!isnull)
		ev.payload = DatumGetJsonbP(d);

	outbox_check_event(&ev);
	outbox_check_topic_not_reserved(ev.topic, ev.topic_len);

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		outbox_wake_relay_at_commit();

	return PointerGetDatum(tuple);
}

/* ---------------------------------------------------------------------
 * outbox._check_topic(text)
 * ---------------------------------------------------------------------
 */

Datum
outbox_check_topic_sql(PG_FUNCTION_ARGS)
{
	text	   *topic;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("topic must not be null"),
				 errhint("Pass a Kafka topic name.")));
	topic = PG_GETARG_TEXT_PP(0);
	outbox_check_topic(VARDATA_ANY(topic), VARSIZE_ANY_EXHDR(topic));
	outbox_check_topic_not_reserved(VARDATA_ANY(topic), VARSIZE_ANY_EXHDR(topic));
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * outbox.emit() and outbox._emit_stored()
 * ---------------------------------------------------------------------
 */

/*
 * Refuse a null topic in argument argno: emit() and enqueue() report it
 * alike, before anything else.
 */
void
outbox_require_topic_arg(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("outbox event topic must not be null"),
				 errdetail("Every event is published to a Kafka topic."),
				 errhint("Pass a Kafka topic name as the first argument.")));
}

/*
 * Fill ev's topic, key, payload and headers from arguments first_arg ..
 * first_arg + 3, in place where they are short (topic and key point into
 * the argument values); the rest of ev is left as the caller set it.
 */
void
outbox_event_from_args(FunctionCallInfo fcinfo, int first_arg,
					   OutboxEvent *ev)
{
	text	   *topic;

	outbox_require_topic_arg(fcinfo, first_arg);
	topic = PG_GETARG_TEXT_PP(first_arg);
	ev->topic = VARDATA_ANY(topic);
	ev->topic_len = VARSIZE_ANY_EXHDR(topic);
	if (!PG_ARGISNULL(first_arg + 1))
	{
		text	   *key = PG_GETARG_TEXT_PP(first_arg + 1);

		ev->key = VARDATA_ANY(key);
		ev->key_len = VARSIZE_ANY_EXHDR(key);
	}
	if (!PG_ARGISNULL(first_arg + 2))
		ev->payload = PG_GETARG_JSONB_P(first_arg + 2);
	if (!PG_ARGISNULL(first_arg + 3))
		ev->headers = PG_GETARG_JSONB_P(first_arg + 3);
}

/*
 * Validate the event in arguments first_arg .. first_arg + 3 (topic, key,
 * payload, headers), write it to the WAL as a transactional "outbox"
 * message, and return the message's LSN.
 */
static XLogRecPtr
emit_event(FunctionCallInfo fcinfo, int first_arg,
		   bool has_id, int64 id, int32 attempts)
{
	OutboxEvent ev;
	StringInfoData buf;
	XLogRecPtr	lsn;

	memset(&ev, 0, sizeof(ev));
	ev.has_id = has_id;
	ev.id = has_id ? id : 0;
	ev.attempts = attempts;
	outbox_event_from_args(fcinfo, first_arg, &ev);

	outbox_check_event(&ev);
	/*
	 * A new event only: a stored one published again (redeliver(),
	 * redrive()) was written before its topic was reserved, and the relay
	 * dead-letters it; refusing here would stop every redelivery batch.
	 */
	if (!has_id)
		outbox_check_topic_not_reserved(ev.topic, ev.topic_len);

	initStringInfo(&buf);
	outbox_message_encode(&buf, &ev);
	outbox_message_sign(&buf);
	lsn = outbox_log_logical_message(OUTBOX_MESSAGE_PREFIX, buf.data, buf.len,
									 true);
	pfree(buf.data);

	outbox_wake_relay_at_commit();
	return lsn;
}

/*
 * outbox.emit(topic, key, payload, headers) RETURNS pg_lsn
 *
 * The event goes only to the WAL; it is decoded when (and if) the
 * transaction commits.
 */
Datum
outbox_emit(PG_FUNCTION_ARGS)
{
	PG_RETURN_LSN(emit_event(fcinfo, 0, false, 0, 1));
}

/*
 * outbox._emit_stored(id, attempts, topic, key, payload, headers)
 *		RETURNS pg_lsn
 *
 * Re-publish a stored event (a row of outbox.messages or a dead letter)
 * through the WAL, carrying its id when it has one.  Internal: called by
 * outbox.redeliver() and outbox.redrive().
 */
Datum
outbox_emit_stored(PG_FUNCTION_ARGS)
{
	bool		has_id = !PG_ARGISNULL(0);
	int64		id = has_id ? PG_GETARG_INT64(0) : 0;
	int32		attempts;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("attempts must not be null"),
				 errhint("Pass the publication number, 1 for a first publication.")));
	attempts = PG_GETARG_INT32(1);
	if (attempts < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("attempts must be at least 1"),
				 errdetail("attempts counts publications, the first being 1; got %d.",
						   attempts),
				 errhint("Pass the publication number, 1 for a first publication.")));

	PG_RETURN_LSN(emit_event(fcinfo, 2, has_id, id, attempts));
}
