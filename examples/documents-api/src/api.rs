//! The documents API. Every query runs in the tenant's transaction (RLS is the backstop) and
//! also filters `WHERE tenant_id = $1` (on Citus, that routes it to one shard).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tenantry_feature_gate::Features;
use tenantry_resolve::Principal;
use tenantry_rls_pool::TenantDb;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::http::{invalid, not_found, ApiError, Json, Path, Query};

/// Longest title, in characters.
pub(crate) const MAX_TITLE_CHARS: usize = 200;
/// Largest content, in bytes.
pub(crate) const MAX_CONTENT_BYTES: usize = 1024 * 1024;
/// Default and largest page size.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 100;

/// A timestamp, serialized as RFC 3339 with microseconds (`2026-11-27T09:30:00.123456Z`).
/// `collect_str` writes it straight into the response body: no `String` per timestamp.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timestamp(SystemTime);

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_micros(self.0))
    }
}

/// A document without its content (list items), borrowing its title from the row.
#[derive(Debug, Serialize)]
pub(crate) struct DocumentSummary<'a> {
    id: Uuid,
    title: &'a str,
    created_at: Timestamp,
    updated_at: Timestamp,
}

/// A whole document.
#[derive(Debug, Serialize)]
pub(crate) struct Document {
    id: Uuid,
    title: String,
    content: String,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl Document {
    fn from_row(r: &Row) -> Self {
        Self {
            id: r.get("id"),
            title: r.get("title"),
            content: r.get("content"),
            created_at: Timestamp(r.get("created_at")),
            updated_at: Timestamp(r.get("updated_at")),
        }
    }
}

/// `GET /api/v1/documents` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// A page of documents, newest first.
#[derive(Debug, Serialize)]
pub(crate) struct Page<'a> {
    data: Vec<DocumentSummary<'a>>,
    next_cursor: Option<String>,
}

fn encode_cursor(created_at: SystemTime, id: Uuid) -> String {
    let micros = created_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{micros}.{id}"))
}

/// 9999-12-31T23:59:59.999999Z in microseconds since the Unix epoch: the latest cursor time.
const MAX_CURSOR_MICROS: u64 = 253_402_300_799_999_999;

fn decode_cursor(cursor: &str) -> Result<(SystemTime, Uuid), ApiError> {
    let bad = || {
        invalid(
            StatusCode::BAD_REQUEST,
            "`cursor` is not a cursor this API returned.",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let raw = std::str::from_utf8(&raw).map_err(|_| bad())?;
    let (micros, id) = raw.split_once('.').ok_or_else(bad)?;
    let micros: u64 = micros.parse().map_err(|_| bad())?;
    // No document is created after 9999-12-31; a later time would wrap when sent to
    // PostgreSQL (whose timestamps are i64 microseconds since 2000) and page from nonsense.
    if micros > MAX_CURSOR_MICROS {
        return Err(bad());
    }
    let id: Uuid = id.parse().map_err(|_| bad())?;
    let at = UNIX_EPOCH
        .checked_add(Duration::from_micros(micros))
        .ok_or_else(bad)?;
    Ok((at, id))
}

/// Lists the tenant's documents, newest first, with keyset pagination.
pub(crate) async fn list_documents(
    db: TenantDb,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(invalid(
            StatusCode::BAD_REQUEST,
            format!("`limit` must be between 1 and {MAX_LIMIT}."),
        ));
    }
    let tenant = *db.tenant().id().as_uuid();
    let fetch = limit + 1;
    let rows = match params.cursor.as_deref().map(decode_cursor).transpose()? {
        // The hot path: one statement, one protocol cycle (see `TenantDb::query_fused`).
        None => {
            db.query_fused(
                "SELECT id, title, created_at, updated_at FROM documents WHERE tenant_id = $1 \
                 ORDER BY created_at DESC, id DESC LIMIT $2",
                &[&tenant, &fetch],
            )
            .await?
        }
        Some((at, id)) => {
            db.query_fused(
                "SELECT id, title, created_at, updated_at FROM documents WHERE tenant_id = $1 \
                 AND (created_at, id) < ($2, $3) ORDER BY created_at DESC, id DESC LIMIT $4",
                &[&tenant, &at, &id, &fetch],
            )
            .await?
        }
    };
    let more = rows.len() as i64 > limit;
    let rows = &rows[..rows.len().min(limit as usize)];
    // Columns by position, in the order both statements select them: a by-name `get` is a
    // search with string compares for every cell of every row.
    const ID: usize = 0;
    const TITLE: usize = 1;
    const CREATED_AT: usize = 2;
    const UPDATED_AT: usize = 3;
    let next_cursor = if more {
        rows.last()
            .map(|r| encode_cursor(r.get(CREATED_AT), r.get(ID)))
    } else {
        None
    };
    // Serialized here, while the rows the titles borrow from are alive.
    Ok(axum::Json(Page {
        data: rows
            .iter()
            .map(|r| DocumentSummary {
                id: r.get(ID),
                title: r.get(TITLE),
                created_at: Timestamp(r.get(CREATED_AT)),
                updated_at: Timestamp(r.get(UPDATED_AT)),
            })
            .collect(),
        next_cursor,
    })
    .into_response())
}

/// `POST /api/v1/documents` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewDocument {
    title: String,
    #[serde(default)]
    content: String,
}

