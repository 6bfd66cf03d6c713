/*-------------------------------------------------------------------------
 *
 * outbox_decoder.c
 *	  The `outbox` logical decoding output plugin.
 *
 * Decodes committed outbox events, in commit order:
 *
 *	  - INSERTs into outbox.messages (UPDATEs, DELETEs and every other table
 *		are ignored);
 *	  - INSERTs into tables adopted with outbox.adopt() (listed in the user
 *		catalog table outbox.adopted), shaped as Debezium's Outbox Event
 *		Router shapes its records by src/adopt.c; DELETEs of them are
 *		ignored, UPDATEs reported with a WARNING;
 *	  - transactional logical messages with prefix "outbox" written by the
 *		extension itself (outbox.emit(), redeliver(), redrive()): each
 *		carries an authentication code (src/msgauth.h); messages anyone
 *		else wrote with pg_logical_emit_message() are skipped.
 *
 * Output is one JSON object per event (option format 'json', the default)
 * or the binary frames of decoder/wire.h (format 'binary', used by the
 * relay).  No prepare, streaming or truncate callbacks are registered:
 * prepared transactions are decoded once, at COMMIT PREPARED, large
 * transactions are spilled to disk by the reorder buffer rather than
 * streamed, and TRUNCATE is not an event.
 *
 * Bad input never raises an ERROR here: an ERROR would stop decoding at the
 * same WAL record again and again, wedging the slot for good.  A malformed
 * message (or an impossible row) is reported with a WARNING and skipped.
 *
 * The OID of outbox.messages is resolved by name under the historic
 * snapshot and cached for the backend, together with the attribute numbers
 * of the columns read; relcache and syscache invalidations (replayed by the
 * reorder buffer at the right point of the WAL) reset the cache, so the
 * plugin follows CREATE EXTENSION after slot creation, and DROP/CREATE
 * EXTENSION giving the table a new OID.
 *
 * decoder/outbox_decoder.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tupdesc.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "nodes/pg_list.h"
#include "port/pg_bswap.h"
#include "replication/logical.h"
#include "replication/output_plugin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "adopt.h"
#include "compat.h"
#include "event.h"
#include "msgauth.h"
#include "outbox.h"
#include "wire.h"

/* Output formats (option "format"). */
typedef enum OutboxFormat
{
	OUTBOX_FORMAT_JSON,			/* one JSON object per event, textual */
	OUTBOX_FORMAT_BINARY		/* decoder/wire.h frames */
} OutboxFormat;

/* Per decoding session state, in ctx->output_plugin_private. */
typedef struct OutboxDecodingData
{
	OutboxFormat format;		/* chosen output format */
	MemoryContext scratch;		/* reset after every change and message */
	XLogRecPtr	commit_lsn;		/* current transaction's commit LSN */
	XLogRecPtr	end_lsn;		/* LSN just past its commit record */
	TransactionId xid;			/* its top-level transaction id */
	TimestampTz commit_time;	/* its commit timestamp */
	uint32		nevents;		/* events written for it so far */
	StringInfoData json_tail;	/* its ,"lsn":..,"xid":..,"commit_time":..} */
} OutboxDecodingData;

/*
 * Where outbox.messages is and where its columns are, for this backend.
 * Static, because cache invalidation callbacks cannot be unregistered and
 * must never reach freed memory; reset by those callbacks and at startup.
 */
typedef struct OutboxTableCache
{
	bool		relid_valid;	/* has relid been resolved since the last
								 * invalidation? */
	Oid			relid;			/* OID of outbox.messages, InvalidOid when
								 * there is no such table */
	bool		attnums_valid;	/* are the attnums below current? */
	AttrNumber	att_id;			/* column "id", or InvalidAttrNumber */
	AttrNumber	att_topic;		/* column "topic" */
	AttrNumber	att_key;		/* column "key" */
	AttrNumber	att_payload;	/* column "payload" */
	AttrNumber	att_headers;	/* column "headers" */
	AttrNumber	att_attempts;	/* column "attempts" */
	const char *problem;		/* why rows cannot be decoded (an event
								 * column missing or of another type), or
								 * NULL; points into problem_buf */
	char		problem_buf[256];	/* storage for problem */
	int			natts;			/* natts of the descriptor they came from */
	Datum	   *values;			/* heap_deform_tuple output, natts long, in
								 * TopMemoryContext */
	bool	   *isnull;			/* likewise */
} OutboxTableCache;

