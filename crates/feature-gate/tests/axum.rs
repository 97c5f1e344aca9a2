//! The gates as axum route layers, and the `Features` extractor.
#![cfg(feature = "axum")]

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tenantry_core::{Plan, Slug, Tenant, TenantId};
use tenantry_feature_gate::{
    FeatureRules, Features, RequireAllFeatures, RequireAnyFeature, RequireFeature, Rollout,
};
use tower::util::MapRequestLayer;
use tower::ServiceExt;

struct Fixture {
    app: Router,
    free: Arc<Tenant>,
    pro: Arc<Tenant>,
}

fn tenant(slug: &str, plan: Plan) -> Arc<Tenant> {
    Arc::new(Tenant::builder(TenantId::new_v4(), Slug::new(slug).unwrap(), plan).build())
}

async fn report(features: Features) -> String {
    if features.is_enabled("analytics") {
        format!("full report for the {} plan", features.plan())
    } else {
        "summary".to_owned()
    }
}

async fn my_features(features: Features) -> String {
    features.enabled().into_iter().collect::<Vec<_>>().join(",")
}

fn fixture() -> Fixture {
    let free = tenant("free-co", Plan::free());
    let pro = tenant("pro-co", Plan::pro());
    let rules = FeatureRules::builder()
        .rollout("new_editor", Rollout::none().allow(free.id()))
        .build()
        .unwrap();
    let by_slug: HashMap<String, Arc<Tenant>> = [&free, &pro]
        .into_iter()
        .map(|t| (t.slug().to_string(), Arc::clone(t)))
        .collect();

    let app = Router::new()
        .route(
            "/analytics",
            get(|| async { "analytics" }).route_layer(
                RequireFeature::new("analytics")
                    .unwrap()
                    .upgrade_url("https://example.com/upgrade")
                    .unwrap(),
            ),
        )
        .route(
            "/integrations",
            get(|| async { "integrations" })
                .route_layer(RequireAnyFeature::new(["custom_webhooks", "new_editor"]).unwrap()),
        )
        .route(
            "/suite",
            get(|| async { "suite" })
                .route_layer(RequireAllFeatures::new(["analytics", "custom_webhooks"]).unwrap()),
        )
        .route("/report", get(report))
        .route("/me/features", get(my_features))
        .layer(rules)
        // Stands in for TenantResolveLayer: the tenant named by `x-test-tenant`, if any.
        .layer(MapRequestLayer::new(move |mut req: Request<Body>| {
            let tenant = req
                .headers()
                .get("x-test-tenant")
                .and_then(|v| v.to_str().ok())
                .and_then(|slug| by_slug.get(slug))
                .cloned();
            if let Some(tenant) = tenant {
                req.extensions_mut().insert(tenant);
            }
            req
        }));
    Fixture { app, free, pro }
}

async fn get_as(app: &Router, tenant: Option<&Tenant>, path: &str) -> (StatusCode, String) {
    let mut req = Request::get(path);
    if let Some(t) = tenant {
        req = req.header("x-test-tenant", t.slug().as_str());
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn route_layer_lets_the_plan_through_and_rejects_others_with_a_problem() {
    let f = fixture();
    assert_eq!(
        get_as(&f.app, Some(&f.pro), "/analytics").await,
        (StatusCode::OK, "analytics".to_owned())
    );
    let (status, body) = get_as(&f.app, Some(&f.free), "/analytics").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["code"], "feature_not_available");
    assert_eq!(problem["feature"], "analytics");
    assert_eq!(problem["plan"], "free");
    assert_eq!(problem["upgrade_url"], "https://example.com/upgrade");
}

#[tokio::test]
async fn combinations_work_as_route_layers() {
    let f = fixture();
    // `free` has new_editor through the allow-list; `pro` has neither alternative.
    assert_eq!(
        get_as(&f.app, Some(&f.free), "/integrations").await.0,
        StatusCode::OK
    );
    assert_eq!(
        get_as(&f.app, Some(&f.pro), "/integrations").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get_as(&f.app, Some(&f.pro), "/suite").await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn features_extractor_lets_a_handler_branch() {
    let f = fixture();
    assert_eq!(
        get_as(&f.app, Some(&f.pro), "/report").await,
        (StatusCode::OK, "full report for the pro plan".to_owned())
    );
    assert_eq!(
        get_as(&f.app, Some(&f.free), "/report").await,
        (StatusCode::OK, "summary".to_owned())
    );
}

#[tokio::test]
async fn features_extractor_sees_rollouts_like_the_gates() {
    let f = fixture();
    let (_, free) = get_as(&f.app, Some(&f.free), "/me/features").await;
    assert_eq!(free, "new_editor");
    let (_, pro) = get_as(&f.app, Some(&f.pro), "/me/features").await;
    assert_eq!(pro, "analytics");
}

#[tokio::test]
async fn features_extractor_without_a_tenant_is_a_clear_500() {
    let f = fixture();
    let (status, body) = get_as(&f.app, None, "/report").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["code"], "misconfigured");
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("is TenantResolveLayer installed before the Features extractor?"));
}

#[tokio::test]
async fn route_layer_without_a_tenant_fails_closed() {
    let f = fixture();
    let (status, body) = get_as(&f.app, None, "/analytics").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_ne!(body, "analytics", "the handler must not run");
}
