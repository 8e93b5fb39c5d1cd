//! `GET /settings/apps` and `POST /settings/apps/revoke`: the applications a
//! signed-in user has granted access to, and revoking them.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use chrono::Utc;
use serde::Deserialize;

use crate::auth::csrf::CsrfBinding;
use crate::db::models::{ConnectedApp, ConsentRow};
use crate::domain::{Scope, ScopeSet};
use crate::error::WebError;
use crate::routes::web::nav::{Nav, Section};
use crate::routes::web::session::MaybeSignedIn;
use crate::routes::web::{render, see_other};
use crate::state::AppState;

pub const REVOKE_APP_PURPOSE: &str = "revoke-app";

struct AppView {
    client_id: String,
    client_name: String,
    scopes: Vec<Scope>,
    granted_on: String,
}

#[derive(Template)]
#[template(path = "apps.html")]
struct AppsPage<'a> {
    nav: Nav,
    apps: Vec<AppView>,
    csrf_token: &'a str,
    revoked: bool,
}

#[derive(Deserialize)]
pub struct AppsQuery {
    revoked: Option<String>,
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    csrf_token: String,
}

fn view(app: ConnectedApp) -> AppView {
    AppView {
        scopes: ScopeSet::parse(&app.scopes)
            .unwrap_or_default()
            .iter()
            .collect(),
        granted_on: app.granted_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        client_id: app.client_id,
        client_name: app.client_name,
    }
}

pub async fn apps_get(
    state: web::Data<AppState>,
    signed_in: MaybeSignedIn,
    query: web::Query<AppsQuery>,
) -> Result<HttpResponse, WebError> {
    let Some(signed_in) = signed_in.0 else {
        return Ok(see_other("/login?next=%2Fsettings%2Fapps"));
    };
    let user_id = signed_in.user.id.clone();
    let apps = state
        .db
        .run(move |conn| ConsentRow::connected_apps(conn, &user_id).map_err(WebError::from))
        .await?;
    let token = state.csrf.token(
        CsrfBinding::Session(&signed_in.session_id),
        REVOKE_APP_PURPOSE,
    );
    render(
        StatusCode::OK,
        &AppsPage {
            nav: Nav::new(&state, &signed_in, Section::ConnectedApps),
            apps: apps.into_iter().map(view).collect(),
            csrf_token: &token,
            revoked: query.revoked.is_some(),
        },
    )
}

pub async fn apps_revoke(
    state: web::Data<AppState>,
    signed_in: MaybeSignedIn,
    form: web::Form<RevokeForm>,
) -> Result<HttpResponse, WebError> {
    let signed_in = signed_in.with_csrf(&state.csrf, REVOKE_APP_PURPOSE, &form.csrf_token)?;
    let user_id = signed_in.user.id.clone();
    let client_id = form.client_id.clone();
    let now = Utc::now().naive_utc();
    let revoked = state
        .db
        .run(move |conn| {
            ConsentRow::disconnect(conn, &user_id, &client_id, now).map_err(WebError::from)
        })
        .await?;
    state.credentials.fence().await;
    log::info!(
        "user {} disconnected a client ({revoked} grants revoked)",
        signed_in.user.id
    );
    Ok(see_other("/settings/apps?revoked=1"))
}
