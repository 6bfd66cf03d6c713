/*-------------------------------------------------------------------------
 *
 * identity.c
 *	  The installation identity that the relay sends with every Kafka record
 *	  as header outbox-source.
 *
 * CREATE EXTENSION outbox draws a random uuid into outbox.installation.  The
 * relay looks it up once per decoded transaction, while the decoder's
 * callbacks run, so under the historic snapshot of that transaction: events
 * written before a DROP EXTENSION / CREATE EXTENSION carry the old
 * installation's id, events written after it the new one, even when both are
 * decoded by one relay run.  outbox.installation is a user catalog table, so
 * reading it there is allowed and its old rows are kept as long as the slot
 * may need them.
 *
 * A row is bound to where it was drawn: the system identifier, the database
 * OID and the incarnation of the data directory (incarnation.h).  A row
 * whose binding is not the current one was copied: by CREATE DATABASE ...
 * TEMPLATE, with a copied data directory, a restored base backup, or onto a
 * promoted standby (whose sequences may hand out again ids the old primary
 * already published).  Its id is then also the id of another database's
 * events, so it is never sent: the relay sends a replacement derived from
 * the stale id and the current binding (a SHA-256, as a version 8 uuid),
 * and, before it decodes, writes that replacement and binding into the row
 * (outbox_installation_rebind()).  Being deterministic, the replacement is
 * the same before and after the row is rewritten, in every run of the relay.
 * Rows of extensions older than 0.5.0 have no binding and are sent as they
 * are (the update to 0.5.0 draws a new, bound id).
 *
 * The table's OID changes with every CREATE EXTENSION, so the value is
 * cached per OID and the table is read only when the OID changes.  The
 * cache is never invalidated otherwise: reopening a user catalog table
 * under a historic snapshot needs its current pg_class row, which a table
 * dropped since (DROP EXTENSION, decoded later) no longer has.  So the id
 * re-drawn by ALTER EXTENSION UPDATE to 0.5.0 is sent from the relay's
 * next start on; the id rewritten by outbox_installation_rebind() is the
 * replacement the cache holds already.
 *
 * src/identity.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/uuid.h"

#include "adopt.h"
#include "incarnation.h"
#include "outbox.h"

/* The last installation read: its table's OID and its id as text. */
static Oid	cached_relid = InvalidOid;
static char cached_id[OUTBOX_INSTALLATION_ID_LEN + 1];

/*
 * The replacement of a stale installation id (uuid bytes) for the current
 * binding, as uuid text into buf.
 */
static void
replacement_id(const uint8 *stale, uint64 sysid, Oid dboid,
			   const char *incarnation, char *buf)
{
	static const char label[] = "outbox installation id v1";
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);
	uint8		hash[PG_SHA256_DIGEST_LENGTH];
	uint64		nsysid = pg_hton64(sysid);
	uint32		ndboid = pg_hton32((uint32) dboid);
	int			i;
	char	   *p = buf;

	if (ctx == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	if (pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) label, sizeof(label) - 1) < 0 ||
		pg_cryptohash_update(ctx, stale, UUID_LEN) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) &nsysid, sizeof(nsysid)) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) &ndboid, sizeof(ndboid)) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) incarnation, strlen(incarnation)) < 0 ||
		pg_cryptohash_final(ctx, hash, sizeof(hash)) < 0)
	{
		const char *err = pg_cryptohash_error(ctx);

		pg_cryptohash_free(ctx);
		elog(ERROR, "could not derive an installation id: %s", err);
	}
	pg_cryptohash_free(ctx);

	hash[6] = (hash[6] & 0x0f) | 0x80;	/* version 8: custom */
	hash[8] = (hash[8] & 0x3f) | 0x80;	/* RFC 9562 variant */
	for (i = 0; i < UUID_LEN; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		snprintf(p, 3, "%02x", hash[i]);
		p += 2;
	}
}

/* Attribute number of a live column of type typid, or InvalidAttrNumber. */
static AttrNumber
column(TupleDesc desc, const char *name, Oid typid)
{
	Oid			type;
	AttrNumber	attnum = outbox_find_column(desc, name, &type);

	return attnum != InvalidAttrNumber && type == typid ? attnum : InvalidAttrNumber;
}

/*
 * The id a row stands for, as uuid text into buf: its own if its binding
 * is the current one (or it has none), else the replacement.  Returns
 * whether the row's binding is stale.
 */
static bool
effective_id(HeapTuple tuple, TupleDesc desc, char *buf)
{
	bool		isnull;
	Datum		d = heap_getattr(tuple, 1, desc, &isnull);
	AttrNumber	a_sys = column(desc, "system_identifier", INT8OID);
	AttrNumber	a_db = column(desc, "database_oid", OIDOID);
	AttrNumber	a_inc = column(desc, "incarnation", TEXTOID);
	char	   *idtext;
	bool		stale = false;

	idtext = DatumGetCString(DirectFunctionCall1(uuid_out, d));
	strlcpy(buf, idtext, OUTBOX_INSTALLATION_ID_LEN + 1);
	pfree(idtext);

	if (a_sys != InvalidAttrNumber && a_db != InvalidAttrNumber &&
		a_inc != InvalidAttrNumber)
	{
		bool		n1,
					n2,
					n3;
		Datum		sys = heap_getattr(tuple, a_sys, desc, &n1);
		Datum		db = heap_getattr(tuple, a_db, desc, &n2);
		Datum		inc = heap_getattr(tuple, a_inc, desc, &n3);
		char		current[OUTBOX_INCARNATION_LEN + 1];

		outbox_incarnation(current);
		if (n1 || n2 || n3 ||
			(uint64) DatumGetInt64(sys) != GetSystemIdentifier() ||
			DatumGetObjectId(db) != MyDatabaseId)
			stale = true;
		else
		{
			char	   *row_inc = TextDatumGetCString(inc);

			stale = strcmp(row_inc, current) != 0;
			pfree(row_inc);
		}
		if (stale)
			replacement_id(DatumGetUUIDP(d)->data, GetSystemIdentifier(),
						   MyDatabaseId, current, buf);
	}
	return stale;
}

