/*-------------------------------------------------------------------------
 *
 * enqueue.c
 *	  outbox.enqueue(): insert the event row without planning a statement.
 *
 * A hand-written outbox is one INSERT; enqueue() must not cost more.  It
 * used to run a prepared INSERT through SPI, which still starts and ends an
 * executor per call, builds the trigger's call, and parses and plans the
 * table's CHECK expressions (and the partial index's predicate) again for
 * every row, since the executor keeps those only for one statement.
 *
 * Here the row is inserted the way COPY and logical replication's apply
 * worker insert one: build the values, check the constraints, insert the
 * heap tuple, insert the index entries.  What a statement would re-plan for
 * every row is planned once per backend and kept until the relcache says
 * outbox.messages (or one of its indexes) changed:
 *
 *	- the column defaults (the identity's nextval, now(), the publishing
 *	  transaction id, ...), evaluated in column order as an INSERT does;
 *	- the CHECK constraints, handed to ExecConstraints() ready to run;
 *	- each index's IndexInfo and partial index predicate.
 *
 * The index entries are made by a loop of its own, as
 * ExecInsertIndexTuples() makes them for an INSERT, but opening (and
 * locking) only the indexes the row enters: purge()'s partial index takes
 * no new row, and an INSERT opens and locks it, builds its IndexInfo and
 * plans its predicate for every statement.  So the locks differ from an
 * INSERT's: an index the row does not enter is not locked at all, and the
 * others are locked once the row has its id and is in the heap.  The loop
 * handles B-tree indexes on plain columns, unique ones checked at once; a
 * table with an index of any other kind (an expression, an exclusion
 * constraint, a deferrable unique constraint, another access method such
 * as BRIN or GIN) goes through the statement.
 *
 * The validation trigger messages_check is not fired through the trigger
 * manager: its work (outbox_check_messages_row(), the same code) is called
 * directly, before the row takes an id.
 *
 * This path is taken only while the table has the shape it was written
 * for: a plain heap table, no rules, no row-level security, no trigger but
 * messages_check, enabled as created, no generated or domain-typed column,
 * indexes of the kind above, and defaults, checks and predicates made of
 * plain expression nodes whose state may be kept between calls (see
 * cacheable_expr()).  Anything else
 * (a trigger of your own, session_replication_role = replica, a read-only
 * transaction, a nested call) goes through the SPI INSERT, which does
 * whatever a statement would.  Both paths give the same row and the same
 * errors; the direct one checks the rules before the row draws an id, so
 * an event it refuses uses up none.
 *
 * The range table it builds is checked as a statement's is, so the
 * function owner's INSERT privilege and ExecutorCheckPerms_hook (sepgsql,
 * pgaudit's object audit) apply; the executor's start and end hooks do not
 * see it, since no statement runs.
 *
 * src/enqueue.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/sysattr.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "compat.h"
#include "event.h"
#include "outbox.h"

PG_FUNCTION_INFO_V1(outbox_enqueue);

/* The event columns, in the order of enqueue()'s arguments. */
static const char *const event_columns[] = {"topic", "key", "payload", "headers"};
static const Oid event_types[] = {TEXTOID, TEXTOID, JSONBOID, JSONBOID};

#define ENQUEUE_NARGS	4

/*
 * What the direct path keeps per backend about outbox.messages.  Everything
 * lives in cxt; an invalidation only clears "valid", and the next call
 * frees and rebuilds (never while a call is using it: see busy).  "built"
 * is set only once a build has finished: one that failed half-way is never
 * used.
 */
typedef struct EnqueueCache
{
	bool		valid;			/* no invalidation since the build began */
	bool		built;			/* the build finished */
	Oid			relid;			/* outbox.messages */
	MemoryContext cxt;
	bool		direct;			/* the table has the shape handled here */
	int			natts;
	AttrNumber	argatt[ENQUEUE_NARGS];	/* attnum of each argument's column */
	AttrNumber	idatt;			/* attnum of id */
	ExprState **defaults;		/* [natts]: default of a column, or NULL */
	int			nchecks;
	ExprState **checks;			/* [nchecks], in the relcache's order */
	int			nindexes;
	Oid		   *indexoids;		/* [nindexes] */
	IndexInfo **indexinfos;		/* [nindexes] */
	ExprState **predicates;		/* [nindexes]: partial index predicate */
} EnqueueCache;

