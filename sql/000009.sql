-- hookbridge 000009: the row reaches filters printed the same way whatever the writer set (issue 12).
--
-- to_json(NEW) and the "keep old value" copy (::text, read back by the column's input function) print
-- values with the session's settings, which any writer may change: with extra_float_digits = -15 a
-- float8 149 printed as 1e+02 (the filter saw 100 and approved 149); with DateStyle = 'Postgres' a kept
-- timestamptz was read back in another zone. The trigger now runs with the settings the action path
-- decodes with (bridge/replication/action-stream.ts), so both paths see the same digits and a kept
-- value is copied exactly.

alter function :"schema".filter_trigger()
  set extra_float_digits = 1;
alter function :"schema".filter_trigger()
  set datestyle = 'ISO, MDY';
alter function :"schema".filter_trigger()
  set intervalstyle = 'postgres';
alter function :"schema".filter_trigger()
  set bytea_output = 'hex';
