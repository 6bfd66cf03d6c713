/*-------------------------------------------------------------------------
 *
 * kafka_mock_broker.c
 *	  A local Kafka-protocol cluster for the outbox tests, built on
 *	  librdkafka's mock cluster, steered through a Unix-domain control socket.
 *
 * The mock cluster speaks the real Kafka protocol over TCP on 127.0.0.1 and
 * picks its own ports.  Once the brokers listen (and the control socket, if
 * any, accepts connections) the program prints "bootstrap: <servers>" on
 * stdout and, with --bootstrap-file, writes the servers to that file
 * atomically, so that scripts can wait for the file to appear.
 *
 * Usage:
 *	  kafka_mock_broker [--brokers N] [--topic NAME:PARTITIONS[:REPLICATION]]...
 *	                    [--bootstrap-file PATH] [--control PATH]
 *	                    [--default-partitions N]
 *	  kafka_mock_broker ctl PATH COMMAND [ARG...]
 *
 * The control protocol is one command per line, answered by exactly one
 * line, "ok ..." or "error <reason>"; test/broker/README.md lists the
 * commands.  The control socket is served with poll() in the main thread,
 * one command at a time.  SIGTERM and SIGINT reach the loop through a
 * self-pipe and shut the cluster down cleanly (exit status 0).
 *
 * test/broker/kafka_mock_broker.c
 *
 *-------------------------------------------------------------------------
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "broker_util.h"
#include <librdkafka/rdkafka_mock.h>

#define PROGNAME			"kafka_mock_broker"

#define MAX_BROKERS			32	/* keeps "ok <servers>" within a reply */
#define MAX_PARTITIONS		10000
#define MAX_ERROR_COUNT		100000
#define MAX_RTT_MS			3600000
#define MAX_CLIENTS			16
#define MAX_LINE			1024	/* longest accepted command line */
#define MAX_WORDS			16		/* most words in one command */
#define RESPONSE_SIZE		1024
#define CTL_TIMEOUT_MS		10000	/* ctl client: wait this long for a reply */

/*
 * librdkafka 2.0.2's mock cluster gives auto-created topics this many
 * partitions and offers no API to change it.
 */
#define MOCK_DEFAULT_PARTITIONS 4

/* Written by the signal handler, read by the main loop. */
static int	signal_pipe_write = -1;

/* One connected control client. */
typedef struct ControlClient
{
	int			fd;				/* -1 when the slot is free */
	size_t		len;			/* bytes buffered in line */
	char		line[MAX_LINE];
} ControlClient;

/* Everything the running broker owns. */
typedef struct MockBroker
{
	rd_kafka_t *rk;
	rd_kafka_mock_cluster_t *mcluster;
	int			broker_cnt;
	const char *control_path;
	const char *bootstrap_path;
	int			listen_fd;
	dev_t		socket_dev;		/* identity of the socket file we created */
	ino_t		socket_ino;
	int			signal_pipe_read;
	int			stopping;
	ControlClient clients[MAX_CLIENTS];
} MockBroker;

/* A Kafka protocol request type, by name. */
typedef struct ApiKeyName
{
	int16_t		key;
	const char *name;
} ApiKeyName;

static const ApiKeyName api_key_names[] = {
	{0, "Produce"},
	{1, "Fetch"},
	{2, "ListOffsets"},
	{2, "Offset"},
	{3, "Metadata"},
	{8, "OffsetCommit"},
	{9, "OffsetFetch"},
	{10, "FindCoordinator"},
	{11, "JoinGroup"},
	{12, "Heartbeat"},
	{13, "LeaveGroup"},
	{14, "SyncGroup"},
	{15, "DescribeGroups"},
	{16, "ListGroups"},
	{17, "SaslHandshake"},
	{18, "ApiVersions"},
	{19, "CreateTopics"},
	{20, "DeleteTopics"},
	{21, "DeleteRecords"},
	{22, "InitProducerId"},
	{23, "OffsetForLeaderEpoch"},
	{24, "AddPartitionsToTxn"},
	{25, "AddOffsetsToTxn"},
	{26, "EndTxn"},
	{27, "WriteTxnMarkers"},
	{28, "TxnOffsetCommit"},
	{32, "DescribeConfigs"},
	{33, "AlterConfigs"},
	{36, "SaslAuthenticate"},
	{37, "CreatePartitions"},
	{42, "DeleteGroups"},
	{47, "OffsetDelete"},
};

static const char usage_text[] =
"Usage:\n"
"  " PROGNAME " [--brokers N] [--topic NAME:PARTITIONS[:REPLICATION]]...\n"
"                    [--bootstrap-file PATH] [--control PATH]\n"
"                    [--default-partitions N]\n"
"  " PROGNAME " ctl PATH COMMAND [ARG...]\n"
"\n"
"Starts a librdkafka mock Kafka cluster on 127.0.0.1 (default 3 brokers,\n"
"ids 1..N) and runs until SIGTERM, SIGINT or the control command 'stop'.\n"
"The 'ctl' form sends one control command and prints the reply; it exits\n"
"0 on 'ok', 1 on 'error', 2 when it cannot talk to the broker.\n"
"See test/broker/README.md for the control commands.\n";


