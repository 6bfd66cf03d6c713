/*-------------------------------------------------------------------------
 *
 * wire.h
 *	  The `outbox` output plugin's binary format (option format 'binary').
 *
 * The relay decodes in-process with format 'binary'; SQL clients may read it
 * with pg_logical_slot_get_binary_changes(..., 'format', 'binary').  Every
 * output row is one frame.  All integers are in network byte order.
 *
 * Event frame, one per committed event, in commit order:
 *
 *	  byte    'E'              frame type
 *	  byte    1                OUTBOX_WIRE_VERSION
 *	  uint16  flags            OUTBOX_WIRE_HAS_ID | _HAS_KEY | _HAS_PAYLOAD
 *	  int64   id               messages.id, 0 without OUTBOX_WIRE_HAS_ID
 *	  uint64  commit_lsn       LSN of the transaction's commit record
 *	  uint64  end_lsn          LSN just past the commit record
 *	  uint32  xid              top-level transaction id
 *	  int64   commit_time      TimestampTz (microseconds since 2000-01-01)
 *	  int32   attempts         publication number (1 = first publication)
 *	  uint32  topic_len        then topic_len bytes of topic
 *	  uint32  key_len          then key_len bytes of key (0 and no bytes
 *	                           without HAS_KEY)
 *	  uint32  payload_len      then payload_len bytes of compact JSON text
 *	                           (0 and no bytes without HAS_PAYLOAD: a
 *	                           tombstone)
 *	  uint32  nheaders         then nheaders times:
 *	                             uint32 name_len, name bytes,
 *	                             uint32 value_len, value bytes
 *
 * Each length is immediately followed by its bytes, so the fixed fields sit
 * at byte offsets 0 (type), 1 (version), 2 (flags), 4 (id), 12
 * (commit_lsn), 20 (end_lsn), 28 (xid), 32 (commit_time), 40 (attempts) and
 * 44 (topic_len), and the rest is read in order.  Strings are not
 * NUL-terminated and are in the database encoding, as stored; headers
 * appear in jsonb's key order.  The frame's
 * length is the output row's length: a reader must check that the lengths
 * add up to it and must not read past it.
 *
 * Commit frame, after the last event of a transaction that had events:
 *
 *	  byte    'C'
 *	  byte    1
 *	  uint16  0
 *	  uint64  commit_lsn
 *	  uint64  end_lsn
 *	  uint32  xid
 *	  int64   commit_time
 *	  uint32  nevents          number of event frames of the transaction
 *
 * The commit frame's fields sit at offsets 0, 1, 2, 4, 12, 20, 24 and 32;
 * it is OUTBOX_WIRE_COMMIT_SIZE (36) bytes long.  A transaction without
 * events produces no frames at all.
 *
 * A reader must reject a frame whose version it does not know.
 *
 * decoder/wire.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_WIRE_H
#define OUTBOX_WIRE_H

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "lib/stringinfo.h"

#define OUTBOX_WIRE_VERSION		1

#define OUTBOX_WIRE_EVENT		'E'
#define OUTBOX_WIRE_COMMIT		'C'

#define OUTBOX_WIRE_HAS_ID		0x0001
#define OUTBOX_WIRE_HAS_KEY		0x0002
#define OUTBOX_WIRE_HAS_PAYLOAD	0x0004

/*
 * Total size of an event frame's fixed-size fields (everything but the
 * topic, key, payload and header bytes): its minimum length.
 */
#define OUTBOX_WIRE_EVENT_FIXED	(1 + 1 + 2 + 8 + 8 + 8 + 4 + 8 + 4 + 4 + 4 + 4 + 4)
/* Size of a commit frame. */
#define OUTBOX_WIRE_COMMIT_SIZE	(1 + 1 + 2 + 8 + 8 + 4 + 8 + 4)

/* Offsets of an event frame's fixed fields (see above). */
#define OUTBOX_WIRE_OFF_TYPE		0
#define OUTBOX_WIRE_OFF_VERSION		1
#define OUTBOX_WIRE_OFF_FLAGS		2
#define OUTBOX_WIRE_OFF_ID			4
#define OUTBOX_WIRE_OFF_COMMIT_LSN	12
#define OUTBOX_WIRE_OFF_END_LSN		20
#define OUTBOX_WIRE_OFF_XID			28
#define OUTBOX_WIRE_OFF_COMMIT_TIME	32
#define OUTBOX_WIRE_OFF_ATTEMPTS	40
#define OUTBOX_WIRE_OFF_TOPIC_LEN	44

/* Offsets of a commit frame's fields. */
#define OUTBOX_WIRE_C_OFF_COMMIT_LSN	4
#define OUTBOX_WIRE_C_OFF_END_LSN		12
#define OUTBOX_WIRE_C_OFF_XID			20
#define OUTBOX_WIRE_C_OFF_COMMIT_TIME	24
#define OUTBOX_WIRE_C_OFF_NEVENTS		32

StaticAssertDecl(OUTBOX_WIRE_OFF_TOPIC_LEN + 4 * 4 == OUTBOX_WIRE_EVENT_FIXED,
				 "event frame offsets add up");
StaticAssertDecl(OUTBOX_WIRE_C_OFF_NEVENTS + 4 == OUTBOX_WIRE_COMMIT_SIZE,
				 "commit frame offsets add up");

/* An event frame, parsed; pointers borrow the frame. */
typedef struct OutboxWireEvent
{
	bool		has_id;			/* id is a messages.id */
	int64		id;				/* message id */
	XLogRecPtr	commit_lsn;		/* commit record's LSN */
	XLogRecPtr	end_lsn;		/* LSN past the commit record */
	uint32		xid;			/* top-level xid */
	TimestampTz commit_time;	/* commit timestamp */
	int32		attempts;		/* publication number */
	const char *topic;			/* topic bytes */
	uint32		topic_len;		/* topic length */
	const char *key;			/* key bytes, NULL for a null key */
	uint32		key_len;		/* key length */
	const char *payload;		/* compact JSON, NULL for a tombstone */
	uint32		payload_len;	/* payload length */
	uint32		nheaders;		/* number of headers */
	const char *headers;		/* first header's name_len field */
} OutboxWireEvent;

/* The transaction an encoded frame belongs to. */
typedef struct OutboxWireTxn
{
	XLogRecPtr	commit_lsn;		/* commit record's LSN */
	XLogRecPtr	end_lsn;		/* LSN past the commit record */
	uint32		xid;			/* top-level xid */
	TimestampTz commit_time;	/* commit timestamp */
} OutboxWireTxn;

struct OutboxEvent;

/* Encode an event (src/event.h) or a commit, as described above. */
extern void outbox_wire_append_event(StringInfo out, const OutboxWireTxn *txn,
									 const struct OutboxEvent *ev);
extern void outbox_wire_append_commit(StringInfo out, const OutboxWireTxn *txn,
									  uint32 nevents);

/* Parse a frame; false (with *problem set) if it is malformed. */
extern bool outbox_wire_parse_event(const char *frame, Size len,
									OutboxWireEvent *ev, const char **problem);
extern bool outbox_wire_parse_commit(const char *frame, Size len,
									 XLogRecPtr *commit_lsn, XLogRecPtr *end_lsn,
									 uint32 *nevents, const char **problem);
/* Iterate over the headers of a parsed event. */
extern bool outbox_wire_next_header(const char **cursor, const char **name,
									uint32 *name_len, const char **value,
									uint32 *value_len);

#endif							/* OUTBOX_WIRE_H */
