-- hookbridge 000012: the one door checks the table it is told about (issue 12 review).
--
-- filter_entry() refuses a request whose table is neither the one the trigger fired on nor that
-- table's partitioned root. pg_partition_root() is NULL for a table that is no partition, which made
-- "not (p_relid = target or pg_partition_root(p_relid) = target)" NULL for any other plain table, and
-- an IF takes NULL for false: a writer could name its own table as p_relid and another table's name,
-- and have that table's filter hooks run on rows it made up. The check now counts NULL as a refusal.
-- The rest of the function is 000007's.
--
-- catch_up_rows() prints a new table's rows for action hooks: with the settings the replication path
-- decodes with (000009 pins the same on filter_trigger), whatever the database or role default.

create or replace function :"schema".filter_entry(p_relid oid, p_schema text, p_table text, p_op text, p_new json, p_old json) returns text
  language plpgsql
  volatile
  security definer
  set search_path = pg_catalog, :"schema", pg_temp
as $$
declare
  writer text := case when current_setting('role') = 'none' then session_user::text else current_setting('role') end;
  target regclass := to_regclass(quote_ident(p_schema) || '.' || quote_ident(p_table));
  privilege text := case p_op when 'INSERT' then 'INSERT' when 'UPDATE' then 'UPDATE' when 'DELETE' then 'DELETE' when 'TRUNCATE' then 'TRUNCATE' end;
  verdict text;
begin
  if current_setting('hookbridge.bypass', true) = 'on'
     and session_user::text = (select pg_get_userbyid(c.relowner)::text from pg_class c where c.oid = 'filter_endpoint'::regclass) then
    return 'K';
  end if;
  if target is null or privilege is null
     -- pg_partition_root() is NULL for a table that is no partition: coalesce, or NOT (NULL) lets it by.
     or not coalesce(p_relid = target or coalesce(pg_partition_root(p_relid), p_relid) = target, false)
     or not (pg_trigger_depth() > 0 or has_table_privilege(writer, p_relid, privilege)) then
    raise exception using errcode = '42501', message = format('hookbridge: %s may not %s %s.%s', writer, lower(coalesce(privilege, p_op)), p_schema, p_table);
  end if;

  verdict := filter_call(json_build_object(
    'op', p_op,
    'schema', p_schema,
    'table', p_table,
    'relid', p_relid,
    'new', p_new,
    'old', p_old,
    -- A TRUNCATE trigger on a partition (truncated alone, or with its partitioned table): which one.
    'partition', case when p_op = 'TRUNCATE' and p_relid <> target then
                   (select json_build_object('schema', n.nspname, 'table', c.relname)
                      from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_relid) end,
    'who', json_build_object(
      'role', writer,
      'admin', current_setting('is_superuser')::boolean,
      'application_name', nullif(current_setting('application_name'), ''),
      'client_addr', host(inet_client_addr()),
      'user', nullif(current_setting('hookbridge.user', true), ''),
      'claims', nullif(current_setting('request.jwt.claims', true), '')
    )
  )::text);

  case left(verdict, 1)
    when 'K', 'M', 'W', 'E' then
      return verdict;
    when 'U' then
      if (select e.failure_mode from filter_endpoint e) = 'open' then
        begin
          perform pg_logical_emit_message(false, 'hookbridge.unfiltered',
                   convert_to(m.doc, 'UTF8') || '\x0a'::bytea || convert_to(encode(sha256(s.key || convert_to(m.doc, 'UTF8')), 'hex'), 'UTF8'))
            from (select json_build_object('schema', p_schema, 'table', p_table, 'op', p_op, 'reason', 'unreachable')::text as doc) m
            cross join secret s;
        exception when others then
          null;
        end;
        return case when p_op = 'TRUNCATE'
                    then format('Whookbridge: TRUNCATE of %s.%s done unfiltered: %s', p_schema, p_table, substr(verdict, 2))
                    else format('Whookbridge: %s row of %s.%s written unfiltered: %s', p_op, p_schema, p_table, substr(verdict, 2)) end;
      end if;
      raise exception using errcode = 'HB503',
        message = 'hookbridge: filter hooks could not run: ' || substr(verdict, 2),
        detail = 'code: SERVICE_UNAVAILABLE',
        hint = 'is the bridge running? With FILTER_FAILURE_MODE=open such writes pass unfiltered.';
    when 'T' then
      raise exception using errcode = 'HB504',
        message = 'hookbridge: filter hooks did not answer in time: ' || substr(verdict, 2),
        detail = 'code: FILTER_TIMEOUT',
        hint = 'the bridge is alive but could not answer (busy with another call, or stopped); see its log';
    when 'B' then
      raise exception using errcode = 'HB504',
        message = 'hookbridge: filter hooks could not be called: ' || substr(verdict, 2),
        detail = 'code: FILTER_BUSY',
        hint = 'more writers than FILTER_TICKETS at once, or a session holds hookbridge''s advisory locks (see pg_locks)';
    else
      raise exception using errcode = 'HB503',
        message = 'hookbridge: filter hooks could not run: ' || substr(verdict, 2),
        detail = 'code: SERVICE_UNAVAILABLE';
  end case;
end
$$;

alter function :"schema".catch_up_rows(oid) set extra_float_digits = 1;
alter function :"schema".catch_up_rows(oid) set datestyle = 'ISO, MDY';
alter function :"schema".catch_up_rows(oid) set intervalstyle = 'postgres';
alter function :"schema".catch_up_rows(oid) set bytea_output = 'hex';