/* ---------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------
 */

/* Print a timestamped line on stderr. */
static void
log_msg(const char *fmt,...)
{
	struct timespec ts;
	struct tm	tm;
	char		stamp[32];
	va_list		ap;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);

	fprintf(stderr, "%s.%03ldZ " PROGNAME ": ", stamp, ts.tv_nsec / 1000000L);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

/* Kafka's own rule for topic names: 1..249 of [A-Za-z0-9._-]. */
static int
valid_topic_name(const char *s)
{
	size_t		n = strlen(s);
	size_t		i;

	if (n == 0 || n > 249 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return 0;
	for (i = 0; i < n; i++)
	{
		char		c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

/* Fill a sockaddr_un for path; -1 if the path does not fit. */
static int
make_unix_addr(const char *path, struct sockaddr_un *addr)
{
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(addr->sun_path))
		return -1;
	strcpy(addr->sun_path, path);
	return 0;
}

static int
set_nonblock_cloexec(int fd)
{
	int			fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -1;
	fl = fcntl(fd, F_GETFD);
	if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0)
		return -1;
	return 0;
}

/* Write all of buf to a (possibly non-blocking) fd; -1 on failure. */
static int
write_all(int fd, const char *buf, size_t len)
{
	while (len > 0)
	{
		ssize_t		n = write(fd, buf, len);

		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
			{
				struct pollfd pfd = {fd, POLLOUT, 0};

				if (poll(&pfd, 1, 1000) <= 0)
					return -1;
				continue;
			}
			return -1;
		}
		buf += n;
		len -= (size_t) n;
	}
	return 0;
}

/* Copy s into out (size outsz) with control characters made visible. */
static void
printable_copy(const char *s, char *out, size_t outsz)
{
	size_t		i;

	for (i = 0; s[i] != '\0' && i + 1 < outsz; i++)
	{
		unsigned char c = (unsigned char) s[i];

		out[i] = (c < 0x20 || c == 0x7f) ? '?' : (char) c;
	}
	out[i] = '\0';
}


/* ---------------------------------------------------------------------
 * Name lookups
 * ---------------------------------------------------------------------
 */

/*
 * A librdkafka error by name (with or without the RD_KAFKA_RESP_ERR_
 * prefix, any case) or by numeric code, using rd_kafka_get_err_descs().
 */
static int
lookup_error(const char *s, rd_kafka_resp_err_t *out)
{
	static const char prefix[] = "RD_KAFKA_RESP_ERR_";
	const struct rd_kafka_err_desc *descs;
	size_t		cnt;
	size_t		i;
	long		code;

	rd_kafka_get_err_descs(&descs, &cnt);

	if (strncasecmp(s, prefix, sizeof(prefix) - 1) == 0)
		s += sizeof(prefix) - 1;

	if (parse_long(s, INT_MIN, INT_MAX, &code) == 0)
	{
		for (i = 0; i < cnt; i++)
		{
			if (descs[i].name != NULL && (long) descs[i].code == code)
			{
				*out = descs[i].code;
				return 0;
			}
		}
		return -1;
	}

	for (i = 0; i < cnt; i++)
	{
		if (descs[i].name != NULL && strcasecmp(descs[i].name, s) == 0)
		{
			*out = descs[i].code;
			return 0;
		}
	}
	return -1;
}

/* A protocol request type by name (any case) or by number. */
static int
lookup_api_key(const char *s, int16_t *out)
{
	size_t		i;
	long		v;

	if (parse_long(s, 0, INT16_MAX, &v) == 0)
	{
		*out = (int16_t) v;
		return 0;
	}
	for (i = 0; i < sizeof(api_key_names) / sizeof(api_key_names[0]); i++)
	{
		if (strcasecmp(api_key_names[i].name, s) == 0)
		{
			*out = api_key_names[i].key;
			return 0;
		}
	}
	return -1;
}

static const char *
api_key_name(int16_t key)
{
	size_t		i;

	for (i = 0; i < sizeof(api_key_names) / sizeof(api_key_names[0]); i++)
		if (api_key_names[i].key == key)
			return api_key_names[i].name;
	return "?";
}

/* Error name as the control protocol spells it. */
static const char *
error_name(rd_kafka_resp_err_t err)
{
	return rd_kafka_err2name(err);
}


/* ---------------------------------------------------------------------
 * Control commands
 *
 * Each handler gets the words of the command (argv[0] is the command name)
 * and writes exactly one response line, without newline, to resp.
 * ---------------------------------------------------------------------
 */

typedef void (*CommandFn) (MockBroker *mb, int argc, char **argv,
						   char *resp, size_t respsz);

typedef struct Command
{
	const char *name;
	int			min_args;		/* words after the command name */
	int			max_args;
	const char *usage;
	CommandFn	fn;
} Command;