fn validate_title(title: &str) -> Result<(), ApiError> {
    let n = title.chars().count();
    if n == 0 || n > MAX_TITLE_CHARS || title.trim().is_empty() {
        return Err(invalid(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`title` must be 1 to {MAX_TITLE_CHARS} characters and not blank."),
        ));
    }
    Ok(())
}

fn validate_content(content: &str) -> Result<(), ApiError> {
    if content.len() > MAX_CONTENT_BYTES {
        return Err(tenantry_core::Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Request body too large",
        )
        .with_detail(format!(
            "`content` must be at most {MAX_CONTENT_BYTES} bytes."
        ))
        .into());
    }
    Ok(())
}

const DOC_COLUMNS: &str = "id, title, content, created_at, updated_at";

/// Creates a document.
pub(crate) async fn create_document(
    db: TenantDb,
    Json(body): Json<NewDocument>,
) -> Result<Response, ApiError> {
    validate_title(&body.title)?;
    validate_content(&body.content)?;
    let tenant = *db.tenant().id().as_uuid();
    let rows = db
        .query_typed(
            &format!(
                "INSERT INTO documents (tenant_id, title, content) VALUES ($1, $2, $3) \
                 RETURNING {DOC_COLUMNS}"
            ),
            &[
                (&tenant, Type::UUID),
                (&body.title, Type::TEXT),
                (&body.content, Type::TEXT),
            ],
        )
        .await?;
    let doc = Document::from_row(rows.first().ok_or_else(|| not_found("document"))?);
    let location = HeaderValue::from_str(&format!("/api/v1/documents/{}", doc.id))
        .map_err(|_| not_found("document"))?;
    Ok((StatusCode::CREATED, [(LOCATION, location)], axum::Json(doc)).into_response())
}

/// Reads one document; another tenant's id is answered exactly like a missing one.
pub(crate) async fn get_document(
    db: TenantDb,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<Document>, ApiError> {
    let tenant = *db.tenant().id().as_uuid();
    let rows = db
        .query_fused(
            &format!("SELECT {DOC_COLUMNS} FROM documents WHERE tenant_id = $1 AND id = $2"),
            &[&tenant, &id],
        )
        .await?;
    rows.first()
        .map(|r| axum::Json(Document::from_row(r)))
        .ok_or_else(|| not_found("document"))
}

/// `PATCH /api/v1/documents/{id}` body: at least one field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DocumentPatch {
    title: Option<String>,
    content: Option<String>,
}

