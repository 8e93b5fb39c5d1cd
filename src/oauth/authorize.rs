//! The authorization endpoint (RFC 6749 4.1.1-4.1.2, RFC 7636, RFC 9207,
//! RFC 9700) on oxide-auth's `AuthorizationFlow`, with primitives backed by
//! the database:
//!
//! - [`DbRegistrar`]: client lookup, exact redirect_uri matching, scope
//!   negotiation (requested ∩ client ∩ what the user's role may grant);
//! - oxide-auth's `Pkce` addon: S256 challenges, required for public clients;
//! - [`ConsentSolicitor`]: sign-in, remembered consent, `prompt`, the consent
//!   form's CSRF check and the decision;
//! - [`DbAuthorizer`]: stores the code (hashed, 60 s, single use).
//!
//! oxide-auth decides the order of the checks and builds the redirects; this
//! layer then fixes what differs from the RFCs: it adds `iss` (RFC 9207 2) to
//! every redirect to the client and renames oxide-auth's `description`
//! parameter to `error_description` (RFC 6749 4.1.2.1).
//!
//! No actix types beyond oxide-auth-actix's request and response carriers;
//! the current time comes in as an argument.

use std::borrow::Cow;

use chrono::{DateTime, Duration, Utc};
use oxide_auth::endpoint::{
    AuthorizationFlow, NormalizedParameter, OAuthError as FlowOAuthError, OwnerConsent,
    OwnerSolicitor, QueryParameter, Solicitation, WebResponse,
};
use oxide_auth::frontends::simple::endpoint::{Error as FlowError, Generic, Vacant};
use oxide_auth::frontends::simple::extensions::{AddonList, Extended, Pkce};
use oxide_auth::primitives::authorizer::Authorizer;
use oxide_auth::primitives::grant::Grant;
use oxide_auth::primitives::registrar::{
    BoundClient, ClientUrl, PreGrant, RegisteredUrl, Registrar, RegistrarError,
};
use oxide_auth::primitives::scope::Scope as FlowScope;
use oxide_auth_actix::{OAuthRequest, OAuthResponse};
use sha2::{Digest, Sha256};
use url::Url;

use crate::auth::csrf::{CsrfBinding, CsrfKey};
use crate::credentials::prefixes;
use crate::db::models::{
    AuthorizationCodeRow, Client, ConsentRow, PushedRequestRow, RedirectProblem, User,
};
use crate::db::AnyConnection;
use crate::domain::{Role, Scope, ScopeSet};
use crate::oauth::client_cache::ClientCache;
use crate::oauth::params::{
    parameter_problem, parse_max_age, Prompt, CODE_FLOW_ONLY, PROTOCOL_PARAMS,
};
use crate::tokens;

/// Lifetime of an authorization code. RFC 6749 4.1.2: "A maximum
/// authorization code lifetime of 10 minutes is RECOMMENDED"; ours is shorter.
pub const CODE_TTL_SECS: i64 = 60;

/// After a sign-in forced by `prompt=login` or an exceeded `max_age`, the
/// browser comes back to the request with `max_age` set to this many
/// seconds instead: the sign-in it just did passes, and the request cannot
/// send it to sign in again and again.
pub const FRESH_SIGN_IN_SECS: i64 = 600;

/// GET shows or skips the consent page; POST carries the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// The browser's session, if signed in.
pub struct SignedInUser<'a> {
    pub session_id: &'a str,
    pub user: &'a User,
    /// When the browser signed in: OIDC `auth_time`.
    pub signed_in_at: chrono::NaiveDateTime,
    /// The user's remembered consent when the handler read it with the
    /// session: for the client `.0`, the stored scopes `.1` (None: never
    /// approved). For any other client it is read here.
    pub consent_read: Option<(&'a str, Option<&'a str>)>,
}