/* Broker id: 1..N, or "all" / -1 for every broker. */
static int
parse_broker_id(MockBroker *mb, const char *s, int32_t *out)
{
	long		v;

	if (strcasecmp(s, "all") == 0)
	{
		*out = -1;
		return 0;
	}
	if (parse_long(s, -1, mb->broker_cnt, &v) != 0 || v == 0)
		return -1;
	*out = (int32_t) v;
	return 0;
}

static void
reply_rd_err(char *resp, size_t respsz, rd_kafka_resp_err_t err)
{
	snprintf(resp, respsz, "error %s: %s", error_name(err),
			 rd_kafka_err2str(err));
}

static void
cmd_updown(MockBroker *mb, int argc, char **argv, char *resp, size_t respsz)
{
	int			up = strcmp(argv[0], "up") == 0;
	int32_t		id;
	rd_kafka_resp_err_t err;

	if (parse_broker_id(mb, argv[1], &id) != 0)
	{
		snprintf(resp, respsz, "error broker id must be 1..%d or all",
				 mb->broker_cnt);
		return;
	}
	err = up ? rd_kafka_mock_broker_set_up(mb->mcluster, id)
		: rd_kafka_mock_broker_set_down(mb->mcluster, id);
	if (err)
		reply_rd_err(resp, respsz, err);
	else if (id == -1)
		snprintf(resp, respsz, "ok all brokers %s", up ? "up" : "down");
	else
		snprintf(resp, respsz, "ok broker %" PRId32 " %s", id,
				 up ? "up" : "down");
}

static void
cmd_rtt(MockBroker *mb, int argc, char **argv, char *resp, size_t respsz)
{
	int32_t		id;
	long		ms;
	rd_kafka_resp_err_t err;

	if (parse_broker_id(mb, argv[1], &id) != 0)
	{
		snprintf(resp, respsz, "error broker id must be 1..%d or all",
				 mb->broker_cnt);
		return;
	}
	if (parse_long(argv[2], 0, MAX_RTT_MS, &ms) != 0)
	{
		snprintf(resp, respsz, "error rtt must be 0..%d milliseconds",
				 MAX_RTT_MS);
		return;
	}
	err = rd_kafka_mock_broker_set_rtt(mb->mcluster, id, (int) ms);
	if (err)
		reply_rd_err(resp, respsz, err);
	else
		snprintf(resp, respsz, "ok rtt %ld ms on %s%s", ms,
				 id == -1 ? "all brokers" : "broker ",
				 id == -1 ? "" : argv[1]);
}

static void
cmd_error(MockBroker *mb, int argc, char **argv, char *resp, size_t respsz)
{
	int16_t		key;
	long		count;
	rd_kafka_resp_err_t err;
	rd_kafka_resp_err_t *errs;
	long		i;

	if (lookup_api_key(argv[1], &key) != 0)
	{
		snprintf(resp, respsz, "error unknown request type '%.64s'", argv[1]);
		return;
	}
	if (parse_long(argv[2], 1, MAX_ERROR_COUNT, &count) != 0)
	{
		snprintf(resp, respsz, "error count must be 1..%d", MAX_ERROR_COUNT);
		return;
	}
	if (lookup_error(argv[3], &err) != 0)
	{
		snprintf(resp, respsz, "error unknown error name '%.64s'", argv[3]);
		return;
	}
	errs = malloc(sizeof(*errs) * (size_t) count);
	if (errs == NULL)
	{
		snprintf(resp, respsz, "error out of memory");
		return;
	}
	for (i = 0; i < count; i++)
		errs[i] = err;
	rd_kafka_mock_push_request_errors_array(mb->mcluster, key, (size_t) count,
											errs);
	free(errs);
	snprintf(resp, respsz, "ok %ld x %s queued for %s (%d)", count,
			 error_name(err), api_key_name(key), (int) key);
}

static void
cmd_clear_errors(MockBroker *mb, int argc, char **argv, char *resp,
				 size_t respsz)
{
	int16_t		key;

	if (lookup_api_key(argv[1], &key) != 0)
	{
		snprintf(resp, respsz, "error unknown request type '%.64s'", argv[1]);
		return;
	}
	rd_kafka_mock_clear_request_errors(mb->mcluster, key);
	snprintf(resp, respsz, "ok cleared errors for %s (%d)", api_key_name(key),
			 (int) key);
}

static void
cmd_topic_error(MockBroker *mb, int argc, char **argv, char *resp,
				size_t respsz)
{
	rd_kafka_resp_err_t err;

	if (!valid_topic_name(argv[1]))
	{
		snprintf(resp, respsz, "error invalid topic name");
		return;
	}
	if (lookup_error(argv[2], &err) != 0)
	{
		snprintf(resp, respsz, "error unknown error name '%.64s'", argv[2]);
		return;
	}
	rd_kafka_mock_topic_set_error(mb->mcluster, argv[1], err);
	snprintf(resp, respsz, "ok topic %s error %s", argv[1], error_name(err));
}