static OutboxTableCache table_cache;

/* One adopted table, as read from outbox.adopted. */
typedef struct AdoptedTable
{
	Oid			relid;			/* the adopted table */
	bool		usable;			/* did its options parse? */
	char	   *problem;		/* why not, when not */
	AdoptConfig cfg;			/* its options */
	bool		bound;			/* is bind current? */
	bool		bind_ok;		/* did binding succeed? */
	AdoptError	bind_error;		/* why not, when not */
	AdoptBinding bind;			/* its columns */
} AdoptedTable;

/*
 * The adoptions as of the change being decoded, for this backend.  Rebuilt
 * after any relcache invalidation of outbox.adopted (adopt() and unadopt()
 * send one) or of an adopted table, and after pg_class or pg_namespace
 * changes (CREATE/DROP EXTENSION).  Lives in its own context, reset when
 * rebuilt.
 */
typedef struct AdoptionCache
{
	bool		valid;			/* is the list below current? */
	Oid			table_relid;	/* OID of outbox.adopted, or InvalidOid */
	int			ntables;		/* entries of tables */
	AdoptedTable *tables;		/* the adoptions */
	MemoryContext cxt;			/* holds all of it */
} AdoptionCache;

static AdoptionCache adoption_cache;

/* Have the invalidation callbacks been registered in this backend? */
static bool callbacks_registered = false;

/* Entry point, looked up by name; 16 and later also declare it. */
extern PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);

/* Output plugin callbacks */
static void outbox_startup(LogicalDecodingContext *ctx,
						   OutputPluginOptions *opt, bool is_init);
static void outbox_shutdown(LogicalDecodingContext *ctx);
static void outbox_begin_txn(LogicalDecodingContext *ctx,
							 ReorderBufferTXN *txn);
static void outbox_commit_txn(LogicalDecodingContext *ctx,
							  ReorderBufferTXN *txn, XLogRecPtr commit_lsn);
static void outbox_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
						  Relation relation, ReorderBufferChange *change);
static void outbox_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
						   XLogRecPtr message_lsn, bool transactional,
						   const char *prefix, Size message_size,
						   const char *message);

/* Helpers */
static void parse_options(List *options, OutboxDecodingData *data);
static void invalidate_relcache_cb(Datum arg, Oid relid);
static void invalidate_syscache_cb(Datum arg, int cacheid, uint32 hashvalue);
static Oid	messages_relid(void);
static void adoption_cache_reset(void);
static AdoptedTable *adopted_table(Oid relid);
static void adopted_change(LogicalDecodingContext *ctx,
						   OutboxDecodingData *data, ReorderBufferTXN *txn,
						   Relation relation, ReorderBufferChange *change,
						   AdoptedTable *at);
static void resolve_attnums(TupleDesc desc);
static bool row_to_event(Relation relation, HeapTuple tuple,
						 OutboxEvent *ev, const char **problem);
static void wire_txn(const OutboxDecodingData *data, OutboxWireTxn *txn);
static void write_event(LogicalDecodingContext *ctx, OutboxDecodingData *data,
						const OutboxEvent *ev);
static void append_json_event(StringInfo out, OutboxDecodingData *data,
							  const OutboxEvent *ev);

/* ---------------------------------------------------------------------
 * Registration, startup, shutdown
 * ---------------------------------------------------------------------
 */

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	AssertVariableIsOfType(&_PG_output_plugin_init, LogicalOutputPluginInit);

	cb->startup_cb = outbox_startup;
	cb->begin_cb = outbox_begin_txn;
	cb->change_cb = outbox_change;
	cb->message_cb = outbox_message;
	cb->commit_cb = outbox_commit_txn;
	cb->shutdown_cb = outbox_shutdown;
}

