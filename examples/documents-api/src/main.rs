//! documents-api: the tenantry example server and its admin CLI (the command line; the
//! server itself is the library of this package).
//!
//! `cargo run -p documents-api` with nothing configured starts a throwaway PostgreSQL, migrates
//! and seeds it, and serves the documents API on 127.0.0.1:3000, printing a ready-to-paste
//! `curl` line per demo tenant. See `--help` for every setting and command.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tenantry_core::TenantStatus;

use documents_api::{admin, database, server, Database, Settings};

/// The tenantry example: a multi-tenant documents API and its admin CLI.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply the database migrations (needs DATABASE_ADMIN_URL).
    Migrate,
    /// Check that the database is safe to serve from (RLS, roles); exit 1 if not.
    Doctor,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Print a signed JWT for a tenant (needs JWT_SECRET).
    Token {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// The token's subject.
        #[arg(long, default_value = "dev-user")]
        sub: String,
    },
    /// Manage API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant and print it as JSON.
    Create {
        /// Slug: lowercase letters, digits and inner hyphens.
        #[arg(long)]
        slug: String,
        /// Plan name (free, pro, enterprise, or any row of the plans table).
        #[arg(long, default_value = "free")]
        plan: String,
        /// Features granted on top of the plan, comma-separated.
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
    },
    /// List tenants as JSON.
    List,
    /// Move a tenant to another plan.
    SetPlan {
        /// The tenant's slug.
        slug: String,
        /// The new plan.
        plan: String,
    },
    /// Suspend a tenant: its requests are refused until it is resumed.
    Suspend {
        /// The tenant's slug.
        slug: String,
    },
    /// Resume a suspended tenant.
    Resume {
        /// The tenant's slug.
        slug: String,
    },
}

#[derive(Debug, Subcommand)]
enum ApiKeyCommand {
    /// Create an API key and print it once (only its SHA-256 is stored).
    Create {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
    },
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A missing .env is fine; a malformed one is not.
    match dotenvy::dotenv() {
        Ok(_) | Err(dotenvy::Error::Io(_)) => {}
        Err(e) => return Err(e).context("cannot read .env"),
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tokio_postgres=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let settings = cli.settings;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => server::serve(settings).await,
        Command::Migrate => {
            let db = configured_db(&settings).await?;
            print_json(&serde_json::json!({ "applied": db.migrate().await?.applied }))
        }
        Command::Doctor => {
            let db = configured_db(&settings).await?;
            let report = server::doctor(&db).await?;
            println!("{report}");
            if !report.is_ok() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Tenant(cmd) => {
            let db = configured_db(&settings).await?;
            let admin = db.admin_client().await?;
            let changed = match cmd {
                TenantCommand::Create {
                    slug,
                    plan,
                    features,
                } => {
                    print_json(&admin::create_tenant(&admin, &slug, &plan, &features).await?)?;
                    None
                }
                TenantCommand::List => {
                    print_json(&admin::list_tenants(&admin).await?)?;
                    None
                }
                TenantCommand::SetPlan { slug, plan } => {
                    Some(admin::set_plan(&admin, &slug, &plan).await?)
                }
                TenantCommand::Suspend { slug } => {
                    Some(admin::set_status(&admin, &slug, TenantStatus::Suspended).await?)
                }
                TenantCommand::Resume { slug } => {
                    Some(admin::set_status(&admin, &slug, TenantStatus::Active).await?)
                }
            };
            if let Some(tenant) = changed {
                server::announce_invalidation(&settings, tenant.id).await?;
                print_json(&tenant)?;
            }
            Ok(())
        }
        Command::Token { tenant, ttl, sub } => {
            let secret = settings
                .jwt_secret
                .as_deref()
                .context("`token` signs with JWT_SECRET, which is not set")?;
            let db = configured_db(&settings).await?;
            let client = database::connect(&db.app).await?;
            let tenant = admin::tenant_by_slug(&client, &tenant).await?;
            let token = admin::sign_token(
                secret,
                &settings.jwt_issuer,
                &settings.jwt_audience,
                tenant.id,
                &sub,
                ttl,
            )?;
            println!("{token}");
            Ok(())
        }
        Command::ApiKey(ApiKeyCommand::Create { tenant }) => {
            let db = configured_db(&settings).await?;
            let mut admin = db.admin_client().await?;
            let (tenant, key) = admin::create_api_key(&mut admin, &tenant).await?;
            print_json(&serde_json::json!({
                "tenant": tenant.slug,
                "api_key": key,
                "note": "shown once; only its SHA-256 is stored",
            }))
        }
    }
}

/// Admin commands act on a configured database, never on a throwaway one.
async fn configured_db(settings: &Settings) -> anyhow::Result<Database> {
    anyhow::ensure!(
        settings.database_url.is_some(),
        "this command needs DATABASE_URL (and DATABASE_ADMIN_URL for changes); the \
         zero-configuration database lives only as long as `serve`"
    );
    Database::open(settings).await
}