/// Everything the endpoint needs besides the database.
pub struct AuthorizeInput<'a> {
    pub request: OAuthRequest,
    /// The raw query string: the login page returns to it and the consent
    /// form posts back to it.
    pub raw_query: &'a str,
    pub method: Method,
    pub signed_in: Option<SignedInUser<'a>>,
    pub csrf: &'a CsrfKey,
    pub issuer: &'a str,
    /// The signing keys: an `id_token_hint` is checked against them.
    pub keys: &'a crate::credentials::jwt::KeyRing,
    /// The browser's pushed-request cookie (RFC 9126, see `oauth::par`):
    /// the handler makes one when the query carries a `request_uri`.
    pub par_browser: Option<&'a str>,
    /// The client cache, while a change to a client reaches it at once
    /// (the revocation listener is live: PostgreSQL); None: the client is
    /// read from the database (SQLite, whose CLI changes no listener
    /// carries, or the listener is down). A client disabled or changed must
    /// stop getting codes at once (RFC 6749 10.6: a removed redirect URI).
    pub clients: Option<&'a ClientCache>,
    pub now: DateTime<Utc>,
}

/// What the consent page shows.
#[derive(Debug)]
pub struct ConsentPrompt {
    pub client_name: String,
    pub email: String,
    pub scopes: Vec<Scope>,
    /// Requested scopes the user's role cannot grant.
    pub left_out: Vec<Scope>,
    pub csrf_token: String,
    /// The query string the form posts back to.
    pub query: String,
}

/// The endpoint's answer, for the handler to translate.
#[derive(Debug)]
pub enum AuthorizeOutcome {
    /// Redirect to the client (success or error), `iss` included.
    Redirect(String),
    /// Signed out, or signed in too long ago (`prompt=login`, `max_age`):
    /// sign in, then come back to `next`. `reauth`: the browser is signed
    /// in, and must sign in again all the same.
    Login {
        next: String,
        reauth: bool,
    },
    Consent(ConsentPrompt),
    /// Unknown client, missing or unregistered redirect_uri, unreadable
    /// query, bad consent form: an HTML page, never a redirect (RFC 6749
    /// 4.1.2.1: "MUST NOT automatically redirect the user-agent to the
    /// invalid redirection URI").
    BadRequest(&'static str),
    /// The consent form's CSRF token does not match.
    Forbidden,
}

const BAD_CLIENT: &str = "This application is not registered, or its redirect URI is wrong.";

/// A query's non-empty parameters, in order. RFC 6749 3.1: "Parameters
/// sent without a value MUST be treated as if they were omitted".
struct QueryPairs(Vec<(String, String)>);

impl QueryPairs {
    fn parse(query: &str) -> Self {
        Self(
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .filter(|(_, v)| !v.is_empty())
                .collect(),
        )
    }

    /// How many times `key` appears.
    fn count(&self, key: &str) -> usize {
        self.0.iter().filter(|(k, _)| k == key).count()
    }

