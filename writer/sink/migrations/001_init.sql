-- 001_init.sql - the PostgreSQL system-of-record projection of the journal.
-- Applied once (recorded in schema_migrations) by pg_migrate() at sink start.
-- Every row is derived from journal records (writer/EVENTS.md); the sinks
-- write it, nothing else should. No foreign keys: every row comes from one
-- journal batch applied in one transaction, and flashsale-reconcile checks
-- the whole projection against the journal (per-row FK triggers cost 3x).

CREATE TABLE sales (
    sku           text PRIMARY KEY,
    state         text    NOT NULL,   -- stored state: scheduled|open|paused|frozen|closed
    total         bigint  NOT NULL CHECK (total >= 0),
    available     bigint  NOT NULL CHECK (available >= 0),
    reserved      bigint  NOT NULL CHECK (reserved >= 0),
    sold          bigint  NOT NULL CHECK (sold >= 0),
    per_user      integer NOT NULL,
    hold_ms       integer NOT NULL,
    waitlist_max  integer NOT NULL,
    default_tier  integer NOT NULL,
    price_cents   bigint  NOT NULL,
    opens_at      timestamptz,        -- NULL: opened by hand
    version       bigint  NOT NULL,   -- seq of the last batch that touched the SKU
    CHECK (available + reserved + sold = total)
);

-- The published view: sold_out is derived (stored open and available = 0).
CREATE VIEW sales_public AS
    SELECT sku,
           CASE WHEN state = 'open' AND available = 0 THEN 'sold_out' ELSE state END AS state,
           total, available, reserved, sold, version
      FROM sales;

CREATE TABLE reservations (
    reservation_id  text PRIMARY KEY,     -- "r%016x"
    sku             text    NOT NULL,
    user_id         text    NOT NULL,
    quantity        integer NOT NULL CHECK (quantity > 0),
    status          text    NOT NULL,     -- WAITLISTED|RESERVED|PAYING|CONFIRMED|CANCELLED|EXPIRED|FAILED
    expires_at      timestamptz,          -- NULL while waitlisted
    idempotency_key text,
    order_id        text,
    created_seq     bigint  NOT NULL
);
CREATE UNIQUE INDEX reservations_user_key ON reservations (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX reservations_sku_status ON reservations (sku, status);

CREATE TABLE orders (
    order_id        text PRIMARY KEY,     -- "o%016x"
    reservation_id  text    NOT NULL,
    sku             text    NOT NULL,
    user_id         text    NOT NULL,
    quantity        integer NOT NULL,
    amount_cents    bigint  NOT NULL,
    status          text    NOT NULL,     -- PENDING|PAID|FAILED
    reason          text,                 -- why a payment failed
    paid_at         timestamptz,
    idempotency_key text,
    created_seq     bigint  NOT NULL
);

-- The audit trail: one row per journal record, in journal order.
-- detail: the reason of a PAY_RESULT or the text of a FREEZE; payment
-- tokens (CHECKOUT text) are never stored.
CREATE TABLE journal_events (
    seq             bigint   NOT NULL,
    idx             integer  NOT NULL,
    batch_time      timestamptz NOT NULL,
    type            text     NOT NULL,    -- fs_cmd_type_name: reserve, cancel, ...
    user_id         text,
    sku             text,
    idempotency_key text,
    ref             text,                 -- reservation or order the record is about
    quantity        integer  NOT NULL,
    out_ref         text,                 -- reservation or order it created
    out_status      text,                 -- reservation status or sale state after it
    out_val         bigint   NOT NULL,    -- expires_at ms or amount in cents
    pay             smallint NOT NULL,    -- enum fs_pay (PAY_RESULT), else 0
    detail          text,
    PRIMARY KEY (seq, idx)
);

-- One row per consumer (the direct sink, the Kafka loader): the last batch
-- applied, advanced in the same transaction as the batch.
CREATE TABLE sink_cursor (
    name  text PRIMARY KEY,
    seq   bigint NOT NULL
);
