-- 003_archive.sql - `flashctl sale archive SKU` (writer/alloc.c decide_archive):
-- an archived sale leaves the writer (its slot is reused, its name may be
-- created again), so its row moves from `sales` to `sales_archive` with the
-- journal batch that archived it. Its reservations, orders and events stay
-- where they are (rows name the SKU; created_seq / archived_seq tell two
-- sales of one name apart).

CREATE TABLE sales_archive (LIKE sales INCLUDING DEFAULTS);
ALTER TABLE sales_archive ADD COLUMN archived_seq bigint NOT NULL;
ALTER TABLE sales_archive ADD PRIMARY KEY (shard, sku, archived_seq);