static void
outbox_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt,
			   bool is_init)
{
	OutboxDecodingData *data;

	data = MemoryContextAllocZero(ctx->context, sizeof(OutboxDecodingData));
	data->format = OUTBOX_FORMAT_JSON;
	data->scratch = AllocSetContextCreate(ctx->context,
										  "outbox decoder scratch",
										  ALLOCSET_DEFAULT_SIZES);
	initStringInfo(&data->json_tail);	/* in ctx->context, the caller's */
	ctx->output_plugin_private = data;

	parse_options(ctx->output_plugin_options, data);

	opt->output_type = (data->format == OUTBOX_FORMAT_BINARY) ?
		OUTPUT_PLUGIN_BINARY_OUTPUT : OUTPUT_PLUGIN_TEXTUAL_OUTPUT;
	opt->receive_rewrites = false;

	if (!callbacks_registered)
	{
		CacheRegisterRelcacheCallback(invalidate_relcache_cb, (Datum) 0);
		CacheRegisterSyscacheCallback(RELNAMENSP, invalidate_syscache_cb,
									  (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, invalidate_syscache_cb,
									  (Datum) 0);
		callbacks_registered = true;
	}

	/* Never trust a cache filled under another session's snapshot. */
	table_cache.relid_valid = false;
	table_cache.attnums_valid = false;
	adoption_cache.valid = false;
}

/*
 * Parse the plugin options.  Unknown names and bad values are errors: a
 * typo must not silently select the wrong format.
 */
static void
parse_options(List *options, OutboxDecodingData *data)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *elem = lfirst(lc);

		Assert(elem->arg == NULL || IsA(elem->arg, String));

		if (strcmp(elem->defname, "format") == 0)
		{
			const char *value = elem->arg ? strVal(elem->arg) : NULL;

			if (value != NULL && strcmp(value, "json") == 0)
				data->format = OUTBOX_FORMAT_JSON;
			else if (value != NULL && strcmp(value, "binary") == 0)
				data->format = OUTBOX_FORMAT_BINARY;
			else
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid value \"%s\" for option \"format\" of output plugin \"outbox\"",
								value ? value : "(null)"),
						 errdetail("The outbox output plugin writes either JSON text or binary frames."),
						 errhint("Use format 'json' (the default) or 'binary'.")));
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unrecognized option \"%s\" for output plugin \"outbox\"",
							elem->defname),
					 errdetail("The outbox output plugin accepts only the option \"format\"."),
					 errhint("Remove the option, or pass 'format', 'json' or 'format', 'binary'.")));
	}
}

static void
outbox_shutdown(LogicalDecodingContext *ctx)
{
	OutboxDecodingData *data = ctx->output_plugin_private;

	if (data == NULL)
		return;
	MemoryContextDelete(data->scratch);
	if (data->json_tail.data != NULL)
		pfree(data->json_tail.data);
	ctx->output_plugin_private = NULL;
	pfree(data);
}

/* ---------------------------------------------------------------------
 * Finding outbox.messages
 * ---------------------------------------------------------------------
 */

/* A relation changed: forget the table if it is ours (or all changed). */
static void
invalidate_relcache_cb(Datum arg, Oid relid)
{
	int			i;

	if (relid == InvalidOid || relid == table_cache.relid)
	{
		table_cache.relid_valid = false;
		table_cache.attnums_valid = false;
	}
	if (relid == InvalidOid || relid == adoption_cache.table_relid)
		adoption_cache.valid = false;
	else if (adoption_cache.valid)
	{
		for (i = 0; i < adoption_cache.ntables; i++)
			if (adoption_cache.tables[i].relid == relid)
				adoption_cache.valid = false;
	}
}

/*
 * A pg_class or pg_namespace entry changed: the table may have been created,
 * dropped or renamed, possibly with a new OID.  Look it up again next time;
 * that costs two syscache probes, so no attempt is made to filter by hash.
 */
static void
invalidate_syscache_cb(Datum arg, int cacheid, uint32 hashvalue)
{
	table_cache.relid_valid = false;
	table_cache.attnums_valid = false;
	adoption_cache.valid = false;
}

/*
 * OID of outbox.messages as of the change being decoded, or InvalidOid.
 * Catalog lookups here run under the historic snapshot set up by the
 * reorder buffer.
 */
