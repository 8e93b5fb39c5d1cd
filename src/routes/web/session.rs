//! The browser session on the HTTP side: cookies and the extractor that finds
//! the signed-in user.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use chrono::Utc;
use futures_util::future::LocalBoxFuture;

use crate::auth::csrf::{CsrfBinding, CsrfKey};
use crate::db::models::{Session, User};
use crate::error::WebError;
use crate::state::AppState;
use crate::tokens;

/// The cookies of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OurCookie {
    /// Holds the session secret (`dzsess_...`); the database holds its hash.
    Session,
    /// Random value (`dzpre_...`) of a browser that has not signed in yet;
    /// CSRF tokens of the login form are bound to it.
    PreSession,
    /// Random value (`dzpar_...`) that binds a pushed authorization request
    /// (RFC 9126) to the browser that took its request_uri; the database
    /// holds its hash (`oauth::par`).
    PushedRequest,
}

impl OurCookie {
    /// In production mode (`secure`) the names carry the `__Host-` prefix
    /// (RFC 6265bis 4.1.3.2): a browser takes such a cookie only with
    /// Secure, Path=/ and no Domain, from a secure origin, so neither a
    /// sibling subdomain nor a plain-HTTP page can set or shadow it.
    pub fn name(self, secure: bool) -> &'static str {
        match (self, secure) {
            (OurCookie::Session, false) => "dzdesk_session",
            (OurCookie::Session, true) => "__Host-dzdesk_session",
            (OurCookie::PreSession, false) => "dzdesk_pre",
            (OurCookie::PreSession, true) => "__Host-dzdesk_pre",
            (OurCookie::PushedRequest, false) => "dzdesk_par",
            (OurCookie::PushedRequest, true) => "__Host-dzdesk_par",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            OurCookie::Session => "dzsess_",
            OurCookie::PreSession => "dzpre_",
            OurCookie::PushedRequest => "dzpar_",
        }
    }

    /// A new value for this cookie: its prefix and 256 random bits.
    pub fn fresh(self) -> String {
        tokens::new_secret(self.prefix())
    }

    /// The cookie's value in `req`, if it looks like one of ours.
    pub fn value(self, req: &HttpRequest, secure: bool) -> Option<String> {
        req.cookie(self.name(secure))
            .map(|c| c.value().to_owned())
            .filter(|v| looks_like_secret(v, self.prefix()))
    }

    /// The cookie to set: HttpOnly, SameSite=Lax, path /, no Domain, Secure
    /// in production mode.
    pub fn set(self, value: String, secure: bool) -> Cookie<'static> {
        Cookie::build(self.name(secure), value)
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(secure)
            .finish()
    }

    /// The cookie that deletes this one in the browser.
    pub fn removal(self, secure: bool) -> Cookie<'static> {
        let mut c = self.set(String::new(), secure);
        c.make_removal();
        c
    }
}

/// A plausible secret of ours (prefix and length) before any database work.
pub fn looks_like_secret(value: &str, prefix: &str) -> bool {
    value.starts_with(prefix) && value.len() <= prefix.len() + 64
}

#[derive(Debug)]
pub struct SignedIn {
    pub session_id: String,
    pub user: User,
    /// When this browser signed in (the session's start): OIDC `auth_time`.
    pub signed_in_at: chrono::NaiveDateTime,
}

impl SignedIn {
    /// The user of the session whose cookie holds `secret`, if the session is
    /// live at `now` and its user enabled. Blocking: inside `Database::run`.
    pub fn find(
        conn: &mut crate::db::AnyConnection,
        secret: &str,
        now: chrono::NaiveDateTime,
    ) -> Result<Option<SignedIn>, WebError> {
        let found = Session::find_active(conn, secret, now)?;
        Ok(found.map(|(session, user)| SignedIn::of(session, user)))
    }

    /// [`SignedIn::find`] and, in the same statement, the scopes the user
    /// approved for `client_id` as stored (None: never approved).
    pub fn find_with_consent(
        conn: &mut crate::db::AnyConnection,
        secret: &str,
        now: chrono::NaiveDateTime,
        client_id: &str,
    ) -> Result<Option<(SignedIn, Option<String>)>, WebError> {
        let found = Session::find_active_with_consent(conn, secret, now, client_id)?;
        Ok(found.map(|(session, user, consent)| (SignedIn::of(session, user), consent)))
    }

    fn of(session: Session, user: User) -> SignedIn {
        SignedIn {
            session_id: session.id,
            user,
            signed_in_at: session.created_at,
        }
    }

    /// The session cookie's secret in `req`, for [`SignedIn::find`] in a
    /// handler's own database work (one round trip to the blocking pool,
    /// where [`MaybeSignedIn`] takes its own).
    pub fn cookie(req: &HttpRequest, state: &AppState) -> Option<String> {
        OurCookie::Session.value(req, state.secure_cookies())
    }

    /// Ends this browser session (the row; the caller removes the cookie).
    pub async fn end(&self, state: &AppState) -> Result<(), WebError> {
        let id = self.session_id.clone();
        state
            .db
            .run(move |conn| Session::delete(conn, &id).map_err(WebError::from))
            .await?;
        Ok(())
    }
}

impl MaybeSignedIn {
    /// A form post of a signed-in user: the session, whose CSRF token for
    /// `purpose` the form must carry. Signed out, or a missing or wrong
    /// token: 403 (OWASP CSRF Prevention Cheat Sheet, synchronizer token).
    pub fn with_csrf(
        self,
        csrf: &CsrfKey,
        purpose: &str,
        token: &str,
    ) -> Result<SignedIn, WebError> {
        let signed_in = self.0.ok_or(WebError::Forbidden)?;
        if csrf.verify(CsrfBinding::Session(&signed_in.session_id), purpose, token) {
            Ok(signed_in)
        } else {
            Err(WebError::Forbidden)
        }
    }
}

/// The signed-in user, if the session cookie names a live session of an
/// enabled user.
#[derive(Debug)]
pub struct MaybeSignedIn(pub Option<SignedIn>);

impl FromRequest for MaybeSignedIn {
    type Error = WebError;
    type Future = LocalBoxFuture<'static, Result<Self, WebError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let secure = state.as_ref().is_some_and(|s| s.secure_cookies());
        let secret = OurCookie::Session.value(req, secure);
        Box::pin(async move {
            let Some(secret) = secret else {
                return Ok(MaybeSignedIn(None));
            };
            let state =
                state.ok_or_else(|| WebError::internal(anyhow::anyhow!("AppState missing")))?;
            let now = Utc::now().naive_utc();
            let found = state
                .db
                .run(move |conn| SignedIn::find(conn, &secret, now))
                .await?;
            Ok(MaybeSignedIn(found))
        })
    }
}