    /// The first value of `key`.
    fn value(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
}

/// Why a pushed request's transaction did not commit.
enum PushedTx {
    Failed(anyhow::Error),
    /// The page to show instead (the request_uri cannot be used: unknown,
    /// replayed, another browser's, or ended by another tab first).
    Refused(&'static str),
}

impl From<diesel::result::Error> for PushedTx {
    fn from(e: diesel::result::Error) -> Self {
        PushedTx::Failed(e.into())
    }
}

/// Runs one authorization request. Blocking: call on the blocking pool.
pub fn authorize(
    conn: &mut AnyConnection,
    input: AuthorizeInput<'_>,
) -> anyhow::Result<AuthorizeOutcome> {
    let sent = QueryPairs::parse(input.raw_query);
    // RFC 9126 4: `client_id` + a `request_uri` from our PAR endpoint; any
    // other request_uri (a request object by reference) is refused below.
    let pushed_uri = sent
        .value("request_uri")
        .filter(|u| crate::oauth::par::is_pushed_reference(u));
    let Some(request_uri) = pushed_uri else {
        return run(conn, input, sent, None).map(|(outcome, _)| outcome);
    };
    if sent.count("client_id") != 1 || sent.count("request_uri") != 1 {
        return Ok(AuthorizeOutcome::BadRequest(BAD_CLIENT));
    }
    let (Some(client_id), Some(browser)) = (sent.value("client_id"), input.par_browser) else {
        return Ok(AuthorizeOutcome::BadRequest(
            crate::oauth::par::INVALID_REQUEST_URI,
        ));
    };
    // RFC 9126 4 and 7.3: the pushed request is taken, the code issued and
    // the request ended in one transaction: of two tabs finishing the same
    // request one gets a code, and an answer that is no step forward (an
    // error of ours, a page saying the client is gone) leaves it untaken.
    let now = input.now;
    let result = crate::db::write_transaction(conn, |conn| {
        let resolved = crate::oauth::par::resolve(conn, &client_id, &request_uri, browser, now)?
            .map_err(PushedTx::Refused)?;
        let pushed = QueryPairs::parse(&resolved.params);
        let (outcome, reauth) =
            run(conn, input, pushed, Some(&resolved)).map_err(PushedTx::Failed)?;
        match outcome {
            // Another tab of this browser ended it first.
            AuthorizeOutcome::Redirect(_)
                if !PushedRequestRow::finish(conn, &resolved.id, &resolved.browser_hash)? =>
            {
                return Err(PushedTx::Refused(crate::oauth::par::INVALID_REQUEST_URI));
            }
            AuthorizeOutcome::BadRequest(text) => return Err(PushedTx::Refused(text)),
            _ => {}
        }
        if reauth {
            PushedRequestRow::mark_reauth(
                conn,
                &resolved.id,
                &resolved.browser_hash,
                now.naive_utc(),
            )?;
        }
        Ok(outcome)
    });
    match result {
        Ok(outcome) => Ok(outcome),
        Err(PushedTx::Refused(text)) => Ok(AuthorizeOutcome::BadRequest(text)),
        Err(PushedTx::Failed(e)) => Err(e),
    }
}

/// One authorization request with the parameters of `query` (the browser's
/// own, or those pushed for its `request_uri`). Returns the outcome and,
/// for a pushed request, whether it sends the browser to sign in again
/// (to be recorded with it: `reauth_after`).
fn run(
    conn: &mut AnyConnection,
    mut input: AuthorizeInput<'_>,
    query: QueryPairs,
    pushed: Option<&crate::oauth::par::Resolved>,
) -> anyhow::Result<(AuthorizeOutcome, bool)> {
    // RFC 6749 3.1: parameters "MUST NOT be included more than once".
    // oxide-auth treats a repeated parameter as absent (a repeated
    // code_challenge would silently drop PKCE), so repeats are refused here,
    // and the request that reaches oxide-auth carries only the non-empty
    // values.
    let count = |key: &str| query.count(key);
    let param = |key: &str| query.value(key);
    let done = |outcome| Ok((outcome, false));
    if count("client_id") != 1 || count("redirect_uri") > 1 {
        return done(AuthorizeOutcome::BadRequest(BAD_CLIENT));
    }
    let client = match param("client_id") {
        Some(id) => match input.clients {
            Some(cache) => cache.find(conn, &id)?,
            None => Client::find(conn, &id)?.map(std::sync::Arc::new),
        },
        None => None,
    };
    let Some(client) = client.filter(|c| !c.disabled) else {
        return done(AuthorizeOutcome::BadRequest(BAD_CLIENT));
    };
    // RFC 6749 3.1.2.3: optional for a client with exactly one registered
    // URI, which it then means; required otherwise. The same check as
    // DbRegistrar::bound_redirect: nothing below redirects anywhere else.
    let given = param("redirect_uri");
    let redirect_uri =
        match client.authorization_redirect(given.as_deref()) {
            Ok(uri) => uri,
            Err(RedirectProblem::Missing) => return done(AuthorizeOutcome::BadRequest(
                "redirect_uri is required: this application registered more than one redirect URI.",
            )),
            Err(RedirectProblem::Unregistered) => {
                return done(AuthorizeOutcome::BadRequest(BAD_CLIENT))
            }
        };
    let Ok(redirect) = Url::parse(&redirect_uri) else {
        return done(AuthorizeOutcome::BadRequest(BAD_CLIENT));
    };
    let state = (count("state") == 1).then(|| param("state")).flatten();
    let repeated = PROTOCOL_PARAMS.iter().find(|k| count(k) > 1);
    let problem = match (repeated, count("response_type")) {
        (Some(key), _) => Some(("invalid_request", format!("parameter '{key}' is repeated"))),
        (None, 0) => Some(("invalid_request", "response_type is required".to_owned())),
        // RFC 9126 5: "the authorization server MUST reject authorization
        // requests from this client that are not made using PAR".
        _ if client.require_par && pushed.is_none() => Some((
            "invalid_request",
            "this client must push its authorization requests first (POST /oauth/par, RFC 9126)"
                .to_owned(),
        )),
        _ => parameter_problem(&client, &param),
    };
    if let Some((error, description)) = problem {
        let url = error_redirect(redirect, error, &description, state.as_deref());
        return done(AuthorizeOutcome::Redirect(client_redirect(
            url.as_str(),
            &redirect_uri,
            input.issuer,
        )?));
    }
    let mut normalized: NormalizedParameter = query.0.iter().cloned().collect();
    if given.is_none() {
        // oxide-auth binds the request to the URI it redirects to.
        normalized.insert_or_poison(
            Cow::Borrowed("redirect_uri"),
            Cow::Owned(redirect_uri.clone()),
        );
    }
    if let Some(q) = input.request.query_mut() {
        *q = normalized.clone();
    }
    let remembered = match &input.signed_in {
        // A pushed request runs in its transaction: read the consent there
        // (SQLite serialises it with a disconnect of the app).
        Some(s) => match s.consent_read {
            Some((read_for, stored)) if read_for == client.id && pushed.is_none() => {
                stored.map(ConsentRow::parse_scopes)
            }
            _ => ConsentRow::find(conn, &s.user.id, &client.id)?.map(|c| c.scopes()),
        },
        None => None,
    };
    let requested = match param("scope") {
        Some(raw) => ScopeSet::parse(&raw).ok(),
        None => Some(client.scopes()),
    };

    let registrar = DbRegistrar {
        client: &client,
        role: input.signed_in.as_ref().map(|s| s.user.role()),
    };
    let mut authorizer = DbAuthorizer {
        conn,
        // Empty when the request had none: the token request then needs none
        // (RFC 6749 4.1.3).
        redirect_uri: given.clone().unwrap_or_default(),
        now: input.now,
        issued: false,
        nonce: param("nonce"),
        auth_time: input.signed_in.as_ref().map(|s| s.signed_in_at),
        sid: input
            .signed_in
            .as_ref()
            .map(|s| crate::oauth::oidc::sid_of(s.session_id)),
    };
    let mut solicitor = ConsentSolicitor {
        client: &client,
        signed_in: input.signed_in.as_ref(),
        remembered,
        requested,
        method: input.method,
        csrf: input.csrf,
        binding: request_binding(&normalized),
        raw_query: input.raw_query,
        pushed: pushed.is_some(),
        reauth_after: pushed.and_then(|p| p.reauth_after),
        reauth: false,
        interaction: None,
        approved: None,
        now: input.now,
        // Some(None): a hint that is not an ID token of ours for this client.
        hint: param("id_token_hint").map(|token| {
            input
                .keys
                .verify_id_token_hint(&token, input.issuer, &client.id)
                .ok()
        }),
    };
    // RFC 7636 4.4.1 / RFC 9700 2.1.1: public clients must use PKCE; a
    // confidential client may be flagged to require it. S256 only: the addon
    // refuses `plain` unless told otherwise.
    let mut addons = AddonList::new();
    addons.push_code(if client.is_public() || client.require_pkce {
        Pkce::required()
    } else {
        Pkce::optional()
    });
    let endpoint = Extended::extend_with(
        Generic {
            registrar: &registrar,
            authorizer: &mut authorizer,
            issuer: Vacant,
            solicitor: &mut solicitor,
            scopes: Vacant,
            response: Vacant,
        },
        addons,
    );
    let result = AuthorizationFlow::prepare(endpoint)
        .map_err(|e| anyhow::anyhow!("authorization flow: {e:?}"))?
        .execute(input.request);

    if let Some(interaction) = solicitor.interaction.take() {
        return Ok((interaction, solicitor.reauth));
    }
    let approved = solicitor.approved.take();
    let issued = authorizer.issued;
    let response = match result {
        Ok(response) => response,
        Err(FlowError::OAuth(FlowOAuthError::DenySilently)) | Err(FlowError::Web(_)) => {
            return done(AuthorizeOutcome::BadRequest(BAD_CLIENT))
        }
        Err(e) => anyhow::bail!("authorization flow: {e:?}"),
    };
    if let (true, Some(scopes), Some(signed_in)) = (issued, approved, &input.signed_in) {
        ConsentRow::remember(
            &mut *authorizer.conn,
            &signed_in.user.id,
            &client.id,
            &scopes,
            input.now.naive_utc(),
        )?;
    }
    let location = response
        .get_headers()
        .get(actix_web::http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("authorization flow answered without a redirect"))?;
    done(AuthorizeOutcome::Redirect(client_redirect(
        &location,
        &redirect_uri,
        input.issuer,
    )?))
}

/// The `error_description` of an error oxide-auth redirected without one.
fn default_description(error: &str) -> &'static str {
    match error {
        "invalid_scope" => "the requested scope is unknown, not registered for this client, or not one the signed-in user may grant",
        "access_denied" => "the user or the server denied the request",
        "unsupported_response_type" => CODE_FLOW_ONLY,
        "unauthorized_client" => "this client may not use the authorization code flow",
        "login_required" => "prompt=none, and no user is signed in",
        "consent_required" => "prompt=none, and the user has not approved these scopes for this client",
        "server_error" => "the server could not complete the request",
        _ => "the authorization request is invalid",
    }
}

/// Adds `iss` (RFC 9207 2: "the authorization server MUST include the iss
/// parameter" in authorization responses, errors included) and renames
/// oxide-auth's `description` to RFC 6749 4.1.2.1's `error_description`.
/// Only the parameters appended after the registered URI's own query are
/// touched.
fn client_redirect(location: &str, redirect_uri: &str, issuer: &str) -> anyhow::Result<String> {
    // oxide-auth (and `error_redirect`) rebuilt the URL with `url`, which
    // re-encodes the client's own query; RFC 6749 3.1.2 says it "MUST be
    // retained". Keep the registered URI's text and re-append only what was
    // added after its own parameters.
    let own = Url::parse(redirect_uri)?;
    let own_count = own.query_pairs().count();
    let mut added: Vec<(String, String)> = Url::parse(location)?
        .query_pairs()
        .skip(own_count)
        .map(|(k, v)| {
            let k = if k == "description" {
                "error_description".to_owned()
            } else {
                k.into_owned()
            };
            (k, v.into_owned())
        })
        .collect();
    // RFC 6749 4.1.2.1: every error says why; the log says so too (debug:
    // a client's mistake is no event of ours).
    let value = |key: &str| added.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    if let Some(error) = value("error") {
        let description = match value("error_description") {
            Some(d) => d,
            None => {
                let d = default_description(&error).to_owned();
                added.push(("error_description".to_owned(), d.clone()));
                d
            }
        };
        log::debug!("authorization request refused: {error}: {description}");
    }
    let appended = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(added)
        .append_pair("iss", issuer)
        .finish();
    let separator = match own.query() {
        Some(q) if !q.is_empty() => "&",
        Some(_) => "",
        None => "?",
    };
    Ok(format!("{redirect_uri}{separator}{appended}"))
}

/// Appends an error to the validated redirect URI (RFC 6749 4.1.2.1).
fn error_redirect(mut url: Url, error: &str, description: &str, state: Option<&str>) -> Url {
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("error", error);
        q.append_pair("error_description", description);
        if let Some(state) = state {
            q.append_pair("state", state);
        }
    }
    url
}

/// The parameters that define an authorization request, hashed: the consent
/// form's CSRF token is bound to them, so client, redirect_uri, scope, state
/// and challenge cannot be swapped between showing the page and approving.
fn request_binding(query: &dyn QueryParameter) -> String {
    let mut hash = Sha256::new();
    for key in PROTOCOL_PARAMS {
        let value = query.unique_value(key).unwrap_or(Cow::Borrowed(""));
        hash.update((key.len() as u64).to_be_bytes());
        hash.update(key.as_bytes());
        hash.update((value.len() as u64).to_be_bytes());
        hash.update(value.as_bytes());
    }
    hex::encode(hash.finalize())
}

/// The consent form's CSRF purpose: the request and the scopes the page
/// shows, so a change of the user's role or the client's registration between
/// showing and approving invalidates the form.
fn consent_purpose(binding: &str, granted: &ScopeSet) -> String {
    format!("consent:{binding}:{granted}")
}

/// Client lookup and parameter negotiation for one request.
struct DbRegistrar<'a> {
    client: &'a Client,
    /// The signed-in user's role; unknown before sign-in.
    role: Option<Role>,
}

