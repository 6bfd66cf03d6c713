/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Every PostgreSQL major-version difference the extension cares about.
 *
 * outbox is built and tested on PostgreSQL 15, 17 and 18 (test/pgmatrix.sh)
 * and written to build on 14 and 16 too.  Code outside this header never
 * tests PG_VERSION_NUM: it calls the shims below.
 *
 * src/compat.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_COMPAT_H
#define OUTBOX_COMPAT_H

#include "postgres.h"
#include "access/xlog.h"
#include "replication/message.h"
#include "replication/slot.h"

#if PG_VERSION_NUM < 140000
#error "outbox requires PostgreSQL 14 or later"
#endif

/* GetFlushRecPtr() grew an out-argument for the timeline in 15. */
#if PG_VERSION_NUM >= 150000
#define outbox_flush_rec_ptr()	GetFlushRecPtr(NULL)
#else
#define outbox_flush_rec_ptr()	GetFlushRecPtr()
#endif

/*
 * The timeline WAL is written on; 15 replaced the ThisTimeLineID global
 * with a function.  Outside recovery only.
 */
#if PG_VERSION_NUM >= 150000
#define outbox_insert_timeline()	GetWALInsertionTimeLine()
#else
#define outbox_insert_timeline()	ThisTimeLineID
#endif

/*
 * ReplicationSlotCreate() gained failover/synced arguments in 17.  From 17
 * on the relay's slot is a failover slot: standbys with
 * sync_replication_slots keep a copy, so a promoted standby goes on from
 * it.  Such a slot must not hand out changes the standbys named in
 * synchronized_standby_slots have not confirmed (a walsender waits the same
 * way); the relay decodes no further than they confirmed.
 */
#if PG_VERSION_NUM >= 170000
#define outbox_slot_create(name) \
	ReplicationSlotCreate((name), true, RS_EPHEMERAL, false, true, false)
#define outbox_slot_waits_for_standbys(s)	((s)->data.failover)
#define outbox_standbys_confirmed(lsn, elevel) \
	StandbySlotsHaveCaughtup((lsn), (elevel))
#else
#define outbox_slot_create(name) \
	ReplicationSlotCreate((name), true, RS_EPHEMERAL, false)
#define outbox_slot_waits_for_standbys(s)	false
#define outbox_standbys_confirmed(lsn, elevel)	true
#endif

/*
 * Write a logical decoding message.  17 added a flush argument; a
 * transactional message is flushed with its commit record anyway.
 */
#if PG_VERSION_NUM >= 170000
#define outbox_log_logical_message(prefix, data, len, transactional) \
	LogLogicalMessage((prefix), (data), (len), (transactional), false)
#else
#define outbox_log_logical_message(prefix, data, len, transactional) \
	LogLogicalMessage((prefix), (data), (len), (transactional))
#endif

/*
 * This process's index in ProcGlobal->allProcs: PGPROC lost its pgprocno
 * field in 17, which computes the index from the pointer instead.
 */
#include "storage/proc.h"
#if PG_VERSION_NUM >= 170000
#define outbox_my_procno()	((uint32) GetNumberFromPGProc(MyProc))
#else
#define outbox_my_procno()	((uint32) MyProc->pgprocno)
#endif

/*
 * ReplicationSlotAcquire() gained error_if_invalid in 18.  The relay checks
 * for invalidation itself (outbox_slot_is_invalidated()) and reports it as a
 * blocked state, so it never asks for the error.
 */
#if PG_VERSION_NUM >= 180000
#define outbox_slot_acquire(name, nowait) \
	ReplicationSlotAcquire((name), (nowait), false)
#else
#define outbox_slot_acquire(name, nowait) ReplicationSlotAcquire((name), (nowait))
#endif

/*
 * The table's primary key index, InvalidOid if it has none or only a
 * deferrable one.  18 added deferrable_ok; false keeps the behaviour of
 * earlier releases, whose relcache never recorded a deferrable primary key.
 */
#if PG_VERSION_NUM >= 180000
#define outbox_relation_pk_index(rel) RelationGetPrimaryKeyIndex((rel), false)
#else
#define outbox_relation_pk_index(rel) RelationGetPrimaryKeyIndex(rel)
#endif

/*
 * Was the slot invalidated because it retained too much WAL
 * (max_slot_wal_keep_size)?  16 records a reason; 14 and 15 only clear
 * restart_lsn and remember invalidated_at.
 */
