//! The demo tenants of zero-configuration mode.

use tokio_postgres::Client;

use crate::admin;

/// `(slug, plan, extra features)` of the demo tenants.
pub const DEMO_TENANTS: [(&str, &str, &[&str]); 3] = [
    ("acme", "pro", &["analytics"]),
    ("globex", "free", &[]),
    ("initech", "enterprise", &["custom_webhooks"]),
];

/// Creates the demo tenants and a few documents for each (as the administrator).
pub async fn seed(admin: &Client) -> anyhow::Result<()> {
    for (slug, plan, features) in DEMO_TENANTS {
        let features: Vec<String> = features.iter().map(|f| (*f).to_owned()).collect();
        let tenant = admin::create_tenant(admin, slug, plan, &features).await?;
        for (i, title) in ["Welcome", "Quarterly plan", "Meeting notes"]
            .iter()
            .enumerate()
        {
            admin
                .execute(
                    "INSERT INTO documents (tenant_id, title, content, created_at) \
                     VALUES ($1, $2, $3, now() - make_interval(days => $4))",
                    &[
                        tenant.id.as_uuid(),
                        &format!("{title} ({slug})"),
                        &format!("A demo document of {slug}."),
                        &(i as i32),
                    ],
                )
                .await?;
        }
    }
    Ok(())
}