static EnqueueCache cache;
static bool cache_callback_registered = false;
static bool busy = false;

/* The SPI INSERT of the other path, prepared once per backend. */
static SPIPlanPtr enqueue_plan = NULL;

#define ENQUEUE_SQL \
	"INSERT INTO outbox.messages (topic, key, payload, headers) " \
	"VALUES ($1, $2, $3, $4) RETURNING id"

static void enqueue_relcache_cb(Datum arg, Oid relid);
static void build_cache(Relation rel);
static bool cacheable_expr(Node *node, void *context);
static bool cacheable_expr_walker(Node *node, void *context);
static ExprState *prepare_expr(Expr *expr);
static bool direct_shape(Relation rel);
static int64 insert_direct(Relation rel, FunctionCallInfo fcinfo);
static void insert_index_entries(Relation rel, ResultRelInfo *rri,
								 TupleTableSlot *slot, EState *estate);
static int64 insert_spi(FunctionCallInfo fcinfo);

/*
 * outbox.enqueue(topic, key, payload, headers) RETURNS bigint
 *
 * Inserts the event row and returns its id.  SECURITY DEFINER (declared in
 * SQL, switched by fmgr), so the caller needs no privilege on the table; no
 * SET clause, because nothing here resolves a name under the caller's
 * search_path: the table is named with its schema, and the defaults, checks
 * and trigger that apply to the row are bound by OID.  On the table as
 * shipped, the direct path runs only the extension's own C code and
 * expressions; whatever the (superuser) owner adds to the table (a default
 * calling a PL function, a trigger) runs with the owner's rights for every
 * caller, on either path, as in any SECURITY DEFINER insert
 * (docs/sql-api.md, Security).
 */
Datum
outbox_enqueue(PG_FUNCTION_ARGS)
{
	Oid			relid;
	Relation	rel;
	volatile bool use_spi = false;
	int64		id = 0;

	/* as emit() reports it, and before the INSERT draws an id */
	outbox_require_topic_arg(fcinfo, 0);

	/*
	 * The lock the INSERT would take.  Locking processes invalidations, so a
	 * cache still valid afterwards names the table "outbox.messages" names
	 * now (renaming or dropping it, or renaming the schema, invalidates).
	 */
	relid = InvalidOid;
	if (cache.valid && cache.built)
	{
		LockRelationOid(cache.relid, RowExclusiveLock);
		if (cache.valid)
			relid = cache.relid;
		else
			UnlockRelationOid(cache.relid, RowExclusiveLock);
	}
	if (!OidIsValid(relid))
		relid = RangeVarGetRelid(makeRangeVar(OUTBOX_SCHEMA_NAME, OUTBOX_TABLE_NAME, -1),
								 RowExclusiveLock, false);
	rel = table_open(relid, NoLock);

	/*
	 * The statement reports these as an INSERT would (a read-only
	 * transaction, parallel mode); a nested call (from code run by the
	 * insert or the cache build) never touches the cache in use.
	 */
	if (busy ||
		SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA ||
		XactReadOnly || IsInParallelMode())
	{
		table_close(rel, NoLock);
		PG_RETURN_INT64(insert_spi(fcinfo));
	}

	busy = true;
	PG_TRY();
	{
		if (!cache.valid || !cache.built || cache.relid != relid)
			build_cache(rel);
		if (cache.direct)
			id = insert_direct(rel, fcinfo);
		else
			use_spi = true;
	}
	PG_FINALLY();
	{
		busy = false;
	}
	PG_END_TRY();

	table_close(rel, NoLock);
	if (use_spi)
		id = insert_spi(fcinfo);
	PG_RETURN_INT64(id);
}

