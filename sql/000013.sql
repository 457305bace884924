-- hookbridge 000013: several bridges on one database (issue 11).
--
-- Each running bridge is an instance with a slot of its own (0..63), taken with a session advisory
-- lock "alive"(slot) held by its instance session for as long as the process serves. filter_endpoint
-- has one row per slot: how writers reach that instance (transport, address, tickets). Tickets are
-- numbered across the cluster (slot * 10000 + t), so their locks and filter_requests rows never clash.
--
-- Lock keys, for a schema's lock class L (bridge/filters/tickets.ts):
--   (L,     ticket)  claim: the writer holding a ticket
--   (L + 1, ticket)  armed: the instance owning the ticket holds it until it has answered
--   (L + 2, slot)    alive: the instance runs (its session holds it)
--   (L + 2, 65536)   leader: the instance that streams the slot, runs action hooks and schedules
--   (L + 3, slot)    serving: the instance takes new filter calls (released first when it drains)
--
-- A writer tries the serving instances in an order of its own (a hash of its backend pid and the slot:
-- sessions spread over the instances, and a session keeps talking to the same one while the set does
-- not change), and retries on the next one when an instance cannot be reached or goes away before
-- answering (a filter may then run twice for that row). Every try shares one deadline.

alter table :"schema".filter_endpoint drop column if exists id;
alter table :"schema".filter_endpoint add column if not exists slot int;
-- A single-bridge endpoint from before: its bridge publishes again when it starts.
delete from :"schema".filter_endpoint where slot is null;
alter table :"schema".filter_endpoint alter column slot set not null;
alter table :"schema".filter_endpoint add constraint filter_endpoint_slot_pkey primary key (slot);
alter table :"schema".filter_endpoint
  add column if not exists first_ticket int not null default 0,
  -- What `hookbridge status` shows of each instance.
  add column if not exists started_at timestamptz not null default now(),
  add column if not exists process text,
  add column if not exists http text,
  -- The backend pid of the instance session (which holds its locks).
  add column if not exists backend_pid int;

-- A channel per instance: only that instance listens to it.
create or replace function :"schema".filter_submit(p_ticket int, p_id text, p_body text) returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, :"schema", pg_temp
as $$
declare
  channel text := (select 'hookbridge_' || left(encode(sha256(s.key || convert_to('filter channel', 'UTF8')), 'hex'), 40) || '_' || (p_ticket / 10000) from secret s);
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

-- A draining instance lets go of its tickets: each one no writer has claimed is disarmed (no writer
-- can claim it any more). Returns the tickets this session still holds armed (pg_locks decides).
create or replace function :"schema".filter_disarm(p_lock_class int, p_tickets int[]) returns int[]
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
    if t = any (held) and pg_try_advisory_lock(p_lock_class, t) then
      perform pg_advisory_unlock(p_lock_class + 1, t);
      held := array_remove(held, t);
      perform pg_advisory_unlock(p_lock_class, t);
    end if;
  end loop;
  return held;
end
$$;
revoke all on function :"schema".filter_disarm(int, int[]) from public;

-- Each instance stamps a beat of its own (filter_beat_<slot>, made by the instance): a sequence, read
-- whatever the reader's snapshot. 0 for a slot that never had one.
create or replace function :"schema".filter_beat_of(p_slot int) returns bigint
  language plpgsql
  volatile
  set search_path = pg_catalog, :"schema", pg_temp
as $$
declare
  beat bigint;
begin
  execute format('select last_value from %I', 'filter_beat_' || p_slot) into beat;
  return beat;
exception when undefined_table then
  return 0;
end
$$;
revoke all on function :"schema".filter_beat_of(int) from public;

-- Whether the instance published in a row holds a lock of its own: the session whose pid it published
-- holds it exclusively. Any role may take advisory locks, so a lock held by anyone else proves
-- nothing (pg_locks: a slower read, for the rare paths only).
create or replace function :"schema".filter_held_by(p_pid int, p_class int, p_key int) returns boolean
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select exists (select 1 from pg_locks l
                  where l.locktype = 'advisory' and l.pid = p_pid and l.granted and l.mode = 'ExclusiveLock'
                    and l.database = (select d.oid from pg_database d where d.datname = current_database())
                    and l.classid = p_class::oid and l.objid = p_key::oid and l.objsubid = 2)