static Oid
messages_relid(void)
{
	if (!table_cache.relid_valid)
	{
		Oid			nspid = get_namespace_oid(OUTBOX_SCHEMA_NAME, true);
		Oid			relid = InvalidOid;

		if (OidIsValid(nspid))
			relid = get_relname_relid(OUTBOX_TABLE_NAME, nspid);
		if (relid != table_cache.relid)
			table_cache.attnums_valid = false;
		table_cache.relid = relid;
		table_cache.relid_valid = true;
	}
	return table_cache.relid;
}

/*
 * The event columns, their types, and where resolve_attnums() puts their
 * attnums.  Every one must be there with exactly this type: a row of a
 * table whose payload became json, say, is not an event with a null
 * payload (a tombstone) but one that cannot be decoded.
 */
typedef struct EventColumn
{
	const char *name;			/* column name */
	Oid			type;			/* its type */
	const char *type_name;		/* the type's name, for messages */
	AttrNumber *attnum;			/* where resolve_attnums() stores it */
} EventColumn;

static const EventColumn event_columns[] = {
	{"id", INT8OID, "bigint", &table_cache.att_id},
	{"topic", TEXTOID, "text", &table_cache.att_topic},
	{"key", TEXTOID, "text", &table_cache.att_key},
	{"payload", JSONBOID, "jsonb", &table_cache.att_payload},
	{"headers", JSONBOID, "jsonb", &table_cache.att_headers},
	{"attempts", INT4OID, "integer", &table_cache.att_attempts},
};

/*
 * Find the event columns, by name, in the table's descriptor.  A missing
 * column or one of another type makes every row undecodable: this sets
 * table_cache.problem, reported with a WARNING once now (once per version of
 * the table's definition) and again for every row skipped.
 */
static void
resolve_attnums(TupleDesc desc)
{
	int			i;
	int			c;

	table_cache.att_id = InvalidAttrNumber;
	table_cache.att_topic = InvalidAttrNumber;
	table_cache.att_key = InvalidAttrNumber;
	table_cache.att_payload = InvalidAttrNumber;
	table_cache.att_headers = InvalidAttrNumber;
	table_cache.att_attempts = InvalidAttrNumber;

	table_cache.problem = NULL;

	for (c = 0; c < lengthof(event_columns) && table_cache.problem == NULL; c++)
	{
		const EventColumn *col = &event_columns[c];
		Form_pg_attribute found = NULL;

		for (i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (!att->attisdropped &&
				strcmp(NameStr(att->attname), col->name) == 0)
			{
				found = att;
				break;
			}
		}

		if (found == NULL)
			snprintf(table_cache.problem_buf, sizeof(table_cache.problem_buf),
					 _("Table %s.%s has no column \"%s\" of type %s."),
					 OUTBOX_SCHEMA_NAME, OUTBOX_TABLE_NAME,
					 col->name, col->type_name);
		else if (found->atttypid != col->type)
			snprintf(table_cache.problem_buf, sizeof(table_cache.problem_buf),
					 _("Column \"%s\" of table %s.%s has type %s, not %s."),
					 col->name, OUTBOX_SCHEMA_NAME, OUTBOX_TABLE_NAME,
					 format_type_be(found->atttypid), col->type_name);
		else
		{
			*col->attnum = found->attnum;
			continue;
		}
		table_cache.problem = table_cache.problem_buf;
	}

	if (table_cache.problem != NULL)
		ereport(WARNING,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("rows of outbox.messages cannot be decoded"),
				 errdetail_internal("%s", table_cache.problem),
				 errhint("Restore the column as created by the outbox extension; until then every event written to the table is skipped.")));

	if (table_cache.natts < desc->natts)
	{
		if (table_cache.values != NULL)
		{
			pfree(table_cache.values);
			pfree(table_cache.isnull);
		}
		table_cache.values = MemoryContextAlloc(TopMemoryContext,
												desc->natts * sizeof(Datum));
		table_cache.isnull = MemoryContextAlloc(TopMemoryContext,
												desc->natts * sizeof(bool));
		table_cache.natts = desc->natts;
	}
	table_cache.attnums_valid = true;
}

