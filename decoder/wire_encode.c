/*-------------------------------------------------------------------------
 *
 * wire_encode.c
 *	  Writing the `outbox` output plugin's binary frames (decoder/wire.h).
 *
 * The decoder writes frames with these functions, and so does the relay when
 * it publishes rows again after losing its slot (src/watermark.c).  Kept
 * apart from the parsing in wire.c, which needs nothing of the server.
 *
 * decoder/wire_encode.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "port/pg_bswap.h"
#include "utils/jsonb.h"

#include "event.h"
#include "wire.h"

static void append_binary_headers(StringInfo out, Jsonb *headers);

static void
append_uint16(StringInfo out, uint16 v)
{
	uint16		n = pg_hton16(v);

	appendBinaryStringInfo(out, (char *) &n, 2);
}

static void
append_uint32(StringInfo out, uint32 v)
{
	uint32		n = pg_hton32(v);

	appendBinaryStringInfo(out, (char *) &n, 4);
}

static void
append_uint64(StringInfo out, uint64 v)
{
	uint64		n = pg_hton64(v);

	appendBinaryStringInfo(out, (char *) &n, 8);
}

/* Overwrite a uint32 reserved earlier at byte offset pos. */
static void
put_uint32(StringInfo out, int pos, uint32 v)
{
	uint32		n = pg_hton32(v);

	memcpy(out->data + pos, &n, 4);
}

/*
 * Append an event frame for ev of transaction txn.  Used by the decoder and
 * by the relay's replay after slot loss (src/watermark.c).
 */
void
outbox_wire_append_event(StringInfo out, const OutboxWireTxn *txn,
						 const OutboxEvent *ev)
{
	uint16		flags = 0;
	int			pos;
	int			start PG_USED_FOR_ASSERTS_ONLY = out->len;

	if (ev->has_id)
		flags |= OUTBOX_WIRE_HAS_ID;
	if (ev->key != NULL)
		flags |= OUTBOX_WIRE_HAS_KEY;
	if (ev->payload != NULL || ev->payload_json != NULL)
		flags |= OUTBOX_WIRE_HAS_PAYLOAD;

	enlargeStringInfo(out, OUTBOX_WIRE_EVENT_FIXED + ev->topic_len +
					  (ev->key ? ev->key_len : 0));
	appendStringInfoCharMacro(out, OUTBOX_WIRE_EVENT);
	appendStringInfoCharMacro(out, OUTBOX_WIRE_VERSION);
	append_uint16(out, flags);
	append_uint64(out, (uint64) (ev->has_id ? ev->id : 0));
	append_uint64(out, txn->commit_lsn);
	append_uint64(out, txn->end_lsn);
	append_uint32(out, txn->xid);
	append_uint64(out, (uint64) txn->commit_time);
	append_uint32(out, (uint32) ev->attempts);
	Assert(out->len - start == OUTBOX_WIRE_OFF_TOPIC_LEN);

	append_uint32(out, (uint32) ev->topic_len);
	appendBinaryStringInfo(out, ev->topic, ev->topic_len);

	if (ev->key != NULL)
	{
		append_uint32(out, (uint32) ev->key_len);
		appendBinaryStringInfo(out, ev->key, ev->key_len);
	}
	else
		append_uint32(out, 0);

	/* payload_len is known only once the JSON text is written */
	pos = out->len;
	append_uint32(out, 0);
	if (ev->payload_json != NULL)
	{
		appendBinaryStringInfo(out, ev->payload_json, ev->payload_json_len);
		put_uint32(out, pos, (uint32) ev->payload_json_len);
	}
	else if (ev->payload != NULL)
	{
		outbox_append_compact_json(out, ev->payload);
		put_uint32(out, pos, (uint32) (out->len - pos - 4));
	}

	append_binary_headers(out, ev->headers);
}

/*
 * Headers as nheaders (name, value) pairs.  Rows and outbox.emit() validate
 * headers at write time, and the message callback checks them again, but a
 * value that is not a string is still skipped with a WARNING rather than
 * trusted.
 */
static void
append_binary_headers(StringInfo out, Jsonb *headers)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			count_pos = out->len;
	uint32		nheaders = 0;
	int			pair_start = -1;

	append_uint32(out, 0);
	if (headers == NULL)
		return;
	if (!JB_ROOT_IS_OBJECT(headers))
	{
		ereport(WARNING,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("skipping outbox headers that are not a JSON object")));
		return;
	}

	it = JsonbIteratorInit(&headers->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			pair_start = out->len;
			append_uint32(out, (uint32) v.val.string.len);
			appendBinaryStringInfo(out, v.val.string.val, v.val.string.len);
		}
		else if (tok == WJB_VALUE)
		{
			if (v.type == jbvString)
			{
				append_uint32(out, (uint32) v.val.string.len);
				appendBinaryStringInfo(out, v.val.string.val, v.val.string.len);
				nheaders++;
			}
			else
			{
				/* drop the name written above */
				ereport(WARNING,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("skipping outbox header \"%.*s\" whose value is not a string",
								(int) (out->len - pair_start - 4),
								out->data + pair_start + 4)));
				out->len = pair_start;
				out->data[out->len] = '\0';
			}
		}
	}
	put_uint32(out, count_pos, nheaders);
}

/* Append the commit frame closing txn, which had nevents event frames. */
void
outbox_wire_append_commit(StringInfo out, const OutboxWireTxn *txn,
						  uint32 nevents)
{
	enlargeStringInfo(out, OUTBOX_WIRE_COMMIT_SIZE);
	appendStringInfoCharMacro(out, OUTBOX_WIRE_COMMIT);
	appendStringInfoCharMacro(out, OUTBOX_WIRE_VERSION);
	append_uint16(out, 0);
	append_uint64(out, txn->commit_lsn);
	append_uint64(out, txn->end_lsn);
	append_uint32(out, txn->xid);
	append_uint64(out, (uint64) txn->commit_time);
	append_uint32(out, nevents);
}
