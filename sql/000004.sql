-- Which extension guarded which table (issue 12, finding 9): the bridge's durable memory, so that an
-- extension that fails to load (or an extensions folder that is missing) keeps the tables it guarded
-- guarded — their filter trigger stays and refuses writes naming the extension, their publication
-- membership stays and their committed changes are held in failed_events until it loads again.
-- Rows are rewritten for every extension that loads; an extension whose folder was removed (while
-- the extensions folder itself exists) is forgotten.
create table if not exists :"schema".extension_guards (
  extension text not null,
  -- The extension's entry, relative to the extensions folder (matches discovery problems to it).
  path text not null,
  table_schema text not null,
  table_name text not null,
  -- Operations its filter hooks cover (create, update, delete) and actions its action hooks hear
  -- (create, update, delete, truncate).
  filters text[] not null default '{}',
  actions text[] not null default '{}',
  -- Why the extension was not loaded when the bridge last looked (null: it was loaded); what
  -- `hookbridge status` and `doctor` report.
  not_loaded text,
  updated_at timestamptz not null default now(),
  primary key (extension, table_schema, table_name)
);
revoke all on :"schema".extension_guards from public;

-- A parked event is either a handler that kept failing ('handler_failed'), or a change held for an
-- extension that guarded its table but is not loaded ('extension_not_loaded'): delivered to that
-- extension's matching handlers at the first start where it loads.
alter table :"schema".failed_events add column if not exists reason text not null default 'handler_failed';
create index if not exists failed_events_held on :"schema".failed_events (extension, commit_lsn, id)
  where reason = 'extension_not_loaded' and replayed_at is null;