impl Registrar for DbRegistrar<'_> {
    fn bound_redirect<'b>(&self, bound: ClientUrl<'b>) -> Result<BoundClient<'b>, RegistrarError> {
        if bound.client_id != self.client.id {
            return Err(RegistrarError::Unspecified);
        }
        // RFC 6749 3.1.2.3 / RFC 9700 4.1.3: the redirect_uri is required
        // and compared by exact string match with a registered one; only a
        // public client's loopback URI may differ in port (RFC 8252 7.3).
        let requested = bound.redirect_uri.ok_or(RegistrarError::Unspecified)?;
        if self.client.match_redirect_uri(requested.as_str()).is_none() {
            return Err(RegistrarError::Unspecified);
        }
        Ok(BoundClient {
            client_id: bound.client_id,
            redirect_uri: Cow::Owned(RegisteredUrl::Exact(requested.into_owned())),
        })
    }

    /// RFC 6749 3.3: scopes outside the client's registration are
    /// `invalid_scope`; absent means the client's registered scopes. Then the
    /// user's role filters (an agent can never grant `admin`); nothing left is
    /// `invalid_scope` too.
    fn negotiate(
        &self,
        bound: BoundClient,
        scope: Option<FlowScope>,
    ) -> Result<PreGrant, RegistrarError> {
        let requested = self
            .client
            .requestable_scopes(scope.map(|s| s.to_string()).as_deref())
            .ok_or(RegistrarError::Unspecified)?;
        let granted = match self.role {
            Some(role) => requested.split_by_role(role).0,
            None => requested,
        };
        if granted.is_empty() {
            return Err(RegistrarError::Unspecified);
        }
        let scope = granted
            .to_string()
            .parse()
            .map_err(|_| RegistrarError::PrimitiveError)?;
        Ok(PreGrant {
            client_id: bound.client_id.into_owned(),
            redirect_uri: bound.redirect_uri.into_owned(),
            scope,
        })
    }

    /// Client authentication belongs to the token endpoint
    /// (`oauth::token::authenticate`); the authorization endpoint never asks.
    fn check(&self, _client_id: &str, _passphrase: Option<&[u8]>) -> Result<(), RegistrarError> {
        Err(RegistrarError::Unspecified)
    }
}

