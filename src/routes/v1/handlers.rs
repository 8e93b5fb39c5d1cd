//! `/v1/` handlers: extract, call `crate::api` on the blocking pool,
//! answer in the envelope.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::allowlist::{AllowlistRequest, AllowlistView};
use crate::api::keys::{self, CreateKeyRequest, CreatedKey, KeyView, NewKey, RotateKeyRequest};
use crate::api::principal::{Authorize, Principal, Subject};
use crate::api::usage_log::{self, UsagePage, UsageParams};
use crate::api::users::{CreateUserRequest, UpdateUserRequest, UserPage, UserView};
use crate::api::{allowlist, users};
use crate::error::{api_ok, api_success, ApiError, SuccessBody};
use crate::http::no_store;
use crate::routes::v1::auth::Authenticated;
use crate::state::AppState;

/// `GET /v1/me` (seed: "Verify Token").
#[derive(Serialize, utoipa::ToSchema)]
pub struct Me<'a> {
    id: &'a str,
    /// null for a client_credentials token.
    email: Option<&'a str>,
    /// `admin`, `agent`, or `service` for a client_credentials token.
    role: &'a str,
    scopes: Vec<&'static str>,
}

/// `GET /v1/api-keys`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyList {
    api_keys: Vec<KeyView>,
}

/// `DELETE /v1/api-keys/{id}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyRevoked {
    id: String,
    revoked: bool,
}

/// `DELETE /v1/users/{id}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserDeleted {
    id: String,
    deleted: bool,
}

#[utoipa::path(get, path = "/me", tag = "v1", operation_id = "getMe",
    responses((status = 200, description = "Who the credential is", body = SuccessBody<Me>)))]
pub async fn me(auth: Authenticated) -> HttpResponse {
    let p = &auth.0;
    let me = match &p.subject {
        Subject::User { id, email, role } => Me {
            id,
            email: Some(email),
            role: role.as_str(),
            scopes: p.scopes.to_vec(),
        },
        Subject::Service { client_id } => Me {
            id: client_id,
            email: None,
            role: "service",
            scopes: p.scopes.to_vec(),
        },
    };
    api_ok(me)
}

/// `GET /v1/api-keys`.
#[utoipa::path(get, path = "/api-keys", tag = "v1", operation_id = "listApiKeys",
    responses((status = 200, description = "The caller's API keys (never the keys themselves)", body = SuccessBody<KeyList>)))]
pub async fn list_keys(
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user_id = auth.0.user_id()?.to_owned();
    let st = state.clone();
    let list = state
        .db
        .run(move |conn| keys::list(conn, &user_id, &st.usage))
        .await?;
    Ok(api_ok(KeyList { api_keys: list }))
}

/// `POST /v1/api-keys`: 201 with the key, shown this once.
#[utoipa::path(post, path = "/api-keys", tag = "v1", operation_id = "createApiKey",
    request_body = CreateKeyRequest,
    responses((status = 201, description = "The new key, shown this once", body = SuccessBody<CreatedKey>)))]
pub async fn create_key(
    auth: Authenticated,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let new = NewKey::from_json(&body)?;
    let principal = auth.0;
    let created = state
        .db
        .run(move |conn| keys::create(conn, &principal, &new, Utc::now()))
        .await?;
    log::info!("API key {} created", created.id);
    let mut resp = api_success(StatusCode::CREATED, created);
    no_store(&mut resp);
    Ok(resp)
}

/// `DELETE /v1/api-keys/{id}`: from the answer on, the key is refused here
/// and inactive at introspection.
#[utoipa::path(delete, path = "/api-keys/{id}", tag = "v1", operation_id = "revokeApiKey",
    params(("id" = String, Path, description = "The key's id (key_...)")),
    responses((status = 200, description = "Revoked, with the keys it made", body = SuccessBody<KeyRevoked>)))]
