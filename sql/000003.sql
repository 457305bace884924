-- hookbridge 000003: filter calls that only the bridge can answer, and waits that are always bounded.
--
-- * Writers get no USAGE on this schema: nothing here is theirs to call or even name (triggers reach
--   their functions by oid, and a dblink installed here by a superuser with PUBLIC execute stays out of
--   their reach). The accountability trigger becomes SECURITY DEFINER for that.
-- * Two transports, one wait. The bridge arms tickets: for each ticket t it holds a session advisory
--   lock "armed"(t). A writer claims a free, armed ticket ("claim"(t), session lock), sends its request,
--   and waits for "armed"(t) under lock_timeout: bounded, cancellable (pg_cancel_backend,
--   statement_timeout) and the same on every PostgreSQL version, whatever state the bridge is in.
--   The bridge answers, then releases "armed"(t); it re-arms t only once the claim is gone.
--     direct: the request goes over a dblink connection to the bridge's own wire server, and the
--             answer comes back on it, signed with the key in `secret` over a per-call nonce, so a
--             process squatting on a dead bridge's port can never approve a write.
--     notify: the database never connects to the bridge. A loopback dblink session (the database to
--             itself, as the bridge's role) commits the request into `filter_requests` and NOTIFYs
--             the bridge; the bridge commits the verdict into `filter_responses` before it releases
--             the ticket. Only the bridge's role can write either table.
--   If the bridge dies its session locks vanish, so a waiting writer wakes at once and finds no answer.
--
-- psql does not expand :"schema" inside $$ bodies: functions get it through their search_path.

-- Every hookbridge function a writer's statement reaches runs as the bridge's role (SECURITY DEFINER)
-- and needs no USAGE from the writer. EXECUTE on trigger functions stays granted to PUBLIC: table
-- owners need it to create partitions of a filtered table (the trigger is cloned onto them), and a
-- trigger function cannot be called directly.
revoke usage on schema :"schema" from public;
alter function :"schema".accountability_trigger() security definer;
revoke all on function :"schema".emit_accountability() from public;
grant execute on function :"schema".accountability_trigger() to public;
grant execute on function :"schema".filter_trigger() to public;
drop function if exists :"schema".filter_connect();

alter table :"schema".filter_endpoint
  add column if not exists transport text not null default 'direct',
  add column if not exists tickets int not null default 0,
  add column if not exists lock_class int not null default 0,
  -- Changes with every bridge run: writers' dblink connections are named after it, so a connection to a
  -- previous run is never reused.
  add column if not exists generation bigint not null default 0;
alter table :"schema".filter_endpoint drop constraint if exists filter_endpoint_transport_check;
alter table :"schema".filter_endpoint add constraint filter_endpoint_transport_check check (transport in ('direct', 'notify'));

-- One row per ticket at most: the request a writer holding that ticket sent (notify transport).
create unlogged table if not exists :"schema".filter_requests (
  ticket int primary key,
  id text not null,
  body text not null
);
revoke all on :"schema".filter_requests from public;

-- One row per ticket at most: the bridge's verdict for that ticket's request `id` (notify transport).
create unlogged table if not exists :"schema".filter_responses (
  ticket int primary key,
  id text not null,
  verdict text not null
);
revoke all on :"schema".filter_responses from public;

-- The bridge's ticket session stamps this a few times a second. A writer about to open a new connection
-- to the bridge (direct transport) first checks it is fresh: from PostgreSQL 17 dblink connects
-- asynchronously and no longer honours connect_timeout, so connecting to a stopped bridge would hang.
create unlogged table if not exists :"schema".filter_heartbeat (
  id boolean primary key default true check (id),
  beat timestamptz not null
);
revoke all on :"schema".filter_heartbeat from public;

-- Runs in the loopback session (logged in as the bridge's role): commits the request and wakes the
-- bridge. Anyone may LISTEN, so the channel's name is derived from the key only the bridge's role can
-- read (a role that may read other roles' query texts, pg_read_all_stats, sees requests anyway). A
-- request that fits travels in the notification itself; a larger one waits in filter_requests.
create or replace function :"schema".filter_submit(p_ticket int, p_id text, p_body text) returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, :"schema", pg_temp
as $$
declare
  channel text := (select 'hookbridge_' || left(encode(sha256(s.key || convert_to('filter channel', 'UTF8')), 'hex'), 40) from secret s);
begin
  if octet_length(p_body) < 7900 then
    perform pg_notify(channel, p_ticket || ' ' || p_id || ' ' || p_body);
  else
    insert into filter_requests (ticket, id, body) values (p_ticket, p_id, p_body)
    on conflict (ticket) do update set id = excluded.id, body = excluded.body;
    perform pg_notify(channel, p_ticket::text);
  end if;
end
$$;

-- The bridge re-arms released tickets: a ticket whose claim is still held (its writer has not read the
-- answer yet) is left for the next round. Locks are counted, so the bridge only ever passes tickets it
-- does not hold.
create or replace function :"schema".filter_arm(p_lock_class int, p_tickets int[]) returns int[]
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  t int;
  armed int[] := '{}';
begin
  foreach t in array p_tickets loop
    if pg_try_advisory_lock(p_lock_class, t) then
      if pg_try_advisory_lock(p_lock_class + 1, t) then
        armed := armed || t;
      end if;
      perform pg_advisory_unlock(p_lock_class, t);
    end if;
  end loop;
  return armed;
end
$$;

-- One filter call: claim a ticket, send, wait, read the verdict. Returns the bridge's verdict
--   K            keep the row as it is
--   M<json>      {"set": {...}, "keep": [...]}: apply `set` to NEW, give the `keep` columns their OLD values
--   W<message>   the bridge let it pass unfiltered (failure mode "open", its hooks timed out)
--   E<json>      {"sqlstate", "message", "detail", "hint"}: refuse the write with that error
-- or its own finding
--   U<reason>    no bridge could be reached, or it went away before answering
--   T<reason>    no answer within the filter timeout
-- Called by the trigger (as the bridge's role) and by the bridge's own health probe; no one else. Both
-- set the search_path (pg_catalog first); a SET clause here too would cost every call a second change.
create or replace function :"schema".filter_call(p_body text) returns text
  language plpgsql
  volatile
as $$
declare
  ep record;
  deadline timestamptz;
  claimed int;
  hint text;
  first int;
  t int;
  other text;
  busy_seen boolean;
  waiting boolean := false;
  call_id text := gen_random_uuid()::text;
  conn text;
  raw text;
  verdict text;
  saved_lock_timeout text := current_setting('lock_timeout');
  stage text := 'claim';
  err_state text;
  err_message text;
begin
  select e.transport, e.conninfo, e.tickets, e.lock_class, e.generation, e.timeout_ms, s.key
    into ep from filter_endpoint e cross join secret s;
  if not found or ep.tickets <= 0 then
    return 'Uthe bridge has never started on this database';
  end if;
  -- The bridge answers HB504 itself at timeout_ms; this deadline is for a bridge that cannot answer at all.
  deadline := clock_timestamp() + make_interval(secs => ep.timeout_ms / 1000.0 + 0.5);
  conn := 'hookbridge_' || ep.transport || '_' || ep.generation;
  if ep.transport = 'direct' and (dblink_get_connections() is null or not (conn = any (dblink_get_connections())))
     and coalesce((select h.beat from filter_heartbeat h), '-infinity') < clock_timestamp() - interval '1 second' then
    return 'Tthe bridge is not responding';
  end if;
  begin
    -- Claim a free ticket the bridge has armed: the one after this session's last (the bridge re-arms
    -- released tickets in batches, behind the writers), else where the pid points, so that concurrent
    -- writers rarely try the same one. The hint is only a starting point: setting it gains a writer nothing.
    hint := current_setting('hookbridge.ticket_hint', true);
    first := case when hint ~ '^[0-9]{1,9}$' then hint::int + 1 else pg_backend_pid() end % ep.tickets;
    <<claiming>>
    loop
      busy_seen := false;
      for i in 0 .. ep.tickets - 1 loop
        t := (first + i) % ep.tickets;
        if pg_try_advisory_lock(ep.lock_class, t) then
          if not pg_try_advisory_lock_shared(ep.lock_class + 1, t) then
            claimed := t;
            perform set_config('hookbridge.ticket_hint', t::text, false);
            exit claiming;
          end if;
          perform pg_advisory_unlock_shared(ep.lock_class + 1, t);
          perform pg_advisory_unlock(ep.lock_class, t);
        else
          busy_seen := true;
        end if;
      end loop;
      -- Nothing armed and free. No bridge at all (it holds "alive" while it serves)? Say so now.
      if not busy_seen and pg_try_advisory_lock_shared(ep.lock_class + 2, 0) then
        perform pg_advisory_unlock_shared(ep.lock_class + 2, 0);
        return 'Uno bridge is running';
      end if;
      -- Every ticket is busy: wait for one rather than fail.
      if clock_timestamp() >= deadline then
        return 'Tevery filter ticket stayed busy for ' || ep.timeout_ms || ' ms';
      end if;
      perform pg_sleep(0.001);
    end loop;

    stage := 'send';
    -- Connections are named after the bridge run, so one to a previous run is never used: drop those.
    if dblink_get_connections() is null or not (conn = any (dblink_get_connections())) then
      for other in select c from unnest(dblink_get_connections()) c where c like 'hookbridge\_%' loop
        perform dblink_disconnect(other);
      end loop;
      perform dblink_connect(conn, ep.conninfo);
    end if;
    if ep.transport = 'direct' then
      -- dblink_send_query returns before the answer: the wait below is ours, not libpq's.
      perform dblink_send_query(conn, 'HBF2 ' || claimed || ' ' || call_id || ' ' || p_body);
    else
      perform * from dblink(conn, format('select filter_submit(%s, %L, %L)', claimed, call_id, p_body)) as r(v text);
    end if;

    stage := 'wait';
    perform set_config('lock_timeout', greatest(1, ceil(extract(epoch from deadline - clock_timestamp()) * 1000))::bigint::text, true);
    waiting := true;
    perform pg_advisory_lock_shared(ep.lock_class + 1, claimed);
    perform pg_advisory_unlock_shared(ep.lock_class + 1, claimed);
    waiting := false;
    perform set_config('lock_timeout', saved_lock_timeout, true);

    stage := 'receive';
    if ep.transport = 'direct' then
      select r.v into raw from dblink_get_result(conn) as r(v text);
      perform * from dblink_get_result(conn) as r(v text);
      -- <hex sha256(key || call id || verdict)><verdict>: only a holder of the key can say this.
      if raw is null or length(raw) < 65
         or substr(raw, 1, 64) <> encode(sha256(ep.key || convert_to(call_id || substr(raw, 65), 'UTF8')), 'hex') then
        perform dblink_disconnect(conn);
        perform pg_advisory_unlock(ep.lock_class, claimed);
        return 'Uthe filter endpoint could not prove it is the bridge';
      end if;
      verdict := substr(raw, 65);
    elsif current_setting('transaction_isolation') = 'read committed' then
      -- Each statement here takes a new snapshot, so the committed verdict is visible.
      select r.verdict into verdict from filter_responses r where r.ticket = claimed and r.id = call_id;
    else
      -- A REPEATABLE READ or SERIALIZABLE snapshot predates the verdict: read it through the loopback.
      select r.v into verdict
        from dblink(conn, format('select verdict from filter_responses where ticket = %s and id = %L', claimed, call_id)) as r(v text);
    end if;
    perform pg_advisory_unlock(ep.lock_class, claimed);
    if verdict is null then
      return 'Uthe bridge went away before answering';
    end if;
    return verdict;
  exception
    when query_canceled then
      -- statement_timeout or pg_cancel_backend: leave no lock and no half-used connection behind.
      if waiting then perform pg_advisory_unlock_shared(ep.lock_class + 1, claimed); end if;
      if claimed is not null then perform pg_advisory_unlock(ep.lock_class, claimed); end if;
      if dblink_get_connections() is not null and conn = any (dblink_get_connections()) then perform dblink_disconnect(conn); end if;
      raise;
    when others then
      get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
      if claimed is not null then perform pg_advisory_unlock(ep.lock_class, claimed); end if;
      -- A direct connection may still carry the unanswered query; a loopback one is only suspect if it failed.
      if (ep.transport = 'direct' or stage <> 'wait')
         and dblink_get_connections() is not null and conn = any (dblink_get_connections()) then
        perform dblink_disconnect(conn);
      end if;
      if err_state = '55P03' and stage = 'wait' then
        return 'Tthe bridge did not answer within ' || ep.timeout_ms || ' ms';
      end if;
      return 'U' || err_message;
  end;
end
$$;

-- The bridge's health probe: the whole path a writer takes, from the bridge's own session.
create or replace function :"schema".filter_probe() returns text
  language sql
  volatile
  set search_path = pg_catalog, :"schema", pg_temp
as $$ select filter_call('{"op":"PROBE"}') $$;

-- The trigger. SECURITY DEFINER, owned by the bridge's role, which alone may use dblink and read the
-- endpoint: a writer can neither point the call elsewhere nor send requests of its own, and every TG_*
-- value and the identity below come from Postgres, not from the writer. pg_catalog comes first in its
-- search_path, so nothing a user creates can stand in for a built-in.
-- Its arguments name the table the hooks know (the partitioned table, for a trigger cloned onto a
-- partition); the bridge recreates the trigger when the table is renamed.
create or replace function :"schema".filter_trigger() returns trigger
  language plpgsql
  volatile
  security definer
  set search_path = pg_catalog, :"schema", pg_temp
as $$
declare
  verdict text;
  patch jsonb;
  failure jsonb;
  writer text := case when current_setting('role') = 'none' then session_user::text else current_setting('role') end;
begin
  -- The bridge's own writes made with { emitEvents: false }: only a session logged in as the bridge's
  -- role (the owner of hookbridge's tables) that opted in skips the filters. Any other role setting
  -- hookbridge.bypass gets nothing from it.
  if current_setting('hookbridge.bypass', true) = 'on'
     and session_user::text = (select pg_get_userbyid(c.relowner)::text from pg_class c where c.oid = 'filter_endpoint'::regclass) then
    return case when tg_op = 'DELETE' then old else new end;
  end if;

  verdict := filter_call(json_build_object(
    'op', tg_op,
    'schema', coalesce(tg_argv[0], tg_table_schema),
    'table', coalesce(tg_argv[1], tg_table_name),
    'new', case when tg_op <> 'DELETE' then to_jsonb(new) end,
    'old', case when tg_op <> 'INSERT' then to_jsonb(old) end,
    'who', json_build_object(
      'role', writer,
      -- is_superuser follows the session's role (SET ROLE included), not this function's owner.
      'admin', current_setting('is_superuser')::boolean,
      'application_name', nullif(current_setting('application_name'), ''),
      'client_addr', host(inet_client_addr()),
      'user', nullif(current_setting('hookbridge.user', true), ''),
      'claims', nullif(current_setting('request.jwt.claims', true), '')
    )
  )::text);

  case left(verdict, 1)
    when 'K' then
      return case when tg_op = 'DELETE' then old else new end;
    when 'M' then
      if tg_op = 'DELETE' then
        return old;
      end if;
      patch := substr(verdict, 2)::jsonb;
      new := jsonb_populate_record(
        new,
        coalesce(patch -> 'set', '{}'::jsonb)
          || coalesce((select jsonb_object_agg(k, to_jsonb(old) -> k) from jsonb_array_elements_text(patch -> 'keep') k), '{}'::jsonb));
      return new;
    when 'W' then
      raise warning '%', substr(verdict, 2);
      return case when tg_op = 'DELETE' then old else new end;
    when 'E' then
      failure := substr(verdict, 2)::jsonb;
      raise exception using errcode = failure ->> 'sqlstate', message = failure ->> 'message',
        detail = coalesce(failure ->> 'detail', ''), hint = coalesce(failure ->> 'hint', '');
    when 'U', 'T' then
      if (select e.failure_mode from filter_endpoint e) = 'open' then
        raise warning 'hookbridge: % row of %.% written unfiltered: %', tg_op, tg_table_schema, tg_table_name, substr(verdict, 2);
        -- Non-transactional: the bridge counts it (from the WAL) even if this transaction rolls back.
        begin
          perform pg_logical_emit_message(false, 'hookbridge.unfiltered',
            json_build_object('schema', tg_table_schema, 'table', tg_table_name, 'op', tg_op,
                              'reason', case when left(verdict, 1) = 'T' then 'timeout' else 'unreachable' end)::text);
        exception when others then
          null;
        end;
        return case when tg_op = 'DELETE' then old else new end;
      end if;
      if left(verdict, 1) = 'T' then
        raise exception using errcode = 'HB504',
          message = 'hookbridge: filter hooks did not answer in time: ' || substr(verdict, 2),
          detail = 'code: FILTER_TIMEOUT',
          hint = 'make the hook faster, or raise FILTER_TIMEOUT_MS';
      end if;
      raise exception using errcode = 'HB503',
        message = 'hookbridge: filter hooks could not run: ' || substr(verdict, 2),
        detail = 'code: SERVICE_UNAVAILABLE',
        hint = 'is the bridge running? With FILTER_FAILURE_MODE=open such writes pass unfiltered.';
    else
      raise exception using errcode = 'HB500', message = 'hookbridge: the bridge sent an unreadable verdict';
  end case;
end
$$;

revoke all on function :"schema".filter_submit(int, text, text) from public;
revoke all on function :"schema".filter_arm(int, int[]) from public;
revoke all on function :"schema".filter_call(text) from public;
revoke all on function :"schema".filter_probe() from public;
revoke all on function :"schema".filter_failure_mode() from public;