/* ---------------------------------------------------------------------
 * Transactions
 * ---------------------------------------------------------------------
 */

/*
 * Without streaming or two-phase callbacks, begin is called while the
 * commit record is replayed, so the commit LSN and time are known here.
 * Format the JSON fields they give once per transaction.
 */
static void
outbox_begin_txn(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	OutboxDecodingData *data = ctx->output_plugin_private;

	data->commit_lsn = txn->final_lsn;
	data->end_lsn = txn->end_lsn;
	data->xid = txn->xid;
	data->commit_time = outbox_txn_commit_time(txn);
	data->nevents = 0;

	if (data->format == OUTBOX_FORMAT_JSON)
	{
		char		buf[MAXDATELEN + 1];
		const int	utc = 0;

		resetStringInfo(&data->json_tail);
		appendStringInfo(&data->json_tail, ",\"lsn\":\"%X/%X\",\"xid\":%u,\"commit_time\":",
						 LSN_FORMAT_ARGS(data->commit_lsn), data->xid);
		/* ISO 8601 in UTC, whatever the session's TimeZone. */
		JsonEncodeDateTime(buf, TimestampTzGetDatum(data->commit_time),
						   TIMESTAMPTZOID, &utc);
		appendStringInfoChar(&data->json_tail, '"');
		appendStringInfoString(&data->json_tail, buf);
		appendStringInfoString(&data->json_tail, "\"}");
	}
}

/* In binary format, close a transaction that had events with a 'C' frame. */
static void
outbox_commit_txn(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
				  XLogRecPtr commit_lsn)
{
	OutboxDecodingData *data = ctx->output_plugin_private;
	OutboxWireTxn wtxn;

	if (data->format != OUTBOX_FORMAT_BINARY || data->nevents == 0)
		return;

	wire_txn(data, &wtxn);
	OutputPluginPrepareWrite(ctx, true);
	outbox_wire_append_commit(ctx->out, &wtxn, data->nevents);
	OutputPluginWrite(ctx, true);
}

/* ---------------------------------------------------------------------
 * Events
 * ---------------------------------------------------------------------
 */

/* An INSERT into outbox.messages is an event; nothing else is. */
static void
outbox_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			  Relation relation, ReorderBufferChange *change)
{
	OutboxDecodingData *data = ctx->output_plugin_private;
	MemoryContext oldcxt;
	HeapTuple	tuple;
	OutboxEvent ev;
	const char *problem;

	if (RelationGetRelid(relation) != messages_relid())
	{
		AdoptedTable *at = adopted_table(RelationGetRelid(relation));

		if (at != NULL)
			adopted_change(ctx, data, txn, relation, change, at);
		return;
	}
	if (change->action != REORDER_BUFFER_CHANGE_INSERT)
		return;
	tuple = outbox_change_newtuple(change);
	if (tuple == NULL)
		return;					/* cannot happen for an INSERT */

	oldcxt = MemoryContextSwitchTo(data->scratch);
	if (!table_cache.attnums_valid ||
		RelationGetDescr(relation)->natts > table_cache.natts)
		resolve_attnums(RelationGetDescr(relation));

	if (row_to_event(relation, tuple, &ev, &problem))
		write_event(ctx, data, &ev);
	else
		ereport(WARNING,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("skipping undecodable row of outbox.messages"),
				 errdetail_internal("%s", problem),
				 errcontext("transaction %u committed at %X/%X",
							txn->xid, LSN_FORMAT_ARGS(txn->final_lsn))));

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(data->scratch);
}

/* ---------------------------------------------------------------------
 * Adopted tables (src/adopt.h)
 * ---------------------------------------------------------------------
 */

