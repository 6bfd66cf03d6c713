-- examples/inventory/schema.sql
--    The inventory service's own database (see README.md): its stock, and
--    the verdict it gave on every order message it processed, so that a
--    message delivered again (Kafka delivers at least once; the relay
--    redelivers unanswered messages) gets the same answer and reserves
--    nothing twice.  Messages are identified by the database they come from
--    (header outbox-db) and their id there (header outbox-id).

CREATE TABLE stock (
    sku     text PRIMARY KEY,
    on_hand int NOT NULL CHECK (on_hand >= 0)
);

CREATE TABLE processed (
    db           text,
    outbox_id    bigint,
    status       text NOT NULL,     -- confirmed or failed
    detail       text,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (db, outbox_id)
);
