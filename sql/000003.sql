-- hookbridge 000003: filter calls that only the bridge can answer, and waits that are always bounded.
--
-- * Nothing user-defined runs with the bridge's rights. The row trigger is SECURITY INVOKER: the row is
--   turned into JSON, and the verdict applied to it, with the writer's own rights (a user-defined cast
--   to json or a domain CHECK is the writer's to run, never the bridge's). It hands the JSON to one
--   narrow SECURITY DEFINER entry point, filter_entry(), which works out who the writer is itself,
--   checks the writer may make that very write, and makes the call. Writers may name and call that
--   entry point (USAGE on the schema, EXECUTE on it and on the trigger functions) and nothing else
--   here: no table, no other function, and never dblink (the bridge checks, see bridge/filters).
-- * Two transports, one wait. The bridge arms tickets: for each ticket t it holds a session advisory
--   lock "armed"(t). A writer claims a free, armed ticket ("claim"(t), session lock), sends its request,
--   and waits for "armed"(t) under lock_timeout: bounded, cancellable (pg_cancel_backend,
--   statement_timeout) and the same on every PostgreSQL version, whatever state the bridge is in.
--   The bridge answers, then releases "armed"(t); it re-arms t only once the claim is gone. Any role
--   may take advisory locks, so a lock is only ever a wake-up: the answer itself comes from what only
--   the bridge can produce, and a writer woken without one keeps looking until its deadline.
--     direct: the request goes over a dblink connection to the bridge's own wire server, and the
--             answer comes back on it, signed with the key in `secret` over a per-call nonce; a new
--             connection first has the server prove it holds the key, before any row is sent.
--     notify: the database never connects to the bridge. A loopback dblink session (the database to
--             itself, as the bridge's role) commits the request (NOTIFY, or filter_requests when large)
--             and the bridge commits the verdict into filter_responses before it releases the ticket.
--             Only the bridge's role can write either table.
--   If the bridge dies its session locks vanish, so a waiting writer wakes at once and finds no answer.
--
-- psql does not expand :"schema" inside $$ bodies: functions get it through their search_path.

grant usage on schema :"schema" to public;
alter function :"schema".accountability_trigger() security definer;
alter function :"schema".accountability_trigger() set search_path = pg_catalog, :"schema", pg_temp;
revoke all on function :"schema".emit_accountability() from public;
-- Trigger functions cannot be called directly; table owners need EXECUTE to create partitions of a
-- filtered or published table (the trigger is cloned onto them).
grant execute on function :"schema".accountability_trigger() to public;
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

-- The bridge's verdicts, by call id (notify transport); the bridge deletes them after a minute.
create unlogged table if not exists :"schema".filter_responses (
  id text primary key,
  ticket int not null,
  verdict text not null,
  created_at timestamptz not null default now()
);
revoke all on :"schema".filter_responses from public;

-- Non-transactional facts a writer needs whatever its snapshot (REPEATABLE READ included): the bridge's
-- ticket session stamps filter_beat (epoch ms) a few times a second, and filter_generation holds the run
-- whose endpoint is published. A writer about to open a new connection to the bridge (direct transport)
-- first checks the beat is fresh: from PostgreSQL 17 dblink connects asynchronously and no longer
-- honours connect_timeout, so connecting to a stopped bridge would hang.
create sequence if not exists :"schema".filter_beat;
create sequence if not exists :"schema".filter_generation;
revoke all on sequence :"schema".filter_beat, :"schema".filter_generation from public;

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

-- The bridge re-arms released tickets, in its own session. A ticket whose claim is still held (its
-- writer has not read the answer yet) is left for the next round. Session locks are counted and
-- survive a failed statement, so the truth is what pg_locks says this session holds: tickets held
-- already are never locked twice, and the answer is every ticket held now.
create or replace function :"schema".filter_arm(p_lock_class int, p_tickets int[]) returns int[]
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  t int;
  held int[] := array(
    select l.objid::int from pg_locks l
     where l.locktype = 'advisory' and l.pid = pg_backend_pid() and l.granted and l.mode = 'ExclusiveLock'
       and l.classid = (p_lock_class + 1)::oid and l.objsubid = 2);
begin
  foreach t in array p_tickets loop
    if not (t = any (held)) and pg_try_advisory_lock(p_lock_class, t) then
      if pg_try_advisory_lock(p_lock_class + 1, t) then
        held := held || t;
      end if;
      perform pg_advisory_unlock(p_lock_class, t);
    end if;
  end loop;
  return held;
end
$$;

-- One filter call: claim a ticket, send, wait, read the verdict. Returns the bridge's verdict
--   K            keep the row as it is
--   M<json>      {"set": {...}, "keep": [...]}: apply `set` to NEW, give the `keep` columns their OLD values
--   W<message>   the bridge let it pass unfiltered (failure mode "open", its hooks timed out)
--   E<json>      {"sqlstate", "message", "detail", "hint"}: refuse the write with that error
-- or its own finding
--   U<reason>    no bridge could be reached, or it went away before answering
--   T<reason>    the bridge got the request and did not answer in time
--   B<reason>    no ticket could be claimed in time (busy, or someone holds the locks): never passes
--   F<reason>    anything else went wrong: never passes
-- Called by filter_entry() (as the bridge's role) and by the bridge's own health probe; no one else.
-- Both set the search_path (pg_catalog first); a SET clause here too would cost every call a second change.
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
  holding boolean := false;
  timed_out boolean := false;
  call_id text := gen_random_uuid()::text;
  conn text;
  raw text;
  verdict text;
  saved_lock_timeout text := current_setting('lock_timeout');
  woke boolean;
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
  if dblink_get_connections() is null or not (conn = any (dblink_get_connections())) then
    -- A snapshot older than the bridge's last start sees its previous endpoint.
    if ep.generation <> (select g.last_value from filter_generation g) then
      return 'Fthe bridge restarted during this transaction; run it again';
    end if;
    if ep.transport = 'direct'
       and (select b.last_value from filter_beat b) < extract(epoch from clock_timestamp()) * 1000 - 1000 then
      return 'Tthe bridge is not responding';
    end if;
  end if;
  begin
    -- Claim a free ticket the bridge has armed: the one after this session's last (the bridge re-arms
    -- released tickets in batches, behind the writers), else where the pid points, so that concurrent
    -- writers rarely try the same one. The hint is only where the search starts.
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
        return 'Bevery filter ticket stayed busy for ' || ep.timeout_ms || ' ms';
      end if;
      perform pg_sleep(0.001);
    end loop;

    -- Send. A connection that died since the last call (a restarted bridge, a terminated loopback) is
    -- noticed here and replaced; one that fails while sending counts as unreachable (direct).
    if dblink_get_connections() is not null and conn = any (dblink_get_connections()) then
      -- Reading what is pending notices a peer that went away (and ends the previous call's result).
      perform dblink_is_busy(conn);
      if dblink_error_message(conn) <> 'OK' then
        perform dblink_disconnect(conn);
      end if;
    end if;
    if dblink_get_connections() is null or not (conn = any (dblink_get_connections())) then
      -- Connections are named after the bridge run, so one to a previous run is never used: drop those.
      for other in select c from unnest(dblink_get_connections()) c where c like 'hookbridge\_%' loop
        perform dblink_disconnect(other);
      end loop;
      perform dblink_connect(conn, ep.conninfo);
      if ep.transport = 'direct' then
        -- Before any row goes out, the server proves it holds the key.
        raw := md5(gen_random_uuid()::text);
        if dblink_send_query(conn, 'HBF2 HELLO ' || raw) <> 1 then
          raise exception using errcode = '08006', message = dblink_error_message(conn);
        end if;
        while dblink_is_busy(conn) = 1 loop
          if clock_timestamp() >= deadline then
            perform dblink_disconnect(conn);
            perform pg_advisory_unlock(ep.lock_class, claimed);
            return 'Tthe filter server did not answer its greeting';
          end if;
          perform pg_sleep(0.0005);
        end loop;
        select r.v into verdict from dblink_get_result(conn) as r(v text);
        perform * from dblink_get_result(conn) as r(v text);
        if verdict is distinct from encode(sha256(ep.key || convert_to('hello ' || raw, 'UTF8')), 'hex') then
          perform dblink_disconnect(conn);
          perform pg_advisory_unlock(ep.lock_class, claimed);
          return 'Uthe filter endpoint could not prove it is the bridge';
        end if;
        verdict := null;
      end if;
    end if;
    if ep.transport = 'direct' then
      -- dblink_send_query returns before the answer: the wait below is ours, not libpq's.
      if dblink_send_query(conn, 'HBF2 ' || claimed || ' ' || call_id || ' ' || p_body) <> 1 then
        raise exception using errcode = '08006', message = dblink_error_message(conn);
      end if;
    else
      perform * from dblink(conn, format('select filter_submit(%s, %L, %L)', claimed, call_id, p_body)) as r(v text);
    end if;

    -- Wait for the wake-up, in slices: a wake-up is only a hint (anyone can take or drop advisory locks,
    -- so someone may hold the lock the bridge released), and only an answer (signed, or in the bridge's
    -- own table) is believed. Without one, keep looking until the deadline.
    loop
      perform set_config('lock_timeout', greatest(1, least(100, ceil(extract(epoch from deadline - clock_timestamp()) * 1000)))::bigint::text, true);
      begin
        perform pg_advisory_lock_shared(ep.lock_class + 1, claimed);
        holding := true;
        perform pg_advisory_unlock_shared(ep.lock_class + 1, claimed);
        holding := false;
        woke := true;
      exception when lock_not_available then
        woke := false;
      end;
      perform set_config('lock_timeout', saved_lock_timeout, true);
      if ep.transport = 'direct' then
        if dblink_is_busy(conn) = 0 then
          -- (The empty result that ends it is read by the next call's dblink_is_busy.)
          select r.v into raw from dblink_get_result(conn) as r(v text);
          -- <hex sha256(key || call id || verdict)><verdict>: only a holder of the key can say this.
          if raw is null or length(raw) < 65
             or substr(raw, 1, 64) <> encode(sha256(ep.key || convert_to(call_id || substr(raw, 65), 'UTF8')), 'hex') then
            perform dblink_disconnect(conn);
            perform pg_advisory_unlock(ep.lock_class, claimed);
            return 'Uthe filter endpoint could not prove it is the bridge';
          end if;
          verdict := substr(raw, 65);
          exit;
        end if;
      elsif current_setting('transaction_isolation') in ('read committed', 'read uncommitted') then
        -- Each statement here takes a new snapshot, so a committed verdict is visible.
        select r.verdict into verdict from filter_responses r where r.id = call_id;
        exit when verdict is not null;
      else
        -- A REPEATABLE READ or SERIALIZABLE snapshot predates the verdict: read it through the loopback.
        select r.v into verdict
          from dblink(conn, format('select verdict from filter_responses where id = %L', call_id)) as r(v text);
        exit when verdict is not null;
      end if;
      if clock_timestamp() >= deadline then
        if ep.transport = 'direct' then
          perform dblink_disconnect(conn);
        end if;
        perform pg_advisory_unlock(ep.lock_class, claimed);
        return 'Tthe bridge did not answer within ' || ep.timeout_ms || ' ms';
      end if;
      if pg_try_advisory_lock_shared(ep.lock_class + 2, 0) then
        perform pg_advisory_unlock_shared(ep.lock_class + 2, 0);
        if ep.transport = 'direct' then
          perform dblink_disconnect(conn);
        end if;
        perform pg_advisory_unlock(ep.lock_class, claimed);
        return 'Uthe bridge went away before answering';
      end if;
      if woke then
        perform pg_sleep(0.001);
      end if;
    end loop;
    perform pg_advisory_unlock(ep.lock_class, claimed);
    claimed := null;
    return verdict;
  exception
    when query_canceled then
      -- statement_timeout or pg_cancel_backend, wherever it struck: leave no lock and no half-used
      -- connection behind (pg_locks says what this session holds, whatever the variables say).
      perform pg_advisory_unlock_shared(ep.lock_class + 1, l.objid::int) from pg_locks l
        where l.locktype = 'advisory' and l.pid = pg_backend_pid() and l.classid = (ep.lock_class + 1)::oid and l.objsubid = 2 and l.mode = 'ShareLock';
      perform pg_advisory_unlock(ep.lock_class, l.objid::int) from pg_locks l
        where l.locktype = 'advisory' and l.pid = pg_backend_pid() and l.classid = ep.lock_class::oid and l.objsubid = 2 and l.mode = 'ExclusiveLock';
      if dblink_get_connections() is not null and conn = any (dblink_get_connections()) then perform dblink_disconnect(conn); end if;
      raise;
    when others then
      get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
      perform pg_advisory_unlock_shared(ep.lock_class + 1, l.objid::int) from pg_locks l
        where l.locktype = 'advisory' and l.pid = pg_backend_pid() and l.classid = (ep.lock_class + 1)::oid and l.objsubid = 2 and l.mode = 'ShareLock';
      perform pg_advisory_unlock(ep.lock_class, l.objid::int) from pg_locks l
        where l.locktype = 'advisory' and l.pid = pg_backend_pid() and l.classid = ep.lock_class::oid and l.objsubid = 2 and l.mode = 'ExclusiveLock';
      if dblink_get_connections() is not null and conn = any (dblink_get_connections()) then
        perform dblink_disconnect(conn);
      end if;
      -- Only the bridge's own connection failing means "unreachable": the loopback failing is the
      -- database's trouble (too many connections, say), and anything else never passes either.
      if ep.transport = 'direct' and (err_state like '08%' or err_state like '57P0_') then
        return 'U' || err_message;
      end if;
      return 'F' || err_message;
  end;
end
$$;

-- The bridge's health probe: the whole path a writer takes, from the bridge's own session.
create or replace function :"schema".filter_probe() returns text
  language sql
  volatile
  set search_path = pg_catalog, :"schema", pg_temp
as $$ select filter_call('{"op":"PROBE"}') $$;

-- The one door writers have: SECURITY DEFINER, so it can read the endpoint and use dblink, but it
-- takes only JSON (already made with the writer's rights) and evaluates nothing of the writer's. It
-- works out the writer's identity itself, and the table must be the one the trigger fired on or that
-- table's partitioned root. Called directly (not from a trigger), it also wants the session's role to
-- hold the privilege for that write, so such a call gets a writer nothing a real write would not.
-- Inside a trigger the privilege may legitimately be someone else's (a write through a view or a
-- SECURITY DEFINER function): a role that can create a trigger of its own — on a temporary table will
-- do, and PUBLIC may create those by default — can therefore run hooks on rows of its choosing, as
-- itself, without writing them (README: security).
create or replace function :"schema".filter_entry(p_relid oid, p_schema text, p_table text, p_op text, p_new jsonb, p_old jsonb) returns text
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
  -- The bridge's own writes made with { emitEvents: false }: only a session logged in as the bridge's
  -- role (the owner of hookbridge's tables) that opted in skips the filters. Any other role setting
  -- hookbridge.bypass gets nothing from it.
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
    'new', p_new,
    'old', p_old,
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
    when 'K', 'M', 'W', 'E' then
      return verdict;
    when 'U' then
      -- Open mode passes a row only when no bridge can be reached (or, answered by the bridge itself as
      -- 'W', when this row's own hooks took too long) — never for anything a writer could provoke.
      if (select e.failure_mode from filter_endpoint e) = 'open' then
        -- Non-transactional: the bridge counts it (from the WAL) even if this transaction rolls back.
        -- Signed like the accountability message (<json>\n<hex sha256(key || json)>): anyone may emit one.
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

-- The trigger, SECURITY INVOKER: everything here runs with the writer's own rights (see the top).
-- Its arguments name the table the hooks know (the partitioned table, for a trigger cloned onto a
-- partition); the bridge recreates the trigger when the table is renamed.
create or replace function :"schema".filter_trigger() returns trigger
  language plpgsql
  volatile
  security invoker
  set search_path = pg_catalog, :"schema", pg_temp
as $$
declare
  verdict text;
  patch jsonb;
  failure jsonb;
begin
  verdict := filter_entry(tg_relid, coalesce(tg_argv[0], tg_table_schema), coalesce(tg_argv[1], tg_table_name), tg_op,
                          case when tg_op <> 'DELETE' then to_jsonb(new) end,
                          case when tg_op <> 'INSERT' then to_jsonb(old) end);
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
    else
      raise exception using errcode = 'HB500', message = 'hookbridge: the bridge sent an unreadable verdict';
  end case;
end
$$;

grant execute on function :"schema".filter_trigger() to public;
grant execute on function :"schema".filter_entry(oid, text, text, text, jsonb, jsonb) to public;
revoke all on function :"schema".filter_submit(int, text, text) from public;
revoke all on function :"schema".filter_arm(int, int[]) from public;
revoke all on function :"schema".filter_call(text) from public;
revoke all on function :"schema".filter_probe() from public;
-- 000002's way of reading the failure mode; filter_entry() reads the endpoint itself.
drop function if exists :"schema".filter_failure_mode();
