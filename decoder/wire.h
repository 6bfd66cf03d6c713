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

#endif							/* OUTBOX_WIRE_H */
