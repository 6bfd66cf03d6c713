/*-------------------------------------------------------------------------
 *
 * adopt_sql.c
 *	  outbox.adopt() and outbox.unadopt(): SQL-callable functions that
 *	  record, in outbox.adopted, which existing tables the output plugin
 *	  turns into events (see src/adopt.h and docs/adopt.md).
 *
 * Privileges: neither function is SECURITY DEFINER.  Both check that the
 * calling role owns the table (as ALTER TABLE would), then write
 * outbox.adopted, which no role but its owner may write, as that owner:
 * the user id is switched around the one SPI statement, in a restricted
 * security context, with search_path pinned by the functions' SET clause.
 * That statement runs nothing a user can extend: the table has no triggers,
 * its only index is on an oid-based column.
 *
 * Each call sends a relcache invalidation of outbox.adopted and of the
 * table, which logical decoding replays at this point of the WAL, so the
 * decoder reads the adoptions again from then on.
 *
 * src/adopt_sql.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "adopt.h"
#include "compat.h"
#include "outbox.h"

PG_FUNCTION_INFO_V1(outbox_adopt);
PG_FUNCTION_INFO_V1(outbox_unadopt);

/* OID and owner of outbox.adopted; ERROR if it is missing. */
static Oid
adopted_table_oid(Oid *owner)
{
	Oid			nspid = get_namespace_oid(OUTBOX_SCHEMA_NAME, false);
	Oid			relid = get_relname_relid(OUTBOX_ADOPTED_TABLE_NAME, nspid);
	HeapTuple	tp;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"%s.%s\" does not exist",
						OUTBOX_SCHEMA_NAME, OUTBOX_ADOPTED_TABLE_NAME),
				 errhint("Run ALTER EXTENSION outbox UPDATE.")));
	tp = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tp))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	*owner = ((Form_pg_class) GETSTRUCT(tp))->relowner;
	ReleaseSysCache(tp);
	return relid;
}

/* The caller must own rel; ERROR otherwise. */
static void
check_owner(Oid relid)
{
	HeapTuple	tp = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Form_pg_class form;

	if (!HeapTupleIsValid(tp))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	form = (Form_pg_class) GETSTRUCT(tp);
	if (!outbox_rel_ownercheck(relid, GetUserId()))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of table %s", NameStr(form->relname)),
				 errdetail("Only the owner of a table may adopt it, or end its adoption."),
				 errhint("Call the function as the table's owner, or as a member of the owning role.")));
	ReleaseSysCache(tp);
}

