/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The outbox launcher: a background worker that starts one relay per
 *	  relayed database.
 *
 * Registered at server start (shared_preload_libraries), the launcher
 * connects to no database, so it can never fail to start because of one.
 * Every few seconds, at every configuration reload and whenever a CREATE
 * EXTENSION outbox commits, it reads pg_database and decides which
 * databases are relayed (outbox.databases):
 *
 *	- a list of names: those databases, whether or not the extension is
 *	  installed yet (their relays hold a slot and wait for it, so that no
 *	  event committed after CREATE EXTENSION is missed).  A name that names
 *	  no database (never created, dropped, renamed, or not accepting
 *	  connections) is a `misconfigured` row of relay_status and one log line;
 *	- '*' (the default): every database where the extension is installed.
 *	  The launcher cannot read another database's catalog, so it starts a
 *	  relay in each connectable database it has not seen yet (at most
 *	  PROBES_AT_ONCE at a time): a relay that finds no extension says so in
 *	  its shared-memory entry and leaves, and is started again only when a
 *	  CREATE EXTENSION outbox commits (outbox._register_database(), run by
 *	  the install script, wakes the launcher at commit).  Template databases
 *	  are never relayed this way: a connected relay would make CREATE
 *	  DATABASE from them fail.
 *
 * Each relay is a dynamic background worker connected by database OID; the
 * launcher learns when it stops (bgw_notify_pid) and starts it again after
 * outbox.retry_interval, at least RELAUNCH_MS.  A database that is no longer
 * relayed gets its relay terminated.  No free background worker slot
 * (max_worker_processes) is a calm `misconfigured` state naming the
 * setting, retried every few seconds; never a crash loop.
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
#include "access/xlog.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "outbox.h"
#include "relay_shmem.h"

/* Wait at least this long before starting a stopped relay again. */
#define RELAUNCH_MS			5000
/* Read pg_database again (new, dropped, renamed databases) this often. */
#define RECHECK_MS			5000
/* With outbox.databases = '*': relays looking for the extension at once. */
#define PROBES_AT_ONCE		2
/* ... and how often a database found without it is looked at again. */
#define ABSENT_RECHECK_MS	60000
/* At start, how long to wait for the relays of a previous launcher to go. */
#define ORPHAN_WAIT_MS		30000

/* A database the launcher relays, or looks at. */
typedef struct LauncherDb
{
	Oid			dboid;			/* InvalidOid: a listed name not found */
	char		name[NAMEDATALEN];
	int			entry;			/* shared-memory status entry, -1 if none */
	BackgroundWorkerHandle *handle; /* its relay, NULL when not running */
	TimestampTz next_start;		/* not before this */
	bool		absent;			/* '*': no extension there (the relay said) */
	TimestampTz absent_at;		/* when it said so */
	uint32		registrations;	/* registrations seen when it was started */
	bool		wanted;			/* relayed by the newest scan */
	char		logged[OUTBOX_ERROR_LEN];	/* newest problem logged */
} LauncherDb;

/* A row of pg_database. */
typedef struct DbRow
{
	Oid			oid;
	bool		connectable;
	bool		istemplate;
	char		name[NAMEDATALEN];
} DbRow;

static List *dbs = NIL;			/* of LauncherDb *, in TopMemoryContext */
static uint32 seen_registrations = 0;

static void launcher_scan(void);
static void launcher_start(LauncherDb *db, TimestampTz now, bool visible);
static void launcher_blocked(LauncherDb *db, bool show, const char *fmt,...)
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

static bool
all_databases(void)
{
	return strcmp(outbox_databases, "*") == 0;
}

/*
 * The slot name a relay of that database starts with (for relay_status
 * before it runs; the relay itself may keep a slot of an older release).
 */
static void
slot_name_for(Oid dboid, char *buf)
{
	if (OidIsValid(dboid))
		snprintf(buf, NAMEDATALEN, "%s_%u", outbox_slot_name, dboid);
	else
		buf[0] = '\0';
}

/*
 * Say once why a database's relay cannot run: the log, and (show) its
 * relay_status row.  A database that '*' is only looking at gets no row.
 */
