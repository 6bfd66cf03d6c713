/*-------------------------------------------------------------------------
 *
 * capture.c
 *	  The capture trigger: turns each row change of a captured table into
 *	  an event row of outbox.messages, in the same transaction.
 *
 * outbox.capture(rel, topic, key_columns, events) attaches
 *
 *	  AFTER <events> ON rel FOR EACH ROW
 *	  EXECUTE FUNCTION outbox.capture_trigger(topic, key_column, ...)
 *
 * For every row the trigger inserts (topic, key, payload) into
 * outbox.messages, where payload is
 *
 *	  {"op": "insert"|"update"|"delete", "schema": ..., "table": ...,
 *	   "new": {row} or null, "old": {row} or null}
 *
 * and key is the value of the key column as text, or a JSON array of the
 * values as text when there are several.  Rows are turned into JSON by
 * PostgreSQL's row_to_json(), so every type is rendered as PostgreSQL
 * renders it.  On a partitioned table the trigger runs on each partition
 * and names the partition the row is stored in.
 *
 * The insert fires outbox.messages' validation trigger like any other.
 *
 * Privileges: the trigger is not SECURITY DEFINER.  Everything that can run
 * code a user can extend (row_to_json() calls casts to json of the row's
 * types; key values go through their types' output functions) runs as the
 * role writing the table, as in any trigger.  Only the INSERT into
 * outbox.messages switches to that table's owner, the way PostgreSQL's own
 * foreign key triggers switch to the owner of the referenced table, so that
 * writers need no privilege on outbox.messages; that INSERT runs nothing
 * but the extension's own code (its defaults, checks and C trigger).
 *
 * src/capture.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "catalog/namespace.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"

#include "compat.h"
#include "event.h"
#include "outbox.h"

PG_FUNCTION_INFO_V1(outbox_capture_trigger);

/* The insert, prepared once per backend and kept (plancache revalidates). */
static SPIPlanPtr capture_insert_plan = NULL;

#define CAPTURE_INSERT_SQL \
	"INSERT INTO outbox.messages (topic, key, payload) VALUES ($1, $2, $3)"

/*
 * What the trigger works out once per statement and relation, kept in
 * fn_extra (allocated in fn_mcxt).
 */
typedef struct CaptureInfo
{
	Oid			relid;			/* the relation this was built for */
	Datum		topic;			/* trigger argument 0 as a text datum */
	char	   *where;			/* ,"schema":"..","table":".." as JSON */
	int			nkeys;			/* number of key columns, 0 for no key */
	AttrNumber *key_attnums;	/* attnums of the key columns */
	FmgrInfo   *key_out;		/* output functions of the key columns */
	Oid			messages_owner; /* owner of outbox.messages: the INSERT's role */
} CaptureInfo;

static CaptureInfo *capture_info(FunctionCallInfo fcinfo, TriggerData *trigdata);
static void set_key_columns(CaptureInfo *info, Relation rel, Trigger *trigger,
							MemoryContext mcxt);
static void append_row(StringInfo out, HeapTuple tuple, TupleDesc tupdesc);
static Datum build_key(CaptureInfo *info, HeapTuple tuple, TupleDesc tupdesc,
					   bool *isnull);
static Oid	messages_owner(void);
static void insert_event(Oid owner, Datum topic, Datum key, bool key_isnull,
						 Datum payload);

/*
 * Resolve the key columns: the trigger's arguments after the topic, or else
 * the primary key's columns in index order, or else none.
 */
