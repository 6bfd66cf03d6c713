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
 * new key.  Reading it needs no privilege: this is the extension's own C
 * code, and no SQL role other than the owner can SELECT the table.
 *
 * src/msgauth.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "common/hmac.h"
#include "port/pg_bswap.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "msgauth.h"
#include "outbox.h"

/* The cached key; see the file header. */
static bool key_valid = false;	/* has the lookup run since the last inval? */
static bool key_present = false;	/* did it find a key? */
static uint8 message_key[OUTBOX_MESSAGE_KEY_LEN];	/* the key, if present */
static bool key_callback_registered = false;

static void
key_inval_cb(Datum arg, int cacheid, uint32 hashvalue)
{
	key_valid = false;
}

/* Load the key into message_key; false when there is none. */
static bool
load_message_key(void)
{
	if (!key_callback_registered)
	{
		CacheRegisterSyscacheCallback(RELNAMENSP, key_inval_cb, (Datum) 0);
		key_callback_registered = true;
	}

	if (!key_valid)
	{
		Oid			nspid = get_namespace_oid(OUTBOX_SCHEMA_NAME, true);
		Oid			relid = InvalidOid;

		key_present = false;
		if (OidIsValid(nspid))
			relid = get_relname_relid(OUTBOX_KEY_TABLE_NAME, nspid);
		if (OidIsValid(relid))
		{
			Relation	rel = table_open(relid, AccessShareLock);
			SysScanDesc scan = systable_beginscan(rel, InvalidOid, false,
												  NULL, 0, NULL);
			HeapTuple	tuple = systable_getnext(scan);

			if (HeapTupleIsValid(tuple))
			{
				bool		isnull;
				Datum		d = heap_getattr(tuple, 1, RelationGetDescr(rel),
											 &isnull);

				if (!isnull)
				{
					bytea	   *b = DatumGetByteaPP(d);

					if (VARSIZE_ANY_EXHDR(b) == OUTBOX_MESSAGE_KEY_LEN)
					{
						memcpy(message_key, VARDATA_ANY(b), OUTBOX_MESSAGE_KEY_LEN);
						key_present = true;
					}
				}
			}
			systable_endscan(scan);
			table_close(rel, AccessShareLock);
		}
		key_valid = true;
	}
	return key_present;
}

/* HMAC-SHA-256 of (xid in network order, data) under message_key. */
static void
compute_mac(TransactionId xid, const char *data, Size len, uint8 *mac)
{
	pg_hmac_ctx *ctx = pg_hmac_create(PG_SHA256);
	uint32		nxid = pg_hton32((uint32) xid);

	if (ctx == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	if (pg_hmac_init(ctx, message_key, OUTBOX_MESSAGE_KEY_LEN) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) &nxid, sizeof(nxid)) < 0 ||
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

	if (!load_message_key())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the outbox extension has no message key"),
				 errdetail("Table %s.%s is missing or has no valid key row.",
						   OUTBOX_SCHEMA_NAME, OUTBOX_KEY_TABLE_NAME),
				 errhint("Recreate the extension, or run ALTER EXTENSION outbox UPDATE.")));
	compute_mac(GetTopTransactionId(), msg->data, msg->len, mac);
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
	if (!load_message_key())
	{
		*problem = _("The database has no outbox message key to check it with.");
		return false;
	}
	*content_len = len - OUTBOX_MESSAGE_MAC_LEN;
	compute_mac(xid, data, *content_len, mac);

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

bool
outbox_message_key_derive(const char *label, uint8 *out)
{
	pg_hmac_ctx *ctx;

	if (!load_message_key())
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
