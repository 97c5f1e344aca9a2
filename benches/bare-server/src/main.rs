//! The physical limit of this stack on this machine: the same 50-row document list the example
//! serves, for one fixed tenant, with `WHERE tenant_id = $1` and nothing else: no middleware, no
//! RLS (it connects as a role that bypasses it), no transaction. The response is the example's,
//! field for field (RFC 3339 times, a next cursor from the 51st row), so that the comparison
//! measures tenancy, not a smaller JSON body.
//!
//! `BENCH_DATABASE_URL` (a role that bypasses RLS, e.g. the superuser), `BENCH_TENANT` (a tenant
//! slug), `BIND` (default 127.0.0.1:3100). Routes: `GET /api/v1/documents`, `GET /hello`.
//!
//! With `BENCH_RLS=1` (and `BENCH_DATABASE_URL` naming the application role) it sends, still with
//! no middleware, the statement the example's `query_fused` sends: row-level security on, and the
//! tenant set by `set_config(.., true)` in the same statement. The benchmark runs it as scenario
//! 1b, which splits the full stack's cost into what PostgreSQL spends on tenant isolation (1b/1)
//! and what tenantry's layers and pool cost in the server (2/1b).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

#[derive(Clone)]
struct AppState {
    pool: deadpool_postgres::Pool,
    tenant: uuid::Uuid,
    /// `BENCH_RLS=1`: `LIST` as `TenantDb::query_fused` sends it, and the tenant context it
    /// sets, sent as its third parameter.
    rls: Option<Arc<(String, String)>>,
}

/// The list statement, with no tenant context.
const LIST: &str = "SELECT id, title, created_at, updated_at FROM documents WHERE tenant_id = $1 \
                    ORDER BY created_at DESC, id DESC LIMIT $2";

/// The example's list item, serialized alike: the title borrowed from the row, the
/// timestamps written straight into the body.
#[derive(Serialize)]
struct Document<'a> {
    id: uuid::Uuid,
    title: &'a str,
    created_at: Timestamp,
    updated_at: Timestamp,
}

#[derive(Serialize)]
struct Page<'a> {
    data: Vec<Document<'a>>,
    next_cursor: Option<String>,
}

/// RFC 3339 with microseconds, as the example serializes its timestamps.
struct Timestamp(SystemTime);

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_micros(self.0))
    }
}

fn cursor(created_at: SystemTime, id: uuid::Uuid) -> String {
    let micros = created_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{micros}.{id}"))
}

/// The example's default page size.
const LIMIT: i64 = 50;

async fn documents(State(s): State<AppState>) -> Result<Response, axum::http::StatusCode> {
    let fail = |_| axum::http::StatusCode::SERVICE_UNAVAILABLE;
    let client = s
        .pool
        .get()
        .await
        .map_err(|_| axum::http::StatusCode::SERVICE_UNAVAILABLE)?;
    let rows = match &s.rls {
        None => {
            let stmt = client.prepare_cached(LIST).await.map_err(fail)?;
            client
                .query(&stmt, &[&s.tenant, &(LIMIT + 1)])
                .await
                .map_err(fail)?
        }
        Some(rls) => {
            let (fused, context) = &**rls;
            let stmt = client.prepare_cached(fused).await.map_err(fail)?;
            client
                .query(&stmt, &[&s.tenant, &(LIMIT + 1), context])
                .await
                .map_err(fail)?
        }
    };
    let more = rows.len() > LIMIT as usize;
    let rows = &rows[..rows.len().min(LIMIT as usize)];
    Ok(Json(Page {
        next_cursor: rows
            .last()
            .filter(|_| more)
            .map(|r| cursor(r.get(2), r.get(0))),
        data: rows
            .iter()
            .map(|r| Document {
                id: r.get(0),
                title: r.get(1),
                created_at: Timestamp(r.get(2)),
                updated_at: Timestamp(r.get(3)),
            })
            .collect(),
    })
    .into_response())
}

async fn hello() -> &'static str {
    "hello"
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let slug = std::env::var("BENCH_TENANT").unwrap_or_else(|_| "acme".into());
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3100".into());
    let mut config: tokio_postgres::Config = url.parse()?;
    // As the example does on its connections: without it, the list statement's `LIMIT $2`
    // makes PostgreSQL plan it again on every call. Same setting on both sides, so the
    // comparison measures tenancy, not planning.
    config.options("-c plan_cache_mode=force_generic_plan");
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(16)
        .build()?;
    let rls = std::env::var("BENCH_RLS").is_ok_and(|v| v == "1");
    let tenant: uuid::Uuid = pool
        .get()
        .await?
        .query_one("SELECT id FROM tenants WHERE slug = $1", &[&slug])
        .await?
        .get(0);
    let app = Router::new()
        .route("/api/v1/documents", get(documents))
        .route("/hello", get(hello))
        .with_state(AppState {
            pool,
            tenant,
            rls: rls.then(|| {
                Arc::new((
                    tenantry_rls_pool::fused_statement(LIST, 2),
                    tenant.to_string(),
                ))
            }),
        });
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
