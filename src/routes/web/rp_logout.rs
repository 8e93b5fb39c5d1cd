//! `GET`/`POST /oauth/logout`: OpenID Connect RP-Initiated Logout 1.0. The
//! GET shows a confirmation page (a CSRF-protected form: a page on another
//! site must not sign a user out by a link); the POST ends the browser
//! session and sends the browser to the client's registered
//! `post_logout_redirect_uri` with `state`, or to the login page. The
//! checks are `oauth::logout`'s; an unregistered URI gets an error page,
//! never a redirect.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::auth::csrf::CsrfBinding;
use crate::db::models::Session;
use crate::error::WebError;
use crate::oauth::logout::{self, Checked, LogoutRequest};
use crate::routes::web::session::{MaybeSignedIn, OurCookie};
use crate::routes::web::{render, see_other};
use crate::state::AppState;

/// The CSRF purpose of the confirmation form.
const RP_LOGOUT_PURPOSE: &str = "rp-logout";

#[derive(Deserialize)]
pub struct LogoutQuery {
    id_token_hint: Option<String>,
    client_id: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
}

#[derive(Deserialize)]
pub struct LogoutConfirm {
    #[serde(default)]
    csrf_token: String,
    client_id: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
}

#[derive(Template)]
#[template(path = "logout.html")]
struct LogoutPage<'a> {
    email: &'a str,
    client_name: Option<&'a str>,
    csrf_token: &'a str,
    client_id: &'a str,
    post_logout_redirect_uri: &'a str,
    state: &'a str,
}

/// Empty values count as absent (RFC 6749 3.1's rule, as elsewhere).
fn given(v: Option<String>) -> Option<String> {
    v.filter(|v| !v.is_empty())
}

async fn check(state: &web::Data<AppState>, req: LogoutRequest) -> Result<Checked, WebError> {
    let st = state.clone();
    state
        .db
        .run(move |conn| {
            let keys = st
                .credentials
                .keys
                .current(conn)
                .map_err(WebError::internal)?;
            logout::check(conn, &keys, &st.settings.issuer, &req)
                .map_err(WebError::internal)?
                .map_err(|e| WebError::BadRequest(e.to_string()))
        })
        .await
}

/// After the logout: the client's URI, or the login page.
fn leave(state: &AppState, checked: &Checked) -> Result<HttpResponse, WebError> {
    let mut resp = see_other(checked.redirect.as_deref().unwrap_or("/login"));
    resp.add_cookie(&OurCookie::Session.removal(state.secure_cookies()))
        .map_err(WebError::internal)?;
    Ok(resp)
}

pub async fn logout_get(
    state: web::Data<AppState>,
    signed_in: MaybeSignedIn,
    query: web::Query<LogoutQuery>,
) -> Result<HttpResponse, WebError> {
    let query = query.into_inner();
    let req = LogoutRequest {
        id_token_hint: given(query.id_token_hint),
        client_id: given(query.client_id),
        post_logout_redirect_uri: given(query.post_logout_redirect_uri),
        state: given(query.state),
    };
    let checked = check(&state, req.clone()).await?;
    // Signed out already: nothing to confirm.
    let Some(signed_in) = signed_in.0 else {
        return leave(&state, &checked);
    };
    let token = state.csrf.token(
        CsrfBinding::Session(&signed_in.session_id),
        RP_LOGOUT_PURPOSE,
    );
    let mut resp = render(
        actix_web::http::StatusCode::OK,
        &LogoutPage {
            email: &signed_in.user.email,
            client_name: checked.client.as_ref().map(|c| c.name.as_str()),
            csrf_token: &token,
            client_id: checked.client.as_ref().map_or("", |c| c.id.as_str()),
            post_logout_redirect_uri: req.post_logout_redirect_uri.as_deref().unwrap_or(""),
            state: req.state.as_deref().unwrap_or(""),
        },
    )?;
    resp.headers_mut().insert(
        actix_web::http::header::CACHE_CONTROL,
        actix_web::http::header::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

pub async fn logout_post(
    state: web::Data<AppState>,
    signed_in: MaybeSignedIn,
    form: web::Form<LogoutConfirm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    // The redirect is checked again: the form is the browser's to change.
    let req = LogoutRequest {
        id_token_hint: None,
        client_id: given(form.client_id),
        post_logout_redirect_uri: given(form.post_logout_redirect_uri),
        state: given(form.state),
    };
    let checked = check(&state, req).await?;
    if let Some(signed_in) = signed_in.0 {
        if !state.csrf.verify(
            CsrfBinding::Session(&signed_in.session_id),
            RP_LOGOUT_PURPOSE,
            &form.csrf_token,
        ) {
            return Err(WebError::Forbidden);
        }
        let id = signed_in.session_id.clone();
        state
            .db
            .run(move |conn| Session::delete(conn, &id).map_err(WebError::from))
            .await?;
        log::info!(
            "user {} signed out at the request of client {}",
            signed_in.user.id,
            checked.client.as_ref().map_or("-", |c| c.id.as_str())
        );
    }
    leave(&state, &checked)
}