/// Stores authorization codes.
struct DbAuthorizer<'a> {
    conn: &'a mut AnyConnection,
    /// The redirect_uri exactly as the request sent it (RFC 6749 4.1.3
    /// compares the token request's with it).
    redirect_uri: String,
    now: DateTime<Utc>,
    issued: bool,
    /// OpenID Connect: the request's `nonce`, and the sign-in behind it.
    nonce: Option<String>,
    auth_time: Option<chrono::NaiveDateTime>,
    sid: Option<String>,
}

impl Authorizer for DbAuthorizer<'_> {
    /// RFC 6749 10.10: codes are 256 bits from the CSPRNG; only their SHA-256
    /// is stored. Bound to client, redirect_uri, user, scope and challenge;
    /// expires after [`CODE_TTL_SECS`] (oxide-auth's own 10 minutes are
    /// ignored).
    fn authorize(&mut self, mut grant: Grant) -> Result<String, ()> {
        let challenge = match grant.extensions.remove(&Pkce::optional()) {
            // oxide-auth encodes an S256 challenge as `<challenge>S`.
            Some(value) => match value.into_private_value() {
                Ok(Some(encoded)) => Some(encoded.strip_suffix('S').ok_or(())?.to_owned()),
                _ => return Err(()),
            },
            None => None,
        };
        let code = tokens::new_secret(prefixes::AUTHORIZATION_CODE);
        let now = self.now.naive_utc();
        let row = AuthorizationCodeRow {
            id: tokens::hash_secret(&code),
            client_id: grant.client_id,
            user_id: grant.owner_id,
            redirect_uri: self.redirect_uri.clone(),
            scopes: grant.scope.to_string(),
            code_challenge_method: challenge.as_ref().map(|_| "S256".to_owned()),
            code_challenge: challenge,
            created_at: now,
            expires_at: now + Duration::seconds(CODE_TTL_SECS),
            used_at: None,
            grant_id: None,
            nonce: self.nonce.clone(),
            auth_time: self.auth_time,
            sid: self.sid.clone(),
        };
        row.insert(self.conn).map_err(|e| {
            log::error!("storing an authorization code: {e}");
        })?;
        self.issued = true;
        Ok(code)
    }

    /// Codes are redeemed by `oauth::code::redeem`, not through oxide-auth's
    /// access-token flow: that flow answers `invalid_request` where RFC 6749
    /// 5.2 requires `invalid_grant`, and cannot revoke a grant on replay.
    fn extract(&mut self, _code: &str) -> Result<Option<Grant>, ()> {
        Ok(None)
    }
}

