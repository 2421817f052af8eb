-- 002_shards.sql - appliances as shards (flashsaled --shard NAME --shard-map
-- FILE) sharing one PostgreSQL: every row carries the shard that wrote it
-- ('' for a box without --shard). Ids never collide across shards (they
-- carry the appliance index, common/fs_shard.h), but journal sequence
-- numbers and idempotency keys are per shard, so those keys gain the shard.
-- Each shard's sink advances its own sink_cursor row (flashsaled.<shard>).

ALTER TABLE sales          ADD COLUMN shard text NOT NULL DEFAULT '';
ALTER TABLE reservations   ADD COLUMN shard text NOT NULL DEFAULT '';
ALTER TABLE orders         ADD COLUMN shard text NOT NULL DEFAULT '';
ALTER TABLE journal_events ADD COLUMN shard text NOT NULL DEFAULT '';

ALTER TABLE journal_events DROP CONSTRAINT journal_events_pkey;
ALTER TABLE journal_events ADD PRIMARY KEY (shard, seq, idx);

DROP INDEX reservations_user_key;
CREATE UNIQUE INDEX reservations_user_key ON reservations (shard, user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- flashsale-reconcile --shard reads one shard's rows
CREATE INDEX reservations_shard ON reservations (shard);
CREATE INDEX orders_shard ON orders (shard);