/*
 * A renamed schema changes what "outbox.messages" names without touching
 * the table's relcache entry; a changed function may be one a default,
 * check or predicate calls (or inlined when it was planned), or the
 * trigger's.
 */
static void
enqueue_syscache_cb(Datum arg, int cacheid, uint32 hashvalue)
{
	cache.valid = false;
}

/*
 * Any change to outbox.messages or its indexes (or a full reset) makes the
 * cache stale.  Only marked here: the memory may be in use by a call.
 */
static void
enqueue_relcache_cb(Datum arg, Oid relid)
{
	int			i;

	if (!cache.valid)
		return;
	if (relid == InvalidOid || relid == cache.relid)
	{
		cache.valid = false;
		return;
	}
	for (i = 0; i < cache.nindexes; i++)
		if (relid == cache.indexoids[i])
		{
			cache.valid = false;
			return;
		}
}

/*
 * An expression planned and made ready to run, as ExecPrepareExpr() does;
 * NULL (and the table left to the statement) if it may not be kept.
 */
static ExprState *
prepare_expr(Expr *expr)
{
	expr = expression_planner(expr);
	if (!cacheable_expr((Node *) expr, NULL))
	{
		cache.direct = false;
		return NULL;
	}
	return ExecInitExpr(expr, NULL);
}

/* expression_tree_walker's sense: true stops the walk (not cacheable) */
static bool
cacheable_expr_walker(Node *node, void *context)
{
	return !cacheable_expr(node, context);
}

/*
 * (Re)build the cache from the open, locked relation.  Called under the
 * busy guard, so no other call is using the cache it frees.
 */
