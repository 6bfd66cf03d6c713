/*
 * outbox 0.4.0 -> 0.5.0
 *
 * Exactly-once and the verdict loop hardened (issue 23).  Every block added
 * to src/sql/outbox.sql for 0.5.0 is repeated here verbatim, so that an
 * updated installation equals a fresh one (sql/upgrade.sql checks it).
 */

\echo Use "ALTER EXTENSION outbox UPDATE TO '0.5.0'" to load this file. \quit
