/*-------------------------------------------------------------------------
 *
 * msgauth.c
 *	  Sign and verify the logical messages the extension writes.
 *
 * See msgauth.h for why.  The key is read from outbox._message_key with
 * the catalog snapshot: in an ordinary transaction that is the current
 * state, and inside logical decoding it is the historic snapshot of the
 * change being decoded (the table is a user_catalog_table, so decoding may
 * read it).  It is cached per backend and forgotten whenever a pg_class
 * entry changes, which covers DROP and CREATE EXTENSION giving the table a
 * new key, and whenever the table's relcache entry is invalidated, which
 * outbox._make_message_key() does when it writes a key.  Reading it needs
 * no privilege: this is the extension's own C code (systable scans are not
 * subject to row-level security, which hides the row from every SQL role
 * but the owner, superusers and BYPASSRLS roles).
 *
 * The key row is written by outbox_make_message_key() with
 * HEAP_INSERT_NO_LOGICAL: its WAL record carries the tuple for physical
 * replay (standbys, base backups) but none for logical decoding, so no
 * decoding client ever sees the key.
 *
 * Two forms of the code: since 0.5.0 it binds the full 64-bit transaction
 * id (epoch and xid), so a captured message cannot be replayed after xid
 * wraparound; 0.4.0 and earlier bound the 32-bit xid.  Which form applies
 * is a property of the key table: a table with column xid_bits = 64 (added
 * by the 0.5.0 script, which also writes a new key) signs and checks the
 * full id, one without it the 32-bit id.  The signer reads the table under
 * its catalog snapshot, holding AccessShareLock on it to the end of the
 * transaction so that the update cannot commit between reading the key and
 * writing the message; the decoder reads it under the historic snapshot of
 * the message, so a message written before the update is checked with the
 * old key in the old form, and anything written after it only with the new
 * key in the new form.
 *
 * src/msgauth.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "common/hmac.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "compat.h"
#include "eos.h"
#include "msgauth.h"
#include "outbox.h"

/* The column of the key table that says which code form applies (0.5.0). */
#define OUTBOX_KEY_XID_BITS_COLUMN	"xid_bits"

/* The cached key; see the file header. */
static bool key_valid = false;	/* has the lookup run since the last inval? */
static bool key_present = false;	/* did it find a key? */
static uint8 message_key[OUTBOX_MESSAGE_KEY_LEN];	/* the key, if present */
static bool key_full_xid = false;	/* does the code bind the 64-bit id? */
static Oid	key_relid = InvalidOid; /* the key table found by the lookup */
static bool key_callback_registered = false;

static void
key_inval_cb(Datum arg, int cacheid, uint32 hashvalue)
{
	key_valid = false;
}

static void
key_relcache_cb(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || relid == key_relid)
		key_valid = false;
}

/* The OID of outbox._message_key under the catalog snapshot, or InvalidOid. */
static Oid
lookup_key_relid(void)
{
	Oid			nspid = get_namespace_oid(OUTBOX_SCHEMA_NAME, true);

	if (!OidIsValid(nspid))
		return InvalidOid;
	return get_relname_relid(OUTBOX_KEY_TABLE_NAME, nspid);
}

/* The attribute number of column xid_bits of the key table, or 0. */
static AttrNumber
xid_bits_attnum(TupleDesc desc)
{
	int			i;

	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped &&
			strcmp(NameStr(att->attname), OUTBOX_KEY_XID_BITS_COLUMN) == 0)
			return att->attnum;
	}
	return 0;
}

/*
 * The snapshot to read the key table with: inside logical decoding the
 * historic one (NULL: systable_beginscan() takes it), else the latest, so
 * that a key committed before the caller's lock was granted is seen.
 */
static Snapshot
key_snapshot(void)
{
	if (HistoricSnapshotActive())
		return NULL;
	return RegisterSnapshot(GetLatestSnapshot());
}

static void
register_key_callbacks(void)
{
	if (!key_callback_registered)
	{
		CacheRegisterSyscacheCallback(RELNAMENSP, key_inval_cb, (Datum) 0);
		CacheRegisterRelcacheCallback(key_relcache_cb, (Datum) 0);
		key_callback_registered = true;
	}
}

/*
 * Load the key into message_key and its form into key_full_xid; false when
 * there is none.  keep_lock: leave the table locked (AccessShareLock) to the
 * end of the transaction.
 */