static void
cmd_create_topic(MockBroker *mb, int argc, char **argv, char *resp,
				 size_t respsz)
{
	long		partitions;
	long		replication = mb->broker_cnt < 3 ? mb->broker_cnt : 3;
	rd_kafka_resp_err_t err;

	if (!valid_topic_name(argv[1]))
	{
		snprintf(resp, respsz, "error invalid topic name");
		return;
	}
	if (parse_long(argv[2], 1, MAX_PARTITIONS, &partitions) != 0)
	{
		snprintf(resp, respsz, "error partitions must be 1..%d",
				 MAX_PARTITIONS);
		return;
	}
	if (argc > 3 && parse_long(argv[3], 1, mb->broker_cnt, &replication) != 0)
	{
		snprintf(resp, respsz, "error replication must be 1..%d",
				 mb->broker_cnt);
		return;
	}
	err = rd_kafka_mock_topic_create(mb->mcluster, argv[1], (int) partitions,
									 (int) replication);
	if (err)
		reply_rd_err(resp, respsz, err);
	else
		snprintf(resp, respsz, "ok topic %s partitions %ld replication %ld",
				 argv[1], partitions, replication);
}

static void
cmd_leader(MockBroker *mb, int argc, char **argv, char *resp, size_t respsz)
{
	long		partition;
	long		id;
	rd_kafka_resp_err_t err;

	if (!valid_topic_name(argv[1]))
	{
		snprintf(resp, respsz, "error invalid topic name");
		return;
	}
	if (parse_long(argv[2], 0, MAX_PARTITIONS - 1, &partition) != 0)
	{
		snprintf(resp, respsz, "error partition must be 0..%d",
				 MAX_PARTITIONS - 1);
		return;
	}
	if (parse_long(argv[3], -1, mb->broker_cnt, &id) != 0 || id == 0)
	{
		snprintf(resp, respsz,
				 "error leader must be a broker id 1..%d, or -1 for none",
				 mb->broker_cnt);
		return;
	}
	err = rd_kafka_mock_partition_set_leader(mb->mcluster, argv[1],
											 (int32_t) partition, (int32_t) id);
	if (err)
		reply_rd_err(resp, respsz, err);
	else
		snprintf(resp, respsz, "ok %s [%ld] leader %ld", argv[1], partition,
				 id);
}

static void
cmd_bootstrap(MockBroker *mb, int argc, char **argv, char *resp,
			  size_t respsz)
{
	snprintf(resp, respsz, "ok %s",
			 rd_kafka_mock_cluster_bootstraps(mb->mcluster));
}

static void
cmd_ping(MockBroker *mb, int argc, char **argv, char *resp, size_t respsz)
{
	snprintf(resp, respsz, "ok pong");
}

static void
cmd_stop(MockBroker *mb, int argc, char **argv, char *resp, size_t respsz)
{
	mb->stopping = 1;
	snprintf(resp, respsz, "ok stopping");
}

static void cmd_help(MockBroker *mb, int argc, char **argv, char *resp,
					 size_t respsz);

static const Command commands[] = {
	{"down", 1, 1, "down ID", cmd_updown},
	{"up", 1, 1, "up ID", cmd_updown},
	{"rtt", 2, 2, "rtt ID MS", cmd_rtt},
	{"error", 3, 3, "error APIKEY COUNT ERRNAME", cmd_error},
	{"clear_errors", 1, 1, "clear_errors APIKEY", cmd_clear_errors},
	{"topic_error", 2, 2, "topic_error TOPIC ERRNAME", cmd_topic_error},
	{"create_topic", 2, 3, "create_topic NAME PARTITIONS [REPLICATION]",
	 cmd_create_topic},
	{"leader", 3, 3, "leader TOPIC PARTITION ID", cmd_leader},
	{"bootstrap", 0, 0, "bootstrap", cmd_bootstrap},
	{"ping", 0, 0, "ping", cmd_ping},
	{"stop", 0, 0, "stop", cmd_stop},
	{"help", 0, 0, "help", cmd_help},
};

#define NUM_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void
cmd_help(MockBroker *mb, int argc, char **argv, char *resp, size_t respsz)
{
	size_t		i;
	size_t		off;

	off = (size_t) snprintf(resp, respsz, "ok");
	for (i = 0; i < NUM_COMMANDS && off < respsz; i++)
		off += (size_t) snprintf(resp + off, respsz - off, "%s%s",
								 i == 0 ? " " : ", ", commands[i].usage);
}

/* Run one command line (no newline) and put the reply in resp. */
static void
run_command(MockBroker *mb, char *line, char *resp, size_t respsz)
{
	char	   *words[MAX_WORDS];
	int			nwords = 0;
	char	   *p = line;
	size_t		i;

	for (;;)
	{
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		if (nwords == MAX_WORDS)
		{
			snprintf(resp, respsz, "error too many words");
			return;
		}
		words[nwords++] = p;
		while (*p != '\0' && *p != ' ' && *p != '\t')
			p++;
		if (*p != '\0')
			*p++ = '\0';
	}

	if (nwords == 0)
	{
		snprintf(resp, respsz, "error empty command");
		return;
	}

	for (i = 0; i < NUM_COMMANDS; i++)
	{
		const Command *c = &commands[i];

		if (strcmp(c->name, words[0]) != 0)
			continue;
		if (nwords - 1 < c->min_args || nwords - 1 > c->max_args)
		{
			snprintf(resp, respsz, "error usage: %s", c->usage);
			return;
		}
		c->fn(mb, nwords, words, resp, respsz);
		return;
	}
	snprintf(resp, respsz, "error unknown command '%.64s' (try help)",
			 words[0]);
}


