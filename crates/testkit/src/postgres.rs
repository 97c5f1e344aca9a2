//! A fresh, migrated PostgreSQL database per test.

use std::sync::OnceLock;
use std::time::Duration;

use tenantry_core::TenantId;
use tokio::sync::OnceCell;
use tokio_postgres::{Client, Config, NoTls};

use crate::ThrowawayPostgres;

/// The role the application logs in as (created by the migrations).
pub const APP_ROLE: &str = "tenantry_app";
/// The role that owns every table (created by the migrations).
pub const OWNER_ROLE: &str = "tenantry_owner";

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The administrative connection settings of the server tests use (maintenance database).
fn server_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| match std::env::var("TENANTRY_DATABASE_URL") {
        Ok(url) => url
            .parse()
            .unwrap_or_else(|e| panic!("testkit: TENANTRY_DATABASE_URL is not a valid URL: {e}")),
        Err(_) => {
            if !crate::force_throwaway()
                && std::net::TcpStream::connect(("127.0.0.1", 5432)).is_ok()
            {
                DEFAULT_URL.parse().expect("default URL parses")
            } else {
                // Shared by the whole test process; its watchdog removes it when the process exits.
                let pg: &'static ThrowawayPostgres = Box::leak(Box::new(
                    ThrowawayPostgres::start().unwrap_or_else(|e| panic!("testkit: {e}")),
                ));
                pg.config()
            }
        }
    })
}

async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    // A server that was just started accepts TCP connections before it accepts sessions
    // (SQLSTATE 57P03, "the database system is starting up"): wait for it.
    let mut attempts = 0;
    let (client, conn) = loop {
        match config.connect(NoTls).await {
            Err(e) if attempts < 200 && e.code().is_some_and(|c| c.code() == "57P03") => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => break other?,
        }
    };
    tokio::spawn(async move {
        // The connection ends when the client is dropped; errors then are expected.
        let _ = conn.await;
    });
    Ok(client)
}

/// The database's own message where there is one ("db error" alone says nothing).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{e}: {} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

fn with_db(config: &Config, dbname: &str) -> Config {
    let mut c = config.clone();
    c.dbname(dbname);
    c
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Runs a CREATE DATABASE that may briefly fail because a just-closed connection to the
/// template has not gone away yet.
async fn create_database(admin: &Client, sql: &str) {
    for attempt in 0.. {
        match admin.batch_execute(sql).await {
            Ok(()) => return,
            Err(e) if attempt < 100 && e.code().is_some_and(|c| c.code() == "55006") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("testkit: {sql} failed: {}", describe(&e)),
        }
    }
}

/// The name of a database with every migration applied, created once per migration set.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("tenantry_tpl_{}", &tenantry::migrate::fingerprint()[..16]);
            let admin = connect(server_config()).await.unwrap_or_else(|e| {
                panic!(
                    "testkit: cannot connect to PostgreSQL as an administrator: {}",
                    describe(&e)
                )
            });
            // Several test processes may get here at once: one builds the template.
            admin
                .batch_execute("SELECT pg_advisory_lock(hashtext('tenantry.testkit.template'))")
                .await
                .expect("testkit: advisory lock");
            let row = admin
                .query_opt(
                    "SELECT datistemplate FROM pg_database WHERE datname = $1",
                    &[&name],
                )
                .await
                .expect("testkit: pg_database");
            match row.map(|r| r.get::<_, bool>(0)) {
                Some(true) => {}
                existing => {
                    if existing.is_some() {
                        // Left half-built by an interrupted run.
                        admin
                            .batch_execute(&format!(
                                "DROP DATABASE {} WITH (FORCE)",
                                quote_ident(&name)
                            ))
                            .await
                            .expect("testkit: drop stale template");
                    }
                    create_database(&admin, &format!("CREATE DATABASE {}", quote_ident(&name)))
                        .await;
                    let mut db = connect(&with_db(server_config(), &name))
                        .await
                        .expect("testkit: connect to the new template");
                    tenantry::migrate::run(&mut db).await.unwrap_or_else(|e| {
                        panic!(
                            "testkit: migrations failed: {e}: {:?}",
                            std::error::Error::source(&e)
                        )
                    });
                    drop(db);
                    admin
                        .batch_execute(&format!(
                            "ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false",
                            quote_ident(&name)
                        ))
                        .await
                        .expect("testkit: mark template");
                }
            }
            admin
                .batch_execute("SELECT pg_advisory_unlock(hashtext('tenantry.testkit.template'))")
                .await
                .expect("testkit: advisory unlock");
            name
        })
        .await
}

/// A fresh database for one test: every migration applied, dropped when this is dropped.
///
/// ```no_run
/// # async fn demo() {
/// let db = tenantry_testkit::TestDb::new().await;
/// let acme = db.create_tenant("acme", "pro").await;
/// let rows = db.app().query("SELECT * FROM documents", &[]).await.unwrap();
/// assert!(rows.is_empty()); // no tenant context: RLS shows nothing
/// # let _ = acme; }
/// ```
#[derive(Debug)]
pub struct TestDb {
    name: String,
    admin: Client,
    app: Client,
}

