//! `GET /`: who is signed in, and the sign-out button.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;

use crate::auth::csrf::CsrfBinding;
use crate::domain::Scope;
use crate::error::WebError;
use crate::routes::web::login::LOGOUT_PURPOSE;
use crate::routes::web::session::MaybeSignedIn;
use crate::routes::web::{render, see_other};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage<'a> {
    email: &'a str,
    role: &'a str,
    logout_token: &'a str,
}

pub async fn home(
    state: web::Data<AppState>,
    signed_in: MaybeSignedIn,
) -> Result<HttpResponse, WebError> {
    let Some(signed_in) = signed_in.0 else {
        return Ok(see_other("/login"));
    };
    let token = state
        .csrf
        .token(CsrfBinding::Session(&signed_in.session_id), LOGOUT_PURPOSE);
    render(
        StatusCode::OK,
        &HomePage {
            email: &signed_in.user.email,
            role: signed_in.user.role.as_str(),
            logout_token: &token,
        },
    )
}

#[derive(Template)]
#[template(path = "docs.html")]
struct DocsPage<'a> {
    issuer: &'a str,
    scopes: [Scope; 5],
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