/// Changes a document and records the new version in `document_revisions`, atomically.
pub(crate) async fn patch_document(
    db: TenantDb,
    Path(id): Path<Uuid>,
    Json(patch): Json<DocumentPatch>,
) -> Result<axum::Json<Document>, ApiError> {
    if patch.title.is_none() && patch.content.is_none() {
        return Err(invalid(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Give at least one of `title` and `content`.",
        ));
    }
    if let Some(t) = &patch.title {
        validate_title(t)?;
    }
    if let Some(c) = &patch.content {
        validate_content(c)?;
    }
    let tenant = *db.tenant().id().as_uuid();
    let params: [(&(dyn ToSql + Sync), Type); 4] = [
        (&tenant, Type::UUID),
        (&id, Type::UUID),
        (&patch.title, Type::TEXT),
        (&patch.content, Type::TEXT),
    ];
    // One statement: the update and its revision commit together or not at all.
    let rows = db
        .query_typed(
            &format!(
                "WITH d AS (UPDATE documents SET title = COALESCE($3, title), \
                 content = COALESCE($4, content), updated_at = now() \
                 WHERE tenant_id = $1 AND id = $2 RETURNING tenant_id, {DOC_COLUMNS}), \
                 r AS (INSERT INTO document_revisions (tenant_id, document_id, title, content) \
                 SELECT tenant_id, id, title, content FROM d) \
                 SELECT {DOC_COLUMNS} FROM d"
            ),
            &params,
        )
        .await?;
    rows.first()
        .map(|r| axum::Json(Document::from_row(r)))
        .ok_or_else(|| not_found("document"))
}

/// Deletes a document.
pub(crate) async fn delete_document(
    db: TenantDb,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let tenant = *db.tenant().id().as_uuid();
    let deleted = db
        .execute_typed(
            "DELETE FROM documents WHERE tenant_id = $1 AND id = $2",
            &[(&tenant, Type::UUID), (&id, Type::UUID)],
        )
        .await?;
    if deleted == 0 {
        return Err(not_found("document"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// One day of the analytics series.
#[derive(Debug, Serialize)]
pub(crate) struct Day {
    day: String,
    documents: i64,
}

/// Documents created per day (feature `analytics`), the last 90 days with activity.
pub(crate) async fn analytics(db: TenantDb) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let tenant = *db.tenant().id().as_uuid();
    let rows = db
        .query_typed(
            "SELECT to_char(date_trunc('day', created_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD'), \
             count(*) FROM documents WHERE tenant_id = $1 GROUP BY 1 ORDER BY 1 DESC LIMIT 90",
            &[(&tenant, Type::UUID)],
        )
        .await?;
    let days: Vec<Day> = rows
        .iter()
        .map(|r| Day {
            day: r.get(0),
            documents: r.get(1),
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "documents_per_day": days })))
}

/// `POST /api/v1/webhooks` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWebhook {
    url: String,
    #[serde(default)]
    events: Vec<String>,
}

/// A registered webhook.
#[derive(Debug, Serialize)]
pub(crate) struct Webhook {
    id: Uuid,
    url: String,
    events: Vec<String>,
    created_at: Timestamp,
}

impl Webhook {
    fn from_row(r: &Row) -> Self {
        Self {
            id: r.get("id"),
            url: r.get("url"),
            events: r.get("events"),
            created_at: Timestamp(r.get("created_at")),
        }
    }
}

fn validate_webhook(w: &NewWebhook) -> Result<(), ApiError> {
    let uri: Result<axum::http::Uri, _> = w.url.parse();
    let ok = w.url.len() <= 2048
        && uri.is_ok_and(|u| {
            matches!(u.scheme_str(), Some("https" | "http")) && u.authority().is_some()
        });
    if !ok {
        return Err(invalid(
            StatusCode::UNPROCESSABLE_ENTITY,
            "`url` must be an absolute http(s) URL of at most 2048 characters.",
        ));
    }
    if w.events.len() > 32
        || w.events
            .iter()
            .any(|e| e.is_empty() || e.len() > 64 || e.contains(char::is_whitespace))
    {
        return Err(invalid(
            StatusCode::UNPROCESSABLE_ENTITY,
            "`events` must be at most 32 names of 1 to 64 characters without spaces.",
        ));
    }
    Ok(())
}