static void
build_cache(Relation rel)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	MemoryContext old;
	int			guc_level;
	List	   *indexes;
	ListCell   *lc;
	int			i;

	if (!cache_callback_registered)
	{
		CacheRegisterRelcacheCallback(enqueue_relcache_cb, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, enqueue_syscache_cb,
									  (Datum) 0);
		CacheRegisterSyscacheCallback(PROCOID, enqueue_syscache_cb,
									  (Datum) 0);
		cache_callback_registered = true;
	}
	if (cache.cxt != NULL)
		MemoryContextDelete(cache.cxt);
	memset(&cache, 0, sizeof(cache));
	cache.cxt = AllocSetContextCreate(CacheMemoryContext,
									  "outbox enqueue cache",
									  ALLOCSET_SMALL_SIZES);
	cache.relid = RelationGetRelid(rel);
	/* valid from here: an invalidation during the build clears it again */
	cache.valid = true;
	cache.direct = direct_shape(rel);
	if (!cache.direct)
	{
		cache.built = true;
		return;
	}

	/* the argument types must be the columns' (the guard keeps them so) */
	for (i = 0; i < ENQUEUE_NARGS; i++)
	{
		cache.argatt[i] = attnameAttNum(rel, event_columns[i], true);
		if (cache.argatt[i] <= 0 ||
			TupleDescAttr(tupdesc, cache.argatt[i] - 1)->atttypid != event_types[i])
			cache.direct = false;
	}
	cache.idatt = attnameAttNum(rel, "id", true);
	if (cache.idatt <= 0 ||
		TupleDescAttr(tupdesc, cache.idatt - 1)->atttypid != INT8OID)
		cache.direct = false;
	/*
	 * Generated columns and domain-typed ones (whose checks apply to a null
	 * as well as to a default) are left to the statement.
	 */
	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (!att->attisdropped &&
			(att->attgenerated || get_typtype(att->atttypid) == TYPTYPE_DOMAIN))
			cache.direct = false;
	}
	if (!cache.direct)
	{
		cache.built = true;
		return;
	}

	/*
	 * Planning may inline SQL functions, parsing their bodies: under a fixed
	 * search_path, not that of whichever caller builds the cache.
	 */
	guc_level = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);

	old = MemoryContextSwitchTo(cache.cxt);

	cache.natts = tupdesc->natts;
	cache.defaults = palloc0(sizeof(ExprState *) * cache.natts);

	for (i = 0; i < cache.natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		AttrNumber	attnum = i + 1;
		Node	   *def;
		int			a;
		bool		is_arg = false;

		if (att->attisdropped)
			continue;
		for (a = 0; a < ENQUEUE_NARGS; a++)
			if (cache.argatt[a] == attnum)
				is_arg = true;
		if (is_arg)
			continue;
		def = build_column_default(rel, attnum);
		if (def != NULL)
			cache.defaults[i] = prepare_expr((Expr *) def);
	}

	if (tupdesc->constr != NULL && tupdesc->constr->num_check > 0)
	{
		ConstrCheck *check = tupdesc->constr->check;

		cache.nchecks = tupdesc->constr->num_check;
		cache.checks = palloc0(sizeof(ExprState *) * cache.nchecks);
		for (i = 0; i < cache.nchecks; i++)
		{
			/* as ExecRelCheck() builds them; an unenforced one stays NULL */
			if (!outbox_check_enforced(&check[i]))
				continue;
			cache.checks[i] = prepare_expr(stringToNode(check[i].ccbin));
		}
	}

	indexes = RelationGetIndexList(rel);
	cache.nindexes = list_length(indexes);
	cache.indexoids = palloc0(sizeof(Oid) * Max(cache.nindexes, 1));
	cache.indexinfos = palloc0(sizeof(IndexInfo *) * Max(cache.nindexes, 1));
	cache.predicates = palloc0(sizeof(ExprState *) * Max(cache.nindexes, 1));
	i = 0;
	foreach(lc, indexes)
	{
		Oid			indexoid = lfirst_oid(lc);
		Relation	irel = index_open(indexoid, AccessShareLock);
		IndexInfo  *ii = BuildIndexInfo(irel);
		List	   *pred = ii->ii_Predicate;

		cache.indexoids[i] = indexoid;
		cache.indexinfos[i] = ii;
		/* the kinds of index insert_direct()'s loop handles */
		if (irel->rd_rel->relam != BTREE_AM_OID ||
			ii->ii_Expressions != NIL ||
			ii->ii_ExclusionOps != NULL ||
			(ii->ii_Unique && !irel->rd_index->indimmediate))
			cache.direct = false;
		/* as ExecPrepareQual() */
		if (pred != NIL)
		{
			pred = (List *) expression_planner((Expr *) pred);
			if (cacheable_expr((Node *) pred, NULL))
				cache.predicates[i] = ExecInitQual(pred, NULL);
			else
				cache.direct = false;
		}
		index_close(irel, AccessShareLock);
		i++;
	}

	MemoryContextSwitchTo(old);
	AtEOXact_GUC(true, guc_level);
	cache.built = true;
}

/*
 * May this planned expression be kept across calls, its state living in
 * the cache while each call evaluates it in an executor state of its own?
 * Some steps keep what they set up on their first run in the per-query
 * memory of the context they run in (a whole-row Var's tuple descriptor, a
 * row-type conversion's map, a domain's constraints, JSON coercions), which
 * is freed after each call.  So only the plain nodes the extension's own
 * defaults, checks and index predicate are made of are accepted; a table
 * with anything else goes through the statement.
 */
static bool
cacheable_expr(Node *node, void *context)
{
	if (node == NULL)
		return true;
	switch (nodeTag(node))
	{
		case T_Var:
			if (((Var *) node)->varattno <= 0 ||
				((Var *) node)->varlevelsup != 0)
				return false;
			return true;
		case T_ScalarArrayOpExpr:
			if (OidIsValid(((ScalarArrayOpExpr *) node)->hashfuncid))
				return false;
			break;
		case T_NullTest:
			if (((NullTest *) node)->argisrow)
				return false;
			break;
		case T_Const:
		case T_List:
		case T_FuncExpr:
		case T_OpExpr:
		case T_DistinctExpr:
		case T_NullIfExpr:
		case T_BoolExpr:
		case T_BooleanTest:
		case T_RelabelType:
		case T_CoerceViaIO:
		case T_CaseExpr:
		case T_CaseWhen:
		case T_CaseTestExpr:
		case T_CoalesceExpr:
		case T_MinMaxExpr:
		case T_SQLValueFunction:
		case T_NextValueExpr:
			break;
		default:
			return false;
	}
	return !expression_tree_walker(node, cacheable_expr_walker, context);
}

