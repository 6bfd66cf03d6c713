/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The outbox launcher: a background worker that starts the relay.
 *
 * Registered at server start (shared_preload_libraries), the launcher
 * connects to no database, so it can never fail to start because of one.
 * It checks that the relayed database (outbox.database) exists, starts the
 * relay as a dynamic background worker connected to it by OID, learns when
 * the relay stops (bgw_notify_pid) and starts it again after
 * outbox.retry_interval, at least RELAUNCH_MS.  A missing database, or no
 * free background worker slot (max_worker_processes), is a calm
 * `misconfigured` state in relay_status and one log line, retried every
 * few seconds and at every configuration reload; never a crash loop.
 *
 * The launcher never connects to Kafka and never decodes.  It shows in
 * pg_stat_activity with backend_type "outbox launcher".
 *
 * src/launcher.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "outbox.h"
#include "relay_shmem.h"

/* Wait at least this long before starting a stopped relay again. */
#define RELAUNCH_MS			5000
/* Look again for a missing database, or a free worker slot, this often. */
#define RECHECK_MS			5000

static void launcher_try_start(BackgroundWorkerHandle **handle,
							   char *logged, Size logged_len);
static void launcher_blocked(char *logged, Size logged_len, const char *fmt,...)
			pg_attribute_printf(3, 4);

void
outbox_launcher_register(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_ConsistentState;
	bgw.bgw_restart_time = 5;
	strlcpy(bgw.bgw_library_name, "outbox", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "outbox_launcher_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "outbox launcher", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "outbox launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);
}

/* Say once why the relay cannot run, in the log and in relay_status. */
static void
launcher_blocked(char *logged, Size logged_len, const char *fmt,...)
{
	char		msg[OUTBOX_ERROR_LEN];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (strcmp(logged, msg) != 0)
	{
		ereport(WARNING, (errmsg("outbox launcher: %s", msg)));
		outbox_status_launcher(outbox_database, outbox_slot_name,
							   "misconfigured", msg);
		strlcpy(logged, msg, logged_len);
	}
}

/*
 * The OID of a database that accepts connections, by name, or InvalidOid.
 * A plain heap scan of pg_database, as the autovacuum launcher does: a
 * process connected to no database cannot build relcache entries for the
 * catalog's indexes before the shared relcache init file exists.
 */
static Oid
launcher_database_oid(const char *name)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	Oid			result = InvalidOid;

	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (db->datallowconn && strcmp(NameStr(db->datname), name) == 0)
		{
			result = db->oid;
			break;
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return result;
}

/* Start the relay if its database exists and a worker slot is free. */
static void
launcher_try_start(BackgroundWorkerHandle **handle, char *logged,
				   Size logged_len)
{
	Oid			dboid;
	BackgroundWorker bgw;

	dboid = launcher_database_oid(outbox_database);
	if (!OidIsValid(dboid))
	{
		launcher_blocked(logged, logged_len,
						 "database \"%s\" named by outbox.database does not exist or does not allow connections; create it or set outbox.database and reload",
						 outbox_database);
		return;
	}

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_ConsistentState;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(bgw.bgw_library_name, "outbox", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "outbox_relay_main", BGW_MAXLEN);
	snprintf(bgw.bgw_name, BGW_MAXLEN, "outbox relay for database %s",
			 outbox_database);
	strlcpy(bgw.bgw_type, "outbox relay", BGW_MAXLEN);
	bgw.bgw_main_arg = ObjectIdGetDatum(dboid);
	bgw.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&bgw, handle))
	{
		*handle = NULL;
		launcher_blocked(logged, logged_len,
						 "no background worker slot is free for the outbox relay; raise max_worker_processes (now %d) and restart the server",
						 max_worker_processes);
		return;
	}
	logged[0] = '\0';
}

void
outbox_launcher_main(Datum main_arg)
{
	BackgroundWorkerHandle *handle = NULL;
	TimestampTz next_start = 0;
	char		logged[OUTBOX_ERROR_LEN] = "";

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	ereport(LOG,
			(errmsg("outbox launcher started; relaying database \"%s\"",
					outbox_database)));

	for (;;)
	{
		TimestampTz now;
		long		timeout = RECHECK_MS;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			if (handle == NULL)
				next_start = 0;		/* a reload may have fixed it */
		}

		now = GetCurrentTimestamp();
		if (handle != NULL)
		{
			pid_t		pid;

			switch (GetBackgroundWorkerPid(handle, &pid))
			{
				case BGWH_STOPPED:
					pfree(handle);
					handle = NULL;
					next_start = TimestampTzPlusMilliseconds(now,
															 Max(RELAUNCH_MS, outbox_retry_interval_ms));
					break;
				case BGWH_POSTMASTER_DIED:
					proc_exit(1);
					break;
				default:
					break;
			}
		}
		if (handle == NULL)
		{
			if (now >= next_start)
			{
				launcher_try_start(&handle, logged, sizeof(logged));
				if (handle == NULL)
					next_start = TimestampTzPlusMilliseconds(now, RECHECK_MS);
			}
			if (handle == NULL)
			{
				long		secs;
				int			usecs;

				TimestampDifference(now, next_start, &secs, &usecs);
				timeout = Max(1, secs * 1000 + usecs / 1000);
			}
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
