/*-------------------------------------------------------------------------
 *
 * relay_shmem.h
 *	  The relays' status in shared memory, read by outbox.relay_status.
 *
 * One entry per relayed database, OUTBOX_MAX_RELAYS entries in all (as many
 * as there can be background workers).  The launcher is the only process
 * that takes an entry for a database or gives it back; while the entry's
 * relay runs, that relay is the only writer of its status.  Any backend may
 * read.  Counters and text are protected by the entry's spinlock; the
 * latch's owner is an atomic so that committing backends can wake their
 * database's relay without taking a lock.
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
#define OUTBOX_VERSION_LEN	64

/* Counters of the consumer loop, shown as relay_status columns. */
typedef enum OutboxCounter
{
	OUTBOX_COUNT_REPLIES_APPLIED,	/* reply-topic verdicts applied */
	OUTBOX_COUNT_REPLIES_REJECTED,	/* replies kept in rejected_replies */
	OUTBOX_COUNT_REDELIVERED,	/* messages re-published on schedule */
	OUTBOX_COUNT_EXPIRED,		/* messages that ran out of attempts */
	OUTBOX_COUNT_PURGED,		/* messages deleted by retention */
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
	uint64		counters[OUTBOX_NUM_COUNTERS];	/* see OutboxCounter */
	char		librdkafka_version[OUTBOX_VERSION_LEN]; /* what the relay runs */
	char		unused_slot[NAMEDATALEN];	/* our plugin's, unused, retaining WAL */
} OutboxRelayStatus;

/* One relayed database. */
typedef struct OutboxRelayEntry
{
	slock_t		mutex;			/* protects everything below but latch_procno */
	pg_atomic_uint32 latch_procno;	/* relay's pgprocno + 1, 0 if none */
	bool		in_use;			/* taken by the launcher for a database */
	bool		visible;		/* shown by relay_status */
	bool		absent;			/* relay found no extension and left */
	Oid			dboid;			/* database, InvalidOid if it was not found */
	OutboxRelayStatus status;	/* what relay_status shows */
} OutboxRelayEntry;

typedef struct OutboxRelayShared
{
	pg_atomic_uint32 launcher_procno;	/* launcher's pgprocno + 1, 0 if none */
	pg_atomic_uint32 registrations; /* CREATE EXTENSIONs committed */
	pg_atomic_uint32 registered_db; /* database of the newest of them */
	int			nentries;		/* length of entries[] */
	OutboxRelayEntry entries[FLEXIBLE_ARRAY_MEMBER];
} OutboxRelayShared;

/* NULL unless the library was preloaded and shared memory is attached. */
extern OutboxRelayShared *outbox_relay_shared;

/* Worker-side helpers (no-ops without shared memory). */
extern void outbox_status_begin(const char *database, const char *slot);
extern void outbox_status_end(void);
extern void outbox_status_show(void);
extern void outbox_status_absent(void);
extern void outbox_status_listen(bool listen);
extern void outbox_status_set_state(const char *state);
extern void outbox_status_count(OutboxCounter counter, uint64 n);
extern void outbox_status_relay_info(const char *librdkafka_version,
									 const char *unused_slot);

/* Other relays, as seen by one of them. */
extern bool outbox_relays_know_database(const char *name);
extern bool outbox_relay_keeps_strays(void);
extern int	outbox_relays_running(void);

/* Launcher side: entries taken and given back, its word while none runs. */
extern int	outbox_entry_take(Oid dboid, const char *database, const char *slot,
							  bool visible);
extern void outbox_entry_release(int index);
extern bool outbox_entry_absent(int index);
extern void outbox_status_launcher(int index, const char *state,
								   const char *error);
extern bool outbox_entry_visible(int index);
extern int	outbox_entries_stop_relays(void);
extern void outbox_entries_release_all(void);
extern void outbox_launcher_listen(bool listen);
extern void outbox_status_error(const char *fmt,...) pg_attribute_printf(1, 2);
extern void outbox_status_replay_left(uint64 left);
extern void outbox_status_progress(XLogRecPtr confirmed, XLogRecPtr decoded,
								   uint64 delivered, uint64 in_flight,
								   uint64 dead_lettered,
								   TimestampTz last_delivered_commit_time,
								   TimestampTz oldest_in_flight_commit_time);

#endif							/* OUTBOX_RELAY_SHMEM_H */
