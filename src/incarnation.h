/*-------------------------------------------------------------------------
 *
 * incarnation.h
 *	  The incarnation: a random id of this data directory's history.
 *
 * A copy of the data directory (cp -a, rsync, a restored base backup, a
 * standby made by pg_basebackup), a promotion and a point-in-time restore
 * all make a history that shares WAL positions and transaction ids with
 * the one it came from.  Whatever the relay writes into Kafka about its
 * progress, and the identity its events carry, is bound to the incarnation,
 * so that no other history ever takes it for its own.
 *
 * src/incarnation.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_INCARNATION_H
#define OUTBOX_INCARNATION_H

/* Length of the id as text: 16 random bytes in hexadecimal. */
#define OUTBOX_INCARNATION_LEN	32

/*
 * Copy the incarnation id of this data directory into buf (of
 * OUTBOX_INCARNATION_LEN + 1 bytes), drawing a new one first when there is
 * none yet, when the file recording it is a copy (its device or inode is
 * not the one recorded), or when the server's timeline is not the one it
 * was drawn on.  ERROR during recovery and on I/O errors.
 */
extern void outbox_incarnation(char *buf);

#endif							/* OUTBOX_INCARNATION_H */
