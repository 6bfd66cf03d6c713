/*-------------------------------------------------------------------------
 *
 * incarnation.c
 *	  The incarnation id of this data directory's history (incarnation.h).
 *
 * The id lives in $PGDATA/pg_outbox/incarnation, a small text file:
 *
 *	  outbox incarnation 1
 *	  id 5f0c...		(32 hexadecimal digits)
 *	  timeline 1
 *	  device 2049
 *	  inode 1835123
 *
 * The device and inode numbers are those of the file itself: it is written
 * to a temporary file, whose numbers are read with fstat() before anything
 * is written, and renamed into place, which keeps them.  Any copy of the
 * data directory (cp -a, rsync, tar, pg_basebackup, a restore) makes a new
 * file with other numbers, so a mismatch means "this directory is a copy":
 * a new id is drawn.  So is one when the server runs on another timeline
 * than the recorded one (a promoted standby, the end of a point-in-time
 * recovery).  A copy that keeps device and inode numbers (a block-level
 * snapshot mounted in the original's place) is not recognised: remove the
 * file in such a copy before starting it (docs/relay.md).
 *
 * Relays of several databases may look at the file at once: an exclusive
 * flock() on pg_outbox/lock makes them agree on one id.  The file is
 * written durably (fsync of the file, rename, fsync of the directory)
 * before the id is used anywhere.
 *
 * src/incarnation.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/xlog.h"
#include "common/file_perm.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"

#include "compat.h"
#include "incarnation.h"

#define INCARNATION_DIR		"pg_outbox"
#define INCARNATION_FILE	INCARNATION_DIR "/incarnation"
#define INCARNATION_TEMP	INCARNATION_DIR "/incarnation.tmp"
#define INCARNATION_LOCK	INCARNATION_DIR "/lock"
#define INCARNATION_HEADER	"outbox incarnation 1\n"

/* What the file says. */
typedef struct IncarnationFile
{
	char		id[OUTBOX_INCARNATION_LEN + 1];
	uint32		timeline;
	uint64		device;
	uint64		inode;
} IncarnationFile;

/* close(fd) for an error report about it: errno is the error's. */
static void
close_keep_errno(int fd)
{
	int			save_errno = errno;

	close(fd);
	errno = save_errno;
}

/*
 * Read the file; false when it is missing or malformed (both mean: draw
 * one).  *st is the file's own status.
 */
static bool
read_incarnation(IncarnationFile *f, struct stat *st)
{
	char		text[512];
	int			fd;
	ssize_t		n;
	unsigned long long dev;
	unsigned long long ino;
	unsigned int tli;
	char		id[OUTBOX_INCARNATION_LEN + 2];
	int			i;

	fd = open(INCARNATION_FILE, O_RDONLY | PG_BINARY, 0);
	if (fd < 0)
	{
		if (errno == ENOENT)
			return false;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m", INCARNATION_FILE)));
	}
	if (fstat(fd, st) != 0)
	{
		close_keep_errno(fd);
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not stat file \"%s\": %m", INCARNATION_FILE)));
	}
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read file \"%s\": %m", INCARNATION_FILE)));
	text[n] = '\0';
	if (strncmp(text, INCARNATION_HEADER, strlen(INCARNATION_HEADER)) != 0 ||
		sscanf(text + strlen(INCARNATION_HEADER),
			   "id %33s\ntimeline %u\ndevice %llu\ninode %llu\n",
			   id, &tli, &dev, &ino) != 4 ||
		strlen(id) != OUTBOX_INCARNATION_LEN)
		return false;
	for (i = 0; i < OUTBOX_INCARNATION_LEN; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
			return false;
	memcpy(f->id, id, sizeof(f->id));
	f->timeline = tli;
	f->device = dev;
	f->inode = ino;
	return true;
}

