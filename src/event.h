/*-------------------------------------------------------------------------
 *
 * event.h
 *	  The rules of an outbox event, shared by the SQL API and the decoder.
 *
 * An event is (id, topic, key, payload, headers).  It is written either as a
 * row of outbox.messages or, by outbox.emit(), as a transactional logical
 * message with prefix "outbox" whose content is encoded as described below.
 *
 * Emitted message content, version 2 (all integers in network byte order):
 *
 *	  byte    'O'            magic
 *	  byte    2              version
 *	  int64   id             message id, or 0 when has_id is false
 *	  byte    has_id         1 for a redelivery/redrive of a table row, else 0
 *	  int32   attempts       publication number (1 for a first publication)
 *	  int32   topic_len      then topic_len bytes of topic (never null)
 *	  int32   key_len        -1 for a null key, else key_len bytes of key
 *	  int32   payload_len    -1 for a null payload (tombstone), else the
 *	                         bytes of the jsonb datum without varlena header
 *	  int32   headers_len    -1 for null headers, else jsonb bytes as above
 *	  byte[32] mac           HMAC-SHA-256 of the writing transaction's
 *	                         top-level xid and all bytes above (msgauth.h)
 *
 * Only messages with a valid code are events: anybody can call
 * pg_logical_emit_message(), so a message the extension did not write is
 * skipped, whatever it contains.  Version 1 (0.1.0) had no code and is
 * refused too.
 *
 * src/event.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_EVENT_H
#define OUTBOX_EVENT_H

#include "postgres.h"
#include "lib/stringinfo.h"
#include "utils/jsonb.h"

/* Logical message prefixes. */
#define OUTBOX_MESSAGE_PREFIX	"outbox"

#define OUTBOX_MESSAGE_MAGIC	'O'
#define OUTBOX_MESSAGE_VERSION	2

/* Kafka's limit on topic name length. */
#define OUTBOX_TOPIC_MAX_LEN	249

/*
 * What a Kafka record adds to an event's key, value and header bytes, at
 * most, when it travels alone in a record batch (Kafka's message format v2):
 * the batch header; the record's length, attributes, timestamp and offset
 * deltas, key and value lengths and header count (varints at their largest);
 * per header, its name and value lengths; and the relay's own headers with
 * their largest values: outbox-id (int8), outbox-lsn ("XXXXXXXX/XXXXXXXX"),
 * outbox-xid (uint32) and outbox-db (a database name).
 */
#define OUTBOX_KAFKA_BATCH_OVERHEAD		61
#define OUTBOX_KAFKA_RECORD_OVERHEAD	(5 + 1 + 10 + 5 + 5 + 5 + 5)
#define OUTBOX_KAFKA_HEADER_OVERHEAD	(5 + 5)
#define OUTBOX_KAFKA_RELAY_HEADERS \
	(4 * OUTBOX_KAFKA_HEADER_OVERHEAD + \
	 (9 + 20) + (10 + 17) + (10 + 10) + (9 + NAMEDATALEN - 1))
#define OUTBOX_KAFKA_FIXED_OVERHEAD \
	(OUTBOX_KAFKA_BATCH_OVERHEAD + OUTBOX_KAFKA_RECORD_OVERHEAD + \
	 OUTBOX_KAFKA_RELAY_HEADERS)

/* One event, as read from a row or an emitted message.  Pointers borrow. */
typedef struct OutboxEvent
{
	bool		has_id;			/* does id carry a messages.id? */
	int64		id;				/* messages.id when has_id */
	int32		attempts;		/* publication number, >= 1 */
	const char *topic;			/* topic bytes, not NUL-terminated */
	int			topic_len;		/* length of topic */
	const char *key;			/* key bytes, or NULL for a null key */
	int			key_len;		/* length of key */
	Jsonb	   *payload;		/* payload, or NULL for a tombstone */
	Jsonb	   *headers;		/* headers object, or NULL */
	const char *payload_json;	/* payload as JSON text, used instead of
								 * payload when not NULL (adopted tables) */
	int			payload_json_len;	/* length of payload_json */
} OutboxEvent;

/*
 * Validation.  Each ereport()s ERROR with errcode, errdetail and errhint when
 * the value breaks the rule; the *_problem variants return a translated
 * reason instead (NULL when valid), for callers that must not throw.
 */
extern const char *outbox_topic_problem(const char *topic, int len);
extern void outbox_check_topic(const char *topic, int len);
extern const char *outbox_topic_reserved(const char *topic);
extern void outbox_check_topic_not_reserved(const char *topic, int len);
extern const char *outbox_headers_problem(Jsonb *headers);
extern void outbox_check_headers(Jsonb *headers);
extern Size outbox_event_size(const OutboxEvent *ev);
extern void outbox_check_event(const OutboxEvent *ev);

/* Compact JSON text (no insignificant white space) of a jsonb value. */
extern void outbox_append_compact_json(StringInfo out, Jsonb *jb);
/* Its length in bytes, without building it. */
extern Size outbox_compact_json_length(Jsonb *jb);
/* A JSON string literal, escaped. */
extern void outbox_append_json_string(StringInfo out, const char *s, int len);

/* Emitted message content codec (see the layout above). */
extern void outbox_message_encode(StringInfo out, const OutboxEvent *ev);
extern bool outbox_message_decode(const char *data, Size len,
								  OutboxEvent *ev, const char **problem);

#endif							/* OUTBOX_EVENT_H */
