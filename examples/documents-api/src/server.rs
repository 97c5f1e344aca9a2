//! `serve`: composes every tenantry layer into the documents API.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use axum::Router;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use futures_util::future::Either;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tenantry_cache::{CachedStore, RedisLevel};
use tenantry_core::problem::{codes, Problem};
use tenantry_core::TenantId;
use tenantry_feature_gate::{FeatureRules, RequireFeature};
use tenantry_rate_limit::{Limiter, LocalLimiter, Quota, RateKey, RateLimitLayer, RedisLimiter};
use tenantry_resolve::{HostRules, JwtVerifier, TenantResolveLayer};
use tenantry_rls_pool::{DoctorReport, PgTenantStore, RlsLayer, RlsPool};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::api;
use crate::config::{JwtAlgorithm, Settings};
use crate::database::Database;
use crate::metrics::CountRequestsLayer;
use crate::{admin, seed};

/// The Redis key prefix of the tenant cache (and its invalidation channel).
fn cache_prefix(settings: &Settings) -> String {
    format!("{}:tenants", settings.redis_prefix)
}

/// The Redis key prefix of the rate limiter.
fn limit_prefix(settings: &Settings) -> String {
    format!("{}:ratelimit", settings.redis_prefix)
}

/// The limiter chosen at start-up: in process, or shared through Redis.
#[derive(Debug, Clone)]
enum AppLimiter {
    Local(LocalLimiter),
    Redis(RedisLimiter),
}

impl Limiter for AppLimiter {
    type Future = Either<<LocalLimiter as Limiter>::Future, <RedisLimiter as Limiter>::Future>;

    fn check(&self, key: &RateKey, quota: Quota, cost: NonZeroU32) -> Self::Future {
        match self {
            Self::Local(l) => Either::Left(l.check(key, quota, cost)),
            Self::Redis(r) => Either::Right(r.check(key, quota, cost)),
        }
    }
}

type Store = CachedStore<PgTenantStore>;

/// Shared by the handlers that take `State`. Behind an `Arc`: axum clones the state into
/// every route's service on every request, whether the handler extracts it or not.
type AppState = Arc<SharedState>;

struct SharedState {
    rls: RlsPool,
    redis: Option<Client>,
    limiter: AppLimiter,
    prometheus: PrometheusHandle,
}

/// Connects to Redis with a per-command timeout and no retries (each command sent once).
async fn redis_clients(url: &str) -> anyhow::Result<(Client, SubscriberClient)> {
    let config = Config::from_url(url).context("REDIS_URL is not a valid Redis URL")?;
    let mut builder = Builder::from_config(config);
    builder.set_policy(ReconnectPolicy::new_constant(0, 500));
    builder.with_performance_config(|p| p.default_command_timeout = Duration::from_millis(200));
    builder.with_connection_config(|c| c.connection_timeout = Duration::from_secs(2));
    let client = builder.build()?;
    let subscriber = builder.build_subscriber_client()?;
    client.init().await.context("cannot connect to REDIS_URL")?;
    subscriber
        .init()
        .await
        .context("cannot connect to REDIS_URL")?;
    Ok((client, subscriber))
}

fn jwt_verifier(settings: &Settings, secret: Option<&str>) -> anyhow::Result<JwtVerifier> {
    let builder = JwtVerifier::builder()
        .issuer(settings.jwt_issuer.clone())
        .audience(settings.jwt_audience.clone());
    let builder = match (&settings.jwt_public_key_file, secret) {
        (Some(path), _) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read JWT_PUBLIC_KEY_FILE {}", path.display()))?;
            match settings
                .jwt_algorithm
                .unwrap_or_else(|| pem_algorithm(&pem))
            {
                JwtAlgorithm::Rs256 => builder.rs256_pem(None, &pem),
                JwtAlgorithm::Es256 => builder.es256_pem(None, &pem),
                JwtAlgorithm::Eddsa => builder.eddsa_pem(None, &pem),
            }
        }
        (None, Some(secret)) => builder.hs256(secret),
        (None, None) => bail!(
            "set JWT_SECRET (HS256) or JWT_PUBLIC_KEY_FILE to verify tokens; only the \
             zero-configuration mode (no DATABASE_URL) makes up a secret"
        ),
    };
    let builder = match settings.jwt_cache_seconds {
        0 => builder,
        secs => builder.cache_verified_tokens(100_000, Duration::from_secs(secs)),
    };
    Ok(builder.build()?)
}

