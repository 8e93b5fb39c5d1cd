//! `GET`/`POST /oauth/logout`: OpenID Connect RP-Initiated Logout 1.0. The
//! GET shows a confirmation page (a CSRF-protected form: a page on another
//! site must not sign a user out by a link); the POST ends the browser
//! session and sends the browser to the client's registered
//! `post_logout_redirect_uri` with `state`, or to the login page. The
//! checks are `oauth::logout`'s. A request that fails them (an
//! unregistered URI, a hint of a retired key, a disabled client) never
//! redirects anywhere, but the signed-in user may still sign out: the page
//! says why it will not go back to the application, and the session ends
//! all the same. Signed out, such a request gets an error page.

use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::auth::csrf::CsrfBinding;
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
    /// Why the page will not go back to the application.
    problem: Option<&'a str>,
    csrf_token: &'a str,
    client_id: &'a str,
    post_logout_redirect_uri: &'a str,
    state: &'a str,
}

/// Empty values count as absent (RFC 6749 3.1's rule, as elsewhere).
fn given(v: Option<String>) -> Option<String> {
    v.filter(|v| !v.is_empty())
}

/// The checked request, or why it failed (the user may still sign out).
async fn check(
    state: &web::Data<AppState>,
    req: LogoutRequest,
) -> Result<Result<Checked, logout::LogoutError>, WebError> {
    let st = state.clone();
    state
        .db
        .run(move |conn| {
            let keys = match &req.id_token_hint {
                Some(token) => st.credentials.keys.for_token(conn, token),
                None => st.credentials.keys.current(conn),
            }
            .map_err(WebError::internal)?;
            logout::check(conn, &keys, &st.settings.issuer, &req).map_err(WebError::internal)
        })
        .await
}

/// After the logout: the client's URI, or the login page. The session
/// cookie is removed only from a browser that sent one (a cross-site form
/// post arrives without the SameSite=Lax cookie, and must not make the
/// browser drop it).
fn leave(
    req: &HttpRequest,
    state: &AppState,
    redirect: Option<&str>,
) -> Result<HttpResponse, WebError> {
    let secure = state.secure_cookies();
    let mut resp = see_other(redirect.unwrap_or("/login"));
    if OurCookie::Session.value(req, secure).is_some() {
        resp.add_cookie(&OurCookie::Session.removal(secure))
            .map_err(WebError::internal)?;
    }
    Ok(resp)
}

pub async fn logout_get(
    http: HttpRequest,
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
    let Some(signed_in) = signed_in.0 else {
        // Signed out already: nothing to confirm; back to a verified URI,
        // else the reason.
        let checked = checked.map_err(|e| WebError::BadRequest(e.to_string()))?;
        return leave(&http, &state, checked.redirect.as_deref());
    };
    let token = state.csrf.token(
        CsrfBinding::Session(&signed_in.session_id),
        RP_LOGOUT_PURPOSE,
    );
    // A request that failed its checks: the page says so, and its form
    // signs out without going back to the application.
    let (client, problem) = match &checked {
        Ok(c) => (c.client.as_ref(), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let keep = |v: &Option<String>| {
        if problem.is_none() {
            v.clone().unwrap_or_default()
        } else {
            String::new()
        }
    };
    // `render` marks the page no-store (it carries a CSRF token).
    render(
        actix_web::http::StatusCode::OK,
        &LogoutPage {
            email: &signed_in.user.email,
            client_name: client.map(|c| c.name.as_str()),
            problem: problem.as_deref(),
            csrf_token: &token,
            client_id: client.map_or("", |c| c.id.as_str()),
            post_logout_redirect_uri: &keep(&req.post_logout_redirect_uri),
            state: &keep(&req.state),
        },
    )
}

pub async fn logout_post(
    http: HttpRequest,
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
    if signed_in.0.is_none() {
        let checked = checked.map_err(|e| WebError::BadRequest(e.to_string()))?;
        return leave(&http, &state, checked.redirect.as_deref());
    }
    let signed_in = signed_in.with_csrf(&state.csrf, RP_LOGOUT_PURPOSE, &form.csrf_token)?;
    signed_in.end(&state).await?;
    log::info!(
        "user {} signed out at an application's request",
        signed_in.user.id
    );
    // A request that no longer checks out signs out all the same, and goes
    // nowhere but the login page.
    let redirect = checked.ok().and_then(|c| c.redirect);
    leave(&http, &state, redirect.as_deref())
}
