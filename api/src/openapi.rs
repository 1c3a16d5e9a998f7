//! The API's OpenAPI 3.1 document, served at `GET /v1/openapi.json` (`routes::reference`).
//!
//! Each route module describes its operations beside its handlers (`#[utoipa::path]`) and
//! gathers them in an `ApiDoc` (`#[derive(OpenApi)]`); the wire types of `nimbus-domain` and the
//! modules' own request types derive `ToSchema`. [`document`] merges those parts, then adds what
//! the route catalogue already knows, so that it is said once and cannot drift:
//!
//! * `security`: none for [`Access::Public`], otherwise a bearer credential (an API key
//!   `nmb_…` or the OIDC provider's access token) or the portal's session cookie;
//! * the errors every operation of its kind can answer, in the error envelope: 400 for bad
//!   parameters or bodies, 401/403 for the caller, 402 for a suspended tenant's writes, 404 for
//!   an id the caller cannot see, 429 for the rate limits, 503 when a dependency is down;
//! * an example for every answer that has none of its own, built from the schema (the
//!   properties' own examples first), so every operation shows what it answers.
//!
//! `api/tests/api/openapi.rs` holds the document to the catalogue: an operation missing or extra,
//! or one without its security, errors or examples, fails it.

use nimbus_domain::ErrorCode;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use crate::routes::{self, Access, RouteSpec};

/// The document's frame: what it is, its security schemes and the shared error schema.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Nimbus API",
        description = "Self-service cloud for Proxmox VE. Every slow operation answers `202 Accepted` with a job \
            handle (`GET /v1/jobs/{id}`, or its event stream). Answers are enveloped: `{data, meta}`, lists add \
            `pagination`, errors are `{error: {code, message, details}, meta}`.",
        license(name = "AGPL-3.0-only")
    ),
    components(schemas(
        nimbus_domain::ApiError,
        nimbus_domain::ErrorBody,
        nimbus_domain::ErrorCode,
        nimbus_domain::Meta,
        ServerSentEvent
    )),
    tags(
        (name = "Instances", description = "VMs and containers: create (from a template or a backup), list, show, \
            delete, power and resize actions, and each one's event stream."),
        (name = "Snapshots", description = "An instance's snapshots on Proxmox."),
        (name = "Backups", description = "An instance's backups, their protection and restore, and its backup schedule."),
        (name = "Console", description = "An instance's console through the API (noVNC or xterm.js over a websocket)."),
        (name = "Jobs", description = "Every slow operation is a job: its handle, its history and its event stream."),
        (name = "Templates", description = "What instances are made from."),
        (name = "Quota", description = "The plan's limits and what the tenant uses."),
        (name = "Billing", description = "Usage, invoices, the balance and top-ups."),
        (name = "Notifications", description = "The in-app feed, its unread count, and which events email whom."),
        (name = "Webhooks", description = "Signed deliveries of events (Standard Webhooks) to the tenant's endpoints."),
        (name = "API keys", description = "Keys for scripts and tools (`Authorization: Bearer nmb_…`)."),
        (name = "Authentication", description = "Browser sign-in through the OIDC provider, and who the caller is."),
        (name = "Administration", description = "The provider's operators: every tenant's users, instances, jobs, \
            queues, nodes, plans, schedules, webhooks and the audit log."),
        (name = "Billing administration", description = "Operators of billing: prices, credit, terms, suspension, \
            credit notes and revenue."),
        (name = "Health", description = "Liveness and readiness."),
        (name = "Reference", description = "This document and its reference page."),
    ),
    modifiers(&SecuritySchemes)
)]
struct Frame;

/// One event of a `text/event-stream` answer, as a client's parser hands it over: each stream
/// operation's description says which `event` names it sends and what their `data` holds.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what the streams write; they write the text itself.
struct ServerSentEvent {
    /// The event's name (`progress`, `end`, `instance`, `unread`, `error`, ...).
    #[schema(example = "progress")]
    event: Option<String>,
    /// Its data: one JSON document.
    #[schema(example = "{\"count\":3}")]
    data: String,
    /// Its id, where the stream can be resumed from it (`Last-Event-ID`).
    id: Option<String>,
    /// How long the client waits before reconnecting, ms.
    retry: Option<u64>,
}

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`nmb_…`, `POST /v1/auth/apikeys`; a read-only key may only read) or an access \
                         token of the OIDC provider.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            SESSION,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::session::SESSION_COOKIE,
                "The portal's session (`GET /auth/login`). A state-changing request also needs the session's \
                 `X-CSRF-Token` header and the API's own `Origin`.",
            ))),
        );
    }
}