/* Draw a new id for timeline tli and write it durably. */
static void
write_incarnation(IncarnationFile *f, TimeLineID tli)
{
	uint8		raw[OUTBOX_INCARNATION_LEN / 2];
	char		text[512];
	struct stat st;
	int			fd;
	int			len;
	int			i;

	if (!pg_strong_random(raw, sizeof(raw)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random outbox incarnation id")));
	for (i = 0; i < (int) sizeof(raw); i++)
		snprintf(f->id + 2 * i, 3, "%02x", raw[i]);

	fd = open(INCARNATION_TEMP, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY,
			  pg_file_create_mode);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create file \"%s\": %m", INCARNATION_TEMP)));
	if (fstat(fd, &st) != 0)
	{
		close_keep_errno(fd);
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not stat file \"%s\": %m", INCARNATION_TEMP)));
	}
	f->timeline = tli;
	f->device = (uint64) st.st_dev;
	f->inode = (uint64) st.st_ino;
	len = snprintf(text, sizeof(text),
				   INCARNATION_HEADER "id %s\ntimeline %u\ndevice " UINT64_FORMAT "\ninode " UINT64_FORMAT "\n",
				   f->id, f->timeline, f->device, f->inode);
	errno = 0;
	if (write(fd, text, len) != len)
	{
		if (errno == 0)
			errno = ENOSPC;
		close_keep_errno(fd);
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", INCARNATION_TEMP)));
	}
	if (pg_fsync(fd) != 0)
	{
		close_keep_errno(fd);
		ereport(data_sync_elevel(ERROR),
				(errcode_for_file_access(),
				 errmsg("could not fsync file \"%s\": %m", INCARNATION_TEMP)));
	}
	if (close(fd) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not close file \"%s\": %m", INCARNATION_TEMP)));
	/* fsyncs the file and the directory */
	(void) durable_rename(INCARNATION_TEMP, INCARNATION_FILE, ERROR);
}

void
outbox_incarnation(char *buf)
{
	IncarnationFile f;
	struct stat st;
	TimeLineID	tli;
	int			lockfd;
	bool		ok;

	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the outbox incarnation is not available during recovery")));
	tli = outbox_insert_timeline();

	if (MakePGDirectory(INCARNATION_DIR) < 0 && errno != EEXIST)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create directory \"%s\": %m", INCARNATION_DIR)));
	lockfd = open(INCARNATION_LOCK, O_RDWR | O_CREAT | PG_BINARY,
				  pg_file_create_mode);
	if (lockfd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m", INCARNATION_LOCK)));
	while (flock(lockfd, LOCK_EX) != 0)
	{
		if (errno != EINTR)
		{
			close_keep_errno(lockfd);
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not lock file \"%s\": %m", INCARNATION_LOCK)));
		}
	}

	PG_TRY();
	{
		ok = read_incarnation(&f, &st);
		if (ok && (f.device != (uint64) st.st_dev ||
				   f.inode != (uint64) st.st_ino ||
				   f.timeline != tli))
		{
			ereport(LOG,
					(errmsg("outbox: drawing a new incarnation id: %s",
							f.timeline != tli ?
							psprintf("this server runs on timeline %u, the id was drawn on timeline %u",
									 tli, f.timeline) :
							"this data directory is a copy of the one the id was drawn in"),
					 errdetail("Exactly-once progress records and the installation identity of the old id are not trusted any more; events after the point where the histories parted may be delivered again.")));
			ok = false;
		}
		if (!ok)
			write_incarnation(&f, tli);
	}
	PG_FINALLY();
	{
		close(lockfd);			/* releases the lock */
	}
	PG_END_TRY();

	memcpy(buf, f.id, OUTBOX_INCARNATION_LEN + 1);
}

/*
 * outbox._incarnation(): the id as text (superuser only: it may write the
 * file).
 */
PG_FUNCTION_INFO_V1(outbox_incarnation_sql);

Datum
outbox_incarnation_sql(PG_FUNCTION_ARGS)
{
	char		id[OUTBOX_INCARNATION_LEN + 1];

	outbox_incarnation(id);
	PG_RETURN_TEXT_P(cstring_to_text(id));
}
