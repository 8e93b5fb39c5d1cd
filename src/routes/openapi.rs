//! `GET /openapi.json`: the OpenAPI 3.1 document of `/v1`, `/oauth` and
//! `/.well-known`, generated from the route table so that the two cannot
//! drift.
//!
//! Every documented handler carries a `#[utoipa::path]` (its method, path,
//! parameters, body and the answers of its own). The route table in
//! `startup.rs` registers those handlers through utoipa-actix-web
//! (`UtoipaApp`, `scope`, `service`) with [`Endpoint`]: one resource at the
//! path of its documented operations, a route per documented method, and the
//! resource's own middleware and extractor settings kept (the OAuth JSON
//! surface's body limits and RFC errors). A route is only served when it is
//! documented, and documented at the path it is served at.
//!
//! What every operation of a surface shares is added once, here, in
//! [`finish`]: on `/v1` the bearer scheme, the error envelope for 401, 403,
//! 429 and 503 (400 and 413 where there is a body, 404 where there is a path
//! parameter) and the `X-RateLimit-*` headers on every answer; on the OAuth
//! JSON endpoints the RFC 6749 5.2 error body and their authentication.
//!
//! Adding an operation: write the handler, put a `#[utoipa::path(...)]` on it
//! naming its method, path (relative to its scope), body and specific
//! answers, derive `utoipa::ToSchema` on the types it takes and returns, and
//! register it in the route table with
//! `.service(Endpoint::per_method(h::__path_name, h::name, resource))` (a
//! resource per method, as `App::route`; `Endpoint::new` for one resource
//! whose middleware answers the other methods, as the OAuth JSON endpoints),
//! or `.to(...)` on the endpoint of the same path. The test in
//! `tests/api/openapi.rs` lists the operations it expects: add it there too.

use actix_web::body::BoxBody;
use actix_web::dev::ServiceResponse;
use actix_web::dev::{AppService, HttpServiceFactory, ServiceFactory, ServiceRequest};
use actix_web::http::Method;
use actix_web::{guard, web, FromRequest, Handler, HttpResponse, Resource, Responder};
use serde_json::{json, Map, Value};
use utoipa::openapi::path::{HttpMethod, Paths};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa_actix_web::OpenApiFactory;

type Schemas = Vec<(String, RefOr<Schema>)>;

/// Makes the resource of a path (with its own middleware and settings).
type MakeResource<T> = Box<dyn Fn(&str) -> Resource<T>>;

/// The resources of one path, serving its documented operations (see the
/// module documentation). Built by [`Endpoint::new`] or
/// [`Endpoint::per_method`] at the path of the first operation;
/// [`Endpoint::to`] adds more at the same path.
pub struct Endpoint<T> {
    path: String,
    make: MakeResource<T>,
    /// One resource for every method (a method it does not serve: its 405),
    /// or one per method, guarded by it (a method no resource serves: the
    /// scope's or app's default service), as `App::route` registers them.
    shared: bool,
    resources: Vec<Resource<T>>,
    paths: Paths,
    schemas: Schemas,
}

fn actix_method(m: &HttpMethod) -> Method {
    match m {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Options => Method::OPTIONS,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Trace => Method::TRACE,
    }
}