/// Marks the request body of `POST <path>` optional, an empty request being taken as `{}`
/// (utoipa's `Option<T>` body would also allow a JSON `null`, which no handler takes). A module
/// names it in its `ApiDoc`'s `modifiers`, through a `const` (they take a name only).
pub struct OptionalBody(pub &'static str);

impl utoipa::Modify for OptionalBody {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let body = openapi
            .paths
            .paths
            .get_mut(self.0)
            .and_then(|item| item.post.as_mut())
            .and_then(|op| op.request_body.as_mut());
        if let Some(utoipa::openapi::RefOr::T(body)) = body {
            body.required = Some(utoipa::openapi::Required::False);
        }
    }
}

/// The bearer scheme's name in `components.securitySchemes`.
pub const BEARER: &str = "bearer";
/// The session cookie scheme's name.
pub const SESSION: &str = "session";

/// The whole document, as JSON.
pub fn document() -> Value {
    let mut doc = Frame::openapi();
    for part in routes::openapi_parts() {
        doc.merge(part);
    }
    let mut doc = serde_json::to_value(doc).unwrap_or_else(|e| panic!("the OpenAPI document serialises: {e}"));
    let schemas = doc.pointer("/components/schemas").cloned().unwrap_or_default();
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for (method, operation) in item.iter_mut() {
                let route = routes::catalog().iter().find(|r| r.path == path && r.method.eq_ignore_ascii_case(method));
                if let (Some(route), Some(operation)) = (route, operation.as_object_mut()) {
                    complete(route, operation, &schemas);
                }
            }
        }
    }
    doc
}

/// Adds `route`'s security, its common errors and the examples it lacks to `operation`.
fn complete(route: &RouteSpec, operation: &mut Map<String, Value>, schemas: &Value) {
    let authenticated = route.access != Access::Public;
    operation
        .insert("security".into(), if authenticated { json!([{ BEARER: [] }, { SESSION: [] }]) } else { json!([]) });
    let takes_input = operation.contains_key("requestBody")
        || operation.get("parameters").and_then(Value::as_array).is_some_and(|p| !p.is_empty());
    let under_v1 = route.path.starts_with("/v1/");
    // The sign-in pages answer their errors as pages of their own (auth.rs documents them).
    let answers_json = !route.path.starts_with("/auth/");
    let mut common: Vec<ErrorCode> = Vec::new();
    if takes_input {
        common.push(ErrorCode::ValidationFailed);
    }
    if answers_json {
        // Public routes need no credential, but one that is sent is checked (and counts towards
        // the failed-authentication limit).
        common.push(ErrorCode::Unauthenticated);
        common.push(ErrorCode::RateLimited);
    }
    if authenticated {
        common.push(ErrorCode::Forbidden);
        let method = route.method.parse().unwrap_or(axum::http::Method::GET);
        if route.access == Access::Tenant && !crate::auth::suspension::allowed_while_suspended(&method, route.path) {
            common.push(ErrorCode::TenantSuspended);
        }
    }
    if route.takes_id() {
        common.push(ErrorCode::NotFound);
    }
    if under_v1 {
        common.push(ErrorCode::ServiceUnavailable);
    }
    let responses = operation.entry("responses").or_insert_with(|| json!({}));
    let Some(responses) = responses.as_object_mut() else { return };
    for code in common {
        responses.entry(code.http_status().to_string()).or_insert_with(|| error_response(code));
    }
    for (status, response) in responses.iter_mut() {
        describe_event_streams(response);
        add_examples(status, response, schemas);
    }
    if let Some(body) = operation.get_mut("requestBody") {
        add_examples("request", body, schemas);
    }
}

