/*-------------------------------------------------------------------------
 *
 * relay_shmem.c
 *	  Shared-memory status of the relay worker and outbox._relay_status().
 *
 * src/relay_shmem.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "outbox.h"
#include "relay_shmem.h"

PG_FUNCTION_INFO_V1(outbox_relay_status);

OutboxRelayShared *outbox_relay_shared = NULL;

/* The calling relay's entry, once outbox_status_begin() found it. */
static OutboxRelayEntry *my_entry = NULL;

/* A backend's guess of its database's entry (checked before use). */
static int	db_entry_hint = -1;

Size
outbox_shmem_size(void)
{
	/* a relay is a background worker: there can be no more of them */
	return MAXALIGN(add_size(offsetof(OutboxRelayShared, entries),
							 mul_size(max_worker_processes,
									  sizeof(OutboxRelayEntry))));
}

/* Attach to (and on first use initialise) the shared status; from shmem_startup_hook. */
void
outbox_shmem_init(void)
{
	bool		found;
	int			i;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	outbox_relay_shared = ShmemInitStruct("outbox relays", outbox_shmem_size(),
										  &found);
	if (!found)
	{
		memset(outbox_relay_shared, 0, outbox_shmem_size());
		pg_atomic_init_u32(&outbox_relay_shared->launcher_procno, 0);
		pg_atomic_init_u32(&outbox_relay_shared->registrations, 0);
		pg_atomic_init_u32(&outbox_relay_shared->registered_db, InvalidOid);
		outbox_relay_shared->nentries = max_worker_processes;
		for (i = 0; i < max_worker_processes; i++)
		{
			OutboxRelayEntry *e = &outbox_relay_shared->entries[i];

			SpinLockInit(&e->mutex);
			pg_atomic_init_u32(&e->latch_procno, 0);
			strlcpy(e->status.state, "stopped", OUTBOX_STATE_LEN);
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

static void
set_latch_of(pg_atomic_uint32 *procno_var)
{
	uint32		procno = pg_atomic_read_u32(procno_var);

	if (procno != 0)
		SetLatch(&ProcGlobal->allProcs[procno - 1].procLatch);
}

/*
 * Wake the relay of this backend's database, if one runs.  Safe in any
 * backend, lock-free: an entry's database changes only while no relay of it
 * listens, and a wrong guess only costs a spurious wake-up.
 */
void
outbox_relay_set_latch(void)
{
	int			i;

	if (outbox_relay_shared == NULL)
		return;
	i = db_entry_hint;
	if (i < 0 || i >= outbox_relay_shared->nentries ||
		outbox_relay_shared->entries[i].dboid != MyDatabaseId)
	{
		for (i = 0; i < outbox_relay_shared->nentries; i++)
			if (outbox_relay_shared->entries[i].in_use &&
				outbox_relay_shared->entries[i].dboid == MyDatabaseId)
				break;
		if (i == outbox_relay_shared->nentries)
			return;
		db_entry_hint = i;
	}
	set_latch_of(&outbox_relay_shared->entries[i].latch_procno);
}

/*
 * At the commit of CREATE EXTENSION outbox: tell the launcher which
 * database now has it, so that with outbox.databases = '*' its relay starts
 * without a server restart.
 */
void
outbox_register_database(void)
{
	if (outbox_relay_shared == NULL)
		return;
	pg_atomic_write_u32(&outbox_relay_shared->registered_db, MyDatabaseId);
	pg_atomic_fetch_add_u32(&outbox_relay_shared->registrations, 1);
	set_latch_of(&outbox_relay_shared->launcher_procno);
}

/* ---------------------------------------------------------------------
 * Worker side: the calling relay's own entry
 * ---------------------------------------------------------------------
 */

void
outbox_status_begin(const char *database, const char *slot)
{
	OutboxRelayStatus *st;
	int			i;

	if (outbox_relay_shared == NULL)
		return;
	for (i = 0; i < outbox_relay_shared->nentries; i++)
	{
		OutboxRelayEntry *e = &outbox_relay_shared->entries[i];

		if (e->in_use && e->dboid == MyDatabaseId)
		{
			my_entry = e;
			break;
		}
	}
	if (my_entry == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("outbox relay for database \"%s\" has no status entry", database),
				 errdetail("Only the outbox launcher starts relays.")));
	st = &my_entry->status;
	SpinLockAcquire(&my_entry->mutex);
	st->pid = MyProcPid;
	strlcpy(st->state, "starting", OUTBOX_STATE_LEN);
	strlcpy(st->database, database, NAMEDATALEN);
	strlcpy(st->slot_name, slot, NAMEDATALEN);
	st->in_flight = 0;
	st->oldest_in_flight_commit_time = 0;
	st->started_at = GetCurrentTimestamp();
	my_entry->absent = false;
	SpinLockRelease(&my_entry->mutex);
}

/*
 * The librdkafka version the relay runs with (rd_kafka_version_str()), and
 * a slot of this database and plugin that the relay does not use ("" for
 * none); NULL leaves either as it is.
 */
void
outbox_status_relay_info(const char *librdkafka_version, const char *unused_slot)
{
	if (my_entry == NULL)
		return;
	SpinLockAcquire(&my_entry->mutex);
	if (librdkafka_version != NULL)
		strlcpy(my_entry->status.librdkafka_version, librdkafka_version,
				OUTBOX_VERSION_LEN);
	if (unused_slot != NULL)
		strlcpy(my_entry->status.unused_slot, unused_slot, NAMEDATALEN);
	SpinLockRelease(&my_entry->mutex);
}

/* The relay serves its database: show it in relay_status. */
void
outbox_status_show(void)
{
	if (my_entry == NULL)
		return;
	SpinLockAcquire(&my_entry->mutex);
	my_entry->visible = true;
	SpinLockRelease(&my_entry->mutex);
}

/* The relay found no extension to serve and leaves (outbox.databases = '*'). */
void
outbox_status_absent(void)
{
	if (my_entry == NULL)
		return;
	SpinLockAcquire(&my_entry->mutex);
	my_entry->visible = false;
	my_entry->absent = true;
	SpinLockRelease(&my_entry->mutex);
}

/*
 * Let committing backends wake the relay (it decodes), or not (it waits for
 * something else: a wake-up per commit would only cost it CPU).
 */
void
outbox_status_listen(bool listen)
{
	if (my_entry == NULL)
		return;
	/* a full barrier: the decoding that follows sees every commit after it */
	(void) pg_atomic_exchange_u32(&my_entry->latch_procno,
								  listen ? outbox_my_procno() + 1 : 0);
}

/* On worker exit: forget the latch, keep counters and last error visible. */
void
outbox_status_end(void)
{
	if (my_entry == NULL)
		return;
	pg_atomic_write_u32(&my_entry->latch_procno, 0);
	SpinLockAcquire(&my_entry->mutex);
	my_entry->status.pid = 0;
	my_entry->status.in_flight = 0;
	my_entry->status.oldest_in_flight_commit_time = 0;
	strlcpy(my_entry->status.state, "stopped", OUTBOX_STATE_LEN);
	SpinLockRelease(&my_entry->mutex);
	my_entry = NULL;
}

void
outbox_status_set_state(const char *state)
{
	if (my_entry == NULL)
		return;
	SpinLockAcquire(&my_entry->mutex);
	strlcpy(my_entry->status.state, state, OUTBOX_STATE_LEN);
	SpinLockRelease(&my_entry->mutex);
}

/* Count an error and remember its text (formatted outside the spinlock). */
void
outbox_status_error(const char *fmt,...)
{
	char		buf[OUTBOX_ERROR_LEN];
	va_list		ap;
	TimestampTz now = GetCurrentTimestamp();

	if (my_entry == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);

	SpinLockAcquire(&my_entry->mutex);
	my_entry->status.errors++;
	strlcpy(my_entry->status.last_error, buf, OUTBOX_ERROR_LEN);
	my_entry->status.last_error_at = now;
	SpinLockRelease(&my_entry->mutex);
}

/* Rows the relay still has to publish while it recovers a lost slot. */
void
outbox_status_replay_left(uint64 left)
{
	if (my_entry == NULL)
		return;
	SpinLockAcquire(&my_entry->mutex);
	my_entry->status.replay_left = left;
	SpinLockRelease(&my_entry->mutex);
}

/* Add n to one of the consumer loop's counters. */
void
outbox_status_count(OutboxCounter counter, uint64 n)
{
	Assert(counter >= 0 && counter < OUTBOX_NUM_COUNTERS);
	if (my_entry == NULL)
		return;
	SpinLockAcquire(&my_entry->mutex);
	my_entry->status.counters[counter] += n;
	SpinLockRelease(&my_entry->mutex);
}

void
outbox_status_progress(XLogRecPtr confirmed, XLogRecPtr decoded,
					   uint64 delivered, uint64 in_flight, uint64 dead_lettered,
					   TimestampTz last_delivered_commit_time,
					   TimestampTz oldest_in_flight_commit_time)
{
	OutboxRelayStatus *st;

	if (my_entry == NULL)
		return;
	st = &my_entry->status;
	SpinLockAcquire(&my_entry->mutex);
	st->confirmed_lsn = confirmed;
	st->decoded_lsn = decoded;
	st->delivered = delivered;
	st->in_flight = in_flight;
	st->dead_lettered = dead_lettered;
	if (last_delivered_commit_time != 0)
		st->last_delivered_commit_time = last_delivered_commit_time;
	st->oldest_in_flight_commit_time = oldest_in_flight_commit_time;
	SpinLockRelease(&my_entry->mutex);
}

/* ---------------------------------------------------------------------
 * Other relays, as one relay sees them
 * ---------------------------------------------------------------------
 */

/*
 * Copy entry i if it is a relayed database shown by relay_status (taken,
 * visible, with a database); false otherwise.
 */
static bool
entry_shown(int i, OutboxRelayEntry *copy)
{
	OutboxRelayEntry *e = &outbox_relay_shared->entries[i];
	bool		shown;

	SpinLockAcquire(&e->mutex);
	shown = e->in_use && e->visible;
	if (shown)
		memcpy(copy, e, sizeof(OutboxRelayEntry));
	SpinLockRelease(&e->mutex);
	return shown;
}

/* Is a database of that name relayed by this cluster? */
bool
outbox_relays_know_database(const char *name)
{
	OutboxRelayEntry e;
	int			i;

	if (outbox_relay_shared == NULL)
		return false;
	for (i = 0; i < outbox_relay_shared->nentries; i++)
		if (entry_shown(i, &e) && OidIsValid(e.dboid) &&
			strcmp(e.status.database, name) == 0)
			return true;
	return false;
}

/* How many databases are relayed (relay_status rows with a database). */
int
outbox_relays_running(void)
{
	OutboxRelayEntry e;
	int			i;
	int			n = 0;

	if (outbox_relay_shared == NULL)
		return 0;
	for (i = 0; i < outbox_relay_shared->nentries; i++)
		if (entry_shown(i, &e) && OidIsValid(e.dboid))
			n++;
	return n;
}

/*
 * Replies for a database no relay serves are kept by one relay only: the
 * running one of the lowest database OID.
 */
bool
outbox_relay_keeps_strays(void)
{
	OutboxRelayEntry e;
	int			i;

	if (outbox_relay_shared == NULL || my_entry == NULL)
		return true;
	for (i = 0; i < outbox_relay_shared->nentries; i++)
		if (entry_shown(i, &e) && e.status.pid != 0 && OidIsValid(e.dboid) &&
			e.dboid < MyDatabaseId)
			return false;
	return true;
}

/* ---------------------------------------------------------------------
 * Launcher side
 * ---------------------------------------------------------------------
 */

/*
 * Take the entry of a database (by OID, or by name when it was not found),
 * reusing the one it has; -1 when all are taken.  A relay that starts looks
 * its entry up by database OID.
 */
int
outbox_entry_take(Oid dboid, const char *database, const char *slot,
				  bool visible)
{
	int			i;
	int			free_i = -1;
	OutboxRelayEntry *e;

	for (i = 0; i < outbox_relay_shared->nentries; i++)
	{
		e = &outbox_relay_shared->entries[i];
		if (!e->in_use)
		{
			if (free_i < 0)
				free_i = i;
			continue;
		}
		if (OidIsValid(dboid) ? e->dboid == dboid :
			(!OidIsValid(e->dboid) && strcmp(e->status.database, database) == 0))
			break;
	}
	if (i == outbox_relay_shared->nentries)
	{
		if (free_i < 0)
			return -1;
		i = free_i;
		e = &outbox_relay_shared->entries[i];
		SpinLockAcquire(&e->mutex);
		memset(&e->status, 0, sizeof(e->status));
		strlcpy(e->status.state, "starting", OUTBOX_STATE_LEN);
		e->in_use = true;
		e->dboid = dboid;
		SpinLockRelease(&e->mutex);
	}
	e = &outbox_relay_shared->entries[i];
	SpinLockAcquire(&e->mutex);
	e->visible = e->visible || visible;
	e->absent = false;
	strlcpy(e->status.database, database, NAMEDATALEN);
	strlcpy(e->status.slot_name, slot, NAMEDATALEN);
	SpinLockRelease(&e->mutex);
	return i;
}

/* Give an entry back (its relay has stopped). */
void
outbox_entry_release(int index)
{
	OutboxRelayEntry *e = &outbox_relay_shared->entries[index];

	pg_atomic_write_u32(&e->latch_procno, 0);
	SpinLockAcquire(&e->mutex);
	e->in_use = false;
	e->visible = false;
	e->absent = false;
	e->dboid = InvalidOid;
	SpinLockRelease(&e->mutex);
}

/* Did the entry's relay leave because its database has no extension? */
bool
outbox_entry_absent(int index)
{
	OutboxRelayEntry *e = &outbox_relay_shared->entries[index];
	bool		absent;

	SpinLockAcquire(&e->mutex);
	absent = e->absent;
	SpinLockRelease(&e->mutex);
	return absent;
}

/* Has the entry's relay found its extension (or was it named)? */
bool
outbox_entry_visible(int index)
{
	OutboxRelayEntry *e = &outbox_relay_shared->entries[index];
	bool		visible;

	SpinLockAcquire(&e->mutex);
	visible = e->visible;
	SpinLockRelease(&e->mutex);
	return visible;
}

/*
 * Relays still running from before this launcher started: signal each to
 * stop (SIGTERM, as the postmaster would) and return how many there are.
 */
int
outbox_entries_stop_relays(void)
{
	int			i;
	int			n = 0;

	for (i = 0; i < outbox_relay_shared->nentries; i++)
	{
		OutboxRelayEntry *e = &outbox_relay_shared->entries[i];
		int			pid;

		SpinLockAcquire(&e->mutex);
		pid = e->in_use ? e->status.pid : 0;
		SpinLockRelease(&e->mutex);
		/* only a live process of this server: never a recycled pid */
		if (pid != 0 && BackendPidGetProc(pid) != NULL)
		{
			(void) kill(pid, SIGTERM);
			n++;
		}
	}
	return n;
}

/* Start afresh: no entry is taken. */
void
outbox_entries_release_all(void)
{
	int			i;

	for (i = 0; i < outbox_relay_shared->nentries; i++)
		outbox_entry_release(i);
}

/* The launcher's word about a database whose relay is not running. */
void
outbox_status_launcher(int index, const char *state, const char *error)
{
	OutboxRelayEntry *e = &outbox_relay_shared->entries[index];
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&e->mutex);
	if (e->status.pid == 0)
	{
		e->visible = true;
		strlcpy(e->status.state, state, OUTBOX_STATE_LEN);
		if (error != NULL)
		{
			e->status.errors++;
			strlcpy(e->status.last_error, error, OUTBOX_ERROR_LEN);
			e->status.last_error_at = now;
		}
	}
	SpinLockRelease(&e->mutex);
}

/* Let CREATE EXTENSION wake the launcher. */
void
outbox_launcher_listen(bool listen)
{
	if (outbox_relay_shared == NULL)
		return;
	pg_atomic_write_u32(&outbox_relay_shared->launcher_procno,
						listen ? outbox_my_procno() + 1 : 0);
}

/* ---------------------------------------------------------------------
 * outbox._relay_status(): one row per relay (none unless preloaded)
 * ---------------------------------------------------------------------
 */

/*
 * Columns of each release's function: 0.2.0 lacks replay_left, 0.3.0 the
 * consumer loop's counters, 0.4.0 librdkafka_version and unused_slot
 * (each group comes after the one before).
 */
#define STATUS_COLS_0_2 15
#define STATUS_COLS_0_3 16
#define STATUS_COLS_0_4 (STATUS_COLS_0_3 + OUTBOX_NUM_COUNTERS)
#define STATUS_COLS (STATUS_COLS_0_4 + 2)

static Datum
timestamp_or_null(TimestampTz t, bool *isnull)
{
	*isnull = (t == 0);
	return TimestampTzGetDatum(t);
}

static void
status_row(ReturnSetInfo *rsinfo, const OutboxRelayStatus *st)
{
	Datum		values[STATUS_COLS];
	bool		nulls[STATUS_COLS];
	int			natts = rsinfo->setDesc->natts;
	int			i = 0;
	int			c;

	memset(nulls, 0, sizeof(nulls));
	values[i] = Int32GetDatum(st->pid);
	nulls[i++] = (st->pid == 0);
	values[i++] = CStringGetTextDatum(st->state);
	values[i] = CStringGetTextDatum(st->slot_name);
	nulls[i++] = (st->slot_name[0] == '\0');
	values[i] = CStringGetTextDatum(st->database);
	nulls[i++] = (st->database[0] == '\0');
	values[i] = LSNGetDatum(st->confirmed_lsn);
	nulls[i++] = XLogRecPtrIsInvalid(st->confirmed_lsn);
	values[i] = LSNGetDatum(st->decoded_lsn);
	nulls[i++] = XLogRecPtrIsInvalid(st->decoded_lsn);
	values[i++] = Int64GetDatum((int64) st->delivered);
	values[i++] = Int64GetDatum((int64) st->in_flight);
	/* an extension not yet updated to 0.3.0 declares no replay_left */
	if (natts != STATUS_COLS_0_2)
		values[i++] = Int64GetDatum((int64) st->replay_left);
	values[i++] = Int64GetDatum((int64) st->dead_lettered);
	values[i++] = Int64GetDatum((int64) st->errors);
	values[i] = CStringGetTextDatum(st->last_error);
	nulls[i++] = (st->last_error[0] == '\0');
	values[i] = timestamp_or_null(st->last_error_at, &nulls[i]);
	i++;
	values[i] = timestamp_or_null(st->last_delivered_commit_time, &nulls[i]);
	i++;
	values[i] = timestamp_or_null(st->oldest_in_flight_commit_time, &nulls[i]);
	i++;
	values[i] = timestamp_or_null(st->started_at, &nulls[i]);
	i++;
	/* ... one not yet updated to 0.4.0 no counters */
	if (natts >= STATUS_COLS_0_4)
		for (c = 0; c < OUTBOX_NUM_COUNTERS; c++)
			values[i++] = Int64GetDatum((int64) st->counters[c]);
	/* ... and one not yet updated to 0.5.0 neither of these */
	if (natts == STATUS_COLS)
	{
		values[i] = CStringGetTextDatum(st->librdkafka_version);
		nulls[i++] = (st->librdkafka_version[0] == '\0');
		values[i] = CStringGetTextDatum(st->unused_slot);
		nulls[i++] = (st->unused_slot[0] == '\0');
	}
	Assert(i == natts);

	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

Datum
outbox_relay_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	OutboxRelayEntry e;
	int			natts;
	int			i;

	outbox_init_materialized_srf(fcinfo);
	natts = rsinfo->setDesc->natts;
	if (natts != STATUS_COLS && natts != STATUS_COLS_0_4 &&
		natts != STATUS_COLS_0_3 && natts != STATUS_COLS_0_2)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("outbox._relay_status() declares %d columns, expected %d",
						natts, STATUS_COLS),
				 errhint("Run ALTER EXTENSION outbox UPDATE.")));
	if (outbox_relay_shared == NULL)
		PG_RETURN_VOID();

	for (i = 0; i < outbox_relay_shared->nentries; i++)
		if (entry_shown(i, &e))
			status_row(rsinfo, &e.status);
	PG_RETURN_VOID();
}
