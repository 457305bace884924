-- hookbridge 000001: parked action events, and the writer's identity for action hooks.
--
-- Applied by bridge/migrate.ts (one transaction, recorded in :"schema".migrations), or by hand:
--   psql -v schema=hookbridge -v ON_ERROR_STOP=1 -1 -f sql/000001.sql
-- The schema is only ever written as :"schema"; psql does not expand variables inside quoted
-- strings, so function bodies that need it use BEGIN ATOMIC (parsed at creation) or a SET clause.
-- Every statement is safe to run again.

create schema if not exists :"schema";
-- Writers of any role fire the accountability trigger, whose body looks up emit_accountability()
-- by name, and name lookup skips schemas without USAGE. USAGE exposes names, not rows.
grant usage on schema :"schema" to public;

-- Action events whose handler kept failing, parked so the stream can move on without losing them.
-- One row per (change, extension, event): a bridge that crashed after parking and parks the same
-- event again on redelivery bumps `attempts` instead of adding a duplicate.
create table if not exists :"schema".failed_events (
  id bigserial primary key,
  event_id text not null,
  extension text not null,
  event text not null,
  collection text not null,
  action text not null,
  commit_lsn pg_lsn,
  xid bigint,
  meta jsonb not null,
  -- The handler's context.accountability, so a replay hands the handler what it first saw.
  accountability jsonb,
  error jsonb not null,
  attempts int not null,
  failed_at timestamptz not null default now(),
  replayed_at timestamptz,
  replay_error jsonb,
  constraint failed_events_event_extension_event_key unique (event_id, extension, event)
);
-- Payloads are user data: only the bridge's role (the owner) reads them.
revoke all on :"schema".failed_events from public;

-- WAL carries no session data, so the writer's identity travels as a transactional logical message
-- decoded in the same transaction as its rows. pg_logical_emit_message is open to everyone, so the
-- bridge only believes messages signed with this key, which only the owner can read.
create table if not exists :"schema".secret (
  id boolean primary key default true check (id),
  key bytea not null check (octet_length(key) = 32)
);
revoke all on :"schema".secret from public;
-- gen_random_uuid() is core and draws from the strong RNG; two v4 UUIDs give 244 random bits.
insert into :"schema".secret (key)
values (decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'))
on conflict (id) do nothing;

-- Takes no arguments on purpose: it works out the invoking identity itself, so a caller cannot get
-- a signature on an identity it chose. SECURITY DEFINER only to read the key; current_user is then
-- the owner, so the writer is the active SET ROLE, else the session user. `is_superuser` follows
-- that same outer role (SECURITY DEFINER does not change it) and is far cheaper than pg_roles.
-- Content: <json>\n<hex sha256(key || json)>. One message per transaction and identity: the marker
-- of what was last emitted is kept in a transaction-local setting (a rolled-back subtransaction
-- reverts it along with its message, so the next statement emits again). The marker covers every
-- input a session can change mid-transaction, and accountability_trigger() computes the very same
-- string to skip calling this at all.
-- `claims` stays a string: a malformed request.jwt.claims must not make the user's write fail.
create or replace function :"schema".emit_accountability() returns void
  language sql
  volatile
  security definer
  set search_path = pg_catalog, pg_temp
begin atomic
  select pg_logical_emit_message(
           true,
           'hookbridge.accountability',
           convert_to(d.doc, 'UTF8') || '\x0a'::bytea
             || convert_to(encode(sha256(s.key || convert_to(d.doc, 'UTF8')), 'hex'), 'UTF8')),
         set_config('hookbridge.accountability_emitted', i.marker, true)
    from (
      select w.*,
             pg_current_xact_id()::text || e'\n' || w.role || e'\n' || coalesce(w.app_user, '') || e'\n'
               || coalesce(w.claims, '') || e'\n' || w.application_name || e'\n' || coalesce(w.bypass, '') as marker
        from (
          select coalesce(nullif(current_setting('role'), 'none'), session_user::text) as role,
                 current_setting('hookbridge.user', true) as app_user,
                 current_setting('request.jwt.claims', true) as claims,
                 current_setting('application_name') as application_name,
                 current_setting('hookbridge.bypass', true) as bypass
        ) w
    ) i
    cross join :"schema".secret s
    cross join lateral (
      select json_build_object(
               'role', i.role,
               'admin', current_setting('is_superuser')::boolean,
               'application_name', nullif(i.application_name, ''),
               'client_addr', host(inet_client_addr()),
               'user', nullif(i.app_user, ''),
               'claims', nullif(i.claims, ''),
               -- The bridge's own writes with { emitEvents: false }: only a session logged in as the
               -- bridge's role (the owner of the secret) can mark its changes so.
               'bypass', coalesce(i.bypass, '') = 'on'
                         and session_user::text = (select pg_get_userbyid(c.relowner)::text from pg_class c where c.oid = s.tableoid)
             )::text as doc
    ) d
   where i.marker is distinct from current_setting('hookbridge.accountability_emitted', true);
end;

-- Statement-level, so a 1000-row INSERT costs one call, and after the first statement of a
-- transaction only the marker comparison (measured: ~10 us a statement, against ~50 us for a call
-- of emit_accountability() that then skips). SECURITY INVOKER: skipping wrongly could only cost the
-- writer its own accountability. The SET clause resolves the unqualified call below, since the
-- schema cannot be written inside the quoted body.
create or replace function :"schema".accountability_trigger() returns trigger
  language plpgsql
  security invoker
  set search_path = :"schema", pg_catalog, pg_temp
as $$
begin
  if current_setting('hookbridge.accountability_emitted', true) is distinct from
       pg_current_xact_id()::text || e'\n'
       || coalesce(nullif(current_setting('role'), 'none'), session_user::text) || e'\n'
       || coalesce(current_setting('hookbridge.user', true), '') || e'\n'
       || coalesce(current_setting('request.jwt.claims', true), '') || e'\n'
       || current_setting('application_name') || e'\n'
       || coalesce(current_setting('hookbridge.bypass', true), '')
  then
    perform emit_accountability();
  end if;
  return null;
end
$$;

grant execute on function :"schema".emit_accountability() to public;
grant execute on function :"schema".accountability_trigger() to public;
