-- Runs once, as the superuser, when the postgres service initialises its data volume
-- (mounted into /docker-entrypoint-initdb.d). The bridge gets a role of its own, with what the
-- README's "Security of the filter path" lists, and the tables belong to an ordinary role:
--   app         owns the database `app`, hence its public schema: create your tables as app;
--   hookbridge  logs in for the bridges: REPLICATION, its own schema, dblink for itself alone, and
--               membership in app (owner's rights on app's tables: triggers, publications).
-- Passwords for a local setup: change them (here and in docker-compose.yml) for anything else.
-- A volume initialised before this file existed keeps its roles: `docker compose down -v` starts over.
CREATE ROLE app LOGIN PASSWORD 'app';
ALTER DATABASE app OWNER TO app;

CREATE ROLE hookbridge LOGIN REPLICATION PASSWORD 'hookbridge';
GRANT CREATE ON DATABASE app TO hookbridge;                       -- its publications
CREATE SCHEMA hookbridge AUTHORIZATION hookbridge;
CREATE EXTENSION dblink SCHEMA hookbridge;                        -- extensions need a superuser
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hookbridge FROM PUBLIC; -- dblink is the bridge's alone
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA hookbridge TO hookbridge;
GRANT app TO hookbridge;                                          -- the owner of the tables hooks watch
