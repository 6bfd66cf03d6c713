/*
 * outbox 0.3.0 -> 0.4.0
 *
 * The consumer loop inside PostgreSQL (issue 10): reply topic, scheduled
 * redelivery and retention.  Every block added to src/sql/outbox.sql for
 * 0.4.0 is repeated here verbatim, so that an updated installation equals
 * a fresh one (sql/upgrade.sql checks it).
 */

\echo Use "ALTER EXTENSION outbox UPDATE TO '0.4.0'" to load this file. \quit