/// Gives a `text/event-stream` answer the schema of one event (what a client validates each
/// event against) and, in place of a raw text example, its first event.
fn describe_event_streams(response: &mut Value) {
    let Some(stream) = response.pointer_mut("/content/text~1event-stream").and_then(Value::as_object_mut) else {
        return;
    };
    stream.insert("schema".into(), json!({ "$ref": "#/components/schemas/ServerSentEvent" }));
    if let Some(Value::String(text)) = stream.get("example") {
        let mut event = Map::new();
        for line in text.lines().take_while(|l| !l.is_empty()) {
            if let Some((field, value)) = line.split_once(':') {
                event.insert(field.to_owned(), json!(value.trim_start()));
            }
        }
        stream.insert("example".into(), Value::Object(event));
    }
}

/// An error answer in the envelope with `code` (one of those [`complete`] adds).
fn error_response(code: ErrorCode) -> Value {
    let description = match code {
        ErrorCode::ValidationFailed => {
            "A parameter or the body is malformed or out of range; `details` lists the fields."
        }
        ErrorCode::Unauthenticated => "No credential where one is needed, or one that is not valid.",
        ErrorCode::Forbidden => "The caller may not do this (role, a read-only key, or a session's CSRF check).",
        ErrorCode::TenantSuspended => "The tenant is suspended: it may read, not change anything.",
        ErrorCode::NotFound => "No such resource in the caller's tenant (another tenant's id answers the same).",
        ErrorCode::RateLimited => {
            "Over the rate limit, or over the failed authentications of this address; `Retry-After` says when to \
             try again."
        }
        _ => "A dependency (PostgreSQL, Redis, Proxmox) is unavailable; try again.",
    };
    json!({
        "description": description,
        "content": { "application/json": {
            "schema": { "$ref": "#/components/schemas/ApiError" },
            "example": error_example(code, description),
        }},
    })
}

/// The envelope of an error with `code`.
fn error_example(code: ErrorCode, message: &str) -> Value {
    json!({
        "error": { "code": code.as_str(), "message": message, "details": null },
        "meta": { "requestId": "req_01JF3J6X9Q2M8V4T7C5B1N0K2D", "timestamp": "2026-12-01T09:30:00Z" },
    })
}

/// Gives each JSON content of a response or request body an example when it has none.
fn add_examples(status: &str, holder: &mut Value, schemas: &Value) {
    let description = holder.get("description").and_then(Value::as_str).unwrap_or_default().to_owned();
    let Some(content) = holder.get_mut("content").and_then(Value::as_object_mut) else { return };
    for (media, entry) in content.iter_mut() {
        let Some(entry) = entry.as_object_mut() else { continue };
        let structured = media.contains("json") || media == "application/x-www-form-urlencoded";
        if entry.contains_key("example") || entry.contains_key("examples") || !structured {
            continue;
        }
        let Some(schema) = entry.get("schema") else { continue };
        let example = if status.starts_with('4') || status.starts_with('5') {
            // An error: the envelope with the code its description names (`` `NAME_TAKEN`: … ``).
            let code = error_code_named(&description).unwrap_or_else(|| status_code_name(status));
            let message = description.split_once("`: ").map_or(description.as_str(), |(_, message)| message);
            error_example(code, message)
        } else {
            example_of(schema, schemas, 0)
        };
        entry.insert("example".into(), example);
    }
}

/// The first error code a response's description names in backticks.
fn error_code_named(description: &str) -> Option<ErrorCode> {
    description.split('`').skip(1).step_by(2).find_map(|word| word.parse().ok())
}

/// The code an error status answers with when its description names none.
fn status_code_name(status: &str) -> ErrorCode {
    let status: u16 = status.parse().unwrap_or(500);
    ErrorCode::ALL.iter().copied().find(|c| c.http_status() == status).unwrap_or(ErrorCode::Internal)
}

