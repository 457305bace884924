-- hookbridge 000005: a writer can neither suppress nor erase its identity (issue 12, finding 8).
--
-- Until now the statement trigger emitted the signed identity once per transaction and identity, and
-- skipped the call while the transaction-local setting hookbridge.accountability_emitted held the
-- expected marker. Any session can set any custom setting, so a writer could set the marker first and
-- have no identity emitted at all; a marker made unforgeable with a MAC would not help either: the
-- writer reads the genuine one inside a savepoint, rolls back (the message goes, the marker with it)
-- and sets it again. Nothing a session can read or write may decide whether the identity is emitted.
--
-- So every statement on a published table emits it, from its BEFORE statement trigger: before the
-- statement's first row in the WAL, in the statement's own (sub)transaction, so it is rolled back
-- exactly when the statement's rows are. The bridge de-duplicates (identical messages in a row cost
-- one comparison) and attributes each change to the last signed identity before it in its transaction.
-- The document names the transaction (pg_current_xact_id()): a signed message is only believed in the
-- transaction that emitted it.
--
-- Measured (README, "Action hooks"; bench scenarios accountability-overhead-1 and -10): faster than
-- before for single-statement transactions (one function call where there were two); about 20 us and
-- 310 bytes of WAL more for each statement after the first in multi-statement ones.

create or replace function :"schema".accountability_trigger() returns trigger
  language plpgsql
  volatile
  -- Reads the key. Takes nothing from the statement: the identity is worked out here, from the session,
  -- so no caller can get a signature on an identity it chose.
  security definer
  set search_path = pg_catalog, :"schema", pg_temp
as $$
declare
  bypass boolean := false;
  doc text;
begin
  -- The bridge's own writes with { emitEvents: false }: only a session logged in as the bridge's role
  -- (the owner of the key) can mark its changes so. Looked up only when asked for, so that the document
  -- below stays a simple expression (a query per statement doubled the cost).
  if current_setting('hookbridge.bypass', true) = 'on' then
    bypass := session_user::text = (select pg_get_userbyid(c.relowner)::text from pg_class c where c.oid = 'secret'::regclass);
  end if;
  -- The writer is the active SET ROLE, else the session user (current_user is this function's owner);
  -- is_superuser follows that same role. `claims` stays a string: a malformed request.jwt.claims must
  -- not make the user's write fail.
  doc := json_build_object(
           'xid', pg_current_xact_id()::text,
           'role', coalesce(nullif(current_setting('role'), 'none'), session_user::text),
           'admin', current_setting('is_superuser')::boolean,
           'application_name', nullif(current_setting('application_name'), ''),
           'client_addr', host(inet_client_addr()),
           'user', nullif(current_setting('hookbridge.user', true), ''),
           'claims', nullif(current_setting('request.jwt.claims', true), ''),
           'bypass', bypass
         )::text;
  -- <json>\n<hex sha256(key || json)>, as before.
  perform pg_logical_emit_message(
            true,
            'hookbridge.accountability',
            convert_to(doc, 'UTF8') || '\x0a'::bytea || convert_to(encode(sha256(s.key || convert_to(doc, 'UTF8')), 'hex'), 'UTF8'))
     from secret s;
  return null;
end
$$;

-- Trigger functions cannot be called directly; table owners need EXECUTE to create partitions of a
-- published table (the trigger is cloned onto them).
grant execute on function :"schema".accountability_trigger() to public;

-- The marker's other half. Nothing calls it any more, and nothing that signs should be left lying around.
drop function if exists :"schema".emit_accountability();
