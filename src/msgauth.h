/*-------------------------------------------------------------------------
 *
 * msgauth.h
 *	  Authentication of the logical messages the extension writes.
 *
 * pg_logical_emit_message() is executable by PUBLIC, so the prefix
 * "outbox" alone proves nothing about who wrote a message.  Every message
 * written by outbox.emit(), outbox.redeliver() and outbox.redrive() ends
 * with an HMAC-SHA-256 over the top-level transaction id and the content,
 * keyed with the installation's message key (table outbox._message_key:
 * row-level security hides its row from every role but its superuser
 * owner, superusers and BYPASSRLS roles; its row is not logically logged;
 * replicated with the WAL and copied by base backups, left out of
 * pg_dump).  The decoder checks it and skips, with a WARNING, every
 * message it does not authenticate.
 *
 * Binding the full 64-bit transaction id (epoch and xid; the 32-bit xid
 * for a key table from before 0.5.0, see msgauth.c) into the code means a
 * captured message cannot be replayed by emitting its bytes again in
 * another transaction, not even after xid wraparound.
 *
 * src/msgauth.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_MSGAUTH_H
#define OUTBOX_MSGAUTH_H

#include "postgres.h"
#include "lib/stringinfo.h"

/* Length of the key and of the authentication code, bytes. */
#define OUTBOX_MESSAGE_KEY_LEN	32
#define OUTBOX_MESSAGE_MAC_LEN	32

/*
 * Append the authentication code of msg->data[0 .. msg->len) for the
 * current top-level transaction (assigning its xid).  ERROR when the
 * installation has no message key.
 */
extern void outbox_message_sign(StringInfo msg);

/*
 * Does the message written by top-level transaction xid (a decoded xid,
 * widened to 64 bits against the next one) end with a valid code?  On success *content_len is the length without the code.  Never
 * throws for bad input; *problem says why it was refused.
 */
extern bool outbox_message_authentic(TransactionId xid, const char *data,
									 Size len, Size *content_len,
									 const char **problem);

/*
 * A key of its own for another use of the installation's secret: the
 * HMAC-SHA-256 of label under the message key, into out (of
 * OUTBOX_MESSAGE_KEY_LEN bytes).  Needs a transaction (it may read the
 * key).  False when the installation has no message key.
 */
extern bool outbox_message_key_derive(const char *label, uint8 *out);

#endif							/* OUTBOX_MSGAUTH_H */