static void
launcher_blocked(LauncherDb *db, bool show, const char *fmt,...)
{
	char		msg[OUTBOX_ERROR_LEN];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (strcmp(db->logged, msg) == 0)
		return;
	ereport(WARNING, (errmsg("outbox launcher: %s", msg)));
	strlcpy(db->logged, msg, sizeof(db->logged));
	if (!show)
		return;
	if (db->entry < 0)
	{
		char		slot[NAMEDATALEN];

		slot_name_for(db->dboid, slot);
		db->entry = outbox_entry_take(db->dboid, db->name, slot, true);
	}
	if (db->entry >= 0)
		outbox_status_launcher(db->entry, "misconfigured", msg);
}

/*
 * Every row of pg_database.  A plain heap scan, as the autovacuum launcher
 * does: a process connected to no database cannot build relcache entries
 * for the catalog's indexes before the shared relcache init file exists.
 */
static List *
read_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	List	   *rows = NIL;
	MemoryContext caller = CurrentMemoryContext;

	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database d = (Form_pg_database) GETSTRUCT(tup);
		MemoryContext old = MemoryContextSwitchTo(caller);
		DbRow	   *row = palloc0(sizeof(DbRow));

		row->oid = d->oid;
		row->connectable = d->datallowconn && !database_is_invalid_form(d);
		row->istemplate = d->datistemplate;
		strlcpy(row->name, NameStr(d->datname), NAMEDATALEN);
		rows = lappend(rows, row);
		MemoryContextSwitchTo(old);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
	return rows;
}

/* Our record of a database (by OID, or by name if it has none), or NULL. */
static LauncherDb *
find_db(Oid dboid, const char *name)
{
	ListCell   *lc;

	foreach(lc, dbs)
	{
		LauncherDb *db = (LauncherDb *) lfirst(lc);

		if (OidIsValid(dboid) ? db->dboid == dboid :
			(!OidIsValid(db->dboid) && strcmp(db->name, name) == 0))
			return db;
	}
	return NULL;
}

/* Mark a database as relayed, recording it if new. */
static void
want_db(Oid dboid, const char *name)
{
	LauncherDb *db = find_db(dboid, name);

	if (db == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		db = palloc0(sizeof(LauncherDb));
		db->dboid = dboid;
		db->entry = -1;
		dbs = lappend(dbs, db);
		MemoryContextSwitchTo(old);
	}
	strlcpy(db->name, name, NAMEDATALEN);
	db->wanted = true;
}

/*
 * Decide from pg_database and outbox.databases which databases are relayed
 * now; stop the relays of the others and forget them once stopped.
 */