/// The algorithm a PEM public key implies when JWT_ALGORITHM is not set: the key type is read
/// from the DER's algorithm identifier (rsaEncryption, id-Ed25519, else EC).
fn pem_algorithm(pem: &[u8]) -> JwtAlgorithm {
    let text = String::from_utf8_lossy(pem);
    // OIDs as they appear in base64 at the start of a SubjectPublicKeyInfo.
    if text.contains("BEGIN RSA PUBLIC KEY") || text.contains("BgkqhkiG9w0BAQEF") {
        JwtAlgorithm::Rs256
    } else if text.contains("MCowBQYDK2Vw") {
        JwtAlgorithm::Eddsa
    } else {
        JwtAlgorithm::Es256
    }
}

/// Runs the preflight checks as the application role.
pub async fn doctor(db: &Database) -> anyhow::Result<DoctorReport> {
    let pool = db.app_pool(2)?;
    let rls = RlsPool::builder(pool).build_detecting().await?;
    Ok(rls.doctor().await)
}

/// Tells every instance to drop its cached copy of `tenant` (through Redis, when configured).
pub async fn announce_invalidation(settings: &Settings, tenant: TenantId) -> anyhow::Result<()> {
    let Some(url) = &settings.redis_url else {
        tracing::info!(
            "REDIS_URL is not set: running servers see the change when their cache entries \
             expire (30 s)"
        );
        return Ok(());
    };
    let (client, _subscriber) = redis_clients(url).await?;
    RedisLevel::new(client, cache_prefix(settings))
        .invalidator()?
        .invalidate(tenant)
        .await?;
    Ok(())
}

/// The process-wide metrics recorder (several servers in one test process share it).
fn prometheus_handle() -> anyhow::Result<PrometheusHandle> {
    // Installed inside `get_or_init`, which runs once and makes concurrent callers wait:
    // checking first and installing after let two servers starting together both try, and
    // the second fail.
    static HANDLE: std::sync::OnceLock<Result<PrometheusHandle, String>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))
}

/// A server started by [`start`]: its address, and how to stop it.
#[derive(Debug)]
pub struct Running {
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops accepting connections, lets in-flight requests finish, and waits for the end.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await?
    }
}

/// Starts the server and runs until SIGTERM or Ctrl-C.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let running = start(settings, true).await?;
    shutdown_signal().await;
    running.stop().await?;
    tracing::info!("stopped; in-flight requests finished");
    Ok(())
}

