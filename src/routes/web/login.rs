//! `GET /login`, `POST /login`, `POST /logout`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::Utc;
use serde::Deserialize;

use crate::auth::csrf::CsrfBinding;
use crate::auth::local_redirect_target;
use crate::auth::signin::{self, SignInError};
use crate::db::models::Session;
use crate::domain::Password;
use crate::error::WebError;
use crate::routes::web::session::{
    cookie, looks_like_secret, removal, MaybeSignedIn, PRE_SESSION_COOKIE, SESSION_COOKIE,
};
use crate::routes::web::{render, see_other};
use crate::state::AppState;
use crate::tokens;

pub const LOGIN_PURPOSE: &str = "login";
pub const LOGOUT_PURPOSE: &str = "logout";

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    csrf_token: &'a str,
    next: &'a str,
    email: &'a str,
    error: Option<&'a str>,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    csrf_token: String,
}

#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf_token: String,
}

fn pre_session(req: &HttpRequest) -> Option<String> {
    req.cookie(PRE_SESSION_COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| looks_like_secret(v, "dzpre_"))
}

pub async fn login_get(
    req: HttpRequest,
    state: web::Data<AppState>,
    signed_in: MaybeSignedIn,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, WebError> {
    let next = query.next.as_deref().and_then(local_redirect_target);
    if signed_in.0.is_some() {
        return Ok(see_other(next.unwrap_or("/")));
    }
    let (pre, is_new) = match pre_session(&req) {
        Some(pre) => (pre, false),
        None => (tokens::new_secret("dzpre_"), true),
    };
    let page = LoginPage {
        csrf_token: &state
            .csrf
            .token(CsrfBinding::PreSession(&pre), LOGIN_PURPOSE),
        next: next.unwrap_or(""),
        email: "",
        error: None,
    };
    let mut resp = render(StatusCode::OK, &page)?;
    if is_new {
        resp.add_cookie(&cookie(PRE_SESSION_COOKIE, pre, state.secure_cookies()))
            .map_err(WebError::internal)?;
    }
    Ok(resp)
}

pub async fn login_post(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    // CSRF: the token must be the one made for this browser's pre-session
    // cookie (OWASP CSRF Prevention Cheat Sheet). Checked before anything else.
    let csrf_ok = pre_session(&req).is_some_and(|pre| {
        state.csrf.verify(
            CsrfBinding::PreSession(&pre),
            LOGIN_PURPOSE,
            &form.csrf_token,
        )
    });
    if !csrf_ok {
        return Err(WebError::Forbidden);
    }

    let next = local_redirect_target(&form.next).unwrap_or("/").to_owned();
    let email = form.email;
    let password = Password::new(form.password);
    let now = Utc::now().naive_utc();
    let email_for_check = email.clone();
    let outcome = state
        .db
        .run(
            move |conn| match signin::sign_in(conn, &email_for_check, &password, now) {
                Ok(signed_in) => Ok(Ok(signed_in)),
                Err(SignInError::InvalidCredentials) => Ok(Err(())),
                Err(SignInError::Database(e)) => Err(WebError::from(e)),
            },
        )
        .await?;

    match outcome {
        Ok(signed_in) => {
            log::info!("user {} signed in", signed_in.user.id);
            let mut resp = see_other(&next);
            let secure = state.secure_cookies();
            resp.add_cookie(&cookie(SESSION_COOKIE, signed_in.session_secret, secure))
                .and_then(|_| resp.add_cookie(&removal(PRE_SESSION_COOKIE, secure)))
                .map_err(WebError::internal)?;
            Ok(resp)
        }
        Err(()) => {
            let page = LoginPage {
                csrf_token: &form.csrf_token,
                next: local_redirect_target(&form.next).unwrap_or(""),
                email: email.trim(),
                error: Some("Wrong email or password."),
            };
            // The same token: it is still bound to this browser's pre-session.
            render(StatusCode::OK, &page)
        }
    }
}

pub async fn logout_post(
    state: web::Data<AppState>,
    signed_in: MaybeSignedIn,
    form: web::Form<LogoutForm>,
) -> Result<HttpResponse, WebError> {
    let secure = state.secure_cookies();
    let Some(signed_in) = signed_in.0 else {
        // Nothing to end; make sure the browser forgets any stale cookie.
        let mut resp = see_other("/login");
        resp.add_cookie(&removal(SESSION_COOKIE, secure))
            .map_err(WebError::internal)?;
        return Ok(resp);
    };
    if !state.csrf.verify(
        CsrfBinding::Session(&signed_in.session_id),
        LOGOUT_PURPOSE,
        &form.csrf_token,
    ) {
        return Err(WebError::Forbidden);
    }
    let id = signed_in.session_id.clone();
    state
        .db
        .run(move |conn| Session::delete(conn, &id).map_err(WebError::from))
        .await?;
    log::info!("user {} signed out", signed_in.user.id);
    let mut resp = see_other("/login");
    resp.add_cookie(&removal(SESSION_COOKIE, secure))
        .map_err(WebError::internal)?;
    Ok(resp)
}
