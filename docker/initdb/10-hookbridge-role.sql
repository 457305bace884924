-- Runs once, as the superuser, when the postgres service initialises its data volume
-- (mounted into /docker-entrypoint-initdb.d): the README's "Security of the filter path" role setup.
--   app_owner   owns the tables: log in as it to create and migrate them (your migrations' role);
--   app         logs in for your application: it writes rows, owns nothing and is no member of
--               app_owner, so it can neither disable nor drop a filter trigger;
--   hookbridge  logs in for the bridges: REPLICATION, its own schema, dblink for itself alone, and
--               membership in app_owner (triggers and publications on app_owner's tables). The
--               database itself stays the superuser's: no role here may drop or reconfigure it.
-- Passwords for a local setup: change them (here and in docker-compose.yml) for anything else.
-- A volume initialised before this file existed keeps its roles: `docker compose down -v` starts over.
CREATE ROLE app_owner LOGIN PASSWORD 'app_owner';
CREATE ROLE app LOGIN PASSWORD 'app';
GRANT USAGE, CREATE ON SCHEMA public TO app_owner;
GRANT USAGE ON SCHEMA public TO app;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO app;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO app;

CREATE ROLE hookbridge LOGIN REPLICATION PASSWORD 'hookbridge';
GRANT CREATE ON DATABASE app TO hookbridge;                       -- its publications
CREATE SCHEMA hookbridge AUTHORIZATION hookbridge;
CREATE EXTENSION dblink SCHEMA hookbridge;                        -- extensions need a superuser
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hookbridge FROM PUBLIC; -- dblink is the bridge's alone
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA hookbridge TO hookbridge;
GRANT app_owner TO hookbridge;                                    -- the owner of the tables hooks watch
