//! `GET /`: who is signed in, and the sign-out buttons.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;

use crate::auth::csrf::CsrfBinding;
use crate::db::models::Session;
use crate::domain::Scope;
use crate::error::WebError;
use crate::routes::web::login::LOGOUT_EVERYWHERE_PURPOSE;
use crate::routes::web::nav::{Nav, Section};
use crate::routes::web::session::MaybeSignedIn;
use crate::routes::web::{render, see_other};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage<'a> {
    nav: Nav,
    role: &'a str,
    everywhere_token: &'a str,
    /// Live browser sessions of the user, this one included.
    sessions: i64,
}

pub async fn home(
    state: web::Data<AppState>,
    signed_in: MaybeSignedIn,
) -> Result<HttpResponse, WebError> {
    let Some(signed_in) = signed_in.0 else {
        return Ok(see_other("/login"));
    };
    let binding = CsrfBinding::Session(&signed_in.session_id);
    let everywhere = state.csrf.token(binding, LOGOUT_EVERYWHERE_PURPOSE);
    let user_id = signed_in.user.id.clone();
    let now = chrono::Utc::now().naive_utc();
    let sessions = state
        .db
        .run(move |conn| Session::count_live_for_user(conn, &user_id, now).map_err(WebError::from))
        .await?;
    render(
        StatusCode::OK,
        &HomePage {
            nav: Nav::new(&state, &signed_in, Section::Account),
            role: signed_in.user.role.as_str(),
            everywhere_token: &everywhere,
            sessions,
        },
    )
}

#[derive(Template)]
#[template(path = "docs.html")]
struct DocsPage<'a> {
    issuer: &'a str,
    scopes: [Scope; 8],
}

/// `GET /docs`: the endpoints and scopes, for client developers (the
/// metadata's `service_documentation`).
pub async fn docs(state: web::Data<AppState>) -> Result<HttpResponse, WebError> {
    render(
        StatusCode::OK,
        &DocsPage {
            issuer: &state.settings.issuer,
            scopes: Scope::ALL,
        },
    )
}
