-- hookbridge 000006: rows reach filter hooks exactly as stored (issue 12: lossless typing, json with \u0000).
--
-- The trigger now sends to_json(NEW), not to_jsonb(NEW): json keeps a document's text (key order,
-- duplicate keys, \u0000, which jsonb cannot hold) and prints numbers as their type prints them, so
-- the bridge reads an int8 above 2^53 or a 30-digit numeric without rounding (bridge/typing). The
-- request names the table's oid, by which the bridge types each column.
-- A filter's changes go back through json_populate_record; a column the hooks dropped from an update
-- keeps its old value copied as the column's own text (arrays keep their bounds, floats their -0,
-- json its key order), never through JSON.

drop function if exists :"schema".filter_entry(oid, text, text, text, jsonb, jsonb);

-- The one door writers have (see 000003): unchanged but for json arguments and the table's oid in the request.
create or replace function :"schema".filter_entry(p_relid oid, p_schema text, p_table text, p_op text, p_new json, p_old json) returns text
  language plpgsql
  volatile
  security definer
  set search_path = pg_catalog, :"schema", pg_temp
as $$
declare
  writer text := case when current_setting('role') = 'none' then session_user::text else current_setting('role') end;
  target regclass := to_regclass(quote_ident(p_schema) || '.' || quote_ident(p_table));
  privilege text := case p_op when 'INSERT' then 'INSERT' when 'UPDATE' then 'UPDATE' when 'DELETE' then 'DELETE' end;
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
        return format('Whookbridge: %s row of %s.%s written unfiltered: %s', p_op, p_schema, p_table, substr(verdict, 2));
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

-- The trigger, SECURITY INVOKER as before (000003).
create or replace function :"schema".filter_trigger() returns trigger
  language plpgsql
  volatile
  security invoker
  set search_path = pg_catalog, :"schema", pg_temp
as $$
declare
  verdict text;
  patch json;
  failure json;
  kept text;
  kept_type oid;
  piece json;
begin
  verdict := filter_entry(tg_relid, coalesce(tg_argv[0], tg_table_schema), coalesce(tg_argv[1], tg_table_name), tg_op,
                          case when tg_op <> 'DELETE' then to_json(new) end,
                          case when tg_op <> 'INSERT' then to_json(old) end);
  case left(verdict, 1)
    when 'K' then
      return case when tg_op = 'DELETE' then old else new end;
    when 'M' then
      if tg_op = 'DELETE' then
        return old;
      end if;
      patch := substr(verdict, 2)::json;
      if patch -> 'set' is not null then
        new := json_populate_record(new, patch -> 'set');
      end if;
      for kept in select k from json_array_elements_text(coalesce(patch -> 'keep', '[]'::json)) k loop
        select coalesce(nullif(t.typbasetype, 0), t.oid) into kept_type
          from pg_attribute a join pg_type t on t.oid = a.atttypid
         where a.attrelid = tg_relid and a.attname = kept and a.attnum > 0 and not a.attisdropped;
        if kept_type is null then
          continue;
        end if;
        -- json and jsonb go in as themselves; anything else as its own text, read back by its input function.
        execute format(case when kept_type in ('json'::regtype, 'jsonb'::regtype)
                            then 'select json_build_object(%L, ($1).%I)' else 'select json_build_object(%L, ($1).%I::text)' end, kept, kept)
          into piece using old;
        new := json_populate_record(new, piece);
      end loop;
      return new;
    when 'W' then
      raise warning '%', substr(verdict, 2);
      return case when tg_op = 'DELETE' then old else new end;
    when 'E' then
      failure := substr(verdict, 2)::json;
      raise exception using errcode = failure ->> 'sqlstate', message = failure ->> 'message',
        detail = coalesce(failure ->> 'detail', ''), hint = coalesce(failure ->> 'hint', '');
    else
      raise exception using errcode = 'HB500', message = 'hookbridge: the bridge sent an unreadable verdict';
  end case;
end
$$;

grant execute on function :"schema".filter_entry(oid, text, text, text, json, json) to public;