/// The authorization request's query to come back to after a forced
/// sign-in: the same, without `login` in `prompt`, and with `max_age` at
/// [`FRESH_SIGN_IN_SECS`] (see there).
fn after_sign_in(raw_query: &str) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(raw_query.as_bytes()) {
        match k.as_ref() {
            "max_age" => {}
            "prompt" => {
                let rest: Vec<&str> = v
                    .split(' ')
                    .filter(|p| *p != "login" && !p.is_empty())
                    .collect();
                if !rest.is_empty() {
                    out.append_pair("prompt", &rest.join(" "));
                }
            }
            _ => {
                out.append_pair(&k, &v);
            }
        }
    }
    out.append_pair("max_age", &FRESH_SIGN_IN_SECS.to_string());
    out.finish()
}

/// Sign-in, remembered consent and the consent decision.
struct ConsentSolicitor<'a> {
    client: &'a Client,
    signed_in: Option<&'a SignedInUser<'a>>,
    remembered: Option<ScopeSet>,
    /// The scopes asked for (None when unparseable: the registrar refuses).
    requested: Option<ScopeSet>,
    method: Method,
    csrf: &'a CsrfKey,
    binding: String,
    /// The browser's query: sign-in and the consent form come back to it.
    raw_query: &'a str,
    /// The request was pushed (RFC 9126).
    pushed: bool,
    /// A pushed request that sent its browser to sign in again: a sign-in
    /// at or after this time satisfies its prompt=login and max_age.
    reauth_after: Option<chrono::NaiveDateTime>,
    /// Set when a pushed request sends its browser to sign in again.
    reauth: bool,
    /// Set when the answer is a page of ours rather than a redirect.
    interaction: Option<AuthorizeOutcome>,
    /// Set on approval: the scopes to remember.
    approved: Option<ScopeSet>,
    now: DateTime<Utc>,
    /// `id_token_hint`: the user it names (None inside: not a valid hint).
    hint: Option<Option<String>>,
}

