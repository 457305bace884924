-- hookbridge 000011: held and parked events replay with the meta their handlers would have seen
-- (issue 12, finding 9).
--
-- `meta` is jsonb, which cannot hold what the lossless typing hands handlers: bytea values as Buffers
-- came back as "\x…" strings, NaN and ±Infinity as null, -0 as 0, U+0000 in strings as U+FFFD, and
-- json values lost their key order. `meta_exact` keeps the meta as Node's structured serialization
-- (v8.serialize: Buffers, NaN, -0, bigint, Dates, key order and every string exact; a format Node
-- reads back across versions), and is what a replay delivers. `meta` stays, for people and queries
-- (`hookbridge failed list`). Rows parked before this migration have no `meta_exact` and replay from
-- `meta` as before.
alter table :"schema".failed_events add column if not exists meta_exact bytea;

-- Also from this version: a remembered extension guard is never forgotten implicitly. 000004 says an
-- extension gone from an extensions folder that exists is forgotten; it now keeps its tables guarded
-- like one that fails to load, until `hookbridge forget <extension>` (bridge/extension-guards.ts).
