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
 * The table's OID changes with every CREATE EXTENSION, so the value is
 * cached per OID and the table is read only when the OID changes.
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
#include "catalog/namespace.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/uuid.h"

#include "outbox.h"

/* The last installation read: its table's OID and its id as text. */
static Oid	cached_relid = InvalidOid;
static char cached_id[OUTBOX_INSTALLATION_ID_LEN + 1];

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
			Datum		d = heap_getattr(tuple, 1, RelationGetDescr(rel), &isnull);

			if (!isnull && TupleDescAttr(RelationGetDescr(rel), 0)->atttypid == UUIDOID)
			{
				char	   *text = DatumGetCString(DirectFunctionCall1(uuid_out, d));

				strlcpy(cached_id, text, sizeof(cached_id));
				pfree(text);
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
