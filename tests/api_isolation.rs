//! Tenant isolation over real HTTP: tenant B never sees or changes tenant A's data, on every
//! route, with both credential kinds and every selector.

mod api_common;

use api_common::*;
use reqwest::Method;
use serde_json::json;

/// A creates documents (every credential kind and selector); B, with every credential kind
/// and selector, lists, gets, patches and deletes them: never sees them, never changes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_b_never_sees_or_changes_tenant_a_documents() {
    let db = tenantry_testkit::TestDb::new().await;
    let a = tenant(&db, "tenant-a", "pro", &[]).await;
    let b = tenant(&db, "tenant-b", "free", &[]).await;
    let srv = Server::start(settings(&db, None)).await;

    // A creates one document per credential kind and selector: every one is served.
    let mut a_docs = Vec::new();
    for cred in CREDS {
        for sel in Sel::all_for(&a) {
            let got = send(
                srv.as_tenant(Method::POST, "/api/v1/documents", &a, cred, &sel)
                    .json(&json!({ "title": format!("A {cred:?} {sel:?}"), "content": "secret of A" })),
            )
            .await;
            assert_eq!(got.0, 201, "A create with {cred:?} {sel:?}: {}", got.2);
            let id = got.2["id"].as_str().expect("id").to_owned();
            assert_eq!(
                got.1["location"].to_str().unwrap(),
                format!("/api/v1/documents/{id}")
            );
            a_docs.push(id);
        }
    }
    // B has one document of its own, so its list is not trivially empty.
    let got = send(
        srv.as_tenant(Method::POST, "/api/v1/documents", &b, Cred::Jwt, &Sel::None)
            .json(&json!({ "title": "B's own" })),
    )
    .await;
    assert_eq!(got.0, 201);
    let b_doc = got.2["id"].as_str().unwrap().to_owned();

    let before = snapshot(&db).await;
    let target = &a_docs[0];
    for cred in CREDS {
        for sel in Sel::all_for(&b) {
            let what = format!("B with {cred:?} {sel:?}");
            let list = send(srv.as_tenant(Method::GET, "/api/v1/documents", &b, cred, &sel)).await;
            assert_eq!(list.0, 200, "{what} list: {}", list.2);
            let ids: Vec<&str> = list.2["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|d| d["id"].as_str().unwrap())
                .collect();
            assert_eq!(
                ids,
                vec![b_doc.as_str()],
                "{what} list shows only B's document"
            );

            let path = format!("/api/v1/documents/{target}");
            let got = send(srv.as_tenant(Method::GET, &path, &b, cred, &sel)).await;
            assert_problem(&format!("{what} get A's"), &got, 404, "not_found");
            let got = send(
                srv.as_tenant(Method::PATCH, &path, &b, cred, &sel)
                    .json(&json!({ "title": "hijacked", "content": "by B" })),
            )
            .await;
            assert_problem(&format!("{what} patch A's"), &got, 404, "not_found");
            let got = send(srv.as_tenant(Method::DELETE, &path, &b, cred, &sel)).await;
            assert_problem(&format!("{what} delete A's"), &got, 404, "not_found");
        }
    }
    assert_eq!(snapshot(&db).await, before, "B changed nothing");

    // B's answer for A's id is exactly the answer for an id that does not exist.
    let missing = send(srv.as_tenant(
        Method::GET,
        &format!("/api/v1/documents/{}", uuid::Uuid::new_v4()),
        &b,
        Cred::Jwt,
        &Sel::None,
    ))
    .await;
    let foreign = send(srv.as_tenant(
        Method::GET,
        &format!("/api/v1/documents/{target}"),
        &b,
        Cred::Jwt,
        &Sel::None,
    ))
    .await;
    assert_eq!(missing.2, foreign.2);

    // A still sees, changes and deletes its own documents, with every credential kind.
    let list = send(srv.as_tenant(
        Method::GET,
        "/api/v1/documents?limit=100",
        &a,
        Cred::Jwt,
        &Sel::None,
    ))
    .await;
    assert_eq!(list.0, 200);
    assert_eq!(list.2["data"].as_array().unwrap().len(), a_docs.len());
    let revisions = || {
        let (db, id) = (&db, *a.id.as_uuid());
        async move {
            db.admin()
                .query_one(
                    "SELECT count(*) FROM document_revisions WHERE tenant_id = $1",
                    &[&id],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(revisions().await, 0, "B's patches recorded no revision");
    for (cred, id) in CREDS.into_iter().zip(&a_docs) {
        let path = format!("/api/v1/documents/{id}");
        let got = send(srv.as_tenant(Method::GET, &path, &a, cred, &Sel::None)).await;
        assert_eq!(got.0, 200, "A get own with {cred:?}");
        assert_eq!(got.2["content"], "secret of A");
        let got = send(
            srv.as_tenant(
                Method::PATCH,
                &path,
                &a,
                cred,
                &Sel::Subdomain(a.slug.clone()),
            )
            .json(&json!({ "content": "edited by A" })),
        )
        .await;
        assert_eq!(got.0, 200, "A patch own with {cred:?}: {}", got.2);
        assert_eq!(got.2["content"], "edited by A");
    }
    assert_eq!(revisions().await, 3, "one revision per successful patch");
    for (cred, id) in CREDS.into_iter().zip(&a_docs) {
        let path = format!("/api/v1/documents/{id}");
        let got = send(srv.as_tenant(
            Method::DELETE,
            &path,
            &a,
            cred,
            &Sel::Header(a.slug.clone()),
        ))
        .await;
        assert_eq!(got.0, 204, "A delete own with {cred:?}");
        let got = send(srv.as_tenant(Method::GET, &path, &a, cred, &Sel::None)).await;
        assert_problem("A get deleted", &got, 404, "not_found");
    }
    let b_still: i64 = db
        .admin()
        .query_one(
            "SELECT count(*) FROM documents WHERE tenant_id = $1",
            &[b.id.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(b_still, 1);
    srv.stop().await;
}

/// Webhooks, analytics and whoami answer for the caller's tenant only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_analytics_and_whoami_are_per_tenant() {
    let db = tenantry_testkit::TestDb::new().await;
    let a = tenant(&db, "hooks-a", "enterprise", &[]).await;
    let b = tenant(&db, "hooks-b", "enterprise", &[]).await;
    let srv = Server::start(settings(&db, None)).await;

    for cred in CREDS {
        let got = send(
            srv.as_tenant(Method::POST, "/api/v1/webhooks", &a, cred, &Sel::Subdomain(a.slug.clone()))
                .json(&json!({ "url": format!("https://a.example.com/{cred:?}"), "events": ["document.created"] })),
        )
        .await;
        assert_eq!(got.0, 201, "A webhook with {cred:?}: {}", got.2);
    }
    // The same URL twice is a conflict for A, but B may register it.
    let dup = json!({ "url": "https://a.example.com/Jwt" });
    let got = send(
        srv.as_tenant(Method::POST, "/api/v1/webhooks", &a, Cred::Jwt, &Sel::None)
            .json(&dup),
    )
    .await;
    assert_problem("A duplicate webhook", &got, 409, "conflict");
    let got = send(
        srv.as_tenant(Method::POST, "/api/v1/webhooks", &b, Cred::Jwt, &Sel::None)
            .json(&dup),
    )
    .await;
    assert_eq!(got.0, 201, "B may register the URL A uses: {}", got.2);

    for _ in 0..2 {
        let got = send(
            srv.as_tenant(Method::POST, "/api/v1/documents", &a, Cred::Jwt, &Sel::None)
                .json(&json!({ "title": "for analytics" })),
        )
        .await;
        assert_eq!(got.0, 201);
    }

    for cred in CREDS {
        for sel in Sel::all_for(&b) {
            let what = format!("B with {cred:?} {sel:?}");
            let got = send(srv.as_tenant(Method::GET, "/api/v1/webhooks", &b, cred, &sel)).await;
            assert_eq!(got.0, 200, "{what}");
            let urls: Vec<&str> = got.2["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["url"].as_str().unwrap())
                .collect();
            assert_eq!(
                urls,
                vec!["https://a.example.com/Jwt"],
                "{what}: only B's webhook"
            );

            let got = send(srv.as_tenant(Method::GET, "/api/v1/analytics", &b, cred, &sel)).await;
            assert_eq!(got.0, 200, "{what}");
            assert_eq!(
                got.2["documents_per_day"],
                json!([]),
                "{what}: none of A's documents counted"
            );

            let got = send(srv.as_tenant(Method::GET, "/api/v1/whoami", &b, cred, &sel)).await;
            assert_eq!(got.0, 200, "{what}");
            assert_eq!(got.2["tenant"]["id"], b.id.to_string(), "{what}");
            assert_eq!(got.2["tenant"]["slug"], b.slug, "{what}");
        }
    }
    let got = send(srv.as_tenant(
        Method::GET,
        "/api/v1/webhooks",
        &a,
        Cred::ApiKeyHeader,
        &Sel::None,
    ))
    .await;
    assert_eq!(got.2["data"].as_array().unwrap().len(), 3);
    let got = send(srv.as_tenant(
        Method::GET,
        "/api/v1/analytics",
        &a,
        Cred::ApiKeyBearer,
        &Sel::None,
    ))
    .await;
    assert_eq!(got.2["documents_per_day"][0]["documents"], 2);
    let got = send(srv.as_tenant(Method::GET, "/api/v1/whoami", &a, Cred::Jwt, &Sel::None)).await;
    assert_eq!(got.2["subject"], "api-test-user");
    srv.stop().await;
}
