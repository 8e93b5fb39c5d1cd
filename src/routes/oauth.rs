//! `/oauth/*` handlers: extract, call the protocol core, translate to the
//! RFC 6749 response shapes.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::Utc;
use serde::Serialize;

use crate::db::models::Client;
use crate::oauth::error::OAuthError;
use crate::oauth::token::{self, FormParams, IssuedTokens};
use crate::state::AppState;

/// Largest token request body.
pub const TOKEN_BODY_LIMIT: usize = 16 * 1024;

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: String,
}

#[derive(Serialize)]
struct TokenBody {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

/// RFC 6749 5.1: "The authorization server MUST include the HTTP
/// Cache-Control response header field with a value of no-store ... as well as
/// the Pragma response header field with a value of no-cache" (on errors too).
fn no_store(resp: &mut HttpResponse) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

impl ResponseError for OAuthError {
    /// RFC 6749 5.2: 400, except `invalid_client`, which is 401.
    fn status_code(&self) -> StatusCode {
        match self {
            OAuthError::InvalidClient(_) => StatusCode::UNAUTHORIZED,
            OAuthError::ServerError(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let OAuthError::ServerError(e) = self {
            log::error!("token endpoint: {e:?}");
        }
        let mut resp = HttpResponse::build(self.status_code()).json(ErrorBody {
            error: self.code(),
            error_description: self.to_string(),
        });
        if matches!(self, OAuthError::InvalidClient(_)) {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"dzdesk-auth\""),
            );
        }
        no_store(&mut resp);
        resp
    }
}

/// `POST /oauth/token` (RFC 6749 3.2).
pub async fn token_post(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    // RFC 6749 3.2: "using the application/x-www-form-urlencoded format".
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Err(OAuthError::InvalidRequest(
            "the body must be application/x-www-form-urlencoded".into(),
        ));
    }
    if body.len() > TOKEN_BODY_LIMIT {
        return Err(OAuthError::InvalidRequest(
            "the request body is too large".into(),
        ));
    }
    let params = FormParams::parse(&body)?;
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}"))
        .map(str::to_owned);
    let grant_type = params
        .get("grant_type")
        .ok_or_else(|| OAuthError::InvalidRequest("grant_type is required".into()))?
        .to_owned();
    if grant_type != "client_credentials" {
        // authorization_code and refresh_token are not served yet; password
        // and implicit never will be (RFC 9700 2.4).
        return Err(OAuthError::UnsupportedGrantType(
            "supported grant types: client_credentials".into(),
        ));
    }
    let auth = token::client_auth(authorization.as_deref(), &params)?;

    let state2 = state.clone();
    let issued: IssuedTokens = state
        .db
        .run(move |conn| {
            let client = Client::find(conn, auth.client_id())?;
            let client = token::authenticate(client, &auth)?;
            let keys = state2.keys.current(conn).map_err(OAuthError::server)?;
            token::client_credentials(&client, &params, &keys, &state2.token_config(), Utc::now())
        })
        .await?;

    let mut resp = HttpResponse::Ok().json(TokenBody {
        access_token: issued.access_token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
        scope: issued.scope.to_string(),
        refresh_token: issued.refresh_token,
    });
    no_store(&mut resp);
    Ok(resp)
}