/* Run one statement on outbox.adopted as its owner. */
static void
write_adopted(Oid owner, const char *sql, int nargs, Oid *types,
			  Datum *values, int expected)
{
	Oid			save_userid;
	int			save_sec_context;
	int			rc;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(owner, save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	if ((rc = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(rc));
	rc = SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0);
	if (rc != expected)
		elog(ERROR, "SPI_execute_with_args failed for \"%s\": %s", sql,
			 SPI_result_code_string(rc));
	if ((rc = SPI_finish()) != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed: %s", SPI_result_code_string(rc));
	SetUserIdAndSecContext(save_userid, save_sec_context);
}

/*
 * outbox.adopt(rel regclass, options jsonb DEFAULT '{}') RETURNS void
 */
Datum
outbox_adopt(PG_FUNCTION_ARGS)
{
	Oid			relid;
	Jsonb	   *options;
	Relation	rel;
	AdoptConfig cfg;
	AdoptBinding bind;
	AdoptError	err;
	Oid			adopted_relid;
	Oid			adopted_owner;
	Oid			types[3] = {REGCLASSOID, JSONBOID, REGROLEOID};
	Datum		values[3];
	char		relkind;
	char		persistence;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("rel must not be null"),
				 errdetail("adopt() makes the INSERTs into one table events."),
				 errhint("Pass the outbox table to adopt, for example 'public.outboxevent'.")));
	relid = PG_GETARG_OID(0);
	options = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);

	/* ownership first: say nothing about a table the caller may not adopt */
	check_owner(relid);

	rel = table_open(relid, AccessShareLock);
	relkind = rel->rd_rel->relkind;
	persistence = rel->rd_rel->relpersistence;
	if (relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(rel)),
				 errdetail("Only ordinary tables can be adopted."),
				 errhint(relkind == RELKIND_PARTITIONED_TABLE ?
						 "A partitioned table's rows are decoded as rows of its partitions; adopt an unpartitioned outbox table." :
						 "Adopt the table your application inserts its events into.")));
	if (persistence != RELPERSISTENCE_PERMANENT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot adopt %s table \"%s\"",
						persistence == RELPERSISTENCE_TEMP ? "temporary" : "unlogged",
						RelationGetRelationName(rel)),
				 errdetail("Changes to temporary and unlogged tables are not written to the WAL, so they cannot be decoded."),
				 errhint("Adopt a permanent table.")));
	if (RelationGetNamespace(rel) == get_namespace_oid(OUTBOX_SCHEMA_NAME, false))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot adopt the outbox's own table \"%s\"",
						RelationGetRelationName(rel)),
				 errdetail("The outbox decodes its own tables itself."),
				 errhint("Adopt the table your application inserts its events into.")));

	if (!outbox_adopt_parse(options, &cfg, &err) ||
		!outbox_adopt_bind(&cfg, RelationGetDescr(rel), &bind, &err))
	{
		outbox_adopt_free(&cfg);
		ereport(ERROR,
				(errcode(err.sqlerrcode),
				 errmsg_internal("%s", err.message),
				 err.detail ? errdetail_internal("%s", err.detail) : 0,
				 err.hint ? errhint("%s", err.hint) : 0));
	}
	outbox_adopt_free(&cfg);

	if (cfg.timestamp_column != NULL)
		ereport(NOTICE,
				(errmsg("table.field.event.timestamp is checked but not used"),
				 errdetail("Kafka records get the time the relay produced them as their timestamp."),
				 errhint("Place the column as a header if consumers need it: see docs/adopt.md.")));
	table_close(rel, NoLock);

	adopted_relid = adopted_table_oid(&adopted_owner);
	values[0] = ObjectIdGetDatum(relid);
	values[1] = JsonbPGetDatum(outbox_adopt_options_jsonb(&cfg));
	values[2] = ObjectIdGetDatum(GetUserId());
	/* ON CONFLICT is not allowed on a user catalog table */
	write_adopted(adopted_owner,
				  "DELETE FROM outbox.adopted WHERE relid OPERATOR(pg_catalog.=) $1",
				  1, types, values, SPI_OK_DELETE);
	write_adopted(adopted_owner,
				  "INSERT INTO outbox.adopted (relid, options, adopted_by) "
				  "VALUES ($1, $2, $3)",
				  3, types, values, SPI_OK_INSERT);

	CacheInvalidateRelcacheByRelid(adopted_relid);
	CacheInvalidateRelcacheByRelid(relid);
	PG_RETURN_VOID();
}

/*
 * outbox.unadopt(rel regclass) RETURNS void: idempotent.
 */
Datum
outbox_unadopt(PG_FUNCTION_ARGS)
{
	Oid			relid;
	Oid			adopted_relid;
	Oid			adopted_owner;
	Oid			types[1] = {REGCLASSOID};
	Datum		values[1];

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("rel must not be null"),
				 errdetail("unadopt() ends the adoption of one table."),
				 errhint("Pass the adopted table, for example 'public.outboxevent'.")));
	relid = PG_GETARG_OID(0);
	check_owner(relid);

	adopted_relid = adopted_table_oid(&adopted_owner);
	values[0] = ObjectIdGetDatum(relid);
	write_adopted(adopted_owner,
				  "DELETE FROM outbox.adopted WHERE relid OPERATOR(pg_catalog.=) $1",
				  1, types, values, SPI_OK_DELETE);

	CacheInvalidateRelcacheByRelid(adopted_relid);
	CacheInvalidateRelcacheByRelid(relid);
	PG_RETURN_VOID();
}
