//! Bad input on every route, over real HTTP: wrong types, missing fields, huge bodies, bad
//! ids, bad cursors, wrong content types. Every answer is a 4xx problem+json (never a 500),
//! and nothing is partially written.

mod api_common;

use api_common::*;
use reqwest::Method;
use serde_json::json;

const JSON: Option<&str> = Some("application/json");

struct Case {
    what: String,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    status: u16,
}

fn case(
    what: &str,
    method: Method,
    path: &str,
    ct: Option<&'static str>,
    body: Option<Vec<u8>>,
    status: u16,
) -> Case {
    Case {
        what: what.to_owned(),
        method,
        path: path.to_owned(),
        content_type: ct,
        body,
        status,
    }
}

#[allow(clippy::needless_pass_by_value)] // called with `json!` temporaries
fn j(v: serde_json::Value) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(&v).unwrap())
}

fn raw(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

/// Every bad request gets its documented 4xx as problem+json, and the documents, revisions
/// and webhooks tables are unchanged after each one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_every_route_is_4xx_problem_json_and_writes_nothing() {
    let db = tenantry_testkit::TestDb::new().await;
    let t = tenant(&db, "bad-input", "enterprise", &[]).await;
    let srv = Server::start(settings(&db, None)).await;

    // Some state to protect: a document with one revision, and a webhook.
    let got = send(
        srv.as_tenant(Method::POST, "/api/v1/documents", &t, Cred::Jwt, &Sel::None)
            .json(&json!({ "title": "original", "content": "original content" })),
    )
    .await;
    assert_eq!(got.0, 201);
    let id = got.2["id"].as_str().unwrap().to_owned();
    let doc = format!("/api/v1/documents/{id}");
    let got = send(
        srv.as_tenant(Method::PATCH, &doc, &t, Cred::Jwt, &Sel::None)
            .json(&json!({ "content": "second version" })),
    )
    .await;
    assert_eq!(got.0, 200);
    let got = send(
        srv.as_tenant(Method::POST, "/api/v1/webhooks", &t, Cred::Jwt, &Sel::None)
            .json(&json!({ "url": "https://hooks.example.com/a", "events": ["document.created"] })),
    )
    .await;
    assert_eq!(got.0, 201);
    let before = snapshot(&db).await;

    let docs = "/api/v1/documents";
    let hooks = "/api/v1/webhooks";
    let too_big_content = "x".repeat(1024 * 1024 + 1);
    let over_body_limit = vec![b'{'; 3 * 1024 * 1024 / 2];
    let long_title = "t".repeat(201);
    let nul = "a\u{0}b";
    let cursor_of = |s: &str| b64url_encode(s.as_bytes());
    let mut cases = vec![
        // POST /documents
        case(
            "create: not JSON",
            Method::POST,
            docs,
            JSON,
            raw("{\"title\": "),
            400,
        ),
        case("create: empty body", Method::POST, docs, JSON, raw(""), 400),
        case(
            "create: no content type",
            Method::POST,
            docs,
            None,
            j(json!({"title": "x"})),
            415,
        ),
        case(
            "create: text/plain",
            Method::POST,
            docs,
            Some("text/plain"),
            j(json!({"title": "x"})),
            415,
        ),
        case(
            "create: missing title",
            Method::POST,
            docs,
            JSON,
            j(json!({"content": "x"})),
            422,
        ),
        case(
            "create: title a number",
            Method::POST,
            docs,
            JSON,
            j(json!({"title": 5})),
            422,
        ),
        case(
            "create: title null",
            Method::POST,
            docs,
            JSON,
            j(json!({"title": null})),
            422,
        ),
        case(
            "create: content an array",
            Method::POST,
            docs,
            JSON,
            j(json!({"title": "x", "content": []})),
            422,
        ),
        case(
            "create: unknown field",
            Method::POST,
            docs,
            JSON,
            j(json!({"title": "x", "tenant_id": t.id.to_string()})),
            422,
        ),
        case(
            "create: body an array",
            Method::POST,
            docs,
            JSON,
            j(json!([{"title": "x"}])),
            422,
        ),
        case(
            "create: body null",
            Method::POST,
            docs,
            JSON,
            raw("null"),
            422,
        ),
        case(
            "create: empty title",
            Method::POST,
            docs,
            JSON,
            j(json!({"title": ""})),
            422,
        ),
        case(
            "create: blank title",
            Method::POST,
            docs,
            JSON,
            j(json!({"title": " \t "})),
            422,
        ),
        case(
            "create: title too long",
            Method::POST,
            docs,
            JSON,
            j(json!({"title": long_title})),
            422,
        ),
        case(
            "create: NUL in title",
            Method::POST,
            docs,
            JSON,
            j(json!({"title": nul})),
            422,
        ),
        case(
            "create: NUL in content",
            Method::POST,
            docs,
            JSON,
            j(json!({"title": "x", "content": nul})),
            422,
        ),
        case(
            "create: content over 1 MiB",
            Method::POST,
            docs,
            JSON,
            j(json!({"title": "x", "content": too_big_content})),
            413,
        ),
        case(
            "create: body over the body limit",
            Method::POST,
            docs,
            JSON,
            Some(over_body_limit.clone()),
            413,
        ),
        case(
            "create: invalid UTF-8",
            Method::POST,
            docs,
            JSON,
            Some(b"{\"title\": \"\xff\xfe\"}".to_vec()),
            400,
        ),
        case(
            "create: lone surrogate escape",
            Method::POST,
            docs,
            JSON,
            raw(r#"{"title": "\ud800"}"#),
            400,
        ),
        case(
            "create: duplicate field",
            Method::POST,
            docs,
            JSON,
            raw(r#"{"title": "x", "title": "y"}"#),
            422,
        ),
        case(
            "create: trailing garbage",
            Method::POST,
            docs,
            JSON,
            raw(r#"{"title": "x"} {"title": "y"}"#),
            400,
        ),
        case(
            "create: ideographic-space title",
            Method::POST,
            docs,
            JSON,
            j(json!({"title": "\u{3000}\u{3000}"})),
            422,
        ),
        // GET /documents
        case(
            "list: limit 0",
            Method::GET,
            &format!("{docs}?limit=0"),
            None,
            None,
            400,
        ),
        case(
            "list: limit 101",
            Method::GET,
            &format!("{docs}?limit=101"),
            None,
            None,
            400,
        ),
        case(
            "list: limit -1",
            Method::GET,
            &format!("{docs}?limit=-1"),
            None,
            None,
            400,
        ),
        case(
            "list: limit text",
            Method::GET,
            &format!("{docs}?limit=ten"),
            None,
            None,
            400,
        ),
        case(
            "list: limit overflow",
            Method::GET,
            &format!("{docs}?limit=99999999999999999999"),
            None,
            None,
            400,
        ),
        case(
            "list: unknown parameter",
            Method::GET,
            &format!("{docs}?tenant_id={}", t.id),
            None,
            None,
            400,
        ),
        case(
            "list: limit twice",
            Method::GET,
            &format!("{docs}?limit=5&limit=6"),
            None,
            None,
            400,
        ),
        case(
            "list: limit fractional",
            Method::GET,
            &format!("{docs}?limit=1.5"),
            None,
            None,
            400,
        ),
        case(
            "list: cursor garbage",
            Method::GET,
            &format!("{docs}?cursor=!!"),
            None,
            None,
            400,
        ),
        case(
            "list: cursor empty",
            Method::GET,
            &format!("{docs}?cursor="),
            None,
            None,
            400,
        ),
        case(
            "list: cursor not a cursor",
            Method::GET,
            &format!("{docs}?cursor={}", cursor_of("not-a-cursor")),
            None,
            None,
            400,
        ),
        case(
            "list: cursor bad uuid",
            Method::GET,
            &format!("{docs}?cursor={}", cursor_of("123.not-a-uuid")),
            None,
            None,
            400,
        ),
        case(
            "list: cursor negative time",
            Method::GET,
            &format!("{docs}?cursor={}", cursor_of(&format!("-5.{id}"))),
            None,
            None,
            400,
        ),
        case(
            "list: cursor time overflow",
            Method::GET,
            &format!(
                "{docs}?cursor={}",
                cursor_of(&format!("99999999999999999999.{id}"))
            ),
            None,
            None,
            400,
        ),
        case(
            "list: cursor time beyond PostgreSQL",
            Method::GET,
            &format!("{docs}?cursor={}", cursor_of(&format!("{}.{id}", u64::MAX))),
            None,
            None,
            400,
        ),
        case(
            "list: cursor not UTF-8",
            Method::GET,
            &format!("{docs}?cursor={}", b64url_encode(b"\xff\xfe.\x00")),
            None,
            None,
            400,
        ),
        // GET/PATCH/DELETE /documents/{id}
        case(
            "get: bad id",
            Method::GET,
            &format!("{docs}/not-a-uuid"),
            None,
            None,
            400,
        ),
        case(
            "get: numeric id",
            Method::GET,
            &format!("{docs}/123"),
            None,
            None,
            400,
        ),
        case(
            "get: long id",
            Method::GET,
            &format!("{docs}/{}", "9".repeat(5000)),
            None,
            None,
            400,
        ),
        case(
            "get: encoded NUL id",
            Method::GET,
            &format!("{docs}/%00"),
            None,
            None,
            400,
        ),
        case(
            "get: missing id",
            Method::GET,
            &format!("{}/{}", docs, uuid::Uuid::new_v4()),
            None,
            None,
            404,
        ),
        case(
            "patch: bad id",
            Method::PATCH,
            &format!("{docs}/not-a-uuid"),
            JSON,
            j(json!({"title": "x"})),
            400,
        ),
        case(
            "patch: missing id",
            Method::PATCH,
            &format!("{}/{}", docs, uuid::Uuid::new_v4()),
            JSON,
            j(json!({"title": "x"})),
            404,
        ),
        case(
            "patch: empty object",
            Method::PATCH,
            &doc,
            JSON,
            j(json!({})),
            422,
        ),
        case(
            "patch: both null",
            Method::PATCH,
            &doc,
            JSON,
            j(json!({"title": null, "content": null})),
            422,
        ),
        case(
            "patch: not JSON",
            Method::PATCH,
            &doc,
            JSON,
            raw("title=x"),
            400,
        ),
        case(
            "patch: no content type",
            Method::PATCH,
            &doc,
            None,
            j(json!({"title": "x"})),
            415,
        ),
        case(
            "patch: title a bool",
            Method::PATCH,
            &doc,
            JSON,
            j(json!({"title": true})),
            422,
        ),
        case(
            "patch: unknown field",
            Method::PATCH,
            &doc,
            JSON,
            j(json!({"title": "x", "id": uuid::Uuid::new_v4()})),
            422,
        ),
        case(
            "patch: valid title, blank other",
            Method::PATCH,
            &doc,
            JSON,
            j(json!({"title": ""})),
            422,
        ),
        case(
            "patch: valid title, content over 1 MiB",
            Method::PATCH,
            &doc,
            JSON,
            j(json!({"title": "changed", "content": too_big_content})),
            413,
        ),
        case(
            "patch: valid title, NUL in content",
            Method::PATCH,
            &doc,
            JSON,
            j(json!({"title": "changed", "content": nul})),
            422,
        ),
        case(
            "patch: valid content, title too long",
            Method::PATCH,
            &doc,
            JSON,
            j(json!({"title": long_title, "content": "changed"})),
            422,
        ),
        case(
            "patch: body over the body limit",
            Method::PATCH,
            &doc,
            JSON,
            Some(over_body_limit.clone()),
            413,
        ),
        case(
            "delete: bad id",
            Method::DELETE,
            &format!("{docs}/not-a-uuid"),
            None,
            None,
            400,
        ),
        case(
            "delete: missing id",
            Method::DELETE,
            &format!("{}/{}", docs, uuid::Uuid::new_v4()),
            None,
            None,
            404,
        ),
        // POST /webhooks
        case(
            "webhook: not JSON",
            Method::POST,
            hooks,
            JSON,
            raw("{\"url\": "),
            400,
        ),
        case(
            "webhook: missing url",
            Method::POST,
            hooks,
            JSON,
            j(json!({"events": []})),
            422,
        ),
        case(
            "webhook: url a number",
            Method::POST,
            hooks,
            JSON,
            j(json!({"url": 1})),
            422,
        ),
        case(
            "webhook: url not a URL",
            Method::POST,
            hooks,
            JSON,
            j(json!({"url": "not a url"})),
            422,
        ),
        case(
            "webhook: ftp url",
            Method::POST,
            hooks,
            JSON,
            j(json!({"url": "ftp://example.com/x"})),
            422,
        ),
        case(
            "webhook: relative url",
            Method::POST,
            hooks,
            JSON,
            j(json!({"url": "/hooks"})),
            422,
        ),
        case(
            "webhook: url too long",
            Method::POST,
            hooks,
            JSON,
            j(json!({"url": format!("https://example.com/{}", "a".repeat(2100))})),
            422,
        ),
        case(
            "webhook: events not a list",
            Method::POST,
            hooks,
            JSON,
            j(json!({"url": "https://example.com/b", "events": "all"})),
            422,
        ),
        case(
            "webhook: event with space",
            Method::POST,
            hooks,
            JSON,
            j(json!({"url": "https://example.com/b", "events": ["a b"]})),
            422,
        ),
        case(
            "webhook: empty event",
            Method::POST,
            hooks,
            JSON,
            j(json!({"url": "https://example.com/b", "events": [""]})),
            422,
        ),
        case(
            "webhook: 33 events",
            Method::POST,
            hooks,
            JSON,
            j(json!({"url": "https://example.com/b", "events": vec!["e"; 33]})),
            422,
        ),
        case(
            "webhook: NUL in event",
            Method::POST,
            hooks,
            JSON,
            j(json!({"url": "https://example.com/b", "events": [nul]})),
            422,
        ),
        case(
            "webhook: body over the body limit",
            Method::POST,
            hooks,
            JSON,
            Some(over_body_limit),
            413,
        ),
        case(
            "webhook: duplicate url",
            Method::POST,
            hooks,
            JSON,
            j(json!({"url": "https://hooks.example.com/a"})),
            409,
        ),
        // Routes and methods that do not exist.
        case(
            "no such route",
            Method::GET,
            "/api/v1/nope",
            None,
            None,
            404,
        ),
        case(
            "PUT documents",
            Method::PUT,
            docs,
            JSON,
            j(json!({"title": "x"})),
            405,
        ),
        case(
            "POST a document id",
            Method::POST,
            &doc,
            JSON,
            j(json!({"title": "x"})),
            405,
        ),
        case("DELETE webhooks", Method::DELETE, hooks, None, None, 405),
        case(
            "POST analytics",
            Method::POST,
            "/api/v1/analytics",
            JSON,
            j(json!({})),
            405,
        ),
    ];
    // The whole set again with an API key, for the routes that take a body.
    let with_key: Vec<usize> = (0..cases.len())
        .filter(|i| cases[*i].body.is_some())
        .collect();
    let mut failures = Vec::new();
    for (i, c) in cases.iter_mut().enumerate() {
        for cred in if with_key.contains(&i) {
            &CREDS[..2]
        } else {
            &CREDS[..1]
        } {
            let mut rb = srv.as_tenant(c.method.clone(), &c.path, &t, *cred, &Sel::None);
            if let Some(ct) = c.content_type {
                rb = rb.header("content-type", ct);
            }
            if let Some(body) = &c.body {
                rb = rb.body(body.clone());
            }
            let res = match rb.send().await {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{} ({cred:?}): no response: {e}", c.what));
                    continue;
                }
            };
            let status = res.status();
            let headers = res.headers().clone();
            let bytes = res.bytes().await.unwrap_or_default();
            let body: serde_json::Value =
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            let problem_json = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/problem+json"));
            if status.as_u16() != c.status
                || !problem_json
                || !body["code"].is_string()
                || body["status"] != status.as_u16()
            {
                failures.push(format!(
                    "{} ({cred:?}): expected {} problem+json, got {status} {:?} {}",
                    c.what,
                    c.status,
                    headers.get("content-type"),
                    String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                ));
            }
            let now = snapshot(&db).await;
            if now != before {
                failures.push(format!("{} ({cred:?}): the database changed", c.what));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The protected document is intact, and the server still works.
    let got = send(srv.as_tenant(Method::GET, &doc, &t, Cred::Jwt, &Sel::None)).await;
    assert_eq!(got.0, 200);
    assert_eq!(got.2["title"], "original");
    assert_eq!(got.2["content"], "second version");
    srv.stop().await;
}

/// Cursors the API returned page through every document exactly once; a cursor from another
/// tenant's list reveals nothing of that tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_page_through_everything_once() {
    let db = tenantry_testkit::TestDb::new().await;
    let t = tenant(&db, "pager", "pro", &[]).await;
    let other = tenant(&db, "other-pager", "pro", &[]).await;
    for i in 0..7 {
        db.insert_document(t.id, &format!("doc {i}")).await;
        db.insert_document(other.id, &format!("other {i}")).await;
    }
    let srv = Server::start(settings(&db, None)).await;
    let mut seen = Vec::new();
    let mut path = "/api/v1/documents?limit=3".to_owned();
    let mut other_cursor = None;
    for _ in 0..5 {
        let got = send(srv.as_tenant(Method::GET, &path, &t, Cred::ApiKeyBearer, &Sel::None)).await;
        assert_eq!(got.0, 200, "{}", got.2);
        for d in got.2["data"].as_array().unwrap() {
            seen.push(d["id"].as_str().unwrap().to_owned());
        }
        match got.2["next_cursor"].as_str() {
            Some(c) => {
                other_cursor.get_or_insert_with(|| c.to_owned());
                path = format!("/api/v1/documents?limit=3&cursor={c}");
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 7, "no document twice");

    // The other tenant using t's cursor sees only its own documents.
    let c = other_cursor.unwrap();
    let got = send(srv.as_tenant(
        Method::GET,
        &format!("/api/v1/documents?cursor={c}"),
        &other,
        Cred::Jwt,
        &Sel::None,
    ))
    .await;
    assert_eq!(got.0, 200);
    for d in got.2["data"].as_array().unwrap() {
        assert!(d["title"].as_str().unwrap().starts_with("other"), "{d}");
    }
    srv.stop().await;
}

/// The limits are inclusive: the largest title (200 characters, multi-byte), content (1 MiB)
/// and webhook URL (2048 characters) are accepted, so the 413/422 above are at the right
/// boundaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_valid_values_are_accepted() {
    let db = tenantry_testkit::TestDb::new().await;
    let t = tenant(&db, "limits", "enterprise", &[]).await;
    let srv = Server::start(settings(&db, None)).await;
    let title = "é".repeat(200);
    let content = "x".repeat(1024 * 1024);
    let got = send(
        srv.as_tenant(Method::POST, "/api/v1/documents", &t, Cred::Jwt, &Sel::None)
            .json(&json!({ "title": title, "content": content })),
    )
    .await;
    assert_eq!(got.0, 201, "{}", got.2["detail"]);
    assert_eq!(got.2["title"], title);
    assert_eq!(got.2["content"].as_str().map(str::len), Some(1024 * 1024));
    let id = got.2["id"].as_str().unwrap().to_owned();
    let got = send(
        srv.as_tenant(
            Method::PATCH,
            &format!("/api/v1/documents/{id}"),
            &t,
            Cred::ApiKeyHeader,
            &Sel::None,
        )
        .json(&json!({ "content": "y".repeat(1024 * 1024) })),
    )
    .await;
    assert_eq!(got.0, 200, "{}", got.2["detail"]);
    let url = format!(
        "https://example.com/{}",
        "a".repeat(2048 - "https://example.com/".len())
    );
    let events: Vec<String> = (0..32).map(|i| format!("{i:0>64}")).collect();
    let got = send(
        srv.as_tenant(Method::POST, "/api/v1/webhooks", &t, Cred::Jwt, &Sel::None)
            .json(&json!({ "url": url, "events": events })),
    )
    .await;
    assert_eq!(got.0, 201, "{}", got.2);
    let got = send(srv.as_tenant(
        Method::GET,
        "/api/v1/documents?limit=100",
        &t,
        Cred::Jwt,
        &Sel::None,
    ))
    .await;
    assert_eq!(got.0, 200);
    let got = send(srv.as_tenant(
        Method::GET,
        "/api/v1/documents?limit=1",
        &t,
        Cred::Jwt,
        &Sel::None,
    ))
    .await;
    assert_eq!(got.0, 200);
    srv.stop().await;
}