impl ConsentSolicitor<'_> {
    fn page(&mut self, outcome: AuthorizeOutcome) -> OwnerConsent<OAuthResponse> {
        self.interaction = Some(outcome);
        OwnerConsent::InProgress(OAuthResponse::default())
    }

    /// An error redirect to the redirect URI the registrar validated.
    fn fail(
        &mut self,
        solicitation: &Solicitation,
        error: &str,
        description: &str,
    ) -> OwnerConsent<OAuthResponse> {
        let url = solicitation.pre_grant().redirect_uri.to_url();
        let mut response = OAuthResponse::default();
        match response.redirect(error_redirect(
            url,
            error,
            description,
            solicitation.state(),
        )) {
            Ok(()) => OwnerConsent::InProgress(response),
            Err(e) => OwnerConsent::Error(e),
        }
    }
}

impl OwnerSolicitor<OAuthRequest> for ConsentSolicitor<'_> {
    fn check_consent(
        &mut self,
        request: &mut OAuthRequest,
        solicitation: Solicitation,
    ) -> OwnerConsent<OAuthResponse> {
        let query = OAuthRequest::query(request).cloned().unwrap_or_default();
        // Checked by `parameter_problem` before oxide-auth ran.
        let prompt = Prompt::parse(query.unique_value("prompt").as_deref()).unwrap_or_default();
        let max_age = parse_max_age(query.unique_value("max_age").as_deref()).unwrap_or_default();

        // OIDC Core 3.1.2.1 id_token_hint: an access token, another
        // client's ID token or a forged one is no hint.
        if self.hint == Some(None) {
            return self.fail(
                &solicitation,
                "invalid_request",
                "id_token_hint is not an ID token this server issued to this client",
            );
        }
        // A sign-in forced by prompt=login or max_age comes back without
        // them (after_sign_in); any other comes back to the same request.
        // A pushed request comes back by its request_uri, its parameters
        // unchanged: the forced sign-in is recorded with it instead
        // (`reauth_after`), and one at or after that time satisfies it.
        let forced = prompt.login || max_age.is_some();
        let next = if forced && !self.pushed {
            format!("/oauth/authorize?{}", after_sign_in(self.raw_query))
        } else {
            format!("/oauth/authorize?{}", self.raw_query)
        };
        let Some(signed_in) = self.signed_in else {
            if prompt.none {
                // OIDC Core 3.1.2.6: interaction needed with prompt=none.
                return self.fail(&solicitation, "login_required", "the user is not signed in");
            }
            self.reauth = forced && self.pushed;
            return self.page(AuthorizeOutcome::Login {
                next,
                reauth: false,
            });
        };
        // OIDC Core 3.1.2.1: the hint names another user than the one
        // signed in: "it SHOULD return an error, such as login_required",
        // whether or not this user has consented.
        if let Some(Some(sub)) = &self.hint {
            if *sub != signed_in.user.id {
                return self.fail(
                    &solicitation,
                    "login_required",
                    "the signed-in user is not the one id_token_hint names",
                );
            }
        }
        // OIDC Core 3.1.2.1: prompt=login "SHOULD prompt the End-User for
        // reauthentication"; max_age: "If the elapsed time is greater than
        // this value, the OP MUST attempt to actively re-authenticate".
        let age = (self.now.naive_utc() - signed_in.signed_in_at).num_seconds();
        let signed_in_since = self
            .reauth_after
            .is_some_and(|t| signed_in.signed_in_at >= t);
        if !signed_in_since && (prompt.login || max_age.is_some_and(|m| age > m)) {
            if prompt.none {
                return self.fail(
                    &solicitation,
                    "login_required",
                    "the sign-in is older than max_age",
                );
            }
            self.reauth = self.pushed;
            return self.page(AuthorizeOutcome::Login { next, reauth: true });
        }

        let granted =
            ScopeSet::parse(&solicitation.pre_grant().scope.to_string()).unwrap_or_default();
        let purpose = consent_purpose(&self.binding, &granted);
        let binding = CsrfBinding::Session(signed_in.session_id);

        if self.method == Method::Post {
            let body = OAuthRequest::body(request).cloned().unwrap_or_default();
            let token = body.unique_value("csrf_token").unwrap_or_default();
            if !self.csrf.verify(binding, &purpose, &token) {
                return self.page(AuthorizeOutcome::Forbidden);
            }
            return match body.unique_value("decision").as_deref() {
                Some("approve") => {
                    self.approved = Some(granted);
                    OwnerConsent::Authorized(signed_in.user.id.clone())
                }
                // RFC 6749 4.1.2.1 access_denied.
                Some("deny") => OwnerConsent::Denied,
                _ => self.page(AuthorizeOutcome::BadRequest(
                    "The consent form was incomplete.",
                )),
            };
        }

        let already = self.remembered.as_ref().is_some_and(|r| r.covers(&granted));
        if already && !prompt.consent {
            return OwnerConsent::Authorized(signed_in.user.id.clone());
        }
        if prompt.none {
            return self.fail(
                &solicitation,
                "consent_required",
                "the user has not approved this request",
            );
        }
        let left_out = self
            .requested
            .as_ref()
            .map(|r| r.iter().filter(|s| !granted.contains(*s)).collect())
            .unwrap_or_default();
        let prompt = ConsentPrompt {
            client_name: self.client.name.clone(),
            email: signed_in.user.email.clone(),
            scopes: granted.iter().collect(),
            left_out,
            csrf_token: self.csrf.token(binding, &purpose),
            query: self.raw_query.to_owned(),
        };
        self.page(AuthorizeOutcome::Consent(prompt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iss_is_added_and_description_renamed_after_the_clients_own_query() {
        let out = client_redirect(
            "https://app.example/cb?description=mine&error=invalid_scope&description=bad&state=s",
            "https://app.example/cb?description=mine",
            "https://auth.example",
        )
        .unwrap();
        assert_eq!(
            out,
            "https://app.example/cb?description=mine&error=invalid_scope&error_description=bad&state=s&iss=https%3A%2F%2Fauth.example"
        );
    }
}