#if PG_VERSION_NUM >= 160000
#define outbox_slot_is_invalidated(s) ((s)->data.invalidated != RS_INVAL_NONE)
#else
#define outbox_slot_is_invalidated(s) \
	(XLogRecPtrIsInvalid((s)->data.restart_lsn) && \
	 !XLogRecPtrIsInvalid((s)->data.invalidated_at))
#endif

/*
 * Why an invalidated slot was invalidated, for the log and relay_status.
 * 14 and 15 invalidate for retained WAL only; 16 records the cause and
 * adds two more (rows removed on a standby's primary, wal_level lowered);
 * 18 adds idle_replication_slot_timeout.  Read under the slot's mutex.
 */
#if PG_VERSION_NUM >= 160000
static inline const char *
outbox_slot_invalidation_cause(ReplicationSlot *s)
{
	switch (s->data.invalidated)
	{
		case RS_INVAL_WAL_REMOVED:
			return "it retained more WAL than max_slot_wal_keep_size allows";
		case RS_INVAL_HORIZON:
			return "rows it still needed were removed (on a standby: by its primary)";
		case RS_INVAL_WAL_LEVEL:
			return "wal_level was lowered below logical";
#if PG_VERSION_NUM >= 180000
		case RS_INVAL_IDLE_TIMEOUT:
			return "it was unused for longer than idle_replication_slot_timeout";
#endif
		default:
			return "of a cause this version of outbox does not know";
	}
}
#else
#define outbox_slot_invalidation_cause(s) \
	"it retained more WAL than max_slot_wal_keep_size allows"
#endif

/*
 * CreateWaitEventSet() takes a resource owner from 17 on (NULL: the set
 * lives as long as the process), a memory context before; 18 moved it to
 * storage/waiteventset.h.
 */
#include "storage/latch.h"
#if PG_VERSION_NUM >= 180000
#include "storage/waiteventset.h"
#endif
#if PG_VERSION_NUM >= 170000
#define outbox_create_wait_event_set(n)	CreateWaitEventSet(NULL, (n))
#else
#define outbox_create_wait_event_set(n)	CreateWaitEventSet(TopMemoryContext, (n))
#endif

/* Add-in shared memory is requested from shmem_request_hook since 15. */
#if PG_VERSION_NUM >= 150000
#define OUTBOX_HAVE_SHMEM_REQUEST_HOOK 1
#endif

/* MarkGUCPrefixReserved() was EmitWarningsOnPlaceholders() before 15. */
#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

/* A JSON lexer over a counted string; 17 made the caller pass the context. */
#if PG_VERSION_NUM >= 170000
#define outbox_make_json_lex(json, len) \
	makeJsonLexContextCstringLen(NULL, (json), (len), GetDatabaseEncoding(), false)
#else
#define outbox_make_json_lex(json, len) \
	makeJsonLexContextCstringLen((char *) (json), (len), GetDatabaseEncoding(), false)
#endif

/*
 * Set up a materialized set-returning function's tuplestore: 16 calls it
 * InitMaterializedSRF(), 15 SetSingleFuncCall(), 14 has neither.
 */
#if PG_VERSION_NUM >= 160000
#define outbox_init_materialized_srf(fcinfo) InitMaterializedSRF((fcinfo), 0)
#elif PG_VERSION_NUM >= 150000
#define outbox_init_materialized_srf(fcinfo) SetSingleFuncCall((fcinfo), 0)
#else
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/tuplestore.h"
static inline void
outbox_init_materialized_srf(FunctionCallInfo fcinfo)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TupleDesc	tupdesc;
	MemoryContext oldcxt;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->setDesc = CreateTupleDescCopy(tupdesc);
	MemoryContextSwitchTo(oldcxt);
}
#endif

/* The decoding context's update_progress callback gained skipped_xact in 15. */
#if PG_VERSION_NUM >= 150000
#define OUTBOX_UPDATE_PROGRESS_EXTRA , bool skipped_xact
#else
#define OUTBOX_UPDATE_PROGRESS_EXTRA
#endif

/* ReorderBufferTXN's commit time moved into the xact_time union in 15. */
#if PG_VERSION_NUM >= 150000
#define outbox_txn_commit_time(txn) ((txn)->xact_time.commit_time)
#else
#define outbox_txn_commit_time(txn) ((txn)->commit_time)
#endif

/*
 * A decoded change's new tuple as a HeapTuple: 17 stores one directly,
 * earlier releases wrap it in a ReorderBufferTupleBuf.
 */
