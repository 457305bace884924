-- revision: 1
--
-- A definition, not a migration: the current text of one database function, applied after the
-- numbered migrations whenever this file's revision is newer than the one the database holds (see
-- bridge/migrate.ts). Change the function here and raise the revision by one; an edit without a new
-- revision is refused on databases that hold this one.
--
-- Revision 1 (000013's, and): a statement_timeout is no longer lost to a wait slice's lock_timeout.
-- PostgreSQL reports one of two timeouts that fired together (the one due first, the lock timeout on
-- a tie) and clears both, so a slice due before statement_timeout swallowed it and the writer waited
-- for the bridge's HB504 instead of getting 57014. When the statement's deadline comes before the
-- call's, the wait is now one slice ending 50 ms after it.

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
  -- When the writer's statement_timeout ends this statement (null: never).
  -- (As set when this call began: a function's SET clause changes the setting, not the timer armed at
  -- the statement's start. Such a deadline only shapes the slices, and never ends the wait itself.)
  statement_deadline timestamptz := case when current_setting('statement_timeout')::interval > interval '0'
                                         then statement_timestamp() + make_interval(secs => extract(epoch from current_setting('statement_timeout')::interval)) end;
  slice bigint;
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
          slice := greatest(1, least(100, ceil(extract(epoch from deadline - clock_timestamp()) * 1000)));
          if statement_deadline < deadline then
            -- The statement's own timeout ends this wait first: one slice until 50 ms past it, so that no
            -- slice falls due before it (see the header), even in a process starved across both. (A
            -- pg_cancel_backend that lands as a slice ends can still be lost that way; the deadline
            -- bounds the wait.)
            slice := greatest(slice, ceil(extract(epoch from statement_deadline - clock_timestamp()) * 1000) + 50);
          end if;
          perform set_config('lock_timeout', slice::text, true);
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
