//! `GET /login`, `POST /login`, `POST /logout`.

use actix_web::http::header::{HeaderValue, RETRY_AFTER};
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
use crate::metrics::Throttled;
use crate::ratelimit::address_key;
use crate::ratelimit::throttle::{self, Begin, LockScope};
use crate::routes::web::session::{MaybeSignedIn, OurCookie};
use crate::routes::web::{render, see_other};
use crate::state::AppState;
use crate::tokens;

pub const LOGIN_PURPOSE: &str = "login";
/// How long a locked sign-in waits before its 429 (see `login_post`).
pub const LOCKED_ANSWER_DELAY: std::time::Duration = std::time::Duration::from_millis(250);
pub const LOGOUT_PURPOSE: &str = "logout";
pub const LOGOUT_EVERYWHERE_PURPOSE: &str = "logout-everywhere";

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
    /// `1`: sign in even though signed in (an application asked for a
    /// fresh sign-in: OIDC `prompt=login`, `max_age`).
    reauth: Option<String>,
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

pub async fn login_get(
    req: HttpRequest,
    state: web::Data<AppState>,
    signed_in: MaybeSignedIn,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, WebError> {
    let next = query.next.as_deref().and_then(local_redirect_target);
    let reauth = query.reauth.as_deref() == Some("1");
    let email = match (&signed_in.0, reauth) {
        (Some(_), false) => return Ok(see_other(next.unwrap_or("/"))),
        // Signing in again: the account is known.
        (Some(s), true) => s.user.email.clone(),
        (None, _) => String::new(),
    };
    let (pre, is_new) = match OurCookie::PreSession.value(&req, state.secure_cookies()) {
        Some(pre) => (pre, false),
        None => (OurCookie::PreSession.fresh(), true),
    };
    let page = LoginPage {
        csrf_token: &state
            .csrf
            .token(CsrfBinding::PreSession(&pre), LOGIN_PURPOSE),
        next: next.unwrap_or(""),
        email: &email,
        error: None,
    };
    let mut resp = render(StatusCode::OK, &page)?;
    if is_new {
        resp.add_cookie(&OurCookie::PreSession.set(pre, state.secure_cookies()))
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
    let csrf_ok = OurCookie::PreSession
        .value(&req, state.secure_cookies())
        .is_some_and(|pre| {
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
    let email = form.email.clone();
    let page = |status: StatusCode, error: &str| {
        let page = LoginPage {
            // The same token: it is still bound to this browser's pre-session.
            csrf_token: &form.csrf_token,
            next: local_redirect_target(&form.next).unwrap_or(""),
            email: email.trim(),
            error: Some(error),
        };
        render(status, &page)
    };

    // A place on the argon2 workers first: when they are all taken, answer
    // at once, and count no guess.
    let Ok(slot) = state.passwords.reserve() else {
        let mut resp = page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many people are signing in right now. Try again in a moment.",
        )?;
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return Ok(resp);
    };
    // Then the guess is reserved against every lock it is subject to
    // (the account and address pair, the address, the account), so parallel
    // guesses cannot overtake the limit.
    let ip = state.client_ip(&req);
    let address = address_key(ip);
    let subjects = throttle::sign_in_subjects(&email, &address);
    let now_secs = Utc::now().timestamp();
    let shared = match state.limiter.throttle_begin(&subjects, now_secs).await {
        Begin::Locked { retry_after, .. } => {
            // A tarpit: a locked guess is answered after a pause, so that a
            // flood of them holds connections instead of taking the CPU the
            // other endpoints need (a human waiting for "try again later"
            // does not notice a quarter of a second).
            // The argon2 place is not needed: free it first, or sleeping
            // locked guesses would fill the queue for everyone.
            drop(slot);
            if let Some(m) = state.metrics() {
                m.throttled(Throttled::Login);
            }
            actix_web::rt::time::sleep(LOCKED_ANSWER_DELAY).await;
            // The same words for every lock, and for unknown emails too.
            let mut resp = page(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many sign-in attempts. Try again later.",
            )?;
            if let Ok(v) = HeaderValue::from_str(&retry_after.max(1).to_string()) {
                resp.headers_mut().insert(RETRY_AFTER, v);
            }
            return Ok(resp);
        }
        Begin::Allowed { locked_now, shared } => {
            for (key, secs) in locked_now {
                if let Some(m) = state.metrics() {
                    m.signin_locked(LockScope::of(&key));
                }
                let level = if key.starts_with("login:acct:") {
                    log::Level::Warn
                } else {
                    log::Level::Info
                };
                log::log!(
                    level,
                    "sign-in locked ({}, {secs} s) for {} from {}",
                    key.split(':').nth(1).unwrap_or("?"),
                    mask_email(&email).escape_debug(),
                    ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string())
                );
            }
            shared
        }
    };

    let lookup = email.clone();
    let user = state
        .db
        .run(move |conn| {
            signin::find_user(conn, &lookup).map_err(|e| match e {
                SignInError::Database(e) => WebError::from(e),
                SignInError::InvalidCredentials => WebError::internal(anyhow::anyhow!("lookup")),
            })
        })
        .await?;
    // The connection is back in the pool; argon2 runs on its workers (an
    // unknown email costs one verification too).
    let password = Password::new(form.password);
    let verified = state
        .passwords
        .verify(
            slot,
            password,
            user.as_ref().map(|u| u.password_hash.clone()),
        )
        .await;
    match user.filter(|u| verified && !u.disabled) {
        Some(user) => {
            state
                .limiter
                .throttle_succeeded(&subjects, Utc::now().timestamp(), shared)
                .await;
            let user_id = user.id.clone();
            let now = Utc::now().naive_utc();
            // The session this browser came with (a sign-in form left open
            // in another tab, or another account) ends: one live session per
            // browser, never two.
            let previous = OurCookie::Session
                .value(&req, state.secure_cookies())
                .map(|secret| tokens::hash_secret(&secret));
            let session_secret = state
                .db
                .run(move |conn| {
                    crate::db::write_transaction(conn, |conn| {
                        if let Some(id) = previous {
                            Session::delete(conn, &id)?;
                        }
                        Session::create(conn, &user_id, now)
                    })
                    .map_err(WebError::from)
                })
                .await?;
            log::info!("user {} signed in", user.id);
            let mut resp = see_other(&next);
            let secure = state.secure_cookies();
            resp.add_cookie(&OurCookie::Session.set(session_secret, secure))
                .and_then(|_| resp.add_cookie(&OurCookie::PreSession.removal(secure)))
                .map_err(WebError::internal)?;
            Ok(resp)
        }
        None => {
            if let Some(m) = state.metrics() {
                m.signin_failed();
            }
            page(StatusCode::OK, "Wrong email or password.")
        }
    }
}

/// `a***@example.com`: enough for an operator to tell accounts apart in a
/// log, not enough to read the address.
fn mask_email(raw: &str) -> String {
    let raw = raw.trim();
    match raw.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            let domain: String = domain.chars().take(64).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

pub async fn logout_post(
    state: web::Data<AppState>,
    signed_in: MaybeSignedIn,
    form: web::Form<LogoutForm>,
) -> Result<HttpResponse, WebError> {
    let secure = state.secure_cookies();
    if signed_in.0.is_none() {
        // Nothing to end; make sure the browser forgets any stale cookie.
        let mut resp = see_other("/login");
        resp.add_cookie(&OurCookie::Session.removal(secure))
            .map_err(WebError::internal)?;
        return Ok(resp);
    }
    let signed_in = signed_in.with_csrf(&state.csrf, LOGOUT_PURPOSE, &form.csrf_token)?;
    signed_in.end(&state).await?;
    log::info!("user {} signed out", signed_in.user.id);
    let mut resp = see_other("/login");
    resp.add_cookie(&OurCookie::Session.removal(secure))
        .map_err(WebError::internal)?;
    Ok(resp)
}

/// `POST /logout/everywhere` ("Sign out everywhere" on the account page):
/// ends every browser session of the user, this one included, in one
/// statement. OAuth grants and API keys stay: connected apps and
/// Settings > API revoke those.
pub async fn logout_everywhere_post(
    state: web::Data<AppState>,
    signed_in: MaybeSignedIn,
    form: web::Form<LogoutForm>,
) -> Result<HttpResponse, WebError> {
    let signed_in =
        signed_in.with_csrf(&state.csrf, LOGOUT_EVERYWHERE_PURPOSE, &form.csrf_token)?;
    let user_id = signed_in.user.id.clone();
    let ended = state
        .db
        .run(move |conn| Session::delete_all_for_user(conn, &user_id).map_err(WebError::from))
        .await?;
    log::info!(
        "user {} signed out everywhere: {ended} sessions ended",
        signed_in.user.id
    );
    let mut resp = see_other("/login");
    resp.add_cookie(&OurCookie::Session.removal(state.secure_cookies()))
        .map_err(WebError::internal)?;
    Ok(resp)
}