/* ---------------------------------------------------------------------
 * Control socket
 * ---------------------------------------------------------------------
 */

static int
control_listen(MockBroker *mb)
{
	struct sockaddr_un addr;
	struct stat st;
	int			fd;

	if (make_unix_addr(mb->control_path, &addr) != 0)
	{
		log_msg("control socket path too long: %s", mb->control_path);
		return -1;
	}

	/* Remove a stale socket, but never some other kind of file. */
	if (lstat(mb->control_path, &st) == 0)
	{
		if (!S_ISSOCK(st.st_mode))
		{
			log_msg("refusing to replace %s: not a socket", mb->control_path);
			return -1;
		}
		if (unlink(mb->control_path) != 0)
		{
			log_msg("cannot remove stale socket %s: %s", mb->control_path,
					strerror(errno));
			return -1;
		}
	}

	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0)
	{
		log_msg("socket: %s", strerror(errno));
		return -1;
	}
	if (bind(fd, (struct sockaddr *) &addr, sizeof(addr)) != 0 ||
		listen(fd, 16) != 0 || set_nonblock_cloexec(fd) != 0 ||
		stat(mb->control_path, &st) != 0)
	{
		log_msg("cannot listen on %s: %s", mb->control_path, strerror(errno));
		close(fd);
		return -1;
	}
	mb->socket_dev = st.st_dev;
	mb->socket_ino = st.st_ino;
	mb->listen_fd = fd;
	return 0;
}

/* Remove our socket file, unless someone has replaced it since. */
static void
control_unlink(MockBroker *mb)
{
	struct stat st;

	if (mb->control_path == NULL || mb->listen_fd < 0)
		return;
	if (lstat(mb->control_path, &st) == 0 &&
		st.st_dev == mb->socket_dev && st.st_ino == mb->socket_ino)
		unlink(mb->control_path);
}

static void
client_close(ControlClient *cl)
{
	if (cl->fd >= 0)
		close(cl->fd);
	cl->fd = -1;
	cl->len = 0;
}

static void
control_accept(MockBroker *mb)
{
	for (;;)
	{
		int			fd = accept(mb->listen_fd, NULL, NULL);
		int			i;

		if (fd < 0)
		{
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				log_msg("accept: %s", strerror(errno));
			return;
		}
		if (set_nonblock_cloexec(fd) != 0)
		{
			close(fd);
			continue;
		}
		for (i = 0; i < MAX_CLIENTS; i++)
			if (mb->clients[i].fd < 0)
				break;
		if (i == MAX_CLIENTS)
		{
			static const char busy[] = "error too many control clients\n";

			(void) write_all(fd, busy, sizeof(busy) - 1);
			close(fd);
			continue;
		}
		mb->clients[i].fd = fd;
		mb->clients[i].len = 0;
	}
}

/* Execute every complete line buffered for a client and reply to each. */
static int
client_run_lines(MockBroker *mb, ControlClient *cl)
{
	char	   *nl;

	while (!mb->stopping &&
		   (nl = memchr(cl->line, '\n', cl->len)) != NULL)
	{
		size_t		linelen = (size_t) (nl - cl->line);
		int			has_nul = memchr(cl->line, '\0', linelen) != NULL;
		char		cmd[MAX_LINE];
		char		shown[MAX_LINE];
		char		resp[RESPONSE_SIZE];
		size_t		rlen;

		memcpy(cmd, cl->line, linelen);
		cmd[linelen] = '\0';
		if (linelen > 0 && cmd[linelen - 1] == '\r')
			cmd[linelen - 1] = '\0';
		memmove(cl->line, nl + 1, cl->len - linelen - 1);
		cl->len -= linelen + 1;

		printable_copy(cmd, shown, sizeof(shown));
		if (has_nul)
			snprintf(resp, sizeof(resp), "error command contains a NUL byte");
		else
			run_command(mb, cmd, resp, sizeof(resp));

		log_msg("control: %s -> %s", shown, resp);

		rlen = strlen(resp);
		resp[rlen++] = '\n';
		if (write_all(cl->fd, resp, rlen) != 0)
			return -1;
	}
	return 0;
}

/* Read what a client sent; returns -1 when the client should be dropped. */
static int
client_read(MockBroker *mb, ControlClient *cl)
{
	for (;;)
	{
		ssize_t		n;

		if (cl->len == sizeof(cl->line))
		{
			static const char toolong[] = "error command line too long\n";

			log_msg("control: command line too long, dropping client");
			(void) write_all(cl->fd, toolong, sizeof(toolong) - 1);
			return -1;
		}
		n = read(cl->fd, cl->line + cl->len, sizeof(cl->line) - cl->len);
		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -1;
		}
		if (n == 0)
		{
			/* A last command without newline still counts. */
			if (cl->len > 0 && cl->len < sizeof(cl->line))
			{
				cl->line[cl->len++] = '\n';
				(void) client_run_lines(mb, cl);
			}
			return -1;
		}
		cl->len += (size_t) n;
		if (client_run_lines(mb, cl) != 0)
			return -1;
		if (mb->stopping)
			return 0;
	}
}