impl<T> Endpoint<T>
where
    T: ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
{
    fn empty(path: String, make: impl Fn(&str) -> Resource<T> + 'static, shared: bool) -> Self {
        Self {
            path,
            make: Box::new(make),
            shared,
            resources: Vec::new(),
            paths: Paths::new(),
            schemas: Vec::new(),
        }
    }

    /// One resource `make(path)` at the path of `doc` (the
    /// `__path_<handler>` struct of `#[utoipa::path]`) for every operation
    /// of that path: a method it does not serve is answered by the
    /// resource (405, in the shape its middleware gives). The OAuth JSON
    /// endpoints.
    pub fn new<D, F, Args>(doc: D, handler: F, make: impl Fn(&str) -> Resource<T> + 'static) -> Self
    where
        D: OpenApiFactory + utoipa::Path,
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        Self::empty(D::path(), make, true).to(doc, handler)
    }

    /// A resource `make(path)` per documented method, guarded by it: a
    /// method none serves falls through to the default service (the 404 of
    /// its surface), as with `App::route`.
    pub fn per_method<D, F, Args>(
        doc: D,
        handler: F,
        make: impl Fn(&str) -> Resource<T> + 'static,
    ) -> Self
    where
        D: OpenApiFactory + utoipa::Path,
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        Self::empty(D::path(), make, false).to(doc, handler)
    }

    /// Another documented operation at the same path. One documented at
    /// another path is not served (and logged): the route table and the
    /// document never disagree.
    pub fn to<D, F, Args>(mut self, doc: D, handler: F) -> Self
    where
        D: OpenApiFactory + utoipa::Path,
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        if D::path() != self.path {
            log::error!(
                "operation documented at {} registered at {}: not served",
                D::path(),
                self.path
            );
            return self;
        }
        for m in D::methods() {
            let method = actix_method(&m);
            let route = web::method(method.clone()).to(handler.clone());
            if self.shared {
                let resource = match self.resources.pop() {
                    Some(r) => r,
                    None => (self.make)(&self.path),
                };
                self.resources.push(resource.route(route));
            } else {
                let resource = (self.make)(&self.path).guard(guard::Method(method));
                self.resources.push(resource.route(route));
            }
        }
        self.paths.merge(doc.paths());
        doc.schemas(&mut self.schemas);
        self
    }
}

impl<T> HttpServiceFactory for Endpoint<T>
where
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<BoxBody>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
{
    fn register(self, config: &mut AppService) {
        for resource in self.resources {
            resource.register(config)
        }
    }
}

impl<T> OpenApiFactory for Endpoint<T> {
    fn paths(&self) -> Paths {
        self.paths.clone()
    }

    fn schemas(&self, schemas: &mut Schemas) {
        schemas.extend(self.schemas.iter().cloned());
    }
}

/// The parts of the document no handler states: title, security schemes,
/// the shared schemas. Extended with every registered operation by
/// utoipa-actix-web.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "DZDESK authorization server",
        description = "OAuth 2.0 (RFC 6749, 7009, 7591, 7592, 7662, 8414) and the DZDESK /v1 API. \
Every /v1 answer is the envelope {\"success\": true, \"data\": ...} or \
{\"success\": false, \"error\": {\"code\", \"message\"}}; the OAuth endpoints answer errors \
in the RFC 6749 5.2 body {\"error\", \"error_description\"}."
    ),
    tags(
        (name = "v1", description = "The DZDESK API: bearer access token or API key"),
        (name = "oauth", description = "OAuth 2.0 endpoints"),
        (name = "well-known", description = "Discovery documents")
    )
)]
pub struct ApiDoc;

const ERROR_CODES: [&str; 8] = [
    "BAD_REQUEST",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "NOT_FOUND",
    "CONFLICT",
    "RATE_LIMITED",
    "SERVER_ERROR",
    "SERVICE_UNAVAILABLE",
];

/// RFC 6749 5.2, 7.2 (RFC 6750 3.1), RFC 7009 2.2.1, RFC 7591 3.2.2, and
/// RFC 6749 4.1.2.1's `temporarily_unavailable` and `server_error`.
const OAUTH_ERRORS: [&str; 14] = [
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "unsupported_token_type",
    "invalid_token",
    "insufficient_scope",
    "invalid_redirect_uri",
    "invalid_client_metadata",
    "access_denied",
    "temporarily_unavailable",
    "server_error",
];

