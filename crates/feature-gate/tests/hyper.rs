//! The gate under bare hyper 1, over a loopback socket: request body `hyper::body::Incoming`,
//! response body `Full<Bytes>`, no framework.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tenantry_core::{Plan, Slug, Tenant, TenantId};
use tenantry_feature_gate::{FeatureRules, RequireFeature, Rollout};
use tokio::net::{TcpListener, TcpStream};
use tower::util::MapRequestLayer;
use tower::{service_fn, ServiceBuilder};

/// Starts a server whose stand-in resolver picks the tenant named by `x-test-tenant`.
async fn serve(tenants: HashMap<&'static str, Arc<Tenant>>, rules: FeatureRules) -> SocketAddr {
    let svc = ServiceBuilder::new()
        .layer(MapRequestLayer::new(move |mut req: Request<Incoming>| {
            let tenant = req
                .headers()
                .get("x-test-tenant")
                .and_then(|v| v.to_str().ok())
                .and_then(|name| tenants.get(name))
                .cloned();
            if let Some(tenant) = tenant {
                req.extensions_mut().insert(tenant);
            }
            req
        }))
        .layer(rules)
        .layer(
            RequireFeature::new("new_editor")
                .unwrap()
                .upgrade_url("https://example.com/upgrade")
                .unwrap(),
        )
        .service(service_fn(|req: Request<Incoming>| async move {
            // Read the request body, to show the gate passes it through untouched.
            let body = req.into_body().collect().await.unwrap().to_bytes();
            Ok::<_, Infallible>(Response::new(Full::new(body)))
        }));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

struct Client(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self(send)
    }

    async fn post(&mut self, tenant: Option<&str>, body: &'static str) -> (StatusCode, Bytes) {
        let mut req = Request::post("/editor").header("host", "localhost");
        if let Some(tenant) = tenant {
            req = req.header("x-test-tenant", tenant);
        }
        let req = req
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        self.0.ready().await.unwrap();
        let res = self.0.send_request(req).await.unwrap();
        let status = res.status();
        (status, res.into_body().collect().await.unwrap().to_bytes())
    }
}

#[tokio::test]
async fn gate_works_under_bare_hyper_over_a_socket() {
    let pilot = Arc::new(
        Tenant::builder(
            TenantId::new_v4(),
            Slug::new("pilot").unwrap(),
            Plan::free(),
        )
        .build(),
    );
    let other = Arc::new(
        Tenant::builder(TenantId::new_v4(), Slug::new("other").unwrap(), Plan::pro()).build(),
    );
    let rules = FeatureRules::builder()
        .rollout("new_editor", Rollout::none().allow(pilot.id()))
        .build()
        .unwrap();
    let addr = serve(HashMap::from([("pilot", pilot), ("other", other)]), rules).await;

    // Several requests on one keep-alive connection, each decided on its own.
    let mut client = Client::connect(addr).await;
    let (status, body) = client.post(Some("pilot"), "draft 1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"draft 1");

    let (status, body) = client.post(Some("other"), "draft 2").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], "feature_not_available");
    assert_eq!(problem["feature"], "new_editor");
    assert_eq!(problem["plan"], "pro");
    assert_eq!(problem["upgrade_url"], "https://example.com/upgrade");

    let (status, body) = client.post(None, "draft 3").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], "misconfigured");

    let (status, _) = client.post(Some("pilot"), "draft 4").await;
    assert_eq!(status, StatusCode::OK);
}
