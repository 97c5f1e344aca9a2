//! Finding (or starting) the database, migrating it, and connecting as each role.

use anyhow::{bail, Context as _};
use tenantry_testkit::ThrowawayPostgres;
use tokio_postgres::{Client, Config, NoTls};

use crate::config::Settings;

/// The database the server uses, and how to reach it as each role.
#[derive(Debug)]
pub struct Database {
    /// The application role (subject to RLS).
    pub app: Config,
    /// An administrative role, when configured (or in zero-configuration mode).
    pub admin: Option<Config>,
    /// Set in zero-configuration mode: the server owns this cluster; dropping it removes it.
    pub throwaway: Option<ThrowawayPostgres>,
}

impl Database {
    /// With `DATABASE_URL` set, uses it (and `DATABASE_ADMIN_URL` if set). Otherwise starts a
    /// throwaway cluster, creates a `documents` database and migrates it.
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        match &settings.database_url {
            Some(url) => {
                let app: Config = url.parse().context("DATABASE_URL is not a valid URL")?;
                let admin = settings
                    .database_admin_url
                    .as_deref()
                    .map(|u| u.parse::<Config>())
                    .transpose()
                    .context("DATABASE_ADMIN_URL is not a valid URL")?;
                Ok(Self {
                    app,
                    admin,
                    throwaway: None,
                })
            }
            None => {
                let pg = ThrowawayPostgres::start().map_err(|e| {
                    anyhow::anyhow!(
                        "DATABASE_URL is not set, so a throwaway PostgreSQL was to be started, \
                         but: {e}"
                    )
                })?;
                let root = connect(&pg.config()).await?;
                root.batch_execute("CREATE DATABASE documents").await?;
                let mut admin = pg.config();
                admin.dbname("documents");
                let mut app = admin.clone();
                app.user("tenantry_app");
                Ok(Self {
                    app,
                    admin: Some(admin),
                    throwaway: Some(pg),
                })
            }
        }
    }

    /// An administrative connection; an error naming the setting when none is configured.
    pub async fn admin_client(&self) -> anyhow::Result<Client> {
        match &self.admin {
            Some(c) => connect(c)
                .await
                .context("cannot connect with DATABASE_ADMIN_URL"),
            None => bail!("this command needs DATABASE_ADMIN_URL (an administrative role)"),
        }
    }

    /// Applies the migrations as the administrative role.
    pub async fn migrate(&self) -> anyhow::Result<tenantry::migrate::Report> {
        let mut admin = self.admin_client().await?;
        Ok(tenantry::migrate::run(&mut admin).await?)
    }

    /// A pool of application-role connections, with generic plans (see [`generic_plans`]).
    ///
    /// No wait timeout of the pool's own: every user of it bounds its wait already
    /// (`RlsPool`'s checkout timeout, `PgTenantStore`'s lookup timeout, `/readyz`), and a
    /// second timer around the same wait would be armed on every checkout that has to queue.
    pub fn app_pool(&self, max_size: usize) -> anyhow::Result<deadpool_postgres::Pool> {
        let manager = deadpool_postgres::Manager::from_config(
            generic_plans(self.app.clone()),
            NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        Ok(deadpool_postgres::Pool::builder(manager)
            .max_size(max_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(std::time::Duration::from_secs(5)))
            .build()?)
    }
}

/// The connection with `plan_cache_mode = force_generic_plan`: every statement of this server
/// is tenant-scoped and runs under row-level security, and a prepared statement with a
/// `LIMIT $n` (the document list) would otherwise be planned again on every call, its policy
/// included, because PostgreSQL cannot cost the generic plan's limit. Options already in
/// `DATABASE_URL` come after, so a `plan_cache_mode` set there wins. Behind pgbouncer, which
/// refuses startup options it is not told to ignore, set it on the role instead
/// (`ALTER ROLE tenantry_app SET plan_cache_mode = force_generic_plan`).
pub fn generic_plans(mut config: Config) -> Config {
    const GENERIC: &str = "-c plan_cache_mode=force_generic_plan";
    let options = match config.get_options() {
        Some(own) if !own.trim().is_empty() => format!("{GENERIC} {own}"),
        _ => GENERIC.to_owned(),
    };
    config.options(&options);
    config
}

/// Connects and drives the connection in the background.
pub async fn connect(config: &Config) -> anyhow::Result<Client> {
    let (client, conn) = config
        .connect(NoTls)
        .await
        .context("cannot connect to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_plans_come_first_so_the_urls_own_options_win() {
        let plain: Config = "postgres://app@localhost/db".parse().unwrap();
        assert_eq!(
            generic_plans(plain).get_options(),
            Some("-c plan_cache_mode=force_generic_plan")
        );
        let own: Config = "postgres://app@localhost/db?options=-c%20plan_cache_mode%3Dauto"
            .parse()
            .unwrap();
        assert_eq!(
            generic_plans(own).get_options(),
            Some("-c plan_cache_mode=force_generic_plan -c plan_cache_mode=auto")
        );
    }

    #[tokio::test]
    async fn the_app_pools_connections_plan_generically() {
        let db = tenantry_testkit::TestDb::new().await;
        let database = Database {
            app: db.app_config(),
            admin: None,
            throwaway: None,
        };
        let client = database.app_pool(1).unwrap().get().await.unwrap();
        let mode: String = client
            .query_one("SELECT current_setting('plan_cache_mode')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(mode, "force_generic_plan");
    }
}