/// Opens the database (or starts a throwaway one), builds the layers, binds
/// `settings.bind` and serves in the background. `announce` prints the banner (and, in
/// zero-configuration mode, the demo curl lines).
pub async fn start(settings: Settings, announce: bool) -> anyhow::Result<Running> {
    let db = Database::open(&settings).await?;
    let zero_config = db.throwaway.is_some();
    if db.admin.is_some() {
        let report = db.migrate().await?;
        tracing::info!(applied = ?report.applied, "migrations");
    }
    if zero_config {
        seed::seed(&db.admin_client().await?).await?;
    }
    let secret = settings
        .jwt_secret
        .clone()
        .or_else(|| zero_config.then(admin::random_secret));
    let verifier = jwt_verifier(&settings, secret.as_deref())?;

    let pool = db.app_pool(settings.db_pool_size)?;
    // The context statement is prepared once per connection (no parse per request); the
    // example does not run behind pgbouncer in transaction mode, where that needs 1.21+.
    let rls = RlsPool::builder(pool.clone())
        .prepared_context(true)
        .build_detecting()
        .await
        .context("cannot start the database pool")?;
    let report = rls.doctor().await;
    if !report.is_ok() {
        bail!("refusing to serve from an unsafe database:\n{report}");
    }

    let redis = match &settings.redis_url {
        Some(url) => Some(redis_clients(url).await?),
        None => None,
    };
    let mut cache = CachedStore::builder(PgTenantStore::new(pool.clone()))
        .ttl(Duration::from_secs(30))
        .negative_ttl(Duration::from_secs(5))
        .max_capacity(100_000);
    let limiter = match &redis {
        Some((client, subscriber)) => {
            cache = cache.redis(
                RedisLevel::new(client.clone(), cache_prefix(&settings))
                    .subscriber(subscriber.clone()),
            );
            AppLimiter::Redis(
                RedisLimiter::builder_with_client(client.clone())
                    .key_prefix(limit_prefix(&settings))
                    .build()
                    .await?,
            )
        }
        None => AppLimiter::Local(LocalLimiter::new()),
    };
    let store = cache.build()?;

    let mut resolve = TenantResolveLayer::builder(store.clone())
        .jwt(verifier)
        .api_keys();
    if let Some(base) = &settings.base_domain {
        resolve = resolve.subdomains(HostRules::new([base.as_str()])?);
    }
    let resolve = resolve.build()?;

    let prometheus = prometheus_handle()?;
    let state = Arc::new(SharedState {
        rls: rls.clone(),
        redis: redis.map(|(c, _)| c),
        limiter: limiter.clone(),
        prometheus,
    });
    let app = router(state, resolve, limiter, rls)?;

    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .with_context(|| format!("cannot listen on {}", settings.bind))?;
    let addr = listener.local_addr()?;
    if announce {
        println!("documents-api listening on http://{addr}");
        if zero_config {
            print_demo(&db, &settings, secret.as_deref(), addr).await?;
        }
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await?;
        // `db` (and a throwaway cluster with it) is dropped only after the server stopped.
        drop(db);
        Ok(())
    });
    Ok(Running {
        addr,
        shutdown: Some(tx),
        task,
    })
}