/* ---------------------------------------------------------------------
 * Broker life cycle
 * ---------------------------------------------------------------------
 */

static void
on_signal(int signo)
{
	int			saved = errno;
	unsigned char b = (unsigned char) signo;

	if (signal_pipe_write >= 0)
		(void) write(signal_pipe_write, &b, 1);
	errno = saved;
}

static int
setup_signals(MockBroker *mb)
{
	int			fds[2];
	struct sigaction sa;

	if (pipe(fds) != 0 || set_nonblock_cloexec(fds[0]) != 0 ||
		set_nonblock_cloexec(fds[1]) != 0)
	{
		log_msg("pipe: %s", strerror(errno));
		return -1;
	}
	mb->signal_pipe_read = fds[0];
	signal_pipe_write = fds[1];

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	if (sigaction(SIGTERM, &sa, NULL) != 0 ||
		sigaction(SIGINT, &sa, NULL) != 0)
	{
		log_msg("sigaction: %s", strerror(errno));
		return -1;
	}

	sa.sa_handler = SIG_IGN;
	sa.sa_flags = 0;
	(void) sigaction(SIGPIPE, &sa, NULL);
	return 0;
}

/* Write PATH.tmp, then rename it to PATH. */
static int
write_bootstrap_file(const char *path, const char *servers)
{
	size_t		n = strlen(path) + sizeof(".tmp");
	char	   *tmp = malloc(n);
	FILE	   *f;
	int			ok;

	if (tmp == NULL)
		return -1;
	snprintf(tmp, n, "%s.tmp", path);
	f = fopen(tmp, "w");
	if (f == NULL)
	{
		log_msg("cannot create %s: %s", tmp, strerror(errno));
		free(tmp);
		return -1;
	}
	ok = fprintf(f, "%s\n", servers) >= 0;
	ok = (fclose(f) == 0) && ok;
	if (!ok || rename(tmp, path) != 0)
	{
		log_msg("cannot write %s: %s", path, strerror(errno));
		unlink(tmp);
		free(tmp);
		return -1;
	}
	free(tmp);
	return 0;
}

/* Serve the control socket and signals until asked to stop. */
static int
main_loop(MockBroker *mb)
{
	while (!mb->stopping)
	{
		struct pollfd pfds[2 + MAX_CLIENTS];
		int			slot[2 + MAX_CLIENTS];
		nfds_t		n = 0;
		nfds_t		k;
		int			i;
		int			rc;

		pfds[n].fd = mb->signal_pipe_read;
		pfds[n].events = POLLIN;
		slot[n++] = -1;
		if (mb->listen_fd >= 0)
		{
			pfds[n].fd = mb->listen_fd;
			pfds[n].events = POLLIN;
			slot[n++] = -2;
		}
		for (i = 0; i < MAX_CLIENTS; i++)
		{
			if (mb->clients[i].fd < 0)
				continue;
			pfds[n].fd = mb->clients[i].fd;
			pfds[n].events = POLLIN;
			slot[n++] = i;
		}

		rc = poll(pfds, n, 1000);
		if (rc < 0)
		{
			if (errno == EINTR)
				continue;
			log_msg("poll: %s", strerror(errno));
			return -1;
		}

		/* Serve librdkafka's own events for the housekeeping handle. */
		rd_kafka_poll(mb->rk, 0);

		for (k = 0; k < n && !mb->stopping; k++)
		{
			if (pfds[k].revents == 0)
				continue;
			if (slot[k] == -1)
			{
				unsigned char b;
				ssize_t		r;

				while ((r = read(mb->signal_pipe_read, &b, 1)) == 1)
				{
					log_msg("received signal %d, shutting down", (int) b);
					mb->stopping = 1;
				}
			}
			else if (slot[k] == -2)
				control_accept(mb);
			else if (client_read(mb, &mb->clients[slot[k]]) != 0)
				client_close(&mb->clients[slot[k]]);
		}
	}
	return 0;
}

