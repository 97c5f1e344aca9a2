-- Roles. Cluster-wide, so every statement tolerates a role that already exists.
--
-- tenantry_owner      owns every table and function; not a login role; subject to RLS on
--                     tenant-scoped tables because they are FORCEd.
-- tenantry_app        what the application logs in as: not superuser, not BYPASSRLS, owns
--                     nothing, may only SELECT/INSERT/UPDATE/DELETE.
-- tenantry_key_lookup owns one SECURITY DEFINER function that maps an API-key hash to its
--                     tenant id before any tenant context exists (the only cross-tenant read
--                     the application can make, and it returns a tenant id, nothing else).
DO $$
BEGIN
    BEGIN
        CREATE ROLE tenantry_owner NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    BEGIN
        CREATE ROLE tenantry_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    BEGIN
        CREATE ROLE tenantry_key_lookup NOLOGIN NOSUPERUSER BYPASSRLS NOCREATEDB NOCREATEROLE;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
END
$$;

-- A transaction left open by a crashed or stuck client must not hold locks or a pooled
-- connection forever.
ALTER ROLE tenantry_app SET idle_in_transaction_session_timeout = '15s';

-- The migration runner (this session's role) creates objects as tenantry_owner.
GRANT tenantry_owner TO CURRENT_USER;
GRANT tenantry_key_lookup TO CURRENT_USER;
GRANT USAGE, CREATE ON SCHEMA public TO tenantry_owner;
GRANT USAGE ON SCHEMA public TO tenantry_app, tenantry_key_lookup;