static void
launcher_scan(void)
{
	MemoryContext cxt;
	MemoryContext old;
	List	   *rows;
	ListCell   *lc;
	ListCell   *lc2;

	cxt = AllocSetContextCreate(TopMemoryContext, "outbox launcher scan",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	rows = read_databases();

	foreach(lc, dbs)
		((LauncherDb *) lfirst(lc))->wanted = false;

	if (all_databases())
	{
		foreach(lc, rows)
		{
			DbRow	   *row = (DbRow *) lfirst(lc);

			if (row->connectable && !row->istemplate)
				want_db(row->oid, row->name);
		}
	}
	else
	{
		char	   *copy = pstrdup(outbox_databases);
		List	   *names = NIL;

		/* checked by the GUC's check hook */
		(void) SplitIdentifierString(copy, ',', &names);
		foreach(lc, names)
		{
			const char *name = (const char *) lfirst(lc);
			Oid			found = InvalidOid;

			foreach(lc2, rows)
			{
				DbRow	   *row = (DbRow *) lfirst(lc2);

				if (row->connectable && strcmp(row->name, name) == 0)
					found = row->oid;
			}
			want_db(found, name);
		}
	}

	/* the others: stop their relays, forget them once stopped */
	foreach(lc, dbs)
	{
		LauncherDb *db = (LauncherDb *) lfirst(lc);

		if (db->wanted)
			continue;
		if (db->handle != NULL)
		{
			pid_t		pid;

			if (GetBackgroundWorkerPid(db->handle, &pid) != BGWH_STOPPED)
			{
				ereport(LOG,
						(errmsg("outbox launcher: database \"%s\" is no longer relayed; stopping its relay",
								db->name),
						 errdetail("Its replication slot is kept and holds WAL; drop it with pg_drop_replication_slot() if the database is not to be relayed again.")));
				TerminateBackgroundWorker(db->handle);
				continue;		/* forgotten once it stopped */
			}
			pfree(db->handle);
			db->handle = NULL;
		}
		if (db->entry >= 0)
			outbox_entry_release(db->entry);
		dbs = foreach_delete_current(dbs, lc);
		pfree(db);
	}

	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}

/* Start a database's relay if a worker slot is free. */
static void
launcher_start(LauncherDb *db, TimestampTz now, bool visible)
{
	BackgroundWorker bgw;
	char		slot[NAMEDATALEN];
	bool		show = visible ||
		(db->entry >= 0 && outbox_entry_visible(db->entry));

	slot_name_for(db->dboid, slot);
	/* the database's entry: the one it has, or a free one */
	db->entry = outbox_entry_take(db->dboid, db->name, slot, visible);
	if (db->entry < 0)
	{
		/* every entry taken: as many as there are worker processes */
		db->next_start = TimestampTzPlusMilliseconds(now, RECHECK_MS);
		launcher_blocked(db, false, "more databases are to be relayed than max_worker_processes (now %d) allows; database \"%s\" waits: raise max_worker_processes and restart the server",
						 max_worker_processes, db->name);
		return;
	}

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_ConsistentState;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(bgw.bgw_library_name, "outbox", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "outbox_relay_main", BGW_MAXLEN);
	snprintf(bgw.bgw_name, BGW_MAXLEN, "outbox relay for database %s",
			 db->name);
	strlcpy(bgw.bgw_type, "outbox relay", BGW_MAXLEN);
	bgw.bgw_main_arg = ObjectIdGetDatum(db->dboid);
	bgw.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&bgw, &db->handle))
	{
		db->handle = NULL;
		db->next_start = TimestampTzPlusMilliseconds(now, RECHECK_MS);
		launcher_blocked(db, show, "no background worker slot is free for the outbox relay of database \"%s\"; raise max_worker_processes (now %d) and restart the server",
						 db->name, max_worker_processes);
		return;
	}
	db->registrations = seen_registrations;
	db->logged[0] = '\0';
}

/* Look again at every database found without the extension. */
static void
launcher_forget_absent(void)
{
	ListCell   *lc;

	foreach(lc, dbs)
	{
		LauncherDb *db = (LauncherDb *) lfirst(lc);

		if (db->absent)
		{
			db->absent = false;
			db->next_start = 0;
		}
	}
}

/*
 * Did a CREATE EXTENSION outbox commit since we last looked?  Then every
 * database found without the extension is looked at again (at most
 * PROBES_AT_ONCE at a time): cheaper than being sure which one it was.
 */
static bool
launcher_registrations(void)
{
	uint32		now = pg_atomic_read_u32(&outbox_relay_shared->registrations);

	if (now == seen_registrations)
		return false;
	seen_registrations = now;
	launcher_forget_absent();
	return true;
}

/* Relays of '*' that have not yet found their extension. */
static int
launcher_probes(void)
{
	ListCell   *lc;
	int			n = 0;

	foreach(lc, dbs)
	{
		LauncherDb *db = (LauncherDb *) lfirst(lc);

		if (db->handle != NULL && db->entry >= 0 &&
			!outbox_entry_visible(db->entry))
			n++;
	}
	return n;
}

static void
launcher_on_exit(int code, Datum arg)
{
	outbox_launcher_listen(false);
}

/*
 * A launcher that starts while relays run (the previous one was terminated
 * or failed; relays outlive it) cannot adopt them: it has no handles to
 * stop or watch them by.  Ask them to go, wait, and start afresh.
 */
static void
launcher_stop_orphans(void)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   ORPHAN_WAIT_MS);
	int			n;

	n = outbox_entries_stop_relays();
	if (n > 0)
		ereport(LOG,
				(errmsg("outbox launcher: stopping %d relay(s) started by a previous launcher", n)));
	while (outbox_entries_stop_relays() > 0)
	{
		if (GetCurrentTimestamp() >= deadline)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("outbox launcher: relays of a previous launcher did not stop within %d s",
							ORPHAN_WAIT_MS / 1000)));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	outbox_entries_release_all();
}