/*
 * Has the table the shape the direct path handles?  A plain heap table
 * without rules or row-level security whose only trigger is the
 * extension's messages_check, row-level BEFORE INSERT, enabled as created,
 * without a WHEN clause or arguments.
 */
static bool
direct_shape(Relation rel)
{
	TriggerDesc *trigdesc = rel->trigdesc;
	Trigger    *trig;
	FmgrInfo	finfo;

	if (rel->rd_rel->relkind != RELKIND_RELATION ||
		rel->rd_rel->relispartition ||
		rel->rd_rel->relrowsecurity ||
		rel->rd_rules != NULL)
		return false;
	if (trigdesc == NULL || trigdesc->numtriggers != 1)
		return false;
	trig = &trigdesc->triggers[0];
	if (!TRIGGER_FOR_ROW(trig->tgtype) ||
		!TRIGGER_FOR_BEFORE(trig->tgtype) ||
		!TRIGGER_FOR_INSERT(trig->tgtype) ||
		trig->tgenabled != TRIGGER_FIRES_ON_ORIGIN ||
		trig->tgqual != NULL ||
		trig->tgnargs != 0)
		return false;
	fmgr_info(trig->tgfoid, &finfo);
	return finfo.fn_addr == outbox_messages_check;
}

/*
 * The row's index entries, as ExecInsertIndexTuples() makes them for the
 * kinds of index build_cache() lets through, opening only the indexes the
 * row enters.  Each is unlocked again at once, as ExecCloseIndices()
 * unlocks an INSERT's indexes at the end of the statement.  So an index
 * the row does not enter is never locked, and the others are locked after
 * the row drew its id and went into the heap, where an INSERT locks every
 * index of the table before it starts.
 */
static void
insert_index_entries(Relation rel, ResultRelInfo *rri, TupleTableSlot *slot,
					 EState *estate)
{
	ExprContext *econtext = GetPerTupleExprContext(estate);
	int			i;

	if (!cache.valid)
	{
		/*
		 * Code the row ran (a default, a check) changed the table: an index
		 * the cache names may be gone, since DROP INDEX checks only that the
		 * index itself is not in use.  The entries go to the indexes the
		 * relcache lists now, as an INSERT makes them.
		 */
		ExecOpenIndices(rri, false);
		outbox_exec_insert_index_tuples(rri, slot, estate);
		ExecCloseIndices(rri);
		return;
	}

	econtext->ecxt_scantuple = slot;
	for (i = 0; i < cache.nindexes; i++)
	{
		IndexInfo  *ii = cache.indexinfos[i];
		Relation	irel;
		Datum		values[INDEX_MAX_KEYS];
		bool		isnull[INDEX_MAX_KEYS];

		if (!ii->ii_ReadyForInserts)
			continue;
		if (cache.predicates[i] != NULL &&
			!ExecQual(cache.predicates[i], econtext))
			continue;
		irel = index_open(cache.indexoids[i], RowExclusiveLock);
		FormIndexDatum(ii, slot, estate, values, isnull);
		index_insert(irel, values, isnull, &slot->tts_tid, rel,
					 ii->ii_Unique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO,
					 false, ii);
		index_close(irel, RowExclusiveLock);
	}
}

