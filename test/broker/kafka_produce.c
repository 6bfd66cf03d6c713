/*
 * kafka_produce.c
 *    Produces records straight to a Kafka topic, bypassing the relay: the
 *    end-to-end tests use it to write what the relay must not trust (a
 *    forged progress record) on the mock broker as on a real Kafka.
 *
 *    kafka_produce -b BOOTSTRAP -t TOPIC [-p PARTITION] [-H name=value ...]
 *                  [-X name=value ...] < RECORDS
 *
 *    Every line of standard input is one record, KEY<TAB>VALUE; each gets
 *    the headers given with -H.  Records are produced with acks=all and
 *    flushed before the exit.  Exit status 0 when every record was
 *    delivered, 1 on an error, 2 on a usage error.
 *
 * test/broker/kafka_produce.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "broker_util.h"

#define MAX_HEADERS 16

static int	failed = 0;

static void
usage(void)
{
	fprintf(stderr,
			"usage: kafka_produce -b BOOTSTRAP -t TOPIC [-p PARTITION] [-H name=value ...]\n"
			"                     [-X name=value ...] < KEY<TAB>VALUE lines\n");
	exit(2);
}

static void
on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	if (m->err)
	{
		fprintf(stderr, "kafka_produce: delivery failed: %s\n",
				rd_kafka_err2str(m->err));
		failed = 1;
	}
}

static void
conf_set(rd_kafka_conf_t *conf, const char *kv)
{
	char		errstr[512];
	char	   *copy = strdup(kv);
	char	   *eq = copy ? strchr(copy, '=') : NULL;

	if (eq == NULL)
		usage();
	*eq = '\0';
	if (rd_kafka_conf_set(conf, copy, eq + 1, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
	{
		fprintf(stderr, "kafka_produce: %s\n", errstr);
		exit(2);
	}
	free(copy);
}

int
main(int argc, char **argv)
{
	const char *bootstrap = NULL;
	const char *topic = NULL;
	long		partition = RD_KAFKA_PARTITION_UA;
	const char *headers[MAX_HEADERS];
	int			nheaders = 0;
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *rk;
	char		errstr[512];
	char	   *line = NULL;
	size_t		cap = 0;
	ssize_t		len;
	int			i;

	for (i = 1; i < argc; i++)
	{
		if (i + 1 >= argc)
			usage();
		if (strcmp(argv[i], "-b") == 0)
			bootstrap = argv[++i];
		else if (strcmp(argv[i], "-t") == 0)
			topic = argv[++i];
		else if (strcmp(argv[i], "-p") == 0)
		{
			if (parse_long(argv[++i], 0, 1000000, &partition) != 0)
				usage();
		}
		else if (strcmp(argv[i], "-H") == 0)
		{
			if (nheaders == MAX_HEADERS || strchr(argv[i + 1], '=') == NULL)
				usage();
			headers[nheaders++] = argv[++i];
		}
		else if (strcmp(argv[i], "-X") == 0)
			conf_set(conf, argv[++i]);
		else
			usage();
	}
	if (bootstrap == NULL || topic == NULL)
		usage();
	if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK ||
		rd_kafka_conf_set(conf, "acks", "all", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
	{
		fprintf(stderr, "kafka_produce: %s\n", errstr);
		return 2;
	}
	(void) rd_kafka_conf_set(conf, "enable.metrics.push", "false", errstr, sizeof(errstr));
	rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
	{
		fprintf(stderr, "kafka_produce: %s\n", errstr);
		return 1;
	}

	while ((len = getline(&line, &cap, stdin)) > 0)
	{
		char	   *tab;
		rd_kafka_headers_t *hdrs = rd_kafka_headers_new(nheaders);
		rd_kafka_resp_err_t err;

		if (line[len - 1] == '\n')
			line[--len] = '\0';
		tab = strchr(line, '\t');
		if (tab == NULL)
		{
			fprintf(stderr, "kafka_produce: a line without a tab\n");
			return 2;
		}
		for (i = 0; i < nheaders; i++)
		{
			const char *eq = strchr(headers[i], '=');

			rd_kafka_header_add(hdrs, headers[i], eq - headers[i], eq + 1, -1);
		}
		err = rd_kafka_producev(rk,
								RD_KAFKA_V_TOPIC(topic),
								RD_KAFKA_V_PARTITION((int32_t) partition),
								RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
								RD_KAFKA_V_KEY(line, (size_t) (tab - line)),
								RD_KAFKA_V_VALUE(tab + 1, (size_t) (len - (tab + 1 - line))),
								RD_KAFKA_V_HEADERS(hdrs),
								RD_KAFKA_V_END);
		if (err)
		{
			rd_kafka_headers_destroy(hdrs);
			fprintf(stderr, "kafka_produce: %s\n", rd_kafka_err2str(err));
			return 1;
		}
	}
	free(line);
	if (rd_kafka_flush(rk, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		fprintf(stderr, "kafka_produce: records not delivered within 30 s\n");
		failed = 1;
	}
	rd_kafka_destroy(rk);
	return failed;
}
