//! The gate layers over plain tower services, with `Full<Bytes>` bodies.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tenantry_core::problem::codes;
use tenantry_core::{Plan, Slug, Tenant, TenantId, TenantStatus};
use tenantry_feature_gate::{
    ConfigErrorKind, FeatureRejection, FeatureRules, RequireAllFeatures, RequireAnyFeature,
    RequireFeature, Requirement, Rollout,
};
use tower::util::{BoxCloneService, MapRequestLayer};
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

type Body = Full<Bytes>;

fn tenant(plan: Plan) -> tenantry_core::TenantBuilder {
    Tenant::builder(TenantId::new_v4(), Slug::new("acme").unwrap(), plan)
}

/// Stands in for TenantResolveLayer: puts the tenant into the request extensions.
fn with_tenant(
    tenant: Arc<Tenant>,
) -> MapRequestLayer<impl FnMut(Request<Body>) -> Request<Body> + Clone> {
    MapRequestLayer::new(move |mut req: Request<Body>| {
        req.extensions_mut().insert(Arc::clone(&tenant));
        req
    })
}

async fn handler(_req: Request<Body>) -> Result<Response<Body>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"handled"))))
}

struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    rejection: Option<FeatureRejection>,
    body: Bytes,
}

impl Answer {
    fn handled(&self) -> bool {
        self.status == StatusCode::OK && &self.body[..] == b"handled"
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

async fn answer<S>(svc: S) -> Answer
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    let res = svc.oneshot(Request::new(Full::default())).await.unwrap();
    let status = res.status();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let rejection = res.extensions().get::<FeatureRejection>().cloned();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        content_type,
        rejection,
        body,
    }
}

type Handler = BoxCloneService<Request<Body>, Response<Body>, Infallible>;

/// tenant → rules → gate → handler, the documented order.
async fn send<L>(gate: L, tenant: Tenant, rules: Option<FeatureRules>) -> Answer
where
    L: Layer<Handler>,
    L::Service: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    let svc = ServiceBuilder::new()
        .layer(with_tenant(Arc::new(tenant)))
        .option_layer(rules)
        .layer(gate)
        .service(service_fn(handler).boxed_clone());
    answer(svc).await
}

#[tokio::test]
async fn plan_feature_lets_the_request_through() {
    let a = send(
        RequireFeature::new("analytics").unwrap(),
        tenant(Plan::pro()).build(),
        None,
    )
    .await;
    assert!(a.handled());
}

#[tokio::test]
async fn feature_outside_the_plan_is_403_naming_the_feature_and_the_actual_plan() {
    for (plan, feature) in [
        (Plan::free(), "analytics"),
        (Plan::pro(), "custom_webhooks"),
    ] {
        let plan_name = plan.name().to_owned();
        let a = send(
            RequireFeature::new(feature).unwrap(),
            tenant(plan).build(),
            None,
        )
        .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        assert!(!a.handled());
        assert_eq!(a.content_type.as_deref(), Some("application/problem+json"));
        let body = a.json();
        assert_eq!(body["code"], codes::FEATURE_NOT_AVAILABLE);
        assert_eq!(body["status"], 403);
        assert_eq!(body["feature"], feature);
        assert_eq!(
            body["plan"],
            plan_name.as_str(),
            "names the tenant's own plan"
        );
        assert!(body.get("upgrade_url").is_none());
    }
}

#[tokio::test]
async fn grant_override_enables_a_feature_outside_the_plan() {
    let a = send(
        RequireFeature::new("analytics").unwrap(),
        tenant(Plan::free()).grant("analytics").build(),
        None,
    )
    .await;
    assert!(a.handled());
}

#[tokio::test]
async fn revoke_override_disables_a_plan_feature() {
    let a = send(
        RequireFeature::new("analytics").unwrap(),
        tenant(Plan::enterprise()).revoke("analytics").build(),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["plan"], "enterprise");
}

#[tokio::test]
async fn rollout_allow_list_lets_a_tenant_through_the_gate() {
    let t = tenant(Plan::free()).build();
    let rules = FeatureRules::builder()
        .rollout("new_editor", Rollout::none().allow(t.id()))
        .build()
        .unwrap();
    let a = send(RequireFeature::new("new_editor").unwrap(), t, Some(rules)).await;
    assert!(a.handled());
}

#[tokio::test]
async fn full_rollout_lets_every_tenant_through_the_gate() {
    let rules = FeatureRules::builder()
        .rollout("new_editor", Rollout::percent(100).unwrap())
        .build()
        .unwrap();
    for _ in 0..20 {
        let a = send(
            RequireFeature::new("new_editor").unwrap(),
            tenant(Plan::free()).build(),
            Some(rules.clone()),
        )
        .await;
        assert!(a.handled());
    }
}

