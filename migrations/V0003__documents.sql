-- The example's tables: documents, their revisions, and webhooks.
-- Tenant-scoped tables follow one pattern: PRIMARY KEY (tenant_id, id), unique constraints and
-- foreign keys that include tenant_id, an index led by tenant_id, RLS enabled and forced, and
-- one policy with USING and WITH CHECK on current_tenant_id().
SET LOCAL ROLE tenantry_owner;

CREATE TABLE documents (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id         uuid NOT NULL DEFAULT gen_random_uuid(),
    title      text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    content    text NOT NULL DEFAULT '' CHECK (octet_length(content) <= 1048576),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
-- Newest-first listing with keyset pagination.
CREATE INDEX documents_tenant_created ON documents (tenant_id, created_at DESC, id DESC);

ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE documents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON documents
    USING (tenant_id = current_tenant_id())
    WITH CHECK (tenant_id = current_tenant_id());

-- The composite foreign key makes a revision of another tenant's document impossible, even
-- though foreign-key checks bypass RLS.
CREATE TABLE document_revisions (
    tenant_id   uuid NOT NULL,
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    document_id uuid NOT NULL,
    title       text NOT NULL,
    content     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, document_id) REFERENCES documents (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX document_revisions_document ON document_revisions (tenant_id, document_id, created_at);

ALTER TABLE document_revisions ENABLE ROW LEVEL SECURITY;
ALTER TABLE document_revisions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON document_revisions
    USING (tenant_id = current_tenant_id())
    WITH CHECK (tenant_id = current_tenant_id());

CREATE TABLE webhooks (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id         uuid NOT NULL DEFAULT gen_random_uuid(),
    url        text NOT NULL CHECK (char_length(url) BETWEEN 1 AND 2048),
    events     text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, url)
);

ALTER TABLE webhooks ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhooks
    USING (tenant_id = current_tenant_id())
    WITH CHECK (tenant_id = current_tenant_id());

GRANT SELECT, INSERT, UPDATE, DELETE ON documents, document_revisions, webhooks TO tenantry_app;