fn components() -> Value {
    json!({
        "schemas": {
            "ErrorCode": {
                "type": "string",
                "enum": ERROR_CODES,
                "description": "The /v1 error codes. BAD_REQUEST is 400 (413 for a body too large, 408 for a request that did not arrive in time), UNAUTHORIZED 401, FORBIDDEN 403, NOT_FOUND 404, CONFLICT 409, RATE_LIMITED 429, SERVER_ERROR 500, SERVICE_UNAVAILABLE 503."
            },
            "ErrorEnvelope": {
                "type": "object",
                "required": ["success", "error"],
                "properties": {
                    "success": {"type": "boolean", "const": false},
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"$ref": "#/components/schemas/ErrorCode"},
                            "message": {"type": "string"}
                        }
                    }
                }
            },
            "OAuthError": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {"type": "string", "enum": OAUTH_ERRORS},
                    "error_description": {"type": "string"}
                },
                "description": "RFC 6749 5.2 error response"
            }
        },
        "headers": {
            "X-RateLimit-Limit": {
                "description": "Requests per minute of the caller's plan (or of the address, without a usable credential)",
                "required": true,
                "schema": {"type": "integer", "minimum": 0}
            },
            "X-RateLimit-Remaining": {
                "description": "Requests left at once",
                "required": true,
                "schema": {"type": "integer", "minimum": 0}
            },
            "X-RateLimit-Reset": {
                "description": "Epoch seconds when Remaining is back at Limit",
                "required": true,
                "schema": {"type": "integer", "minimum": 0}
            },
            "Retry-After": {
                "description": "Seconds to wait before retrying",
                "required": true,
                "schema": {"type": "integer", "minimum": 0}
            }
        },
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An OAuth access token (RFC 9068 JWT) or an API key (dzd_...). On /oauth/register: an initial access token carrying admin; on /oauth/register/{client_id}: the registration access token."
            },
            "client_secret_basic": {
                "type": "http",
                "scheme": "basic",
                "description": "client_secret_basic: client_id and client_secret in HTTP Basic (RFC 6749 2.3.1). client_secret_post, the same two as form parameters of the body, is accepted instead; public clients send client_id alone at the token endpoint."
            }
        }
    })
}

fn error_response(description: &str, schema: &str, headers: Value) -> Value {
    json!({
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
    })
}

fn header_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/headers/{name}")})
}

fn has_body(op: &Value) -> bool {
    op.get("requestBody").is_some()
}

fn has_param_in(op: &Value, place: &str) -> bool {
    op.get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|ps| ps.iter().any(|p| p["in"] == place))
}

/// Adds `status` to `responses` unless the operation states it itself.
fn add(responses: &mut Map<String, Value>, status: &str, response: Value) {
    responses.entry(status).or_insert(response);
}

const STATUS_TEXT: [(&str, &str); 7] = [
    ("400", "The request is malformed or a field is invalid"),
    ("401", "Missing, invalid, expired or revoked credential"),
    (
        "403",
        "Missing scope, an API key used from outside its allowlist, or HTTPS required",
    ),
    ("404", "No such resource"),
    ("413", "The body is larger than the endpoint accepts"),
    ("429", "Over the rate limit"),
    ("503", "The database is unavailable; retry later"),
];

fn text(status: &str) -> &'static str {
    STATUS_TEXT
        .iter()
        .find(|(s, _)| *s == status)
        .map_or("Error", |(_, t)| t)
}