/* Forget the adoptions, freeing their compiled regexes. */
static void
adoption_cache_reset(void)
{
	int			i;

	for (i = 0; i < adoption_cache.ntables; i++)
		outbox_adopt_free(&adoption_cache.tables[i].cfg);
	adoption_cache.ntables = 0;
	adoption_cache.tables = NULL;
	adoption_cache.table_relid = InvalidOid;
	if (adoption_cache.cxt == NULL)
		adoption_cache.cxt = AllocSetContextCreate(TopMemoryContext,
												   "outbox decoder adoptions",
												   ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(adoption_cache.cxt);
}

/*
 * The adoption of relid as of the change being decoded, or NULL.  Reads
 * outbox.adopted under the historic snapshot (it is a user catalog table)
 * when the cache was invalidated.
 */
static AdoptedTable *
adopted_table(Oid relid)
{
	int			i;

	if (!adoption_cache.valid)
	{
		Oid			nspid;
		Oid			table_relid = InvalidOid;
		MemoryContext oldcxt;

		adoption_cache_reset();
		nspid = get_namespace_oid(OUTBOX_SCHEMA_NAME, true);
		if (OidIsValid(nspid))
			table_relid = get_relname_relid(OUTBOX_ADOPTED_TABLE_NAME, nspid);
		adoption_cache.table_relid = table_relid;
		/* an invalidation arriving while this runs makes it run again */
		adoption_cache.valid = true;

		oldcxt = MemoryContextSwitchTo(adoption_cache.cxt);
		if (OidIsValid(table_relid))
		{
			Relation	rel = table_open(table_relid, AccessShareLock);
			TupleDesc	desc = RelationGetDescr(rel);

			/* never read a table that is not ours under a historic snapshot */
			if (RelationIsUsedAsCatalogTable(rel) && desc->natts >= 2 &&
				TupleDescAttr(desc, 0)->atttypid == REGCLASSOID &&
				TupleDescAttr(desc, 1)->atttypid == JSONBOID)
			{
				SysScanDesc scan = systable_beginscan(rel, InvalidOid, false,
													  NULL, 0, NULL);
				HeapTuple	tuple;
				int			max = 4;

				adoption_cache.tables = palloc0(max * sizeof(AdoptedTable));
				while (HeapTupleIsValid(tuple = systable_getnext(scan)))
				{
					bool		relid_null;
					bool		options_null;
					Datum		r = heap_getattr(tuple, 1, desc, &relid_null);
					Datum		o = heap_getattr(tuple, 2, desc, &options_null);
					AdoptedTable *at;
					AdoptError	err;

					if (relid_null)
						continue;
					if (adoption_cache.ntables == max)
					{
						max *= 2;
						adoption_cache.tables = repalloc(adoption_cache.tables,
														 max * sizeof(AdoptedTable));
					}
					at = &adoption_cache.tables[adoption_cache.ntables++];
					memset(at, 0, sizeof(AdoptedTable));
					at->relid = DatumGetObjectId(r);
					at->usable = outbox_adopt_parse(options_null ? NULL :
													DatumGetJsonbPCopy(o),
													&at->cfg, &err);
					if (!at->usable)
						at->problem = psprintf("%s: %s", err.message,
											   err.detail ? err.detail : "");
				}
				systable_endscan(scan);
			}
			table_close(rel, AccessShareLock);
		}
		MemoryContextSwitchTo(oldcxt);
	}

	for (i = 0; i < adoption_cache.ntables; i++)
		if (adoption_cache.tables[i].relid == relid)
			return &adoption_cache.tables[i];
	return NULL;
}

/*
 * A change of an adopted table.  INSERTs are events; DELETEs are ignored
 * (writers often delete what they inserted, in the same transaction, as
 * Debezium's router expects); UPDATEs are reported according to
 * table.op.invalid.behavior, as a WARNING whatever the value: an ERROR
 * here would stop decoding at this record for good.
 */
static void
adopted_change(LogicalDecodingContext *ctx, OutboxDecodingData *data,
			   ReorderBufferTXN *txn, Relation relation,
			   ReorderBufferChange *change, AdoptedTable *at)
{
	MemoryContext oldcxt;
	HeapTuple	tuple;
	OutboxEvent ev;
	const char *problem = NULL;

	if (change->action == REORDER_BUFFER_CHANGE_UPDATE)
	{
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("skipping UPDATE of adopted outbox table \"%s\"",
						RelationGetRelationName(relation)),
				 errdetail("Only INSERTs into an adopted table are events; table.op.invalid.behavior is \"%s\".",
						   outbox_adopt_op_behavior_name(at->cfg.op_behavior)),
				 errhint("Insert a new row for a new event instead of updating one."),
				 errcontext("transaction %u committed at %X/%X",
							txn->xid, LSN_FORMAT_ARGS(txn->final_lsn))));
		return;
	}
	if (change->action != REORDER_BUFFER_CHANGE_INSERT)
		return;
	tuple = outbox_change_newtuple(change);
	if (tuple == NULL)
		return;

	if (at->usable && !at->bound)
	{
		oldcxt = MemoryContextSwitchTo(adoption_cache.cxt);
		at->bind_ok = outbox_adopt_bind(&at->cfg, RelationGetDescr(relation),
										&at->bind, &at->bind_error);
		at->bound = true;
		MemoryContextSwitchTo(oldcxt);
	}

	oldcxt = MemoryContextSwitchTo(data->scratch);
	if (!at->usable)
		problem = at->problem;
	else if (!at->bind_ok)
		problem = psprintf("%s: %s", at->bind_error.message,
						   at->bind_error.detail ? at->bind_error.detail : "");
	else if (outbox_adopt_row_to_event(&at->cfg, &at->bind,
									   RelationGetDescr(relation), tuple,
									   &ev, &problem))
		write_event(ctx, data, &ev);

	if (problem != NULL)
		ereport(WARNING,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("skipping row of adopted outbox table \"%s\"",
						RelationGetRelationName(relation)),
				 errdetail_internal("%s", problem),
				 errhint("Keep the route.by.field column NOT NULL; after a change to the table, call outbox.adopt() again."),
				 errcontext("transaction %u committed at %X/%X",
							txn->xid, LSN_FORMAT_ARGS(txn->final_lsn))));

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(data->scratch);
}

