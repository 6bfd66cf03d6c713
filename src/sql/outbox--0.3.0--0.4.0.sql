/*
 * outbox 0.3.0 -> 0.4.0
 *
 * The consumer loop inside PostgreSQL (issue 10): reply topic, scheduled
 * redelivery and retention.  Every block added to src/sql/outbox.sql for
 * 0.4.0 is repeated here verbatim, so that an updated installation equals
 * a fresh one (sql/upgrade.sql checks it).
 */

\echo Use "ALTER EXTENSION outbox UPDATE TO '0.4.0'" to load this file. \quit

-- ===========================================================================
-- 0.4.0 (issue 10): the reply topic.
-- This block is repeated verbatim in outbox--0.3.0--0.4.0.sql.
-- ===========================================================================

-- Written only by the relay (src/reply.c): in each partition of the reply
-- topic (outbox.reply_topic), the offset of the first reply not yet
-- applied.  It is written in the same transaction that applies the
-- verdicts, so a reply is applied exactly once whatever crashes; the relay
-- assigns itself the partitions at these offsets.  Dumped: restored
-- verdicts and positions belong together.
CREATE TABLE outbox.reply_offsets (
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (topic, partition)
);

COMMENT ON TABLE outbox.reply_offsets IS
    'reply topic positions: the next offset to apply per partition, written with the verdicts';

-- Replies the relay could not apply: not JSON, wrong or missing fields, an
-- unknown message id, a database no relay of this cluster serves.  Kept
-- for inspection (key and value cut to 8 kB, bytes that are not text
-- shown as \x and hex); outbox.relay_status counts them.
CREATE TABLE outbox.rejected_replies (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    topic        text NOT NULL,
    partition    integer NOT NULL,
    kafka_offset bigint NOT NULL,
    key          text,
    value        text,
    value_length integer NOT NULL,
    reason       text NOT NULL
);

COMMENT ON TABLE outbox.rejected_replies IS
    'replies from outbox.reply_topic the relay could not apply, with the reason';
COMMENT ON COLUMN outbox.rejected_replies.value_length IS
    'length of the record value in bytes (value keeps at most 8 kB)';

SELECT pg_catalog.pg_extension_config_dump('outbox.reply_offsets', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.rejected_replies', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.rejected_replies_id_seq', '');

REVOKE ALL ON outbox.reply_offsets, outbox.rejected_replies FROM PUBLIC;
GRANT SELECT ON outbox.reply_offsets TO pg_monitor;