/// A value that `schema` accepts: its own `example`, `default` or first `enum` value, or one built
/// from its properties and items. `schemas` resolves `$ref`s.
fn example_of(schema: &Value, schemas: &Value, depth: usize) -> Value {
    if depth > 12 {
        return Value::Null;
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap_or_default();
        return schemas.get(name).map_or(Value::Null, |s| example_of(s, schemas, depth + 1));
    }
    for key in ["example", "default", "const"] {
        if let Some(v) = schema.get(key) {
            return v.clone();
        }
    }
    if let Some(v) = schema.get("examples").and_then(Value::as_array).and_then(|e| e.first()) {
        return v.clone();
    }
    if let Some(v) = schema.get("enum").and_then(Value::as_array).and_then(|e| e.iter().find(|v| !v.is_null())) {
        return v.clone();
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(first) = schema.get(key).and_then(Value::as_array).and_then(|alternatives| {
            alternatives.iter().find(|a| a.get("type").and_then(Value::as_str) != Some("null"))
        }) {
            return example_of(first, schemas, depth + 1);
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        let mut merged = Map::new();
        for part in all {
            match example_of(part, schemas, depth + 1) {
                Value::Object(fields) => merged.extend(fields),
                other if all.len() == 1 => return other,
                _ => {}
            }
        }
        return Value::Object(merged);
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(types)) => types.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => return json!({}),
    };
    match kind {
        "object" => {
            let mut object = Map::new();
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    object.insert(name.clone(), example_of(property, schemas, depth + 1));
                }
            }
            Value::Object(object)
        }
        "array" => match schema.get("items") {
            Some(items) => json!([example_of(items, schemas, depth + 1)]),
            None => json!([]),
        },
        "string" => json!(match schema.get("format").and_then(Value::as_str) {
            Some("uuid") => "0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4d",
            Some("date-time") => "2026-12-01T09:30:00Z",
            Some("date") => "2026-12-01",
            Some("uri") => "https://example.com/hooks/nimbus",
            Some("email") => "ada@example.com",
            _ => "string",
        }),
        "integer" => schema.get("minimum").cloned().unwrap_or(json!(1)),
        "number" => schema.get("minimum").cloned().unwrap_or(json!(1.5)),
        "boolean" => json!(true),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_follow_the_schema_and_prefer_its_own_examples() {
        let schemas = json!({
            "Kind": { "type": "string", "enum": ["qemu", "lxc"] },
            "Vm": { "type": "object", "properties": {
                "id": { "type": "string", "format": "uuid" },
                "name": { "type": "string", "example": "web-1" },
                "kind": { "$ref": "#/components/schemas/Kind" },
                "node": { "type": ["string", "null"] },
                "cores": { "type": "integer", "minimum": 1 },
                "tags": { "type": "array", "items": { "type": "string" } },
            }},
        });
        let example = example_of(&json!({ "$ref": "#/components/schemas/Vm" }), &schemas, 0);
        assert_eq!(
            example,
            json!({
                "id": "0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4d",
                "name": "web-1",
                "kind": "qemu",
                "node": "string",
                "cores": 1,
                "tags": ["string"],
            })
        );
    }

    #[test]
    fn operations_get_the_security_and_errors_of_their_access() {
        let route = RouteSpec { method: "POST", path: "/v1/vms/{id}/backups", access: Access::Tenant };
        let mut operation = json!({
            "parameters": [{ "name": "id", "in": "path" }],
            "responses": { "202": { "description": "accepted" } },
        });
        complete(&route, operation.as_object_mut().unwrap(), &json!({}));
        assert_eq!(operation["security"], json!([{ "bearer": [] }, { "session": [] }]));
        let statuses: Vec<&String> = operation["responses"].as_object().unwrap().keys().collect();
        for status in ["202", "400", "401", "402", "403", "404", "429", "503"] {
            assert!(statuses.iter().any(|s| *s == status), "{status} in {statuses:?}");
        }
        assert_eq!(
            operation.pointer("/responses/404/content/application~1json/example/error/code"),
            Some(&json!("NOT_FOUND"))
        );

        // A suspended tenant may still delete: no 402 there.
        let delete = RouteSpec { method: "DELETE", path: "/v1/vms/{id}", access: Access::Tenant };
        let mut operation = json!({ "responses": { "202": { "description": "accepted" } } });
        complete(&delete, operation.as_object_mut().unwrap(), &json!({}));
        assert!(operation["responses"].get("402").is_none(), "{operation}");

        // A public route needs no credential; one that is sent anyway is checked.
        let public = RouteSpec { method: "GET", path: "/healthz", access: Access::Public };
        let mut operation = json!({ "responses": { "200": { "description": "up" } } });
        complete(&public, operation.as_object_mut().unwrap(), &json!({}));
        assert_eq!(operation["security"], json!([]));
        let statuses: Vec<&String> = operation["responses"].as_object().unwrap().keys().collect();
        assert_eq!(statuses, ["200", "401", "429"], "{operation}");
    }
}