static void
set_key_columns(CaptureInfo *info, Relation rel, Trigger *trigger,
				MemoryContext mcxt)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	int			i;

	info->nkeys = 0;
	info->key_attnums = NULL;
	info->key_out = NULL;

	if (trigger->tgnargs > 1)
	{
		info->nkeys = trigger->tgnargs - 1;
		info->key_attnums = MemoryContextAlloc(mcxt, sizeof(AttrNumber) * info->nkeys);
		for (i = 0; i < info->nkeys; i++)
		{
			const char *name = trigger->tgargs[i + 1];
			int			attnum = SPI_fnumber(tupdesc, name);

			if (attnum <= 0)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("key column \"%s\" of captured table \"%s\" does not exist",
								name, RelationGetRelationName(rel)),
						 errdetail("Trigger \"%s\" names it as a key column.",
								   trigger->tgname),
						 errhint("Call outbox.capture() again with the table's current column names.")));
			info->key_attnums[i] = (AttrNumber) attnum;
		}
	}
	else
	{
		Oid			pkoid = outbox_relation_pk_index(rel);

		if (OidIsValid(pkoid))
		{
			Relation	idx = index_open(pkoid, AccessShareLock);

			info->nkeys = idx->rd_index->indnkeyatts;
			info->key_attnums = MemoryContextAlloc(mcxt, sizeof(AttrNumber) * info->nkeys);
			for (i = 0; i < info->nkeys; i++)
				info->key_attnums[i] = idx->rd_index->indkey.values[i];
			index_close(idx, AccessShareLock);
		}
	}

	if (info->nkeys > 0)
	{
		info->key_out = MemoryContextAlloc(mcxt, sizeof(FmgrInfo) * info->nkeys);
		for (i = 0; i < info->nkeys; i++)
		{
			Form_pg_attribute att = TupleDescAttr(tupdesc, info->key_attnums[i] - 1);
			Oid			outfunc;
			bool		isvarlena;

			getTypeOutputInfo(att->atttypid, &outfunc, &isvarlena);
			fmgr_info_cxt(outfunc, &info->key_out[i], mcxt);
		}
	}
}

static CaptureInfo *
capture_info(FunctionCallInfo fcinfo, TriggerData *trigdata)
{
	CaptureInfo *info = (CaptureInfo *) fcinfo->flinfo->fn_extra;
	Relation	rel = trigdata->tg_relation;
	Trigger    *trigger = trigdata->tg_trigger;
	MemoryContext mcxt = fcinfo->flinfo->fn_mcxt;
	MemoryContext old;
	StringInfoData where;

	if (info != NULL && info->relid == RelationGetRelid(rel))
		return info;

	if (trigger->tgnargs < 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on \"%s\" has no topic argument",
						trigger->tgname, RelationGetRelationName(rel)),
				 errhint("Attach capture triggers with outbox.capture().")));

	old = MemoryContextSwitchTo(mcxt);
	info = palloc0(sizeof(CaptureInfo));
	info->relid = RelationGetRelid(rel);
	info->topic = CStringGetTextDatum(trigger->tgargs[0]);

	initStringInfo(&where);
	appendStringInfoString(&where, ",\"schema\":");
	escape_json(&where, get_namespace_name(RelationGetNamespace(rel)));
	appendStringInfoString(&where, ",\"table\":");
	escape_json(&where, RelationGetRelationName(rel));
	info->where = where.data;
	MemoryContextSwitchTo(old);

	set_key_columns(info, rel, trigger, mcxt);
	info->messages_owner = messages_owner();

	fcinfo->flinfo->fn_extra = info;
	return info;
}

/* Append a row as a JSON object (row_to_json: dropped columns skipped). */
static void
append_row(StringInfo out, HeapTuple tuple, TupleDesc tupdesc)
{
	Datum		row;
	text	   *json;

	if (tuple == NULL)
	{
		appendStringInfoString(out, "null");
		return;
	}
	/* Flattens out-of-line values and stamps the row type. */
	row = heap_copy_tuple_as_datum(tuple, tupdesc);
	json = DatumGetTextPP(DirectFunctionCall1(row_to_json, row));
	appendBinaryStringInfo(out, VARDATA_ANY(json), VARSIZE_ANY_EXHDR(json));
}

/*
 * The event key: the single key column's value as text, or a JSON array of
 * the values as text (null for a null value).  SQL null without key columns
 * or when the single key value is null.
 */
static Datum
build_key(CaptureInfo *info, HeapTuple tuple, TupleDesc tupdesc, bool *isnull)
{
	StringInfoData buf;
	int			i;

	*isnull = true;
	if (info->nkeys == 0)
		return (Datum) 0;

	if (info->nkeys == 1)
	{
		bool		null;
		Datum		v = heap_getattr(tuple, info->key_attnums[0], tupdesc, &null);

		if (null)
			return (Datum) 0;
		*isnull = false;
		return CStringGetTextDatum(OutputFunctionCall(&info->key_out[0], v));
	}

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	for (i = 0; i < info->nkeys; i++)
	{
		bool		null;
		Datum		v = heap_getattr(tuple, info->key_attnums[i], tupdesc, &null);

		if (i > 0)
			appendStringInfoChar(&buf, ',');
		if (null)
			appendStringInfoString(&buf, "null");
		else
		{
			char	   *s = OutputFunctionCall(&info->key_out[i], v);

			outbox_append_json_string(&buf, s, strlen(s));
		}
	}
	appendStringInfoChar(&buf, ']');
	*isnull = false;
	return PointerGetDatum(cstring_to_text_with_len(buf.data, buf.len));
}