impl TestDb {
    /// Creates the database (cloned from the migrated template) and connects to it.
    pub async fn new() -> Self {
        let template = template().await;
        let name = format!(
            "tenantry_test_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..20]
        );
        let maintenance = connect(server_config())
            .await
            .unwrap_or_else(|e| panic!("testkit: cannot connect to PostgreSQL: {}", describe(&e)));
        create_database(
            &maintenance,
            &format!(
                "CREATE DATABASE {} TEMPLATE {}",
                quote_ident(&name),
                quote_ident(template)
            ),
        )
        .await;
        let admin = connect(&with_db(server_config(), &name))
            .await
            .expect("testkit: admin connection to the test database");
        let app = connect(&app_config_for(&name))
            .await
            .unwrap_or_else(|e| panic!("testkit: cannot connect as {APP_ROLE}: {}", describe(&e)));
        Self { name, admin, app }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection as the administrative role (bypasses RLS: for setup and checks only).
    pub fn admin(&self) -> &Client {
        &self.admin
    }

    /// A connection as the application role (`tenantry_app`): subject to RLS.
    pub fn app(&self) -> &Client {
        &self.app
    }

    /// Settings to connect as the administrative role.
    pub fn admin_config(&self) -> Config {
        with_db(server_config(), &self.name)
    }

    /// Settings to connect as the application role.
    pub fn app_config(&self) -> Config {
        app_config_for(&self.name)
    }

    /// A `postgres://` URL for the application role (for code configured by URL).
    pub fn app_url(&self) -> String {
        config_url(&self.app_config())
    }

    /// A `postgres://` URL for the administrative role.
    pub fn admin_url(&self) -> String {
        config_url(&self.admin_config())
    }

    /// A new connection as the application role.
    pub async fn connect_app(&self) -> Client {
        connect(&self.app_config())
            .await
            .expect("testkit: app connection")
    }

    /// A new connection as the administrative role.
    pub async fn connect_admin(&self) -> Client {
        connect(&self.admin_config())
            .await
            .expect("testkit: admin connection")
    }

    /// A deadpool pool of application-role connections.
    pub fn app_pool(&self, max_size: usize) -> deadpool_postgres::Pool {
        pool(self.app_config(), max_size)
    }

    /// Inserts a tenant (as the administrator) and returns its id.
    pub async fn create_tenant(&self, slug: &str, plan: &str) -> TenantId {
        let row = self
            .admin
            .query_one(
                "INSERT INTO tenants (slug, plan) VALUES ($1, $2) RETURNING id",
                &[&slug, &plan],
            )
            .await
            .unwrap_or_else(|e| panic!("testkit: create tenant {slug}: {e}"));
        TenantId::from_uuid(row.get(0)).expect("non-nil id")
    }

    /// Two tenants, `tenant-a` (pro) and `tenant-b` (free): the isolation harness.
    pub async fn two_tenants(&self) -> (TenantId, TenantId) {
        (
            self.create_tenant("tenant-a", "pro").await,
            self.create_tenant("tenant-b", "free").await,
        )
    }

    /// Inserts a document for `tenant` (as the administrator) and returns its id.
    pub async fn insert_document(&self, tenant: TenantId, title: &str) -> uuid::Uuid {
        self.admin
            .query_one(
                "INSERT INTO documents (tenant_id, title, content) VALUES ($1, $2, 'body') RETURNING id",
                &[tenant.as_uuid(), &title],
            )
            .await
            .unwrap_or_else(|e| panic!("testkit: insert document: {e}"))
            .get(0)
    }
}

/// The URL form of a TCP `Config` (user, password, host, port, database).
fn config_url(c: &Config) -> String {
    let host = c
        .get_hosts()
        .iter()
        .find_map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => Some(h.clone()),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => None,
        })
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let user = c.get_user().unwrap_or("postgres");
    let password = c
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    let db = c.get_dbname().unwrap_or("postgres");
    format!("postgres://{user}{password}@{host}:{port}/{db}")
}

fn app_config_for(dbname: &str) -> Config {
    let mut c = with_db(server_config(), dbname);
    c.user(APP_ROLE);
    if let Ok(password) = std::env::var("TENANTRY_APP_PASSWORD") {
        c.password(password);
    }
    c
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // WITH (FORCE) ends this fixture's and any leaked connections.
        crate::server::block_on_detached(async move {
            if let Ok(admin) = connect(server_config()).await {
                let _ = admin
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        quote_ident(&name)
                    ))
                    .await;
            }
        });
    }
}

/// A deadpool pool over `config` (fast recycling, no TLS), as [`TestDb::app_pool`] builds it:
/// for pools over an edited configuration (a proxy's address, startup options).
pub fn pool(config: Config, max_size: usize) -> deadpool_postgres::Pool {
    let manager = deadpool_postgres::Manager::from_config(
        config,
        NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(max_size)
        .build()
        .expect("testkit: pool")
}