static bool
load_message_key(bool keep_lock)
{
	register_key_callbacks();

	if (!key_valid)
	{
		Oid			relid = lookup_key_relid();

		key_present = false;
		key_full_xid = false;
		key_relid = relid;
		if (OidIsValid(relid))
		{
			Relation	rel = table_open(relid, AccessShareLock);
			TupleDesc	desc = RelationGetDescr(rel);
			AttrNumber	bits_att = xid_bits_attnum(desc);
			Snapshot	snap = key_snapshot();
			SysScanDesc scan = systable_beginscan(rel, InvalidOid, false,
												  snap, 0, NULL);
			HeapTuple	tuple = systable_getnext(scan);

			if (HeapTupleIsValid(tuple))
			{
				bool		isnull;
				Datum		d = heap_getattr(tuple, 1, desc, &isnull);

				if (!isnull)
				{
					bytea	   *b = DatumGetByteaPP(d);

					if (VARSIZE_ANY_EXHDR(b) == OUTBOX_MESSAGE_KEY_LEN)
					{
						memcpy(message_key, VARDATA_ANY(b), OUTBOX_MESSAGE_KEY_LEN);
						key_present = true;
					}
				}
				if (bits_att != 0)
				{
					d = heap_getattr(tuple, bits_att, desc, &isnull);
					key_full_xid = !isnull && DatumGetInt16(d) == 64;
				}
			}
			systable_endscan(scan);
			if (snap != NULL)
				UnregisterSnapshot(snap);
			table_close(rel, keep_lock ? NoLock : AccessShareLock);
		}
		key_valid = true;
	}
	return key_present;
}

/*
 * HMAC-SHA-256 under message_key of the transaction id in network order
 * (all 64 bits when key_full_xid, else the low 32) followed by data.
 */
static void
compute_mac(FullTransactionId fxid, const char *data, Size len, uint8 *mac)
{
	pg_hmac_ctx *ctx = pg_hmac_create(PG_SHA256);
	uint64		nfxid = pg_hton64(U64FromFullTransactionId(fxid));
	uint32		nxid = pg_hton32(XidFromFullTransactionId(fxid));
	const uint8 *id = key_full_xid ? (const uint8 *) &nfxid : (const uint8 *) &nxid;
	size_t		idlen = key_full_xid ? sizeof(nfxid) : sizeof(nxid);

	if (ctx == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	if (pg_hmac_init(ctx, message_key, OUTBOX_MESSAGE_KEY_LEN) < 0 ||
		pg_hmac_update(ctx, id, idlen) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) data, len) < 0 ||
		pg_hmac_final(ctx, mac, OUTBOX_MESSAGE_MAC_LEN) < 0)
	{
		const char *err = pg_hmac_error(ctx);

		pg_hmac_free(ctx);
		elog(ERROR, "could not compute an outbox message authentication code: %s",
			 err);
	}
	pg_hmac_free(ctx);
}

void
outbox_message_sign(StringInfo msg)
{
	uint8		mac[OUTBOX_MESSAGE_MAC_LEN];
	Oid			relid;

	/*
	 * Lock the key table to the end of the transaction before using the
	 * cached key: taking the lock processes pending invalidations, so a key
	 * or form changed by a committed update is seen, and an update waits
	 * for this transaction (see the file header).  A relid changed under us
	 * (the extension recreated) is locked again.
	 */
	register_key_callbacks();
	relid = key_valid ? key_relid : lookup_key_relid();
	if (OidIsValid(relid))
		LockRelationOid(relid, AccessShareLock);
	if (!load_message_key(true))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the outbox extension has no message key"),
				 errdetail("Table %s.%s is missing or has no valid key row.",
						   OUTBOX_SCHEMA_NAME, OUTBOX_KEY_TABLE_NAME),
				 errhint("Recreate the extension, or run ALTER EXTENSION outbox UPDATE.")));
	if (key_relid != relid)
		LockRelationOid(key_relid, AccessShareLock);
	compute_mac(GetTopFullTransactionId(), msg->data, msg->len, mac);
	appendBinaryStringInfo(msg, (const char *) mac, OUTBOX_MESSAGE_MAC_LEN);
}

bool
outbox_message_authentic(TransactionId xid, const char *data, Size len,
						 Size *content_len, const char **problem)
{
	uint8		mac[OUTBOX_MESSAGE_MAC_LEN];
	const uint8 *given;
	uint8		diff = 0;
	int			i;

	if (len < OUTBOX_MESSAGE_MAC_LEN)
	{
		*problem = _("The message is too short to carry an authentication code.");
		return false;
	}
	if (!load_message_key(false))
	{
		*problem = _("The database has no outbox message key to check it with.");
		return false;
	}
	*content_len = len - OUTBOX_MESSAGE_MAC_LEN;

	/*
	 * A decoded xid is within 2^31 of the next one (the slot's catalog_xmin
	 * holds back wraparound), so the epoch is the one that puts it there.
	 */
	compute_mac(FullTransactionIdFromU64(outbox_eos_widen_xid(ReadNextFullTransactionId(),
															  xid)),
				data, *content_len, mac);

	/* Compare in constant time. */
	given = (const uint8 *) data + *content_len;
	for (i = 0; i < OUTBOX_MESSAGE_MAC_LEN; i++)
		diff |= mac[i] ^ given[i];
	if (diff != 0)
	{
		*problem = _("Its authentication code does not match: it was not written by outbox.emit(), outbox.redeliver() or outbox.redrive() in this transaction.");
		return false;
	}
	return true;
}