/// `/v1`: bearer, the envelope's errors, the rate-limit headers everywhere.
fn finish_v1(op: &mut Value) {
    op["security"] = json!([{"bearer": []}]);
    let mut statuses = vec!["401", "403", "429", "503"];
    if has_body(op) {
        statuses.extend(["400", "413"]);
    } else if has_param_in(op, "query") {
        statuses.push("400");
    }
    if has_param_in(op, "path") {
        statuses.push("404");
    }
    let Some(responses) = op["responses"].as_object_mut() else {
        return;
    };
    // An error a handler documents itself (409 on rotation, say) with its
    // description only: its body is the envelope too.
    for (status, response) in responses.iter_mut() {
        if !status.starts_with('2') && response.get("content").is_none() {
            let description = response["description"]
                .as_str()
                .unwrap_or("Error")
                .to_owned();
            *response = error_response(&description, "ErrorEnvelope", json!({}));
        }
    }
    for s in statuses {
        add(
            responses,
            s,
            error_response(text(s), "ErrorEnvelope", json!({})),
        );
    }
    for (status, response) in responses.iter_mut() {
        let headers = response
            .as_object_mut()
            .map(|r| r.entry("headers").or_insert_with(|| json!({})));
        let Some(Value::Object(headers)) = headers else {
            continue;
        };
        for h in [
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
        ] {
            headers.insert(h.to_owned(), header_ref(h));
        }
        if status == "429" || status == "503" {
            headers.insert("Retry-After".to_owned(), header_ref("Retry-After"));
        }
    }
}

/// The OAuth JSON endpoints (token, introspection, revocation,
/// registration): the RFC 6749 5.2 body for every error the surface adds.
fn finish_oauth(path: &str, op: &mut Value) {
    let client_auth = matches!(
        path,
        "/oauth/token" | "/oauth/introspect" | "/oauth/revoke" | "/oauth/par"
    );
    let mut statuses = vec!["400", "503"];
    if client_auth {
        op["security"] = json!([{"client_secret_basic": []}, {}]);
        statuses.extend(["401", "413", "429"]);
    } else {
        op["security"] = json!([{"bearer": []}]);
        statuses.push("401");
        if path == "/oauth/register" || path == "/oauth/userinfo" {
            statuses.push("403");
        }
        if has_body(op) {
            statuses.push("413");
        }
    }
    let Some(responses) = op["responses"].as_object_mut() else {
        return;
    };
    for s in statuses {
        let headers = if s == "429" || s == "503" {
            json!({"Retry-After": header_ref("Retry-After")})
        } else {
            json!({})
        };
        add(responses, s, error_response(text(s), "OAuthError", headers));
    }
}

/// The whole document as served: utoipa's, with what each surface shares.
pub fn finish(doc: utoipa::openapi::OpenApi) -> Value {
    let mut doc = match serde_json::to_value(&doc) {
        Ok(v) => v,
        Err(e) => {
            log::error!("the OpenAPI document does not serialise: {e}");
            return json!({});
        }
    };
    let extra = components();
    if let (Some(own), Some(extra)) = (
        doc.as_object_mut()
            .map(|d| d.entry("components").or_insert_with(|| json!({}))),
        extra.as_object(),
    ) {
        for (kind, items) in extra {
            let slot = own
                .as_object_mut()
                .map(|o| o.entry(kind.clone()).or_insert_with(|| json!({})));
            if let (Some(Value::Object(slot)), Some(items)) = (slot, items.as_object()) {
                for (k, v) in items {
                    slot.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let json_oauth = [
        "/oauth/token",
        "/oauth/par",
        "/oauth/introspect",
        "/oauth/revoke",
        "/oauth/register",
        "/oauth/register/{client_id}",
        "/oauth/userinfo",
    ];
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for op in item.values_mut() {
                if path.starts_with("/v1/") {
                    finish_v1(op);
                } else if json_oauth.contains(&path.as_str()) {
                    finish_oauth(path, op);
                }
            }
        }
    }
    doc
}

/// The document, serialised once per worker, as app data for [`serve`]
/// (each answer shares its bytes: no copy per request).
#[derive(Clone)]
pub struct Document(pub web::Bytes);

impl Document {
    pub fn new(doc: utoipa::openapi::OpenApi) -> Self {
        Self(web::Bytes::from(
            serde_json::to_vec(&finish(doc)).unwrap_or_default(),
        ))
    }
}

/// `GET /openapi.json`.
pub async fn serve(doc: web::Data<Document>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "public, max-age=300"))
        .body(doc.0.clone())
}