/*
 * Copy the installation id, as 36 characters of uuid text, into buf (of
 * OUTBOX_INSTALLATION_ID_LEN + 1 bytes).  Returns false when there is none
 * to be seen: no transaction, an extension older than 0.2.0, or no row.
 */
bool
outbox_installation_id(char *buf)
{
	Oid			nspid;
	Oid			relid;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tuple;
	bool		found = false;

	if (!IsTransactionState())
		return false;
	nspid = get_namespace_oid("outbox", true);
	if (!OidIsValid(nspid))
		return false;
	relid = get_relname_relid("installation", nspid);
	if (!OidIsValid(relid))
		return false;

	if (relid != cached_relid)
	{
		rel = table_open(relid, AccessShareLock);
		if (!RelationIsUsedAsCatalogTable(rel))
		{
			/* not ours (or tampered with): never read it under a historic snapshot */
			table_close(rel, AccessShareLock);
			return false;
		}
		/* the catalog snapshot is the historic one while decoding */
		scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
		tuple = systable_getnext(scan);
		if (HeapTupleIsValid(tuple))
		{
			bool		isnull;

			(void) heap_getattr(tuple, 1, RelationGetDescr(rel), &isnull);
			if (!isnull && TupleDescAttr(RelationGetDescr(rel), 0)->atttypid == UUIDOID)
			{
				(void) effective_id(tuple, RelationGetDescr(rel), cached_id);
				found = true;
			}
		}
		systable_endscan(scan);
		table_close(rel, AccessShareLock);
		if (!found)
			return false;
		cached_relid = relid;
	}

	memcpy(buf, cached_id, sizeof(cached_id));
	return true;
}

void
outbox_installation_rebind(void)
{
	Oid			nspid = get_namespace_oid(OUTBOX_SCHEMA_NAME, true);
	Oid			relid = InvalidOid;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tuple;
	char		stale_id[OUTBOX_INSTALLATION_ID_LEN + 1];
	char		new_id[OUTBOX_INSTALLATION_ID_LEN + 1];
	char		current[OUTBOX_INCARNATION_LEN + 1];
	bool		stale = false;
	bool		bound = false;

	if (OidIsValid(nspid))
		relid = get_relname_relid("installation", nspid);
	if (!OidIsValid(relid))
		return;
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(relid, RowExclusiveLock);
	if (RelationIsUsedAsCatalogTable(rel) &&
		column(RelationGetDescr(rel), "incarnation", TEXTOID) != InvalidAttrNumber)
	{
		bound = true;
		scan = systable_beginscan(rel, InvalidOid, false, GetActiveSnapshot(),
								  0, NULL);
		tuple = systable_getnext(scan);
		if (HeapTupleIsValid(tuple))
		{
			bool		isnull;

			(void) heap_getattr(tuple, 1, RelationGetDescr(rel), &isnull);
			if (!isnull)
			{
				char	   *idtext;

				stale = effective_id(tuple, RelationGetDescr(rel), new_id);
				idtext = DatumGetCString(DirectFunctionCall1(uuid_out,
														   heap_getattr(tuple, 1, RelationGetDescr(rel), &isnull)));
				strlcpy(stale_id, idtext, sizeof(stale_id));
				pfree(idtext);
			}
		}
		systable_endscan(scan);
	}
	table_close(rel, NoLock);

	if (bound && stale)
	{
		Oid			types[5] = {UUIDOID, INT8OID, OIDOID, TEXTOID, UUIDOID};
		Datum		values[5];

		outbox_incarnation(current);
		values[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(new_id));
		values[1] = Int64GetDatum((int64) GetSystemIdentifier());
		values[2] = ObjectIdGetDatum(MyDatabaseId);
		values[3] = CStringGetTextDatum(current);
		values[4] = DirectFunctionCall1(uuid_in, CStringGetDatum(stale_id));
		SPI_connect();
		if (SPI_execute_with_args("UPDATE outbox.installation "
								  "SET id = $1, system_identifier = $2, "
								  "database_oid = $3, incarnation = $4 "
								  "WHERE id = $5",
								  5, types, values, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not update outbox.installation");
		SPI_finish();
		ereport(LOG,
				(errmsg("outbox relay: installation id %s was drawn for another database, data directory or timeline; this database's events carry %s from now on",
						stale_id, new_id),
				 errdetail("This database was created from a template, or its data directory was copied, restored or promoted: the same id may be another database's. Events decoded here that were written before carry the new id too.")));
	}
	PopActiveSnapshot();
}