/* Parse NAME:PARTITIONS[:REPLICATION] and create the topic. */
static int
create_topic_spec(MockBroker *mb, const char *spec)
{
	char		buf[512];
	char	   *parts;
	char	   *repl;
	long		partitions;
	long		replication = mb->broker_cnt < 3 ? mb->broker_cnt : 3;
	rd_kafka_resp_err_t err;

	if (strlen(spec) >= sizeof(buf))
		goto bad;
	strcpy(buf, spec);
	parts = strchr(buf, ':');
	if (parts == NULL)
		goto bad;
	*parts++ = '\0';
	repl = strchr(parts, ':');
	if (repl != NULL)
		*repl++ = '\0';
	if (!valid_topic_name(buf) ||
		parse_long(parts, 1, MAX_PARTITIONS, &partitions) != 0 ||
		(repl != NULL &&
		 parse_long(repl, 1, mb->broker_cnt, &replication) != 0))
		goto bad;

	err = rd_kafka_mock_topic_create(mb->mcluster, buf, (int) partitions,
									 (int) replication);
	if (err)
	{
		log_msg("cannot create topic %s: %s", buf, rd_kafka_err2str(err));
		return -1;
	}
	log_msg("created topic %s with %ld partitions, replication %ld",
			buf, partitions, replication);
	return 0;

bad:
	log_msg("bad --topic '%s': want NAME:PARTITIONS[:REPLICATION] with "
			"PARTITIONS 1..%d and REPLICATION 1..%d",
			spec, MAX_PARTITIONS, mb->broker_cnt);
	return -1;
}


/* ---------------------------------------------------------------------
 * ctl client
 * ---------------------------------------------------------------------
 */

static int
ctl_main(int argc, char **argv)
{
	struct sockaddr_un addr;
	struct sigaction sa;
	char		cmd[MAX_LINE];
	char		reply[RESPONSE_SIZE + 1];
	size_t		off = 0;
	size_t		got = 0;
	int			fd;
	int			i;

	if (argc < 2)
	{
		fputs(usage_text, stderr);
		return 2;
	}

	for (i = 1; i < argc; i++)
	{
		size_t		wl = strlen(argv[i]);

		if (strpbrk(argv[i], "\r\n") != NULL)
		{
			fprintf(stderr, PROGNAME " ctl: a command word contains a newline\n");
			return 2;
		}
		if (off + wl + 2 > sizeof(cmd))
		{
			fprintf(stderr, PROGNAME " ctl: command too long\n");
			return 2;
		}
		if (i > 1)
			cmd[off++] = ' ';
		memcpy(cmd + off, argv[i], wl);
		off += wl;
	}
	cmd[off++] = '\n';

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigemptyset(&sa.sa_mask);
	(void) sigaction(SIGPIPE, &sa, NULL);

	if (make_unix_addr(argv[0], &addr) != 0)
	{
		fprintf(stderr, PROGNAME " ctl: socket path too long\n");
		return 2;
	}
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *) &addr, sizeof(addr)) != 0)
	{
		fprintf(stderr, PROGNAME " ctl: cannot connect to %s: %s\n",
				argv[0], strerror(errno));
		if (fd >= 0)
			close(fd);
		return 2;
	}
	if (write_all(fd, cmd, off) != 0)
	{
		fprintf(stderr, PROGNAME " ctl: cannot send to %s: %s\n",
				argv[0], strerror(errno));
		close(fd);
		return 2;
	}

	/* Read one line, bounded in time and size. */
	while (got < RESPONSE_SIZE && memchr(reply, '\n', got) == NULL)
	{
		struct pollfd pfd = {fd, POLLIN, 0};
		ssize_t		n;
		int			rc = poll(&pfd, 1, CTL_TIMEOUT_MS);

		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0)
		{
			fprintf(stderr, PROGNAME " ctl: no reply from %s\n", argv[0]);
			close(fd);
			return 2;
		}
		n = read(fd, reply + got, RESPONSE_SIZE - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t) n;
	}
	close(fd);

	if (got == 0 || memchr(reply, '\n', got) == NULL)
	{
		fprintf(stderr, PROGNAME " ctl: incomplete reply from %s\n", argv[0]);
		return 2;
	}
	*(char *) memchr(reply, '\n', got) = '\0';
	printf("%s\n", reply);
	fflush(stdout);

	if (strcmp(reply, "ok") == 0 || strncmp(reply, "ok ", 3) == 0)
		return 0;
	if (strcmp(reply, "error") == 0 || strncmp(reply, "error ", 6) == 0)
		return 1;
	fprintf(stderr, PROGNAME " ctl: unexpected reply\n");
	return 2;
}


/* ---------------------------------------------------------------------
 * main
 * ---------------------------------------------------------------------
 */

/* Value of "--name VALUE" or "--name=VALUE"; advances *ip past it. */
static const char *
option_value(int argc, char **argv, int *ip, const char *name)
{
	const char *arg = argv[*ip];
	size_t		n = strlen(name);

	if (strncmp(arg, name, n) != 0)
		return NULL;
	if (arg[n] == '=')
		return arg + n + 1;
	if (arg[n] != '\0')
		return NULL;
	if (*ip + 1 >= argc)
	{
		fprintf(stderr, PROGNAME ": %s needs a value\n", name);
		exit(2);
	}
	return argv[++*ip];
}

