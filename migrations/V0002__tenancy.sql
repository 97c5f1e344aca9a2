-- Tenants, plans, API keys and the tenant context function.
-- Every object below is owned by tenantry_owner (SET LOCAL ROLE lasts until this migration's
-- transaction ends).
SET LOCAL ROLE tenantry_owner;

-- The tenant context. Unset or empty ('' is what a custom setting reads after a transaction
-- that set it has ended) means NULL, so policies match no row, never every row, and never
-- raise an error. STABLE and free of subqueries, so it is inlined into index conditions and
-- accepted by Citus on distributed tables.
CREATE FUNCTION current_tenant_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

CREATE TABLE plans (
    name                        text PRIMARY KEY
                                CHECK (name ~ '^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$'),
    requests_per_minute         integer NOT NULL CHECK (requests_per_minute > 0),
    burst                       integer NOT NULL CHECK (burst > 0),
    statement_timeout_ms        integer NOT NULL CHECK (statement_timeout_ms > 0),
    max_concurrent_transactions integer CHECK (max_concurrent_transactions > 0),
    features                    text[] NOT NULL DEFAULT '{}',
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO plans (name, requests_per_minute, burst, statement_timeout_ms,
                   max_concurrent_transactions, features) VALUES
    ('free',          100,    100,  2000,  2, '{}'),
    ('pro',          1000,   1000,  5000,  8, '{analytics}'),
    ('enterprise',  10000,  10000, 15000, 32, '{analytics,custom_webhooks}');

-- The tenant registry. Not tenant-scoped (a tenant is looked up before any context exists);
-- the application may only read it.
CREATE TABLE tenants (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug                text NOT NULL UNIQUE
                        CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    name                text,
    plan                text NOT NULL REFERENCES plans (name) ON UPDATE CASCADE,
    feature_grants      text[] NOT NULL DEFAULT '{}',
    feature_revocations text[] NOT NULL DEFAULT '{}',
    limit_overrides     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(limit_overrides) = 'object'),
    status              text NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'suspended', 'pending', 'deleted')),
    placement           text NOT NULL DEFAULT 'shared'
                        CHECK (placement IN ('shared', 'schema', 'database')),
    placement_target    text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((placement = 'shared') = (placement_target IS NULL))
);

-- API keys: only the SHA-256 of the key is stored.
CREATE TABLE api_keys (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    key_hash    bytea NOT NULL CHECK (octet_length(key_hash) = 32),
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, key_hash)
);
CREATE INDEX api_keys_key_hash ON api_keys (key_hash);

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys
    USING (tenant_id = current_tenant_id())
    WITH CHECK (tenant_id = current_tenant_id());

-- Maps a presented key's hash to its tenant, before any tenant context exists. Runs as
-- tenantry_key_lookup (BYPASSRLS, owns nothing else, can read four columns of one table) and
-- returns only the tenant id of an unrevoked, unexpired key.
CREATE FUNCTION tenant_for_api_key(p_key_hash bytea) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT k.tenant_id FROM public.api_keys k
        WHERE k.key_hash = p_key_hash
          AND k.revoked_at IS NULL
          AND (k.expires_at IS NULL OR k.expires_at > now())
        LIMIT 1
    $$;
REVOKE ALL ON FUNCTION tenant_for_api_key(bytea) FROM PUBLIC;

RESET ROLE;
GRANT SELECT (tenant_id, key_hash, revoked_at, expires_at) ON api_keys TO tenantry_key_lookup;
ALTER FUNCTION tenant_for_api_key(bytea) OWNER TO tenantry_key_lookup;
SET LOCAL ROLE tenantry_owner;

GRANT SELECT ON plans, tenants TO tenantry_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON api_keys TO tenantry_app;
GRANT EXECUTE ON FUNCTION current_tenant_id() TO tenantry_app;
RESET ROLE;
GRANT EXECUTE ON FUNCTION tenant_for_api_key(bytea) TO tenantry_app;