/*
 * Read an event from a row of outbox.messages.  Varlena columns are
 * detoasted at most once (the reorder buffer has already reassembled
 * out-of-line values); short text values are used in place.
 */
static bool
row_to_event(Relation relation, HeapTuple tuple, OutboxEvent *ev,
			 const char **problem)
{
	TupleDesc	desc = RelationGetDescr(relation);
	Datum	   *values = table_cache.values;
	bool	   *isnull = table_cache.isnull;
	AttrNumber	a;

	if (table_cache.problem != NULL)
	{
		*problem = table_cache.problem;
		return false;
	}
	heap_deform_tuple(tuple, desc, values, isnull);
	ev->payload_json = NULL;
	ev->payload_json_len = 0;

	a = table_cache.att_id;
	ev->has_id = !isnull[a - 1];
	ev->id = ev->has_id ? DatumGetInt64(values[a - 1]) : 0;

	a = table_cache.att_attempts;
	ev->attempts = !isnull[a - 1] ? DatumGetInt32(values[a - 1]) : 1;

	a = table_cache.att_topic;
	if (isnull[a - 1])
	{
		*problem = _("The row's topic is null.");
		return false;
	}
	else
	{
		text	   *t = (text *) pg_detoast_datum_packed((struct varlena *) DatumGetPointer(values[a - 1]));

		ev->topic = VARDATA_ANY(t);
		ev->topic_len = VARSIZE_ANY_EXHDR(t);
	}

	a = table_cache.att_key;
	if (isnull[a - 1])
	{
		ev->key = NULL;
		ev->key_len = 0;
	}
	else
	{
		text	   *t = (text *) pg_detoast_datum_packed((struct varlena *) DatumGetPointer(values[a - 1]));

		ev->key = VARDATA_ANY(t);
		ev->key_len = VARSIZE_ANY_EXHDR(t);
	}

	a = table_cache.att_payload;
	ev->payload = isnull[a - 1] ? NULL :
		DatumGetJsonbP(values[a - 1]);

	a = table_cache.att_headers;
	ev->headers = isnull[a - 1] ? NULL :
		DatumGetJsonbP(values[a - 1]);

	return true;
}

/*
 * A transactional logical message with prefix "outbox" is an event.
 * Non-transactional messages are not: they are not rolled back with the
 * transaction that wrote them, so they cannot belong to an outbox.
 */