#[tokio::test]
async fn rollouts_grant_nothing_without_the_rules_in_the_extensions() {
    let t = tenant(Plan::free()).build();
    let rules = FeatureRules::builder()
        .rollout("new_editor", Rollout::percent(100).unwrap().allow(t.id()))
        .build()
        .unwrap();
    let with = send(
        RequireFeature::new("new_editor").unwrap(),
        t.clone(),
        Some(rules),
    )
    .await;
    assert!(with.handled());
    let without = send(RequireFeature::new("new_editor").unwrap(), t, None).await;
    assert_eq!(without.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn revocation_beats_rollout_and_allow_list_at_the_gate() {
    let t = tenant(Plan::free()).revoke("new_editor").build();
    let rules = FeatureRules::builder()
        .rollout("new_editor", Rollout::percent(100).unwrap().allow(t.id()))
        .build()
        .unwrap();
    let a = send(RequireFeature::new("new_editor").unwrap(), t, Some(rules)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn suspended_tenant_gets_no_plan_feature() {
    let a = send(
        RequireFeature::new("analytics").unwrap(),
        tenant(Plan::enterprise())
            .status(TenantStatus::Suspended)
            .build(),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn upgrade_url_is_in_the_problem_when_configured() {
    let gate = RequireFeature::new("analytics")
        .unwrap()
        .upgrade_url("https://billing.example.com/upgrade?to=pro")
        .unwrap();
    let a = send(gate, tenant(Plan::free()).build(), None).await;
    assert_eq!(
        a.json()["upgrade_url"],
        "https://billing.example.com/upgrade?to=pro"
    );
    let relative = RequireFeature::new("analytics")
        .unwrap()
        .upgrade_url("/billing/upgrade")
        .unwrap();
    let a = send(relative, tenant(Plan::free()).build(), None).await;
    assert_eq!(a.json()["upgrade_url"], "/billing/upgrade");
}

#[tokio::test]
async fn any_feature_passes_with_one_of_them_and_rejects_with_none() {
    let gate = RequireAnyFeature::new(["custom_webhooks", "analytics"]).unwrap();
    let pro = send(gate.clone(), tenant(Plan::pro()).build(), None).await;
    assert!(pro.handled());
    let free = send(gate, tenant(Plan::free()).build(), None).await;
    assert_eq!(free.status, StatusCode::FORBIDDEN);
    let body = free.json();
    assert_eq!(body["requirement"], "any_of");
    assert_eq!(
        body["missing_features"],
        serde_json::json!(["custom_webhooks", "analytics"])
    );
    assert_eq!(body["plan"], "free");
}

#[tokio::test]
async fn all_features_rejects_when_one_is_missing_and_lists_only_that_one() {
    let gate = RequireAllFeatures::new(["analytics", "custom_webhooks"]).unwrap();
    let enterprise = send(gate.clone(), tenant(Plan::enterprise()).build(), None).await;
    assert!(enterprise.handled());
    let pro = send(gate, tenant(Plan::pro()).build(), None).await;
    assert_eq!(pro.status, StatusCode::FORBIDDEN);
    let body = pro.json();
    assert_eq!(body["feature"], "custom_webhooks");
    assert_eq!(
        body["missing_features"],
        serde_json::json!(["custom_webhooks"])
    );
    assert_eq!(body["requirement"], "all_of");
}

#[tokio::test]
async fn missing_tenant_fails_closed_with_a_500_naming_the_missing_layer() {
    for (component, svc) in [
        (
            "RequireFeature",
            RequireFeature::new("analytics")
                .unwrap()
                .layer(service_fn(handler))
                .boxed_clone(),
        ),
        (
            "RequireAnyFeature",
            RequireAnyFeature::new(["analytics"])
                .unwrap()
                .layer(service_fn(handler))
                .boxed_clone(),
        ),
        (
            "RequireAllFeatures",
            RequireAllFeatures::new(["analytics"])
                .unwrap()
                .layer(service_fn(handler))
                .boxed_clone(),
        ),
    ] {
        let a = answer(svc).await;
        assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!a.handled());
        let body = a.json();
        assert_eq!(body["code"], codes::MISCONFIGURED);
        let expected = format!("is TenantResolveLayer installed before {component}?");
        assert!(
            body["detail"].as_str().unwrap().contains(&expected),
            "{body}"
        );
        assert!(matches!(
            a.rejection,
            Some(FeatureRejection::TenantMissing(_))
        ));
    }
}

#[tokio::test]
async fn wrong_layer_order_is_a_clear_error_not_a_grant() {
    // The gate runs before the layer that inserts the tenant: the handler would see an
    // enterprise tenant, but the gate must not let the request through.
    let svc = ServiceBuilder::new()
        .layer(RequireFeature::new("analytics").unwrap())
        .layer(with_tenant(Arc::new(tenant(Plan::enterprise()).build())))
        .service(service_fn(handler));
    let a = answer(svc).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!a.handled());
    assert!(a.json()["detail"]
        .as_str()
        .unwrap()
        .contains("TenantResolveLayer installed before RequireFeature"));
}

#[tokio::test]
async fn a_tenant_not_wrapped_in_arc_does_not_count() {
    let bare = tenant(Plan::enterprise()).build();
    let svc = ServiceBuilder::new()
        .layer(MapRequestLayer::new(move |mut req: Request<Body>| {
            req.extensions_mut().insert(bare.clone());
            req
        }))
        .layer(RequireFeature::new("analytics").unwrap())
        .service(service_fn(handler));
    let a = answer(svc).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn rejection_is_in_the_response_extensions() {
    let t = tenant(Plan::free()).build();
    let id = t.id();
    let a = send(RequireFeature::new("analytics").unwrap(), t, None).await;
    let Some(FeatureRejection::NotAvailable(e)) = a.rejection else {
        panic!("no rejection in the extensions");
    };
    assert_eq!(e.feature(), "analytics");
    assert_eq!(e.plan(), "free");
    assert_eq!(e.tenant_id(), id);
    assert_eq!(e.requirement(), Requirement::One);
}

#[tokio::test]
async fn rejection_response_can_be_replaced() {
    let gate = RequireFeature::new("analytics")
        .unwrap()
        .with_rejection(|r: FeatureRejection| {
            let text = match &r {
                FeatureRejection::NotAvailable(e) => format!("upgrade from {}", e.plan()),
                other => other.to_string(),
            };
            let mut res = Response::new(Full::new(Bytes::from(text)));
            *res.status_mut() = StatusCode::PAYMENT_REQUIRED;
            res
        });
    let a = send(gate, tenant(Plan::free()).build(), None).await;
    assert_eq!(a.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(&a.body[..], b"upgrade from free");
}

#[test]
fn feature_names_are_validated_when_the_layer_is_built() {
    for bad in [
        "",
        " ",
        "analytics ",
        " analytics",
        "new editor",
        "a\nb",
        "ümlaut",
    ] {
        for err in [
            RequireFeature::new(bad).unwrap_err(),
            RequireAnyFeature::new(["analytics", bad]).unwrap_err(),
            RequireAllFeatures::new([bad]).unwrap_err(),
        ] {
            assert_eq!(err.kind(), ConfigErrorKind::InvalidFeatureName, "{bad:?}");
        }
    }
    let none: [&str; 0] = [];
    assert_eq!(
        RequireAnyFeature::new(none).unwrap_err().kind(),
        ConfigErrorKind::NoFeatures
    );
    assert_eq!(
        RequireAllFeatures::new(none).unwrap_err().kind(),
        ConfigErrorKind::NoFeatures
    );
}

#[test]
fn upgrade_url_must_be_a_uri() {
    for bad in ["", "not a uri", "https://exa mple.com"] {
        let err = RequireFeature::new("analytics")
            .unwrap()
            .upgrade_url(bad)
            .unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::InvalidUpgradeUrl, "{bad:?}");
    }
}

#[tokio::test]
async fn inner_service_is_called_only_after_it_was_ready_and_never_for_a_rejection() {
    let (mut svc, mut handle) = tower_test::mock::spawn_layer::<Request<Body>, Response<Body>, _>(
        RequireFeature::new("analytics").unwrap(),
    );
    let pro = Arc::new(tenant(Plan::pro()).build());
    let free = Arc::new(tenant(Plan::free()).build());

    // The gate reports the inner service's readiness.
    handle.allow(0);
    assert!(svc.poll_ready().is_pending());
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());

    // Allowed: the request reaches the inner service (the mock panics if it was not ready).
    let mut req = Request::new(Full::default());
    req.extensions_mut().insert(Arc::clone(&pro));
    let call = svc.call(req);
    let (seen, send_response) = handle.next_request().await.unwrap();
    assert_eq!(
        seen.extensions().get::<Arc<Tenant>>().unwrap().id(),
        pro.id()
    );
    send_response.send_response(Response::new(Full::new(Bytes::from_static(b"inner"))));
    assert_eq!(call.await.unwrap().status(), StatusCode::OK);

    // Rejected: answered without a request reaching the inner service.
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let mut req = Request::new(Full::default());
    req.extensions_mut().insert(free);
    let res = svc.call(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(handle.poll_request().is_pending());
}
