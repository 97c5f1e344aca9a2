//! [`RlsLayer`]: puts a lazy [`TenantDb`](crate::TenantDb) for the resolved tenant in the request extensions.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request};
use tenantry_core::Tenant;
use tower_layer::Layer;
use tower_service::Service;

use crate::context::Access;
use crate::pool::RlsPool;

/// Adds a [`TenantDb`](crate::TenantDb) for the request's tenant (an `Arc<Tenant>` in the request extensions,
/// put there by the tenant resolver) to the request extensions. It takes no connection: a
/// request that never touches the database never takes one. A request without a tenant gets
/// no handle (its handler's extractor then says which layer is missing).
///
/// ```
/// use std::convert::Infallible;
/// use std::sync::Arc;
/// use http::{Request, Response};
/// use tenantry_core::{Plan, Slug, Tenant, TenantId};
/// use tenantry_rls_pool::{RlsLayer, RlsPool, TenantDb};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let manager = deadpool_postgres::Manager::new(
/// #     "host=127.0.0.1 user=nobody".parse()?, tokio_postgres::NoTls);
/// # let pool = deadpool_postgres::Pool::builder(manager).max_size(1).build()?;
/// let rls = RlsPool::new(pool);
/// let svc = ServiceBuilder::new()
///     .layer(RlsLayer::new(rls).read_only_for_safe_methods(true))
///     .service(service_fn(|req: Request<()>| async move {
///         let db = req.extensions().get::<TenantDb>().expect("RlsLayer installed");
///         Ok::<_, Infallible>(Response::new(format!("{:?}", db.access())))
///     }));
/// let tenant = Arc::new(Tenant::builder(TenantId::new_v4(), Slug::new("acme")?, Plan::pro()).build());
/// let mut req = Request::new(());
/// req.extensions_mut().insert(tenant);
/// let res = svc.oneshot(req).await?;
/// assert_eq!(res.body(), "ReadOnly"); // GET is safe: read-only, and no connection was taken
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RlsLayer {
    pool: RlsPool,
    read_only_safe: bool,
}

impl RlsLayer {
    /// A layer over `pool`.
    pub fn new(pool: RlsPool) -> Self {
        Self {
            pool,
            read_only_safe: false,
        }
    }

    /// Whether requests with a safe method (GET, HEAD, OPTIONS, TRACE) get read-only
    /// transactions by default (default false).
    pub fn read_only_for_safe_methods(mut self, enabled: bool) -> Self {
        self.read_only_safe = enabled;
        self
    }
}

impl<S> Layer<S> for RlsLayer {
    type Service = Rls<S>;

    fn layer(&self, inner: S) -> Rls<S> {
        Rls {
            inner,
            pool: self.pool.clone(),
            read_only_safe: self.read_only_safe,
        }
    }
}

/// The service [`RlsLayer`] builds.
#[derive(Debug, Clone)]
pub struct Rls<S> {
    inner: S,
    pool: RlsPool,
    read_only_safe: bool,
}

impl<S, ReqBody> Service<Request<ReqBody>> for Rls<S>
where
    S: Service<Request<ReqBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        if let Some(tenant) = req.extensions().get::<Arc<Tenant>>().cloned() {
            let safe = matches!(
                *req.method(),
                Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
            );
            let access = if self.read_only_safe && safe {
                Access::ReadOnly
            } else {
                Access::ReadWrite
            };
            let db = self.pool.for_tenant(tenant).with_access(access);
            req.extensions_mut().insert(db);
        }
        // Called synchronously: the inner service used is the one polled ready.
        self.inner.call(req)
    }
}
