-- hookbridge 000002: the filter path. BEFORE row triggers send each row to the bridge over a
-- dblink connection (the bridge speaks enough of the Postgres protocol to answer) and apply its
-- verdict inside the writer's transaction.
--
-- psql does not expand :"schema" inside $$ bodies: functions get it through their search_path.

-- Where the running bridge listens, and its per-run password. Only the owner reads it: writers reach
-- it through filter_connect(), which connects for them without showing them the password.
create table if not exists :"schema".filter_endpoint (
  id boolean primary key default true check (id),
  conninfo text not null,
  failure_mode text not null default 'closed' check (failure_mode in ('closed', 'open')),
  timeout_ms int not null default 5000,
  updated_at timestamptz not null default now()
);
revoke all on :"schema".filter_endpoint from public;

create or replace function :"schema".filter_connect() returns void
  language plpgsql
  volatile
  security definer
  set search_path = pg_catalog, :"schema", pg_temp
as $$
declare
  target text;
begin
  select conninfo into target from filter_endpoint;
  if target is null then
    raise exception using errcode = '08001',
      message = 'the bridge has never started on this database',
      hint = 'start the bridge (npx hookbridge start), or remove the filter triggers (npx hookbridge uninstall)';
  end if;
  perform dblink_connect('hookbridge_filter', target);
end
$$;

create or replace function :"schema".filter_failure_mode() returns text
  language sql
  stable
  security definer
  set search_path = pg_catalog, :"schema", pg_temp
as $$ select coalesce((select failure_mode from filter_endpoint), 'closed') $$;

-- The trigger. SECURITY DEFINER, owned by the bridge's role, which alone may use dblink (the bridge
-- revokes dblink from PUBLIC): a writer can neither point the connection elsewhere nor send requests
-- of its own, and every TG_* value and the identity below come from Postgres, not from the writer.
-- pg_catalog comes first in its search_path, so nothing a user creates can stand in for a built-in.
-- Writes the request, waits for the verdict:
--   K            keep the row as it is
--   M<json>      {"set": {...}, "keep": [...]}: apply `set` to NEW (Postgres coerces the types) and
--                give the `keep` columns back their OLD values (copied in SQL: no precision lost)
--   W<message>   pass unfiltered, with a warning (failure mode "open")
-- A refusal arrives as an error whose SQLSTATE is HB<status> (HB400, HB403, ...), re-raised as is;
-- failing to reach the bridge surfaces as a connection error (class 08) and never as HB*.
-- Anything else (no bridge, a dead connection) is retried once on a new connection, then fails the
-- write with HB503, or lets it pass with a warning in failure mode "open".
create or replace function :"schema".filter_trigger() returns trigger
  language plpgsql
  volatile
  security definer
  set search_path = pg_catalog, :"schema", pg_temp
as $$
declare
  request text;
  verdict text;
  patch jsonb;
  writer text := case when current_setting('role') = 'none' then session_user::text else current_setting('role') end;
  collection_schema text := tg_table_schema;
  collection_table text := tg_table_name;
  err_state text;
  err_message text;
  err_detail text;
  err_hint text;
begin
  -- The bridge's own writes made with { emitEvents: false }: only a session logged in as the bridge's
  -- role (the owner of hookbridge's tables) that opted in skips the filters. Any other role setting
  -- hookbridge.bypass gets nothing from it.
  if current_setting('hookbridge.bypass', true) = 'on'
     and session_user::text = (select pg_get_userbyid(c.relowner)::text from pg_class c where c.oid = 'filter_endpoint'::regclass) then
    return case when tg_op = 'DELETE' then old else new end;
  end if;

  -- A partition is filtered as its partitioned table (the trigger was cloned onto it).
  if (select c.relispartition from pg_class c where c.oid = tg_relid) then
    select n.nspname, c.relname into collection_schema, collection_table
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.oid = pg_partition_root(tg_relid);
  end if;

  request := 'HBF1 ' || json_build_object(
    'op', tg_op,
    'schema', collection_schema,
    'table', collection_table,
    'new', case when tg_op <> 'DELETE' then to_jsonb(new) end,
    'old', case when tg_op <> 'INSERT' then to_jsonb(old) end,
    'who', json_build_object(
      'role', writer,
      'admin', coalesce((select r.rolsuper from pg_roles r where r.rolname = writer), false),
      'application_name', nullif(current_setting('application_name'), ''),
      'client_addr', host(inet_client_addr()),
      'user', nullif(current_setting('hookbridge.user', true), ''),
      'claims', nullif(current_setting('request.jwt.claims', true), '')
    )
  )::text;

  for attempt in 1..2 loop
    begin
      if dblink_get_connections() is null or not ('hookbridge_filter' = any (dblink_get_connections())) then
        perform filter_connect();
      end if;
      select t.v into verdict from dblink('hookbridge_filter', request) as t(v text);
      exit;
    exception when others then
      get stacked diagnostics err_state = returned_sqlstate, err_message = message_text,
                              err_detail = pg_exception_detail, err_hint = pg_exception_hint;
      if err_state like 'HB%' then
        raise exception using errcode = err_state, message = err_message, detail = err_detail, hint = err_hint;
      end if;
      if dblink_get_connections() is not null and 'hookbridge_filter' = any (dblink_get_connections()) then
        perform dblink_disconnect('hookbridge_filter');
      end if;
      if attempt = 2 then
        if filter_failure_mode() = 'open' then
          raise warning 'hookbridge: % row of %.% written unfiltered: %', tg_op, tg_table_schema, tg_table_name, err_message;
          return case when tg_op = 'DELETE' then old else new end;
        end if;
        raise exception using errcode = 'HB503',
          message = 'hookbridge: filter hooks could not run: ' || err_message,
          detail = 'code: SERVICE_UNAVAILABLE',
          hint = 'is the bridge running? With FILTER_FAILURE_MODE=open such writes pass unfiltered.';
      end if;
    end;
  end loop;

  if verdict is null or verdict = 'K' then
    return case when tg_op = 'DELETE' then old else new end;
  elsif left(verdict, 1) = 'W' then
    raise warning '%', substr(verdict, 2);
    return case when tg_op = 'DELETE' then old else new end;
  elsif left(verdict, 1) = 'M' and tg_op <> 'DELETE' then
    patch := substr(verdict, 2)::jsonb;
    new := jsonb_populate_record(
      new,
      coalesce(patch -> 'set', '{}'::jsonb)
        || coalesce((select jsonb_object_agg(k, to_jsonb(old) -> k) from jsonb_array_elements_text(patch -> 'keep') k), '{}'::jsonb));
    return new;
  end if;
  raise exception using errcode = 'HB500', message = 'hookbridge: the bridge sent an unreadable verdict';
end
$$;

-- Only the trigger (running as the owner) calls these; writers need nothing here.
revoke all on function :"schema".filter_connect() from public;
revoke all on function :"schema".filter_failure_mode() from public;
revoke all on function :"schema".filter_trigger() from public;