#if PG_VERSION_NUM >= 170000
#define outbox_change_newtuple(change) ((change)->data.tp.newtuple)
#else
#define outbox_change_newtuple(change) \
	((change)->data.tp.newtuple != NULL ? \
	 &(change)->data.tp.newtuple->tuple : (HeapTuple) NULL)
#endif

/* pg_class_ownercheck() became object_ownercheck() in 16. */
#if PG_VERSION_NUM >= 160000
#define outbox_rel_ownercheck(relid, roleid) \
	object_ownercheck(RelationRelationId, (relid), (roleid))
#else
#define outbox_rel_ownercheck(relid, roleid) pg_class_ownercheck((relid), (roleid))
#endif

/* 15.19 (Debian) and later gate output plugins on output_plugin_libraries. */
#define OUTBOX_PLUGIN_ALLOWLIST_GUC "output_plugin_libraries"

/*
 * The JSON parser's semantic actions return an error code from 16 on (void
 * before), and 17 made the lexer's context an argument of its constructor.
 */
#if PG_VERSION_NUM >= 160000
#define OUTBOX_JSON_ACTION		JsonParseErrorType
#define OUTBOX_JSON_ACTION_DONE	return JSON_SUCCESS
#else
#define OUTBOX_JSON_ACTION		void
#define OUTBOX_JSON_ACTION_DONE	return
#endif
#if PG_VERSION_NUM >= 170000
#define outbox_json_lexer(json, len, encoding) \
	makeJsonLexContextCstringLen(NULL, (json), (len), (encoding), true)
#else
#define outbox_json_lexer(json, len, encoding) \
	makeJsonLexContextCstringLen((json), (len), (encoding), true)
#endif

/*
 * Inserting a row without a statement (enqueue.c), as COPY and the apply
 * worker do.  The executor's range table gained permission infos in 16
 * (ExecInitRangeTable() takes their list, ExecCheckRTPerms() became
 * ExecCheckPermissions()) and the set of unpruned relations in 18;
 * ExecInsertIndexTuples() gained onlySummarizing in 16; a CHECK constraint
 * can be NOT ENFORCED from 18 on, when ResultRelInfo's prepared CHECK
 * expressions were renamed.
 */
#include "executor/executor.h"
#include "parser/parse_relation.h"
#include "utils/rel.h"

/*
 * The range table of an INSERT into rel of the columns in inserted (attnums
 * offset by FirstLowInvalidHeapAttributeNumber, as the planner has them),
 * checked as the executor checks a statement's: the current user needs
 * INSERT on them, and ExecutorCheckPerms_hook (sepgsql, pgaudit) sees it.
 */
static inline void
outbox_exec_insert_range_table(EState *estate, Relation rel,
							   Bitmapset *inserted)
{
	RangeTblEntry *rte = makeNode(RangeTblEntry);
#if PG_VERSION_NUM >= 160000
	List	   *perminfos = NIL;
	RTEPermissionInfo *perminfo;
#endif

	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(rel);
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
#if PG_VERSION_NUM >= 160000
	perminfo = addRTEPermissionInfo(&perminfos, rte);
	perminfo->requiredPerms = ACL_INSERT;
	perminfo->insertedCols = inserted;
#else
	rte->requiredPerms = ACL_INSERT;
	rte->insertedCols = inserted;
#endif
#if PG_VERSION_NUM >= 180000
	ExecInitRangeTable(estate, list_make1(rte), perminfos,
					   bms_make_singleton(1));
#elif PG_VERSION_NUM >= 160000
	ExecInitRangeTable(estate, list_make1(rte), perminfos);
#else
	ExecInitRangeTable(estate, list_make1(rte));
#endif
#if PG_VERSION_NUM >= 160000
	(void) ExecCheckPermissions(estate->es_range_table,
								estate->es_rteperminfos, true);
#else
	(void) ExecCheckRTPerms(estate->es_range_table, true);
#endif
}

#if PG_VERSION_NUM >= 160000
#define outbox_exec_insert_index_tuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL, false)
#else
#define outbox_exec_insert_index_tuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL)
#endif

#if PG_VERSION_NUM >= 180000
#define outbox_check_enforced(check)	((check)->ccenforced)
#define outbox_rri_check_exprs(rri)		((rri)->ri_CheckConstraintExprs)
#else
#define outbox_check_enforced(check)	true
#define outbox_rri_check_exprs(rri)		((rri)->ri_ConstraintExprs)
#endif

#endif							/* OUTBOX_COMPAT_H */