/* The insert itself, on the open, locked relation; returns the id. */
static int64
insert_direct(Relation rel, FunctionCallInfo fcinfo)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	OutboxEvent ev;
	EState	   *estate;
	MemoryContext oldcxt;
	Bitmapset  *inserted;
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	ExprContext *econtext;
	int64		id;
	int			i;

	/* the rules of messages_check, applied before the row takes an id */
	memset(&ev, 0, sizeof(ev));
	ev.attempts = 1;
	outbox_event_from_args(fcinfo, 0, &ev);
	outbox_check_event(&ev);
	outbox_check_topic_not_reserved(ev.topic, ev.topic_len);

	/* everything of this insert lives in the executor state's memory */
	estate = CreateExecutorState();
	oldcxt = MemoryContextSwitchTo(estate->es_query_cxt);
	inserted = NULL;
	for (i = 0; i < ENQUEUE_NARGS; i++)
		inserted = bms_add_member(inserted, cache.argatt[i] -
								  FirstLowInvalidHeapAttributeNumber);
	outbox_exec_insert_range_table(estate, rel, inserted);
	estate->es_output_cid = GetCurrentCommandId(true);

	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	if (cache.nchecks > 0)
		outbox_rri_check_exprs(rri) = cache.checks;

	slot = ExecInitExtraTupleSlot(estate, tupdesc, &TTSOpsVirtual);
	ExecClearTuple(slot);
	econtext = GetPerTupleExprContext(estate);

	/* the defaults in column order, as an INSERT's target list has them */
	for (i = 0; i < cache.natts; i++)
	{
		slot->tts_values[i] = (Datum) 0;
		slot->tts_isnull[i] = true;
		if (cache.defaults[i] != NULL)
			slot->tts_values[i] =
				ExecEvalExprSwitchContext(cache.defaults[i], econtext,
										  &slot->tts_isnull[i]);
	}
	for (i = 0; i < ENQUEUE_NARGS; i++)
	{
		int			att = cache.argatt[i] - 1;

		slot->tts_isnull[att] = PG_ARGISNULL(i);
		slot->tts_values[att] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
	}
	ExecStoreVirtualTuple(slot);

	if (tupdesc->constr != NULL)
		ExecConstraints(rri, slot, estate);

	simple_table_tuple_insert(rel, slot);

	insert_index_entries(rel, rri, slot, estate);

	/* what messages_check does for an inserted row after its checks */
	outbox_wake_relay_at_commit();

	if (slot->tts_isnull[cache.idatt - 1])
		elog(ERROR, "outbox.messages row got a null id");
	id = DatumGetInt64(slot->tts_values[cache.idatt - 1]);

	/* the cached expressions are the cache's, not the executor's */
	outbox_rri_check_exprs(rri) = NULL;
	ExecResetTupleTable(estate->es_tupleTable, false);
	MemoryContextSwitchTo(oldcxt);
	FreeExecutorState(estate);
	return id;
}

/* The INSERT as a statement, through SPI; returns the id. */
static int64
insert_spi(FunctionCallInfo fcinfo)
{
	Datum		values[ENQUEUE_NARGS];
	char		nulls[ENQUEUE_NARGS];
	int			i;
	int			rc;
	bool		isnull;
	int64		id;

	for (i = 0; i < ENQUEUE_NARGS; i++)
	{
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
		values[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
	}

	if ((rc = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(rc));

	if (enqueue_plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(ENQUEUE_SQL, ENQUEUE_NARGS,
										   (Oid *) event_types);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s", ENQUEUE_SQL,
				 SPI_result_code_string(SPI_result));
		if ((rc = SPI_keepplan(plan)) != 0)
			elog(ERROR, "SPI_keepplan failed: %s", SPI_result_code_string(rc));
		enqueue_plan = plan;
	}

	rc = SPI_execute_plan(enqueue_plan, values, nulls, false, 1);
	if (rc != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "SPI_execute_plan failed for \"%s\": %s", ENQUEUE_SQL,
			 SPI_result_code_string(rc));

	/* read before SPI_finish() frees the result */
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									 SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		elog(ERROR, "outbox.messages returned a null id");

	if ((rc = SPI_finish()) != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed: %s", SPI_result_code_string(rc));
	return id;
}
