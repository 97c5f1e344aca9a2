-- A slug never reads as a UUID, so "id or slug" references (X-Tenant-ID, admin commands) are
-- never ambiguous. Matches tenantry_core::Slug.
ALTER TABLE tenants ADD CONSTRAINT tenants_slug_not_uuid CHECK (
    slug !~ '^[0-9a-f]{32}$'
    AND slug !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
);