$$;
revoke all on function :"schema".filter_held_by(int, int, int) from public;

-- A filter call that failed or was cancelled leaves nothing held: each claim (L, exclusive) and each
-- lock test (L + 1 .. L + 3, shared) this session holds. pg_locks says what it holds, whatever the
-- call's variables say.
create or replace function :"schema".filter_let_go(p_lock_class int) returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
begin
  perform pg_advisory_unlock_shared(l.classid::int, l.objid::int) from pg_locks l
    where l.locktype = 'advisory' and l.pid = pg_backend_pid() and l.classid::int8 between p_lock_class + 1 and p_lock_class + 3
      and l.objsubid = 2 and l.mode = 'ShareLock';
  perform pg_advisory_unlock(p_lock_class, l.objid::int) from pg_locks l
    where l.locktype = 'advisory' and l.pid = pg_backend_pid() and l.classid = p_lock_class::oid and l.objsubid = 2 and l.mode = 'ExclusiveLock';
end
$$;
revoke all on function :"schema".filter_let_go(int) from public;

-- The old single-endpoint entry points.
drop function if exists :"schema".filter_probe();
drop function if exists :"schema".filter_call(text);

-- One filter call: pick a serving instance, claim one of its tickets, send, wait, read the verdict;
-- on to the next instance when one cannot be reached or goes away before answering. Returns the
-- bridge's verdict
--   K            keep the row as it is
--   M<json>      {"set": {...}, "keep": [...]}: apply `set` to NEW, give the `keep` columns their OLD values
--   W<message>   the bridge let it pass unfiltered (failure mode "open", its hooks timed out)
--   E<json>      {"sqlstate", "message", "detail", "hint"}: refuse the write with that error
-- or its own finding
--   U<reason>    no bridge could be reached, or each went away before answering
--   T<reason>    a bridge got the request and did not answer in time
--   B<reason>    no ticket could be claimed in time (busy, or someone holds the locks): never passes
--   F<reason>    anything else went wrong: never passes
-- p_slot: that instance only, serving or not (the instance's own health probe, before it serves).
-- Called by filter_entry() (as the bridge's role) and by the bridge's probe; no one else. Both set the
-- search_path (pg_catalog first); a SET clause here too would cost every call a second change.
create or replace function :"schema".filter_call(p_body text, p_slot int default null) returns text
  language plpgsql
  volatile
as $$
declare
  ep record;
  deadline timestamptz;
  budget int;
  -- Instances that could not answer this call: not tried again.
  tried int[] := '{}';
  -- What the last instance tried said, when it could not answer.
  last text;
  seen int := 0;
  waiting boolean;
  beat bigint;
  claimed int;
  hint text;
  first int;
  t int;
  other text;
  busy_seen boolean;
  call_id text;
  conn text;
  raw text;
  verdict text;
  saved_lock_timeout text := current_setting('lock_timeout');
  woke boolean;
  -- Why this instance is left mid-wait (gone, or frozen while another serves).
  leaving text;
  err_state text;
  err_message text;
begin
  <<rounds>>
  loop
    waiting := false;
    <<instances>>
    for ep in
      select e.slot, e.transport, e.conninfo, e.tickets, e.first_ticket, e.lock_class, e.generation, e.timeout_ms, s.key
        from filter_endpoint e cross join secret s
       where e.tickets > 0 and (p_slot is null or e.slot = p_slot) and not (e.slot = any (tried))
       order by hashint4(e.slot # pg_backend_pid()), e.slot
    loop
      seen := seen + 1;
      -- The bridge answers HB504 itself at timeout_ms; this deadline is for one that cannot answer at all.
      if deadline is null then
        budget := ep.timeout_ms;
        deadline := clock_timestamp() + make_interval(secs => ep.timeout_ms / 1000.0 + 0.5);
      end if;
      -- One deadline for every try: past it, say what the last instance tried said (or time out).
      if clock_timestamp() >= deadline then
        return coalesce(last, 'Tthe bridge did not answer within ' || budget || ' ms');
      end if;
      -- Connections are named after the instance's run: one to a previous run is never used.
      conn := 'hookbridge_' || ep.transport || '_' || ep.slot || '_' || ep.generation;
      -- Every lock test below is inside this block: a cancel (statement_timeout, pg_cancel_backend)
      -- wherever it strikes leaves no lock behind (see the handlers).
      begin
        -- Serving? A draining or dead instance's lock is free: not chosen.
        if p_slot is null and pg_try_advisory_lock_shared(ep.lock_class + 3, ep.slot) then
          perform pg_advisory_unlock_shared(ep.lock_class + 3, ep.slot);
          continue instances;
        end if;
        if ep.transport = 'direct' and not coalesce(conn = any (dblink_get_connections()), false) then
          -- From PostgreSQL 17 dblink connects asynchronously and no longer honours connect_timeout:
          -- never connect to an instance whose beat is stale (stopped, frozen).
          beat := filter_beat_of(ep.slot);
          if beat < extract(epoch from clock_timestamp()) * 1000 - 1000 then
            last := 'Tthe bridge is not responding';
            tried := tried || ep.slot;
            continue instances;
          end if;
        end if;
        -- Claim a free ticket the instance has armed: the one after this session's last (the bridge
        -- re-arms released tickets in batches, behind the writers), else where the pid points, so that
        -- concurrent writers rarely try the same one. The hint is only where the search starts.
        hint := current_setting('hookbridge.ticket_hint', true);
        first := case when hint is null or hint !~ '^[0-9]{1,9}$' then pg_backend_pid()
                      when hint::int >= ep.first_ticket and hint::int < ep.first_ticket + ep.tickets then hint::int + 1 - ep.first_ticket
                      else pg_backend_pid() end % ep.tickets;
        claimed := null;
        for i in 0 .. ep.tickets - 1 loop
          t := ep.first_ticket + (first + i) % ep.tickets;
          if pg_try_advisory_lock(ep.lock_class, t) then
            if not pg_try_advisory_lock_shared(ep.lock_class + 1, t) then
              claimed := t;
              perform set_config('hookbridge.ticket_hint', t::text, false);
              exit;
            end if;
            perform pg_advisory_unlock_shared(ep.lock_class + 1, t);
            perform pg_advisory_unlock(ep.lock_class, t);
          end if;
        end loop;
        if claimed is null then
          -- Every ticket busy or not armed again yet: this instance is worth waiting for (it serves).
          waiting := true;
          continue instances;
        end if;

        -- Send. A connection that died since the last call (a restarted bridge, a terminated loopback)
        -- is noticed here and replaced; one that fails while sending counts as unreachable (direct).
        if coalesce(conn = any (dblink_get_connections()), false) then
          -- Reading what is pending notices a peer that went away (and ends the previous call's result).
          perform dblink_is_busy(conn);
          if dblink_error_message(conn) <> 'OK' then
            perform dblink_disconnect(conn);
          end if;
        end if;
        if not coalesce(conn = any (dblink_get_connections()), false) then
          -- This instance's connections to its previous runs (and pre-cluster ones) go.
          for other in select c from unnest(dblink_get_connections()) c
                        where c ~ ('^hookbridge_(direct|notify)_' || ep.slot || '_') or c ~ '^hookbridge_(direct|notify)_[0-9]+$' loop
            perform dblink_disconnect(other);
          end loop;
          -- libpq takes a keyword's last value: no longer than what is left of the deadline.
          perform dblink_connect(conn, ep.conninfo || ' connect_timeout=' || greatest(2, ceil(extract(epoch from deadline - clock_timestamp())))::int);
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
              last := 'Uthe filter endpoint could not prove it is the bridge';
              tried := tried || ep.slot;
              continue instances;
            end if;
            verdict := null;
          end if;
        end if;
        call_id := gen_random_uuid()::text;
        if ep.transport = 'direct' then
          -- dblink_send_query returns before the answer: the wait below is ours, not libpq's.
          if dblink_send_query(conn, 'HBF2 ' || claimed || ' ' || call_id || ' ' || p_body) <> 1 then
            raise exception using errcode = '08006', message = dblink_error_message(conn);
          end if;
        else
          perform * from dblink(conn, format('select filter_submit(%s, %L, %L)', claimed, call_id, p_body)) as r(v text);
        end if;

        -- Wait for the wake-up, in slices: a wake-up is only a hint (anyone can take or drop advisory
        -- locks), and only an answer (signed, or in the bridge's own table) is believed. Without one,
        -- keep looking until the deadline.
        loop
          perform set_config('lock_timeout', greatest(1, least(100, ceil(extract(epoch from deadline - clock_timestamp()) * 1000)))::bigint::text, true);
          begin
            perform pg_advisory_lock_shared(ep.lock_class + 1, claimed);
            perform pg_advisory_unlock_shared(ep.lock_class + 1, claimed);
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
                last := 'Uthe filter endpoint could not prove it is the bridge';
                tried := tried || ep.slot;
                continue instances;
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
          leaving := null;
          if pg_try_advisory_lock_shared(ep.lock_class + 2, ep.slot) then
            -- The instance is gone (its session ended) without answering: on to the next one.
            perform pg_advisory_unlock_shared(ep.lock_class + 2, ep.slot);
            leaving := 'Uthe bridge went away before answering';
          elsif not woke and p_slot is null then
            -- An instance frozen (SIGSTOP, a stalled host) keeps its locks but stops its beat: when
            -- another instance serves, go there (this one may still run the filter when it wakes).
            -- (Nested in the ELSIF: only a wait that ran out its slice pays for these reads.)
            if filter_beat_of(ep.slot) < extract(epoch from clock_timestamp()) * 1000 - 1000
               and exists (select 1 from filter_endpoint o
                            where o.slot <> ep.slot and not (o.slot = any (tried)) and o.tickets > 0
                              and filter_held_by(o.backend_pid, o.lock_class + 3, o.slot)) then
              leaving := 'Tthe bridge stopped responding';
            end if;
          end if;
          if leaving is not null then
            if ep.transport = 'direct' then
              perform dblink_disconnect(conn);
            end if;
            perform pg_advisory_unlock(ep.lock_class, claimed);
            last := leaving;
            tried := tried || ep.slot;
            continue instances;
          end if;
          if woke then
            perform pg_sleep(0.001);
          end if;
        end loop;
        perform pg_advisory_unlock(ep.lock_class, claimed);
        return verdict;
      exception
        when query_canceled then
          -- statement_timeout or pg_cancel_backend, wherever it struck: leave no lock and no half-used
          -- connection behind.
          perform filter_let_go(ep.lock_class);
          if coalesce(conn = any (dblink_get_connections()), false) then perform dblink_disconnect(conn); end if;
          raise;
        when others then
          get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
          perform filter_let_go(ep.lock_class);
          if coalesce(conn = any (dblink_get_connections()), false) then
            perform dblink_disconnect(conn);
          end if;
          -- Only an instance's own connection failing means "unreachable" (try the next one): the
          -- loopback failing is the database's trouble (too many connections, say), and anything else
          -- never passes either.
          if ep.transport = 'direct' and (err_state like '08%' or err_state like '57P0_') then
            last := 'U' || err_message;
            tried := tried || ep.slot;
            continue instances;
          end if;
          return 'F' || err_message;
      end;
    end loop;
    if not waiting then
      return coalesce(last, case when seen = 0 and p_slot is null and not exists (select 1 from filter_endpoint)
                                 then 'Uthe bridge has never started on this database' else 'Uno bridge is running' end);
    end if;
    -- Every serving instance's tickets are busy: wait for one rather than fail.
    if clock_timestamp() >= deadline then
      return 'Bevery filter ticket stayed busy for ' || budget || ' ms';
    end if;
    perform pg_sleep(0.001);
  end loop;
end
$$;
revoke all on function :"schema".filter_call(text, int) from public;

-- The health probe of one instance: the whole path a writer takes to it, from the bridge's own session.
create or replace function :"schema".filter_probe(p_slot int) returns text
  language sql
  volatile
  set search_path = pg_catalog, :"schema", pg_temp
as $$ select filter_call('{"op":"PROBE"}', p_slot) $$;
revoke all on function :"schema".filter_probe(int) from public;

-- Open mode now asks every instance (filter_endpoint has a row per instance); the rest is 000012's.
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
      -- Several bridges: open only when every running instance is in open mode — running as its own
      -- session says (a lock anyone else holds proves nothing) — and, with none running, only when
      -- every instance published is (the leader prunes the rows of stopped ones).
      if coalesce((select bool_and(e.failure_mode = 'open') from filter_endpoint e
                    where filter_held_by(e.backend_pid, e.lock_class + 2, e.slot)),
                  (select bool_and(e.failure_mode = 'open') from filter_endpoint e),
                  false) then
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