static void
outbox_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			   XLogRecPtr message_lsn, bool transactional,
			   const char *prefix, Size message_size, const char *message)
{
	OutboxDecodingData *data = ctx->output_plugin_private;
	MemoryContext oldcxt;
	OutboxEvent ev;
	const char *problem = NULL;
	Size		content_size;

	if (!transactional || strcmp(prefix, OUTBOX_MESSAGE_PREFIX) != 0)
		return;

	oldcxt = MemoryContextSwitchTo(data->scratch);

	/*
	 * Only the extension's own messages are events; the code is checked
	 * before anything reads the content.  What it wrote was validated when
	 * it was written, but the rules are cheap and checked again.
	 */
	if (!outbox_message_authentic(txn->xid, message, message_size,
								  &content_size, &problem))
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("skipping outbox message not written by the outbox extension"),
				 errdetail_internal("%s", problem),
				 errhint("Write events with outbox.emit() or outbox.enqueue(), not pg_logical_emit_message()."),
				 errcontext("logical message at %X/%X in transaction %u",
							LSN_FORMAT_ARGS(message_lsn), txn->xid)));
	else
	{
		if (outbox_message_decode(message, content_size, &ev, &problem))
		{
			problem = outbox_topic_problem(ev.topic, ev.topic_len);
			if (problem == NULL)
				problem = outbox_headers_problem(ev.headers);
		}
		if (problem == NULL)
			write_event(ctx, data, &ev);
		else
			ereport(WARNING,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("skipping malformed outbox message"),
					 errdetail_internal("%s", problem),
					 errcontext("logical message at %X/%X in transaction %u",
								LSN_FORMAT_ARGS(message_lsn), txn->xid)));
	}

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(data->scratch);
}

/* The current transaction, as the binary frames describe it. */
static void
wire_txn(const OutboxDecodingData *data, OutboxWireTxn *txn)
{
	txn->commit_lsn = data->commit_lsn;
	txn->end_lsn = data->end_lsn;
	txn->xid = data->xid;
	txn->commit_time = data->commit_time;
}

/* Write one event as one output row. */
static void
write_event(LogicalDecodingContext *ctx, OutboxDecodingData *data,
			const OutboxEvent *ev)
{
	OutputPluginPrepareWrite(ctx, true);
	if (data->format == OUTBOX_FORMAT_JSON)
		append_json_event(ctx->out, data, ev);
	else
	{
		OutboxWireTxn txn;

		wire_txn(data, &txn);
		outbox_wire_append_event(ctx->out, &txn, ev);
	}
	OutputPluginWrite(ctx, true);
	data->nevents++;
}

/* ---------------------------------------------------------------------
 * JSON format
 * ---------------------------------------------------------------------
 */

static void
append_json_event(StringInfo out, OutboxDecodingData *data,
				  const OutboxEvent *ev)
{
	char		num[MAXINT8LEN + 1];
	int			len;

	appendBinaryStringInfo(out, "{\"id\":", 6);
	if (ev->has_id)
	{
		len = pg_lltoa(ev->id, num);
		appendBinaryStringInfo(out, num, len);
	}
	else
		appendBinaryStringInfo(out, "null", 4);

	appendBinaryStringInfo(out, ",\"topic\":", 9);
	outbox_append_json_string(out, ev->topic, ev->topic_len);

	appendBinaryStringInfo(out, ",\"key\":", 7);
	if (ev->key != NULL)
		outbox_append_json_string(out, ev->key, ev->key_len);
	else
		appendBinaryStringInfo(out, "null", 4);

	appendBinaryStringInfo(out, ",\"payload\":", 11);
	if (ev->payload_json != NULL)
		appendBinaryStringInfo(out, ev->payload_json, ev->payload_json_len);
	else if (ev->payload != NULL)
		outbox_append_compact_json(out, ev->payload);
	else
		appendBinaryStringInfo(out, "null", 4);

	appendBinaryStringInfo(out, ",\"headers\":", 11);
	if (ev->headers != NULL)
		outbox_append_compact_json(out, ev->headers);
	else
		appendBinaryStringInfo(out, "null", 4);

	appendBinaryStringInfo(out, data->json_tail.data, data->json_tail.len);
}

