/*
 * kafka_admin.c
 *    Creates topics on a Kafka cluster, for tests against a real broker
 *    where no Java tools are at hand (the PostgreSQL version chroots).
 *
 *    kafka_admin -b BOOTSTRAP [-X name=value ...] NAME:PARTITIONS[:config=value,...] ...
 *
 *    Each topic gets the replication factor -r (default 1).  A topic that
 *    exists already is fine.  Exit status 0 when every topic exists, 1 on
 *    an error, 2 on a usage error.
 *
 * test/broker/kafka_admin.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "broker_util.h"

static void
usage(void)
{
	fprintf(stderr,
			"usage: kafka_admin -b BOOTSTRAP [-r REPLICATION] [-X name=value ...]\n"
			"                   NAME:PARTITIONS[:config=value,...] ...\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *bootstrap = NULL;
	long		rf = 1;
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *rk;
	rd_kafka_NewTopic_t **topics;
	int			ntopics = 0;
	rd_kafka_queue_t *q;
	rd_kafka_event_t *ev;
	const rd_kafka_CreateTopics_result_t *res;
	const rd_kafka_topic_result_t **results;
	size_t		nresults;
	size_t		i;
	int			failed = 0;
	char		err[512];
	int			a;

	topics = calloc(argc, sizeof(*topics));
	for (a = 1; a < argc; a++)
	{
		if (strcmp(argv[a], "-b") == 0 && a + 1 < argc)
			bootstrap = argv[++a];
		else if (strcmp(argv[a], "-r") == 0 && a + 1 < argc)
		{
			if (parse_long(argv[++a], 1, 100, &rf) != 0)
				usage();
		}
		else if (strcmp(argv[a], "-X") == 0 && a + 1 < argc)
		{
			char	   *kv = strdup(argv[++a]);
			char	   *eq = strchr(kv, '=');

			if (eq == NULL)
				usage();
			*eq = '\0';
			if (rd_kafka_conf_set(conf, kv, eq + 1, err, sizeof(err)) != RD_KAFKA_CONF_OK)
			{
				fprintf(stderr, "kafka_admin: %s\n", err);
				return 2;
			}
			free(kv);
		}
		else if (argv[a][0] == '-')
			usage();
		else
		{
			char	   *spec = strdup(argv[a]);
			char	   *name = spec;
			char	   *parts = strchr(spec, ':');
			char	   *configs = NULL;
			long		np = 1;

			if (parts != NULL)
			{
				*parts++ = '\0';
				configs = strchr(parts, ':');
				if (configs != NULL)
					*configs++ = '\0';
				if (parse_long(parts, 1, 10000, &np) != 0)
					usage();
			}
			topics[ntopics] = rd_kafka_NewTopic_new(name, (int) np, (int) rf,
													err, sizeof(err));
			if (topics[ntopics] == NULL)
			{
				fprintf(stderr, "kafka_admin: %s: %s\n", name, err);
				return 2;
			}
			while (configs != NULL && *configs != '\0')
			{
				char	   *next = strchr(configs, ',');
				char	   *eq;

				if (next != NULL)
					*next++ = '\0';
				eq = strchr(configs, '=');
				if (eq == NULL)
					usage();
				*eq = '\0';
				rd_kafka_NewTopic_set_config(topics[ntopics], configs, eq + 1);
				configs = next;
			}
			ntopics++;
		}
	}
	if (bootstrap == NULL || ntopics == 0)
		usage();

	if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err)) != RD_KAFKA_CONF_OK)
	{
		fprintf(stderr, "kafka_admin: %s\n", err);
		return 2;
	}
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
	if (rk == NULL)
	{
		fprintf(stderr, "kafka_admin: %s\n", err);
		return 1;
	}
	q = rd_kafka_queue_new(rk);
	rd_kafka_CreateTopics(rk, topics, ntopics, NULL, q);
	ev = rd_kafka_queue_poll(q, 60000);
	if (ev == NULL)
	{
		fprintf(stderr, "kafka_admin: no answer from %s within 60 s\n", bootstrap);
		return 1;
	}
	if (rd_kafka_event_error(ev))
	{
		fprintf(stderr, "kafka_admin: %s\n", rd_kafka_event_error_string(ev));
		return 1;
	}
	res = rd_kafka_event_CreateTopics_result(ev);
	results = rd_kafka_CreateTopics_result_topics(res, &nresults);
	for (i = 0; i < nresults; i++)
	{
		rd_kafka_resp_err_t e = rd_kafka_topic_result_error(results[i]);

		if (e != RD_KAFKA_RESP_ERR_NO_ERROR &&
			e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
		{
			fprintf(stderr, "kafka_admin: %s: %s\n",
					rd_kafka_topic_result_name(results[i]),
					rd_kafka_topic_result_error_string(results[i]));
			failed = 1;
		}
	}
	rd_kafka_event_destroy(ev);
	rd_kafka_queue_destroy(q);
	for (a = 0; a < ntopics; a++)
		rd_kafka_NewTopic_destroy(topics[a]);
	free(topics);
	rd_kafka_destroy(rk);
	return failed;
}