pub async fn revoke_key(
    auth: Authenticated,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user_id = auth.0.credential_manager()?.to_owned();
    let id = path.into_inner();
    let key_id = id.clone();
    state
        .db
        .run(move |conn| keys::revoke(conn, &user_id, &key_id, Utc::now()))
        .await?;
    state.credentials.fence().await;
    log::info!("API key {id} revoked");
    Ok(api_ok(KeyRevoked { id, revoked: true }))
}

/// `POST /v1/api-keys/{id}/rotate` with an optional `{"grace_hours": H}`:
/// 201 with the new key, shown this once (the shape of `POST
/// /v1/api-keys`). The old key works until the grace ends; with 0 it is
/// refused from the answer on, here and on every instance.
#[utoipa::path(post, path = "/api-keys/{id}/rotate", tag = "v1", operation_id = "rotateApiKey",
    params(("id" = String, Path, description = "The key's id (key_...)")),
    request_body(content = Option<RotateKeyRequest>, description = "Optional; without it the grace is 24 hours"),
    responses(
        (status = 201, description = "The new key, shown this once; the old one works until the grace ends", body = SuccessBody<CreatedKey>),
        (status = 409, description = "The key is itself being replaced (in its grace period)")))]
pub async fn rotate_key(
    auth: Authenticated,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let grace = keys::Grace::from_body(&body)?;
    let principal = auth.0;
    let id = path.into_inner();
    let rotated = state
        .db
        .run(move |conn| keys::rotate(conn, &principal, &id, grace, Utc::now()))
        .await?;
    state.credentials.fence().await;
    log::info!(
        "API key {} rotated: replaced by {}, works until {}",
        rotated.old_id,
        rotated.new.id,
        rotated.old_works_until
    );
    let mut resp = api_success(StatusCode::CREATED, rotated.new);
    no_store(&mut resp);
    Ok(resp)
}

/// `GET /v1/ip-allowlist`.
#[utoipa::path(get, path = "/ip-allowlist", tag = "v1", operation_id = "getIpAllowlist",
    responses((status = 200, description = "The account's allowlist", body = SuccessBody<AllowlistView>)))]
pub async fn get_allowlist(
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.0;
    let view = state
        .db
        .run(move |conn| allowlist::get(conn, &principal))
        .await?;
    Ok(api_ok(view))
}

/// `PUT /v1/ip-allowlist`.
#[utoipa::path(put, path = "/ip-allowlist", tag = "v1", operation_id = "putIpAllowlist",
    request_body = AllowlistRequest,
    responses((status = 200, description = "The allowlist as saved", body = SuccessBody<AllowlistView>)))]
pub async fn put_allowlist(
    auth: Authenticated,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.0;
    let body = body.into_inner();
    let view = state
        .db
        .run(move |conn| allowlist::replace(conn, &principal, &body, Utc::now()))
        .await?;
    state.credentials.fence().await;
    Ok(api_ok(view))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Requests per page, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only these answers: `4xx`, `5xx` or `429`.
    #[param(inline, value_type = Option<UsageStatusFilter>)]
    status: Option<String>,
    /// Only requests at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
}

/// The `status` filter of the usage log, as the API document shows it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub enum UsageStatusFilter {
    #[schema(rename = "4xx")]
    ClientErrors,
    #[schema(rename = "5xx")]
    ServerErrors,
    #[schema(rename = "429")]
    RateLimited,
}

/// `GET /v1/api-keys/{id}/usage?limit=&cursor=&status=&since=`: the key's
/// requests, newest first.
#[utoipa::path(get, path = "/api-keys/{id}/usage", tag = "v1", operation_id = "listApiKeyUsage",
    params(("id" = String, Path, description = "The key's id (key_...)"), UsageQuery),
    responses((status = 200, description = "One page of the key's requests, newest first", body = SuccessBody<UsagePage>)))]