/// Registers a webhook (feature `custom_webhooks`); the same URL twice is 409.
pub(crate) async fn create_webhook(
    db: TenantDb,
    Json(body): Json<NewWebhook>,
) -> Result<Response, ApiError> {
    validate_webhook(&body)?;
    let tenant = *db.tenant().id().as_uuid();
    let rows = db
        .query_typed(
            "INSERT INTO webhooks (tenant_id, url, events) VALUES ($1, $2, $3) \
             RETURNING id, url, events, created_at",
            &[
                (&tenant, Type::UUID),
                (&body.url, Type::TEXT),
                (&body.events, Type::TEXT_ARRAY),
            ],
        )
        .await?;
    let hook = Webhook::from_row(rows.first().ok_or_else(|| not_found("webhook"))?);
    Ok((StatusCode::CREATED, axum::Json(hook)).into_response())
}

/// Lists the tenant's webhooks (feature `custom_webhooks`).
pub(crate) async fn list_webhooks(db: TenantDb) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let tenant = *db.tenant().id().as_uuid();
    let rows = db
        .query_typed(
            "SELECT id, url, events, created_at FROM webhooks WHERE tenant_id = $1 \
             ORDER BY created_at, id",
            &[(&tenant, Type::UUID)],
        )
        .await?;
    let hooks: Vec<Webhook> = rows.iter().map(Webhook::from_row).collect();
    Ok(axum::Json(serde_json::json!({ "data": hooks })))
}

/// Who is calling: the tenant, its plan and features, and the token's subject. Touches no
/// database: the benchmark's "middleware only" route.
pub(crate) async fn whoami(
    features: Features,
    principal: Option<Principal>,
) -> axum::Json<serde_json::Value> {
    let tenant = features.tenant();
    axum::Json(serde_json::json!({
        "tenant": { "id": tenant.id(), "slug": tenant.slug(), "plan": tenant.plan().name() },
        "features": features.enabled(),
        "subject": principal.as_ref().and_then(|p| p.subject()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_serialize_as_rfc3339_with_microseconds() {
        let at = UNIX_EPOCH + Duration::from_micros(1_764_236_400_123_456);
        let item = DocumentSummary {
            id: Uuid::nil(),
            title: "a \"quoted\" title",
            created_at: Timestamp(at),
            updated_at: Timestamp(UNIX_EPOCH),
        };
        assert_eq!(
            serde_json::to_string(&item).unwrap(),
            r#"{"id":"00000000-0000-0000-0000-000000000000","title":"a \"quoted\" title","#
                .to_owned()
                + r#""created_at":"2025-11-27T09:40:00.123456Z","#
                + r#""updated_at":"1970-01-01T00:00:00.000000Z"}"#
        );
    }

    #[test]
    fn cursor_round_trips_and_garbage_is_rejected() {
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let id = Uuid::new_v4();
        assert_eq!(decode_cursor(&encode_cursor(at, id)).unwrap(), (at, id));
        for bad in ["", "!!", "bm90LWEtY3Vyc29y", "MTIzLm5vdC1hLXV1aWQ"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
        let beyond = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}.{id}", MAX_CURSOR_MICROS + 1));
        assert!(
            decode_cursor(&beyond).is_err(),
            "a time past 9999 is no cursor"
        );
        let last = UNIX_EPOCH + Duration::from_micros(MAX_CURSOR_MICROS);
        assert_eq!(decode_cursor(&encode_cursor(last, id)).unwrap(), (last, id));
    }

    #[test]
    fn titles_are_validated_in_characters() {
        assert!(validate_title("a").is_ok());
        assert!(validate_title(&"é".repeat(200)).is_ok());
        assert!(validate_title(&"é".repeat(201)).is_err());
        assert!(validate_title("").is_err());
        assert!(validate_title("   ").is_err());
    }
}