/*
 * outbox._make_message_key() RETURNS void
 *
 * Write a new random key into the empty key table, with column xid_bits
 * (when the table has it) set to 64.  The row is inserted with
 * HEAP_INSERT_NO_LOGICAL so that logical decoding never sees it (see the
 * file header); the table has no indexes, constraints are met by
 * construction.  Only the table's owner may call it (EXECUTE is revoked
 * from PUBLIC too), and only when no key is left, so it cannot replace a
 * key behind the owner's back: rotating a key is DELETE, then this.
 */
PG_FUNCTION_INFO_V1(outbox_make_message_key);

Datum
outbox_make_message_key(PG_FUNCTION_ARGS)
{
	Oid			relid = lookup_key_relid();
	Relation	rel;
	TupleDesc	desc;
	SysScanDesc scan;
	Snapshot	snap;
	bool		exists;
	uint8		key[OUTBOX_MESSAGE_KEY_LEN];
	bytea	   *kb;
	Datum	   *values;
	bool	   *nulls;
	AttrNumber	bits_att;
	HeapTuple	tuple;
	int			i;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table %s.%s does not exist",
						OUTBOX_SCHEMA_NAME, OUTBOX_KEY_TABLE_NAME)));
	rel = table_open(relid, ShareRowExclusiveLock);
	if (!outbox_rel_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE,
					   RelationGetRelationName(rel));
	if (RelationGetForm(rel)->relhasindex || rel->rd_rel->relkind != RELKIND_RELATION)
		elog(ERROR, "table %s.%s has an unexpected shape",
			 OUTBOX_SCHEMA_NAME, OUTBOX_KEY_TABLE_NAME);

	snap = key_snapshot();
	scan = systable_beginscan(rel, InvalidOid, false, snap, 0, NULL);
	exists = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	if (snap != NULL)
		UnregisterSnapshot(snap);
	if (exists)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the outbox message key already exists"),
				 errhint("To replace it, delete it from %s.%s first.",
						 OUTBOX_SCHEMA_NAME, OUTBOX_KEY_TABLE_NAME)));

	if (!pg_strong_random(key, sizeof(key)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random outbox message key")));

	desc = RelationGetDescr(rel);
	values = palloc0(sizeof(Datum) * desc->natts);
	nulls = palloc(sizeof(bool) * desc->natts);
	for (i = 0; i < desc->natts; i++)
		nulls[i] = true;
	kb = palloc(VARHDRSZ + sizeof(key));
	SET_VARSIZE(kb, VARHDRSZ + sizeof(key));
	memcpy(VARDATA(kb), key, sizeof(key));
	explicit_bzero(key, sizeof(key));
	values[0] = PointerGetDatum(kb);
	nulls[0] = false;
	bits_att = xid_bits_attnum(desc);
	if (bits_att != 0)
	{
		values[bits_att - 1] = Int16GetDatum(64);
		nulls[bits_att - 1] = false;
	}
	tuple = heap_form_tuple(desc, values, nulls);
	heap_insert(rel, tuple, GetCurrentCommandId(true), HEAP_INSERT_NO_LOGICAL,
				NULL);

	/* every backend and decoder forgets the key it cached */
	CacheInvalidateRelcache(rel);
	table_close(rel, NoLock);

	explicit_bzero(VARDATA(kb), OUTBOX_MESSAGE_KEY_LEN);
	heap_freetuple(tuple);
	PG_RETURN_VOID();
}

/*
 * A key of its own for another purpose (label), derived from the message
 * key: HMAC-SHA-256 of the label under it, into out
 * (OUTBOX_MESSAGE_KEY_LEN bytes).  False when there is no message key.
 */
bool
outbox_message_key_derive(const char *label, uint8 *out)
{
	pg_hmac_ctx *ctx;

	if (!load_message_key(false))
		return false;
	ctx = pg_hmac_create(PG_SHA256);
	if (ctx == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	if (pg_hmac_init(ctx, message_key, OUTBOX_MESSAGE_KEY_LEN) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) label, strlen(label)) < 0 ||
		pg_hmac_final(ctx, out, OUTBOX_MESSAGE_KEY_LEN) < 0)
	{
		const char *err = pg_hmac_error(ctx);

		pg_hmac_free(ctx);
		elog(ERROR, "could not derive an outbox key: %s", err);
	}
	pg_hmac_free(ctx);
	return true;
}