async fn print_demo(
    db: &Database,
    settings: &Settings,
    secret: Option<&str>,
    addr: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let Some(secret) = secret else { return Ok(()) };
    let admin = db.admin_client().await?;
    println!(
        "\nZero-configuration mode: a throwaway PostgreSQL (removed on exit), in-process cache \
         and limiter, a random JWT secret for this run. Try:\n"
    );
    for (slug, plan, features) in seed::DEMO_TENANTS {
        let tenant = admin::tenant_by_slug(&admin, slug).await?;
        let token = admin::sign_token(
            secret,
            &settings.jwt_issuer,
            &settings.jwt_audience,
            tenant.id,
            "demo-user",
            Duration::from_secs(24 * 3600),
        )?;
        println!("# {slug} ({plan} plan, extra features: {features:?})");
        println!("curl -H 'Authorization: Bearer {token}' http://{addr}/api/v1/documents\n");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

fn router(
    state: AppState,
    resolve: TenantResolveLayer<Store>,
    limiter: AppLimiter,
    rls: RlsPool,
) -> anyhow::Result<Router> {
    use axum::routing::{any, get, post};
    let tenant_api = Router::new()
        .route(
            "/api/v1/documents",
            get(api::list_documents).post(api::create_document),
        )
        .route(
            "/api/v1/documents/{id}",
            get(api::get_document)
                .patch(api::patch_document)
                .delete(api::delete_document),
        )
        .route(
            "/api/v1/analytics",
            get(api::analytics).route_layer(RequireFeature::new("analytics")?),
        )
        .route(
            "/api/v1/webhooks",
            post(api::create_webhook)
                .get(api::list_webhooks)
                .route_layer(RequireFeature::new("custom_webhooks")?),
        )
        .route("/api/v1/whoami", get(api::whoami))
        // Unknown paths under /api/v1 answer 404 after authentication, like the known ones.
        .route("/api/v1", any(not_found))
        .route("/api/v1/{*rest}", any(not_found))
        .layer(
            ServiceBuilder::new()
                // Also records tenant.id, tenant.slug and tenant.plan on the request span.
                .layer(resolve)
                .layer(RateLimitLayer::new(limiter))
                .layer(FeatureRules::new())
                .layer(RlsLayer::new(rls)),
        );
    // Routes with full paths and `merge`, not `nest`: a nested router is one more boxed
    // `Route` (a prefix-stripping one) between the outer layers and each handler.
    Ok(Router::new()
        .merge(tenant_api)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // One `Router::layer` call for the whole outer stack: each call wraps every route in
        // another boxed `Route`, and a request clones every box below the one it enters, so
        // the cost grows with the square of the depth.
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let request_id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        request_id,
                        tenant.id = tracing::field::Empty,
                        tenant.slug = tracing::field::Empty,
                        tenant.plan = tracing::field::Empty,
                    )
                }))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(CountRequestsLayer::default())
                .layer(DefaultBodyLimit::max(api::MAX_CONTENT_BYTES + 64 * 1024)),
        )
        .with_state(state))
}

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let db_ok = match tokio::time::timeout(Duration::from_secs(2), state.rls.pool().get()).await {
        Ok(Ok(client)) => client.simple_query("SELECT 1").await.is_ok(),
        _ => false,
    };
    let redis_ok = match &state.redis {
        None => None,
        Some(c) => Some(
            tokio::time::timeout(Duration::from_secs(1), c.ping::<String>(None))
                .await
                .is_ok_and(|r| r.is_ok()),
        ),
    };
    if db_ok && redis_ok != Some(false) {
        axum::Json(serde_json::json!({ "status": "ready", "database": "ok",
            "redis": redis_ok.map(|_| "ok") }))
        .into_response()
    } else {
        Problem::service_unavailable(format!(
            "database {}, redis {}",
            if db_ok { "ok" } else { "unreachable" },
            match redis_ok {
                None => "not configured",
                Some(true) => "ok",
                Some(false) => "unreachable",
            }
        ))
        .into_response()
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    if let AppLimiter::Redis(r) = &state.limiter {
        let s = r.stats();
        for (name, v) in [
            ("rate_limit_redis_decisions", s.redis_decisions),
            ("rate_limit_redis_calls", s.redis_calls),
            ("rate_limit_redis_failures", s.redis_failures),
            ("rate_limit_negative_cache_hits", s.negative_cache_hits),
            ("rate_limit_fallback_decisions", s.fallback_decisions),
            ("rate_limit_fail_open_decisions", s.fail_open_decisions),
            ("rate_limit_unavailable_decisions", s.unavailable_decisions),
        ] {
            metrics::counter!(name).absolute(v);
        }
        metrics::gauge!("rate_limit_circuit_open").set(if s.circuit_open { 1.0 } else { 0.0 });
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.prometheus.render(),
    )
        .into_response()
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, "Not found").with_detail("No such route.")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_starting_together_share_one_metrics_recorder() {
        // Test processes start several servers at once; each must get the one recorder.
        let start = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    prometheus_handle().map_err(|e| e.to_string())
                })
            })
            .collect();
        for t in threads {
            let handle = t.join().expect("no panic");
            assert!(handle.is_ok(), "{handle:?}");
        }
    }

    #[test]
    fn the_key_type_of_a_pem_names_its_algorithm() {
        let keys = "../../crates/tenant-resolve/tests/keys";
        for (file, alg) in [
            ("rsa_public.pem", JwtAlgorithm::Rs256),
            ("rsa2_public.pem", JwtAlgorithm::Rs256),
            ("ec_public.pem", JwtAlgorithm::Es256),
            ("ed_public.pem", JwtAlgorithm::Eddsa),
        ] {
            let pem = std::fs::read(format!("{}/{keys}/{file}", env!("CARGO_MANIFEST_DIR")))
                .expect("test key");
            assert_eq!(pem_algorithm(&pem), alg, "{file}");
        }
    }
}
