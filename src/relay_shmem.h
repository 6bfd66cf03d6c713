/*-------------------------------------------------------------------------
 *
 * relay_shmem.h
 *	  The relay's status in shared memory, read by outbox.relay_status.
 *
 * The relay worker is the only writer; any backend may read.  Counters and
 * text are protected by a spinlock; the latch's owner is an atomic so that
 * committing backends can wake the relay without taking the lock.
 *
 * src/relay_shmem.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_RELAY_SHMEM_H
#define OUTBOX_RELAY_SHMEM_H

#include "postgres.h"
#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/spin.h"

#define OUTBOX_STATE_LEN	32
#define OUTBOX_ERROR_LEN	1024

/*
 * INTERIM (branch reply): the lead's relay_status counters and relay-set
 * questions, in their single-database form; main's version replaces this
 * block when it is merged.
 */
typedef enum OutboxCounter
{
	OUTBOX_COUNT_REPLIES_APPLIED,
	OUTBOX_COUNT_REPLIES_REJECTED,
	OUTBOX_COUNT_REDELIVERED,
	OUTBOX_COUNT_EXPIRED,
	OUTBOX_COUNT_PURGED,
	OUTBOX_NUM_COUNTERS
} OutboxCounter;
typedef struct OutboxRelayStatus
{
	int			pid;			/* worker's pid, 0 when not running */
	char		state[OUTBOX_STATE_LEN];	/* starting, streaming, ... */
	char		slot_name[NAMEDATALEN];	/* replication slot in use */
	char		database[NAMEDATALEN];	/* database relayed */
	XLogRecPtr	confirmed_lsn;	/* slot's confirmed_flush_lsn */
	XLogRecPtr	decoded_lsn;	/* how far WAL has been decoded */
	uint64		delivered;		/* events acknowledged by Kafka */
	uint64		in_flight;		/* events produced, not yet acknowledged */
	uint64		replay_left;	/* rows to publish again after slot loss */
	uint64		dead_lettered;	/* events written to outbox.dead_letters */
	uint64		errors;			/* errors seen since start */
	char		last_error[OUTBOX_ERROR_LEN];	/* text of the newest error */
	TimestampTz last_error_at;	/* when it happened, 0 if never */
	TimestampTz last_delivered_commit_time; /* commit time of newest acked */
	TimestampTz oldest_in_flight_commit_time;	/* 0 when nothing in flight */
	TimestampTz started_at;		/* worker start, 0 when not running */
	uint64		counters[OUTBOX_NUM_COUNTERS];	/* INTERIM: see below */
} OutboxRelayStatus;

typedef struct OutboxRelayShared
{
	slock_t		mutex;			/* protects status */
	pg_atomic_uint32 latch_procno;	/* relay's pgprocno + 1, 0 if none */
	OutboxRelayStatus status;	/* what relay_status shows */
} OutboxRelayShared;

/* NULL unless the library was preloaded and shared memory is attached. */
extern OutboxRelayShared *outbox_relay_shared;

/* Worker-side helpers (no-ops without shared memory). */
extern void outbox_status_begin(const char *database, const char *slot);
extern void outbox_status_end(void);
extern void outbox_status_listen(bool listen);
extern void outbox_status_set_state(const char *state);
/* The launcher's word while no relay runs (state and why). */
extern void outbox_status_launcher(const char *database, const char *slot,
								   const char *state, const char *error);
extern void outbox_status_error(const char *fmt,...) pg_attribute_printf(1, 2);
extern void outbox_status_replay_left(uint64 left);
extern void outbox_status_progress(XLogRecPtr confirmed, XLogRecPtr decoded,
								   uint64 delivered, uint64 in_flight,
								   uint64 dead_lettered,
								   TimestampTz last_delivered_commit_time,
								   TimestampTz oldest_in_flight_commit_time);

extern void outbox_status_count(OutboxCounter c, uint64 n);
extern bool outbox_relays_know_database(const char *name);
extern bool outbox_relay_keeps_strays(void);
extern int	outbox_relays_running(void);

#endif							/* OUTBOX_RELAY_SHMEM_H */
