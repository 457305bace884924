-- hookbridge 000007: TRUNCATE goes through the filter hooks (issue 12, finding 3).
--
-- TRUNCATE fires no row trigger, so it used to empty a table past its delete filters. A table with a
-- delete filter or an items.truncate filter now also carries a statement-level BEFORE TRUNCATE
-- trigger (the bridge's trigger sync names it after the row trigger, `<row trigger>_truncate`, so
-- that it sorts last among BEFORE TRUNCATE triggers too) calling filter_truncate_trigger(), which
-- asks the bridge through filter_entry() with op TRUNCATE. The bridge runs the table's items.truncate
-- filters (a throw refuses), or refuses the TRUNCATE when the table has delete filters and no
-- truncate filter (bridge/filters/filter-requests.ts).
--
-- What the trigger can know: the table it fires on, and who truncates. Not CASCADE nor RESTART
-- IDENTITY (Postgres does not tell a TRUNCATE trigger). A statement that truncates several tables
-- (listed, reached through CASCADE, or the partitions under a partitioned table) fires the trigger of
-- each of them that has one, so each is asked about on its own. Statement triggers are not cloned to
-- partitions: the sync puts one on each partition, naming the partitioned table.

-- 000006's, but for TRUNCATE: a direct call wants the TRUNCATE privilege on the table it names, and
-- the request says which partition a partition's trigger fired on. Writers still get nothing a real
-- write would not: op is checked against the same list, the privilege against the writer's role.
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
     or not (p_relid = target or pg_partition_root(p_relid) = target)
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

-- SECURITY INVOKER, like the row trigger: the one door to the bridge stays filter_entry().
create or replace function :"schema".filter_truncate_trigger() returns trigger
  language plpgsql
  volatile
  security invoker
  set search_path = pg_catalog, :"schema", pg_temp
as $$
declare
  verdict text;
  failure json;
begin
  if tg_op <> 'TRUNCATE' or tg_level <> 'STATEMENT' then
    raise exception using errcode = '39P01', message = 'hookbridge: filter_truncate_trigger() is a BEFORE TRUNCATE trigger FOR EACH STATEMENT';
  end if;
  verdict := filter_entry(tg_relid, coalesce(tg_argv[0], tg_table_schema), coalesce(tg_argv[1], tg_table_name), tg_op, null, null);
  case left(verdict, 1)
    when 'K' then
      return null;
    when 'W' then
      raise warning '%', substr(verdict, 2);
      return null;
    when 'E' then
      failure := substr(verdict, 2)::json;
      raise exception using errcode = failure ->> 'sqlstate', message = failure ->> 'message',
        detail = coalesce(failure ->> 'detail', ''), hint = coalesce(failure ->> 'hint', '');
    else
      raise exception using errcode = 'HB500', message = 'hookbridge: the bridge sent an unreadable verdict';
  end case;
end
$$;

grant execute on function :"schema".filter_truncate_trigger() to public;
grant execute on function :"schema".filter_entry(oid, text, text, text, json, json) to public;
