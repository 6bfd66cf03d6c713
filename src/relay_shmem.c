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
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "outbox.h"
#include "relay_shmem.h"

PG_FUNCTION_INFO_V1(outbox_relay_status);

OutboxRelayShared *outbox_relay_shared = NULL;

Size
outbox_shmem_size(void)
{
	return MAXALIGN(sizeof(OutboxRelayShared));
}

/* Attach to (and on first use initialise) the shared status; from shmem_startup_hook. */
void
outbox_shmem_init(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	outbox_relay_shared = ShmemInitStruct("outbox relay", outbox_shmem_size(),
										  &found);
	if (!found)
	{
		memset(outbox_relay_shared, 0, sizeof(OutboxRelayShared));
		SpinLockInit(&outbox_relay_shared->mutex);
		pg_atomic_init_u32(&outbox_relay_shared->latch_procno, 0);
		strlcpy(outbox_relay_shared->status.state, "stopped", OUTBOX_STATE_LEN);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Wake the relay worker, if one runs.  Safe in any backend, lock-free. */
void
outbox_relay_set_latch(void)
{
	uint32		procno;

	if (outbox_relay_shared == NULL)
		return;
	procno = pg_atomic_read_u32(&outbox_relay_shared->latch_procno);
	if (procno == 0)
		return;
	SetLatch(&ProcGlobal->allProcs[procno - 1].procLatch);
}

/* ---------------------------------------------------------------------
 * Worker side
 * ---------------------------------------------------------------------
 */

void
outbox_status_begin(const char *database, const char *slot)
{
	OutboxRelayStatus *st;

	if (outbox_relay_shared == NULL)
		return;
	st = &outbox_relay_shared->status;
	SpinLockAcquire(&outbox_relay_shared->mutex);
	memset(st, 0, sizeof(*st));
	st->pid = MyProcPid;
	strlcpy(st->state, "starting", OUTBOX_STATE_LEN);
	strlcpy(st->database, database, NAMEDATALEN);
	strlcpy(st->slot_name, slot, NAMEDATALEN);
	st->started_at = GetCurrentTimestamp();
	SpinLockRelease(&outbox_relay_shared->mutex);
}

/*
 * Let committing backends wake the relay (it decodes), or not (it waits for
 * something else: a wake-up per commit would only cost it CPU).
 */
void
outbox_status_listen(bool listen)
{
	if (outbox_relay_shared == NULL)
		return;
	/* a full barrier: the decoding that follows sees every commit after it */
	(void) pg_atomic_exchange_u32(&outbox_relay_shared->latch_procno,
								  listen ? outbox_my_procno() + 1 : 0);
}

/* On worker exit: forget the latch, keep counters and last error visible. */
void
outbox_status_end(void)
{
	if (outbox_relay_shared == NULL)
		return;
	pg_atomic_write_u32(&outbox_relay_shared->latch_procno, 0);
	SpinLockAcquire(&outbox_relay_shared->mutex);
	outbox_relay_shared->status.pid = 0;
	outbox_relay_shared->status.in_flight = 0;
	outbox_relay_shared->status.oldest_in_flight_commit_time = 0;
	strlcpy(outbox_relay_shared->status.state, "stopped", OUTBOX_STATE_LEN);
	SpinLockRelease(&outbox_relay_shared->mutex);
}

void
outbox_status_launcher(const char *database, const char *slot,
					   const char *state, const char *error)
{
	OutboxRelayStatus *st;
	TimestampTz now = GetCurrentTimestamp();

	if (outbox_relay_shared == NULL)
		return;
	st = &outbox_relay_shared->status;
	SpinLockAcquire(&outbox_relay_shared->mutex);
	if (st->pid == 0)
	{
		strlcpy(st->database, database, NAMEDATALEN);
		strlcpy(st->slot_name, slot, NAMEDATALEN);
		strlcpy(st->state, state, OUTBOX_STATE_LEN);
		st->errors++;
		strlcpy(st->last_error, error, OUTBOX_ERROR_LEN);
		st->last_error_at = now;
	}
	SpinLockRelease(&outbox_relay_shared->mutex);
}

void
outbox_status_set_state(const char *state)
{
	if (outbox_relay_shared == NULL)
		return;
	SpinLockAcquire(&outbox_relay_shared->mutex);
	strlcpy(outbox_relay_shared->status.state, state, OUTBOX_STATE_LEN);
	SpinLockRelease(&outbox_relay_shared->mutex);
}

/* Count an error and remember its text (formatted outside the spinlock). */
void
outbox_status_error(const char *fmt,...)
{
	char		buf[OUTBOX_ERROR_LEN];
	va_list		ap;
	TimestampTz now = GetCurrentTimestamp();

	if (outbox_relay_shared == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);

	SpinLockAcquire(&outbox_relay_shared->mutex);
	outbox_relay_shared->status.errors++;
	strlcpy(outbox_relay_shared->status.last_error, buf, OUTBOX_ERROR_LEN);
	outbox_relay_shared->status.last_error_at = now;
	SpinLockRelease(&outbox_relay_shared->mutex);
}

/* Rows the relay still has to publish while it recovers a lost slot. */
void
outbox_status_replay_left(uint64 left)
{
	if (outbox_relay_shared == NULL)
		return;
	SpinLockAcquire(&outbox_relay_shared->mutex);
	outbox_relay_shared->status.replay_left = left;
	SpinLockRelease(&outbox_relay_shared->mutex);
}

void
outbox_status_progress(XLogRecPtr confirmed, XLogRecPtr decoded,
					   uint64 delivered, uint64 in_flight, uint64 dead_lettered,
					   TimestampTz last_delivered_commit_time,
					   TimestampTz oldest_in_flight_commit_time)
{
	OutboxRelayStatus *st;

	if (outbox_relay_shared == NULL)
		return;
	st = &outbox_relay_shared->status;
	SpinLockAcquire(&outbox_relay_shared->mutex);
	st->confirmed_lsn = confirmed;
	st->decoded_lsn = decoded;
	st->delivered = delivered;
	st->in_flight = in_flight;
	st->dead_lettered = dead_lettered;
	if (last_delivered_commit_time != 0)
		st->last_delivered_commit_time = last_delivered_commit_time;
	st->oldest_in_flight_commit_time = oldest_in_flight_commit_time;
	SpinLockRelease(&outbox_relay_shared->mutex);
}

/* ---------------------------------------------------------------------
 * INTERIM (branch reply): single-database forms of the lead's API
 * ---------------------------------------------------------------------
 */

void
outbox_status_count(OutboxCounter c, uint64 n)
{
	if (outbox_relay_shared == NULL)
		return;
	SpinLockAcquire(&outbox_relay_shared->mutex);
	outbox_relay_shared->status.counters[c] += n;
	SpinLockRelease(&outbox_relay_shared->mutex);
}

bool
outbox_relays_know_database(const char *name)
{
	bool		known;

	if (outbox_relay_shared == NULL)
		return false;
	SpinLockAcquire(&outbox_relay_shared->mutex);
	known = strcmp(outbox_relay_shared->status.database, name) == 0;
	SpinLockRelease(&outbox_relay_shared->mutex);
	return known;
}

bool
outbox_relay_keeps_strays(void)
{
	return true;
}

int
outbox_relays_running(void)
{
	return 1;
}

/* ---------------------------------------------------------------------
 * outbox._relay_status(): one row per relay (none unless preloaded)
 * ---------------------------------------------------------------------
 */

/* Columns of 0.3.0 and later; 0.2.0's function lacks replay_left. */
#define STATUS_COLS 16
#define STATUS_COLS_0_2 15

static Datum
timestamp_or_null(TimestampTz t, bool *isnull)
{
	*isnull = (t == 0);
	return TimestampTzGetDatum(t);
}

Datum
outbox_relay_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	OutboxRelayStatus st;
	Datum		values[STATUS_COLS];
	bool		nulls[STATUS_COLS];
	int			i = 0;

	outbox_init_materialized_srf(fcinfo);
	if (outbox_relay_shared == NULL)
		PG_RETURN_VOID();

	SpinLockAcquire(&outbox_relay_shared->mutex);
	st = outbox_relay_shared->status;
	SpinLockRelease(&outbox_relay_shared->mutex);

	memset(nulls, 0, sizeof(nulls));
	values[i] = Int32GetDatum(st.pid);
	nulls[i++] = (st.pid == 0);
	values[i++] = CStringGetTextDatum(st.state);
	values[i] = CStringGetTextDatum(st.slot_name);
	nulls[i++] = (st.slot_name[0] == '\0');
	values[i] = CStringGetTextDatum(st.database);
	nulls[i++] = (st.database[0] == '\0');
	values[i] = LSNGetDatum(st.confirmed_lsn);
	nulls[i++] = XLogRecPtrIsInvalid(st.confirmed_lsn);
	values[i] = LSNGetDatum(st.decoded_lsn);
	nulls[i++] = XLogRecPtrIsInvalid(st.decoded_lsn);
	values[i++] = Int64GetDatum((int64) st.delivered);
	values[i++] = Int64GetDatum((int64) st.in_flight);
	/* an extension not yet updated to 0.3.0 declares no replay_left */
	if (rsinfo->setDesc->natts == STATUS_COLS)
		values[i++] = Int64GetDatum((int64) st.replay_left);
	else if (rsinfo->setDesc->natts != STATUS_COLS_0_2)
		elog(ERROR, "outbox._relay_status() declares %d columns, expected %d",
			 rsinfo->setDesc->natts, STATUS_COLS);
	values[i++] = Int64GetDatum((int64) st.dead_lettered);
	values[i++] = Int64GetDatum((int64) st.errors);
	values[i] = CStringGetTextDatum(st.last_error);
	nulls[i++] = (st.last_error[0] == '\0');
	values[i] = timestamp_or_null(st.last_error_at, &nulls[i]);
	i++;
	values[i] = timestamp_or_null(st.last_delivered_commit_time, &nulls[i]);
	i++;
	values[i] = timestamp_or_null(st.oldest_in_flight_commit_time, &nulls[i]);
	i++;
	values[i] = timestamp_or_null(st.started_at, &nulls[i]);
	i++;
	Assert(i == rsinfo->setDesc->natts);

	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	PG_RETURN_VOID();
}
