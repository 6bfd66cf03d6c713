-- examples/inventory/schema.sql
--    The inventory service's own database (see README.md): its stock, and
--    the verdict it gave on every order message it processed, so that a
--    message delivered again (Kafka delivers at least once; the relay
--    redelivers unanswered messages) gets the same answer and reserves
--    nothing twice.  Messages are identified by the database they come from
--    (header outbox-db) and their id there (header outbox-id); source (header
--    outbox-source) tells a new installation of the extension, whose ids
--    start at 1 again, from the one that gave the verdict: its messages are
--    new.

CREATE TABLE stock (
    sku     text PRIMARY KEY,
    on_hand int NOT NULL CHECK (on_hand >= 0)
);

CREATE TABLE processed (
    db           text,
    outbox_id    bigint,
    source       text,              -- outbox-source: the installation
    status       text NOT NULL,     -- confirmed or failed
    detail       text,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (db, outbox_id)
);