/* The role that owns outbox.messages. */
static Oid
messages_owner(void)
{
	Oid			nspid = get_namespace_oid(OUTBOX_SCHEMA_NAME, false);
	Oid			relid = get_relname_relid(OUTBOX_TABLE_NAME, nspid);
	HeapTuple	tp;
	Oid			owner;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"%s.%s\" does not exist",
						OUTBOX_SCHEMA_NAME, OUTBOX_TABLE_NAME),
				 errhint("Reinstall the outbox extension.")));
	tp = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tp))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tp))->relowner;
	ReleaseSysCache(tp);
	return owner;
}

/*
 * Insert one event row into outbox.messages through SPI, as the table's
 * owner (see the file header).  An error restores the user id with the
 * (sub)transaction abort.
 */
static void
insert_event(Oid owner, Datum topic, Datum key, bool key_isnull, Datum payload)
{
	Datum		values[3];
	char		nulls[3];
	int			rc;
	Oid			save_userid;
	int			save_sec_context;

	values[0] = topic;
	nulls[0] = ' ';
	values[1] = key;
	nulls[1] = key_isnull ? 'n' : ' ';
	values[2] = payload;
	nulls[2] = ' ';

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(owner, save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE | SECURITY_NOFORCE_RLS);

	if ((rc = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(rc));

	if (capture_insert_plan == NULL)
	{
		Oid			argtypes[3] = {TEXTOID, TEXTOID, JSONBOID};
		SPIPlanPtr	plan = SPI_prepare(CAPTURE_INSERT_SQL, 3, argtypes);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s", CAPTURE_INSERT_SQL,
				 SPI_result_code_string(SPI_result));
		if ((rc = SPI_keepplan(plan)) != 0)
			elog(ERROR, "SPI_keepplan failed: %s", SPI_result_code_string(rc));
		capture_insert_plan = plan;
	}

	rc = SPI_execute_plan(capture_insert_plan, values, nulls, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "SPI_execute_plan failed for \"%s\": %s", CAPTURE_INSERT_SQL,
			 SPI_result_code_string(rc));

	if ((rc = SPI_finish()) != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed: %s", SPI_result_code_string(rc));

	SetUserIdAndSecContext(save_userid, save_sec_context);
}

/*
 * outbox.capture_trigger(topic [, key_column ...]): AFTER INSERT OR UPDATE
 * OR DELETE FOR EACH ROW.
 */
Datum
outbox_capture_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	tupdesc;
	CaptureInfo *info;
	HeapTuple	newtuple = NULL;
	HeapTuple	oldtuple = NULL;
	const char *op;
	StringInfoData payload;
	Datum		key;
	bool		key_isnull;
	Datum		payload_jsonb;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("outbox.capture_trigger() was not called by trigger manager"),
				 errhint("Attach it to a table with outbox.capture().")));
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("outbox.capture_trigger() must be fired AFTER ... FOR EACH ROW"),
				 errhint("Attach it to a table with outbox.capture().")));

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		op = "insert";
		newtuple = trigdata->tg_trigtuple;
	}
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		op = "update";
		oldtuple = trigdata->tg_trigtuple;
		newtuple = trigdata->tg_newtuple;
	}
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
	{
		op = "delete";
		oldtuple = trigdata->tg_trigtuple;
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("outbox.capture_trigger() captures only INSERT, UPDATE and DELETE"),
				 errhint("Attach it to a table with outbox.capture().")));

	tupdesc = RelationGetDescr(trigdata->tg_relation);
	info = capture_info(fcinfo, trigdata);

	/* The payload, as JSON text parsed once into jsonb. */
	initStringInfo(&payload);
	appendStringInfoString(&payload, "{\"op\":");
	escape_json(&payload, op);
	appendStringInfoString(&payload, info->where);
	appendStringInfoString(&payload, ",\"new\":");
	append_row(&payload, newtuple, tupdesc);
	appendStringInfoString(&payload, ",\"old\":");
	append_row(&payload, oldtuple, tupdesc);
	appendStringInfoChar(&payload, '}');
	payload_jsonb = DirectFunctionCall1(jsonb_in, CStringGetDatum(payload.data));

	/* The key of a deleted row is its old key; otherwise the new one. */
	key = build_key(info, newtuple != NULL ? newtuple : oldtuple, tupdesc,
					&key_isnull);

	insert_event(info->messages_owner, info->topic, key, key_isnull,
				 payload_jsonb);

	return PointerGetDatum(NULL);
}