void
outbox_launcher_main(Datum main_arg)
{
	TimestampTz next_scan = 0;
	bool		in_recovery;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	if (outbox_relay_shared == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("outbox launcher has no shared memory"),
				 errhint("Load outbox with shared_preload_libraries.")));
	seen_registrations = pg_atomic_read_u32(&outbox_relay_shared->registrations);
	in_recovery = RecoveryInProgress();
	launcher_stop_orphans();
	outbox_launcher_listen(true);
	before_shmem_exit(launcher_on_exit, (Datum) 0);

	ereport(LOG,
			(errmsg("outbox launcher started; relaying %s",
					all_databases() ? "every database where the extension is installed" :
					psprintf("databases %s", outbox_databases))));

	for (;;)
	{
		TimestampTz now;
		TimestampTz wake;
		ListCell   *lc;
		int			probes;
		long		secs;
		int			usecs;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			next_scan = 0;		/* a reload may have fixed something */
			foreach(lc, dbs)
				((LauncherDb *) lfirst(lc))->next_start = 0;
			launcher_forget_absent();
		}
		if (in_recovery && !RecoveryInProgress())
		{
			/* promoted: extensions created on the primary tell nobody */
			in_recovery = false;
			launcher_forget_absent();
		}
		if (launcher_registrations())
			next_scan = 0;

		now = GetCurrentTimestamp();
		if (now >= next_scan)
		{
			launcher_scan();
			next_scan = TimestampTzPlusMilliseconds(now, RECHECK_MS);
		}

		/* relays that stopped */
		foreach(lc, dbs)
		{
			LauncherDb *db = (LauncherDb *) lfirst(lc);
			pid_t		pid;

			if (db->handle == NULL)
				continue;
			switch (GetBackgroundWorkerPid(db->handle, &pid))
			{
				case BGWH_STOPPED:
					pfree(db->handle);
					db->handle = NULL;
					if (!db->wanted)
					{
						/* stopped because no longer relayed: forget it */
						if (db->entry >= 0)
							outbox_entry_release(db->entry);
						dbs = foreach_delete_current(dbs, lc);
						pfree(db);
					}
					else if (db->entry >= 0 && outbox_entry_absent(db->entry) &&
						db->registrations == seen_registrations)
					{
						/* '*' and no extension there: until one is created */
						db->absent = true;
						db->absent_at = now;
						outbox_entry_release(db->entry);
						db->entry = -1;
					}
					else if (db->entry >= 0 && outbox_entry_absent(db->entry))
						db->next_start = now;	/* created meanwhile: look again */
					else
						db->next_start = TimestampTzPlusMilliseconds(now,
																	 Max(RELAUNCH_MS, outbox_retry_interval_ms));
					break;
				case BGWH_POSTMASTER_DIED:
					proc_exit(1);
					break;
				default:
					break;
			}
		}

		/* relays to start */
		probes = launcher_probes();
		wake = next_scan;
		foreach(lc, dbs)
		{
			LauncherDb *db = (LauncherDb *) lfirst(lc);

			/*
			 * A CREATE EXTENSION that tells nobody (replayed on a standby
			 * that was promoted since, or a prepared transaction) is found
			 * by looking again now and then.
			 */
			if (db->absent &&
				TimestampDifferenceExceeds(db->absent_at, now, ABSENT_RECHECK_MS))
				db->absent = false;
			if (db->handle != NULL || db->absent)
				continue;
			if (!OidIsValid(db->dboid))
			{
				launcher_blocked(db, true, "database \"%s\" named by outbox.databases does not exist or does not allow connections; create it or change outbox.databases and reload",
								 db->name);
				continue;
			}
			if (now < db->next_start)
			{
				wake = Min(wake, db->next_start);
				continue;
			}
			/* with '*', a database not known to have the extension is probed */
			if (all_databases() &&
				(db->entry < 0 || !outbox_entry_visible(db->entry)))
			{
				if (probes >= PROBES_AT_ONCE)
					continue;	/* woken when a probe ends */
				probes++;
			}
			launcher_start(db, now, !all_databases());
			if (db->handle == NULL)
				wake = Min(wake, db->next_start);
		}

		TimestampDifference(now, wake, &secs, &usecs);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(1, secs * 1000 + usecs / 1000), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
