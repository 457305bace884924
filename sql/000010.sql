-- hookbridge 000010: an identity covers its own table's changes, and is signed for that purpose only.
--
-- Since 000005 every statement on a published table emits its writer's identity, and the bridge gave
-- each change the last identity before it in its transaction. A statement whose trigger did not fire
-- (its table's owner disabled hookbridge_accountability, or session_replication_role = replica) so
-- inherited the identity of an earlier statement on another table: a superuser's insert into one
-- table, then SET LOCAL ROLE and an insert into the other, credited the lower role's rows to the
-- superuser (admin, verified).
--
-- 1. The document names the published table the statement writes (`relid`: tg_relid, or the root of
--    its partition tree, which is what the publications publish partitions as), and the bridge gives
--    a change only the identity of its own table's last statement: none there, an unknown writer.
--    A row written by a trigger or a foreign key's cascade is written by a statement of its own,
--    whose statement trigger fires (at depth 2) with the same session, so it gets the writer too.
--
-- 2. The signature covers a purpose label: sha256(key || '\x00hookbridge.accountability\x00' || json).
--    The same key signs other things as sha256(key || text): the unfiltered-row notices
--    (filter_entry(), 000006/000007) and catch-up rows (000008) with <json>, the notify channel's
--    name and the direct transport's proofs with other text. Text never begins with a NUL byte, so no
--    such signature is an identity's, nor the other way round; and the bridge no longer believes an
--    identity document that names no transaction (those from before 000005, bypass ones included).
--
-- 3. Documents signed the 000005 way may still be in the slot when the bridge is upgraded (a backlog).
--    They are believed for the transactions that could have emitted them, those whose xid is below
--    accountability_legacy.before_xid (the next xid once this migration has replaced the function),
--    and no others: no transaction from after this migration holds one. A straggler (a statement
--    that began in the old function while this migration committed, and took its xid after) gets an
--    unknown writer.
--
-- Cost: as 000005's (one message a statement); pg_partition_root() is a catalog-cache lookup for a
-- table that is not a partition (README, "Action hooks").

create or replace function :"schema".accountability_trigger() returns trigger
  language plpgsql
  volatile
  -- Reads the key. Takes nothing from the statement but tg_relid: the identity is worked out here,
  -- from the session, so no caller can get a signature on an identity it chose.
  security definer
  set search_path = pg_catalog, :"schema", pg_temp
as $$
declare
  bypass boolean := false;
  doc text;
begin
  -- The bridge's own writes with { emitEvents: false }: only a session logged in as the bridge's role
  -- (the owner of the key) can mark its changes so.
  if current_setting('hookbridge.bypass', true) = 'on' then
    bypass := session_user::text = (select pg_get_userbyid(c.relowner)::text from pg_class c where c.oid = 'secret'::regclass);
  end if;
  -- The writer is the active SET ROLE, else the session user (current_user is this function's owner,
  -- and a SECURITY DEFINER function or a cascade between the writer and this trigger changes neither);
  -- is_superuser follows that same role. `claims` stays a string: a malformed request.jwt.claims must
  -- not make the user's write fail.
  doc := json_build_object(
           'xid', pg_current_xact_id()::text,
           'relid', coalesce(pg_partition_root(tg_relid)::oid, tg_relid)::int8,
           'role', coalesce(nullif(current_setting('role'), 'none'), session_user::text),
           'admin', current_setting('is_superuser')::boolean,
           'application_name', nullif(current_setting('application_name'), ''),
           'client_addr', host(inet_client_addr()),
           'user', nullif(current_setting('hookbridge.user', true), ''),
           'claims', nullif(current_setting('request.jwt.claims', true), ''),
           'bypass', bypass
         )::text;
  -- <json>\n<hex sha256(key || '\x00hookbridge.accountability\x00' || json)>
  perform pg_logical_emit_message(
            true,
            'hookbridge.accountability',
            convert_to(doc, 'UTF8') || '\x0a'::bytea
              || convert_to(encode(sha256(s.key || '\x00686f6f6b6272696467652e6163636f756e746162696c69747900'::bytea || convert_to(doc, 'UTF8')), 'hex'), 'UTF8'))
     from secret s;
  return null;
end
$$;

-- Trigger functions cannot be called directly; table owners need EXECUTE to create partitions.
grant execute on function :"schema".accountability_trigger() to public;

create table if not exists :"schema".accountability_legacy (
  id boolean primary key default true check (id),
  -- Identities signed the 000005 way are believed in transactions with a lower xid (and no others).
  before_xid xid8 not null
);
revoke all on :"schema".accountability_legacy from public;
-- Last, so that every xid handed out before it may have used the old function.
insert into :"schema".accountability_legacy (before_xid)
values (pg_snapshot_xmax(pg_current_snapshot()))
on conflict (id) do nothing;