pub async fn key_usage(
    auth: Authenticated,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.0;
    let q = query.into_inner();
    let params = UsageParams {
        limit: q.limit,
        cursor: q.cursor,
        status: q.status,
        since: q.since,
    };
    let page = state
        .db
        .run(move |conn| usage_log::list(conn, &principal, &path, &params))
        .await?;
    Ok(api_ok(page))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Users per page, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `GET /v1/users?limit=&cursor=`.
#[utoipa::path(get, path = "/users", tag = "v1", operation_id = "listUsers",
    params(ListQuery),
    responses((status = 200, description = "One page of users", body = SuccessBody<UserPage>)))]
pub async fn list_users(
    auth: Authenticated,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.0;
    let q = query.into_inner();
    let page = state
        .db
        .run(move |conn| users::list(conn, &principal, q.limit.as_deref(), q.cursor.as_deref()))
        .await?;
    Ok(api_ok(page))
}

/// `GET /v1/users/{id}`.
#[utoipa::path(get, path = "/users/{id}", tag = "v1", operation_id = "getUser",
    params(("id" = String, Path, description = "The user's id (user_...)")),
    responses((status = 200, description = "The user", body = SuccessBody<UserView>)))]
pub async fn get_user(
    auth: Authenticated,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.0;
    let user = state
        .db
        .run(move |conn| users::get(conn, &principal, &path))
        .await?;
    Ok(api_ok(user))
}

/// `POST /v1/users`: 201 with the user.
#[utoipa::path(post, path = "/users", tag = "v1", operation_id = "createUser",
    request_body = CreateUserRequest,
    responses((status = 201, description = "The new user", body = SuccessBody<UserView>)))]
pub async fn create_user(
    auth: Authenticated,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.0;
    let body = body.into_inner();
    let hash = password_hash(&principal, &body).await?;
    let user = state
        .db
        .run(move |conn| users::create(conn, &principal, &body, hash, Utc::now()))
        .await?;
    log::info!("user {} created through the API", user.id);
    Ok(api_success(StatusCode::CREATED, user))
}

/// `PATCH /v1/users/{id}`.
#[utoipa::path(patch, path = "/users/{id}", tag = "v1", operation_id = "updateUser",
    params(("id" = String, Path, description = "The user's id (user_...)")),
    request_body = UpdateUserRequest,
    responses((status = 200, description = "The user as changed", body = SuccessBody<UserView>)))]
pub async fn update_user(
    auth: Authenticated,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.0;
    let body = body.into_inner();
    let hash = password_hash(&principal, &body).await?;
    let user = state
        .db
        .run(move |conn| users::update(conn, &principal, &path, &body, hash, Utc::now()))
        .await?;
    // A demoted, disabled or deleted user's registered clients were
    // disabled: stop answering for them from memory.
    state.clients.clear();
    state.credentials.fence().await;
    log::info!("user {} changed through the API", user.id);
    Ok(api_ok(user))
}

/// `DELETE /v1/users/{id}`.
#[utoipa::path(delete, path = "/users/{id}", tag = "v1", operation_id = "deleteUser",
    params(("id" = String, Path, description = "The user's id (user_...)")),
    responses((status = 200, description = "Deleted, with everything of theirs", body = SuccessBody<UserDeleted>)))]
pub async fn delete_user(
    auth: Authenticated,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.0;
    let id = path.into_inner();
    let user_id = id.clone();
    state
        .db
        .run(move |conn| users::delete(conn, &principal, &user_id, Utc::now()))
        .await?;
    state.clients.clear();
    state.credentials.fence().await;
    log::info!("user {id} deleted through the API");
    Ok(api_ok(UserDeleted { id, deleted: true }))
}

/// Hashes the body's password (if any) on the blocking pool, holding no
/// database connection meanwhile.
async fn password_hash(principal: &Principal, body: &Value) -> Result<Option<String>, ApiError> {
    let (principal, body) = (principal.clone(), body.clone());
    web::block(move || users::hashed_password(&principal, &body))
        .await
        .map_err(ApiError::internal)?
}
