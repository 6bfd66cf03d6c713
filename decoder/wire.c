/*-------------------------------------------------------------------------
 *
 * wire.c
 *	  Reading the `outbox` output plugin's binary frames (decoder/wire.h).
 *
 * The decoder writes frames (wire_encode.c); the relay reads them with
 * these functions.  Every fixed field is read at its named offset, and every
 * length is checked against the frame's length before its bytes are used.
 *
 * decoder/wire.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "port/pg_bswap.h"

#include "wire.h"

static inline uint16
get16(const char *p)
{
	uint16		v;

	memcpy(&v, p, 2);
	return pg_ntoh16(v);
}

static inline uint32
get32(const char *p)
{
	uint32		v;

	memcpy(&v, p, 4);
	return pg_ntoh32(v);
}

static inline uint64
get64(const char *p)
{
	uint64		v;

	memcpy(&v, p, 8);
	return pg_ntoh64(v);
}

bool
outbox_wire_parse_event(const char *frame, Size len, OutboxWireEvent *ev,
						const char **problem)
{
	const char *p = frame;
	const char *end = frame + len;
	uint16		flags;
	uint32		n;

	/* the fixed part: everything up to and including the topic length */
	if (len < OUTBOX_WIRE_EVENT_FIXED || frame[0] != OUTBOX_WIRE_EVENT)
	{
		*problem = "not an event frame";
		return false;
	}
	if (frame[1] != OUTBOX_WIRE_VERSION)
	{
		*problem = "unknown frame version";
		return false;
	}
	flags = get16(frame + OUTBOX_WIRE_OFF_FLAGS);
	ev->has_id = (flags & OUTBOX_WIRE_HAS_ID) != 0;
	ev->id = (int64) get64(frame + OUTBOX_WIRE_OFF_ID);
	ev->commit_lsn = get64(frame + OUTBOX_WIRE_OFF_COMMIT_LSN);
	ev->end_lsn = get64(frame + OUTBOX_WIRE_OFF_END_LSN);
	ev->xid = get32(frame + OUTBOX_WIRE_OFF_XID);
	ev->commit_time = (TimestampTz) get64(frame + OUTBOX_WIRE_OFF_COMMIT_TIME);
	ev->attempts = (int32) get32(frame + OUTBOX_WIRE_OFF_ATTEMPTS);
	p = frame + OUTBOX_WIRE_OFF_TOPIC_LEN;

	/* length-prefixed fields, each length followed by its bytes */
	ev->topic_len = get32(p);
	p += 4;
	if ((Size) (end - p) < (Size) ev->topic_len + 4)
		goto bad;
	ev->topic = p;
	p += ev->topic_len;

	ev->key_len = get32(p);
	p += 4;
	if ((Size) (end - p) < (Size) ev->key_len + 4)
		goto bad;
	ev->key = (flags & OUTBOX_WIRE_HAS_KEY) ? p : NULL;
	p += ev->key_len;

	ev->payload_len = get32(p);
	p += 4;
	if ((Size) (end - p) < (Size) ev->payload_len + 4)
		goto bad;
	ev->payload = (flags & OUTBOX_WIRE_HAS_PAYLOAD) ? p : NULL;
	p += ev->payload_len;

	ev->nheaders = get32(p);
	p += 4;

	/* Check the header block's extent once; iteration trusts it. */
	ev->headers = p;
	for (n = 0; n < ev->nheaders; n++)
	{
		uint32		l;

		if ((Size) (end - p) < 4)
			goto bad;
		l = get32(p);
		p += 4;
		if ((Size) (end - p) < l + 4)
			goto bad;
		p += l;
		l = get32(p);
		p += 4;
		if ((Size) (end - p) < l)
			goto bad;
		p += l;
	}
	if (p != end)
		goto bad;
	return true;

bad:
	*problem = "truncated or corrupt event frame";
	return false;
}

bool
outbox_wire_next_header(const char **cursor, const char **name,
						uint32 *name_len, const char **value,
						uint32 *value_len)
{
	const char *p = *cursor;

	*name_len = get32(p);
	*name = p + 4;
	p += 4 + *name_len;
	*value_len = get32(p);
	*value = p + 4;
	p += 4 + *value_len;
	*cursor = p;
	return true;
}

bool
outbox_wire_parse_commit(const char *frame, Size len, XLogRecPtr *commit_lsn,
						 XLogRecPtr *end_lsn, uint32 *nevents,
						 const char **problem)
{
	if (len != OUTBOX_WIRE_COMMIT_SIZE || frame[0] != OUTBOX_WIRE_COMMIT)
	{
		*problem = "not a commit frame";
		return false;
	}
	if (frame[1] != OUTBOX_WIRE_VERSION)
	{
		*problem = "unknown frame version";
		return false;
	}
	*commit_lsn = get64(frame + OUTBOX_WIRE_C_OFF_COMMIT_LSN);
	*end_lsn = get64(frame + OUTBOX_WIRE_C_OFF_END_LSN);
	*nevents = get32(frame + OUTBOX_WIRE_C_OFF_NEVENTS);
	return true;
}