int
main(int argc, char **argv)
{
	MockBroker	mb;
	const char **topics;
	int			ntopics = 0;
	long		default_partitions = -1;
	char		errstr[512];
	rd_kafka_conf_t *conf;
	const char *servers;
	int			status = 0;
	int			wrote_bootstrap = 0;
	int			i;

	if (argc >= 2 && strcmp(argv[1], "ctl") == 0)
		return ctl_main(argc - 2, argv + 2);

	memset(&mb, 0, sizeof(mb));
	mb.broker_cnt = 3;
	mb.listen_fd = -1;
	mb.signal_pipe_read = -1;
	for (i = 0; i < MAX_CLIENTS; i++)
		mb.clients[i].fd = -1;

	topics = calloc((size_t) argc, sizeof(*topics));
	if (topics == NULL)
		return 1;

	for (i = 1; i < argc; i++)
	{
		const char *v;
		long		n;

		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
		{
			fputs(usage_text, stdout);
			return 0;
		}
		else if ((v = option_value(argc, argv, &i, "--brokers")) != NULL)
		{
			if (parse_long(v, 1, MAX_BROKERS, &n) != 0)
			{
				fprintf(stderr, PROGNAME ": --brokers must be 1..%d\n",
						MAX_BROKERS);
				return 2;
			}
			mb.broker_cnt = (int) n;
		}
		else if ((v = option_value(argc, argv, &i, "--topic")) != NULL)
			topics[ntopics++] = v;
		else if ((v = option_value(argc, argv, &i, "--bootstrap-file")) != NULL)
			mb.bootstrap_path = v;
		else if ((v = option_value(argc, argv, &i, "--control")) != NULL)
			mb.control_path = v;
		else if ((v = option_value(argc, argv, &i,
								   "--default-partitions")) != NULL)
		{
			if (parse_long(v, 1, MAX_PARTITIONS, &default_partitions) != 0)
			{
				fprintf(stderr, PROGNAME ": --default-partitions must be "
						"1..%d\n", MAX_PARTITIONS);
				return 2;
			}
		}
		else
		{
			fprintf(stderr, PROGNAME ": unknown argument '%s'\n\n%s",
					argv[i], usage_text);
			return 2;
		}
	}

	/*
	 * The mock API of librdkafka 2.0.2 cannot change the partition count of
	 * auto-created topics.  Refuse a setting we would silently ignore.
	 */
	if (default_partitions != -1 &&
		default_partitions != MOCK_DEFAULT_PARTITIONS)
	{
		fprintf(stderr, PROGNAME ": --default-partitions %ld is not "
				"supported: librdkafka's mock cluster always gives "
				"auto-created topics %d partitions; create the topic with "
				"--topic NAME:%ld instead\n",
				default_partitions, MOCK_DEFAULT_PARTITIONS,
				default_partitions);
		return 2;
	}

	if (setup_signals(&mb) != 0)
		return 1;

	/*
	 * The handle only hosts the mock cluster and never connects anywhere;
	 * log_level 4 hides its notice about having no bootstrap.servers.
	 */
	conf = rd_kafka_conf_new();
	if (rd_kafka_conf_set(conf, "client.id", PROGNAME, errstr,
						  sizeof(errstr)) != RD_KAFKA_CONF_OK ||
		rd_kafka_conf_set(conf, "log_level", "4", errstr,
						  sizeof(errstr)) != RD_KAFKA_CONF_OK)
	{
		log_msg("%s", errstr);
		rd_kafka_conf_destroy(conf);
		return 1;
	}
	mb.rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (mb.rk == NULL)
	{
		log_msg("rd_kafka_new: %s", errstr);
		rd_kafka_conf_destroy(conf);
		return 1;
	}

	mb.mcluster = rd_kafka_mock_cluster_new(mb.rk, mb.broker_cnt);
	if (mb.mcluster == NULL)
	{
		log_msg("cannot create the mock cluster");
		rd_kafka_destroy(mb.rk);
		return 1;
	}

	for (i = 0; i < ntopics; i++)
		if (create_topic_spec(&mb, topics[i]) != 0)
		{
			status = 1;
			goto shutdown;
		}

	if (mb.control_path != NULL && control_listen(&mb) != 0)
	{
		status = 1;
		goto shutdown;
	}

	servers = rd_kafka_mock_cluster_bootstraps(mb.mcluster);
	if (mb.bootstrap_path != NULL &&
		write_bootstrap_file(mb.bootstrap_path, servers) != 0)
	{
		status = 1;
		goto shutdown;
	}
	wrote_bootstrap = mb.bootstrap_path != NULL;
	printf("bootstrap: %s\n", servers);
	fflush(stdout);
	log_msg("%d brokers up, bootstrap %s%s%s", mb.broker_cnt, servers,
			mb.control_path ? ", control socket " : "",
			mb.control_path ? mb.control_path : "");

	if (main_loop(&mb) != 0)
		status = 1;

shutdown:
	for (i = 0; i < MAX_CLIENTS; i++)
		client_close(&mb.clients[i]);
	control_unlink(&mb);
	if (mb.listen_fd >= 0)
		close(mb.listen_fd);
	if (wrote_bootstrap)
		unlink(mb.bootstrap_path);
	rd_kafka_mock_cluster_destroy(mb.mcluster);
	rd_kafka_destroy(mb.rk);
	free(topics);
	log_msg("stopped");
	return status;
}
