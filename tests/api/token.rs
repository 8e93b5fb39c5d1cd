//! POST /oauth/token: client authentication and the client_credentials grant
//! (RFC 6749 2.3.1, 3.2, 4.4, 5.1, 5.2), and the JWT it issues (RFC 9068).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Response;
use serde_json::Value;

use crate::helpers::{spawn_app, TestApp};

const SCOPE: &str = "requests:read requests:write";

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

async fn token(app: &TestApp, auth: Option<&str>, form: &[(&str, &str)]) -> Response {
    let mut req = app.client.post(app.url("/oauth/token")).form(form);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

async fn cc_client(app: &TestApp) -> (String, String) {
    let (id, secret) = app
        .create_client(SCOPE, &["client_credentials"], false)
        .await;
    (id, secret.unwrap())
}

async fn assert_oauth_error(resp: Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["pragma"], "no-cache");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    body
}

async fn jwks(app: &TestApp) -> JwkSet {
    app.get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn client_credentials_with_basic_auth_issues_an_rfc9068_jwt() {
    let app = spawn_app().await;
    let (id, secret) = cc_client(&app).await;
    let resp = token(
        &app,
        Some(&basic(&id, &secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["pragma"], "no-cache");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], SCOPE);
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token for client_credentials"
    );

    let jwt = body["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.alg, Algorithm::ES256);
    let set = jwks(&app).await;
    let jwk = set
        .find(header.kid.as_deref().unwrap())
        .expect("kid published");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[&app.settings.issuer]);
    validation.set_audience(&[&app.settings.audience]);
    let claims: Value =
        jsonwebtoken::decode(jwt, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .unwrap()
            .claims;
    assert_eq!(claims["sub"], id.as_str(), "the subject is the client");
    assert_eq!(claims["client_id"], id.as_str());
    assert_eq!(claims["scope"], SCOPE);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 20));
    assert_eq!(claims["grant_id"], format!("cc_{id}"));
}

#[tokio::test]
async fn client_secret_post_is_accepted() {
    let app = spawn_app().await;
    let (id, secret) = cc_client(&app).await;
    let resp = token(
        &app,
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn basic_credentials_are_url_decoded_rfc6749_2_3_1() {
    let app = spawn_app().await;
    let (id, secret) = cc_client(&app).await;
    // Every character percent-encoded, as a client following 2.3.1 may send.
    let encoded: String = secret.bytes().map(|b| format!("%{b:02X}")).collect();
    let resp = token(
        &app,
        Some(&basic(&id, &encoded)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn wrong_secret_or_unknown_client_is_401_invalid_client() {
    let app = spawn_app().await;
    let (id, secret) = cc_client(&app).await;
    for auth in [
        basic(&id, &format!("{secret}x")),
        basic("client_unknown", &secret),
        basic(&id, ""),
    ] {
        let resp = token(&app, Some(&auth), &[("grant_type", "client_credentials")]).await;
        assert!(resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"));
        let body = assert_oauth_error(resp, 401, "invalid_client").await;
        assert!(!body.to_string().contains(&secret), "secret echoed");
    }
    let resp = token(&app, None, &[("grant_type", "client_credentials")]).await;
    assert_oauth_error(resp, 401, "invalid_client").await;
}

#[tokio::test]
async fn two_authentication_methods_are_invalid_request() {
    let app = spawn_app().await;
    let (id, secret) = cc_client(&app).await;
    let resp = token(
        &app,
        Some(&basic(&id, &secret)),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_oauth_error(resp, 400, "invalid_request").await;
}

#[tokio::test]
async fn client_credentials_scope_may_narrow_never_widen() {
    let app = spawn_app().await;
    let (id, secret) = cc_client(&app).await;
    let auth = basic(&id, &secret);
    let resp = token(
        &app,
        Some(&auth),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "requests:read"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["scope"],
        "requests:read"
    );
    for scope in ["requests:read admin", "users:write", "made:up"] {
        let resp = token(
            &app,
            Some(&auth),
            &[("grant_type", "client_credentials"), ("scope", scope)],
        )
        .await;
        assert_oauth_error(resp, 400, "invalid_scope").await;
    }
}

#[tokio::test]
async fn client_credentials_needs_a_confidential_client_registered_for_it() {
    let app = spawn_app().await;
    let (id, secret) = app.create_client(SCOPE, &[], false).await;
    let resp = token(
        &app,
        Some(&basic(&id, &secret.unwrap())),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_oauth_error(resp, 400, "unauthorized_client").await;
    let (public_id, _) = app.create_client(SCOPE, &[], true).await;
    let resp = token(
        &app,
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &public_id),
        ],
    )
    .await;
    assert_oauth_error(resp, 400, "unauthorized_client").await;
}

#[tokio::test]
async fn disabled_client_is_invalid_client() {
    use diesel::prelude::*;
    let app = spawn_app().await;
    let (id, secret) = cc_client(&app).await;
    let db = app.db.clone();
    let cid = id.clone();
    tokio::task::spawn_blocking(move || {
        use dzdesk_auth::db::schema::clients::dsl;
        let mut conn = db.conn().unwrap();
        diesel::update(dsl::clients.find(cid))
            .set(dsl::disabled.eq(true))
            .execute(&mut **conn)
            .unwrap();
    })
    .await
    .unwrap();
    let resp = token(
        &app,
        Some(&basic(&id, &secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_oauth_error(resp, 401, "invalid_client").await;
}

#[tokio::test]
async fn unknown_missing_and_unsupported_grant_types() {
    let app = spawn_app().await;
    let (id, secret) = cc_client(&app).await;
    let auth = basic(&id, &secret);
    for grant in ["password", "implicit", "urn:made:up"] {
        let resp = token(&app, Some(&auth), &[("grant_type", grant)]).await;
        assert_oauth_error(resp, 400, "unsupported_grant_type").await;
    }
    let resp = token(&app, Some(&auth), &[("scope", "requests:read")]).await;
    assert_oauth_error(resp, 400, "invalid_request").await;
}

#[tokio::test]
async fn malformed_token_requests_are_invalid_request_never_500() {
    let app = spawn_app().await;
    let (id, secret) = cc_client(&app).await;
    let auth = basic(&id, &secret);
    let cases: [(&str, &str); 4] = [
        ("application/json", r#"{"grant_type":"client_credentials"}"#),
        (
            "application/x-www-form-urlencoded",
            "grant_type=client_credentials&grant_type=client_credentials",
        ),
        (
            "application/x-www-form-urlencoded",
            "grant_type=client_credentials&scope=%FF%FE",
        ),
        ("text/plain", "grant_type=client_credentials"),
    ];
    for (ct, body) in cases {
        let resp = app
            .client
            .post(app.url("/oauth/token"))
            .header("content-type", ct)
            .header("authorization", &auth)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_oauth_error(resp, 400, "invalid_request").await;
    }
    let huge = format!(
        "grant_type=client_credentials&pad={}",
        "x".repeat(20 * 1024)
    );
    let resp = app
        .client
        .post(app.url("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", &auth)
        .body(huge)
        .send()
        .await
        .unwrap();
    // A body over the 16 KiB limit: 413 (routes::surface), still invalid_request.
    assert_oauth_error(resp, 413, "invalid_request").await;
}

#[tokio::test]
async fn jwks_publishes_public_keys_only() {
    let app = spawn_app().await;
    let resp = app.get("/.well-known/jwks.json").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let keys = body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    for k in keys {
        assert_eq!(k["kty"], "EC");
        assert_eq!(k["alg"], "ES256");
        assert!(k.get("d").is_none(), "private part published: {k}");
    }
}

#[tokio::test]
async fn key_rotation_signs_with_the_new_key_and_keeps_the_old_one_published() {
    let app = spawn_app().await;
    let (id, secret) = cc_client(&app).await;
    let auth = basic(&id, &secret);
    let first: Value = token(&app, Some(&auth), &[("grant_type", "client_credentials")])
        .await
        .json()
        .await
        .unwrap();
    let old_kid = jsonwebtoken::decode_header(first["access_token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();

    let out = crate::cli::run(
        &["keys", "rotate"],
        &[("DATABASE_URL", &app.database_url())],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated: Value = serde_json::from_slice(&out.stdout).unwrap();
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);

    let second: Value = token(&app, Some(&auth), &[("grant_type", "client_credentials")])
        .await
        .json()
        .await
        .unwrap();
    let kid = jsonwebtoken::decode_header(second["access_token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    assert_eq!(kid, new_kid, "the new key signs from now on");
    let set = jwks(&app).await;
    assert!(
        set.find(&old_kid).is_some(),
        "old key still published for its unexpired tokens"
    );
    assert!(set.find(&new_kid).is_some());
}

#[tokio::test]
async fn client_cache_serves_client_credentials_and_still_refuses_a_wrong_secret() {
    let app = crate::helpers::spawn_app_custom(
        |s| {
            s.client_cache_secs = 60;
            s.key_reload_secs = 60;
        },
        |_| {},
    )
    .await;
    let (id, secret) = cc_client(&app).await;
    let form = [("grant_type", "client_credentials")];
    // The first request reads the database and fills the cache; the second
    // is answered from memory.
    for _ in 0..2 {
        let resp = token(&app, Some(&basic(&id, &secret)), &form).await;
        assert_eq!(resp.status(), 200);
    }
    let wrong = format!("{secret}x");
    let resp = token(&app, Some(&basic(&id, &wrong)), &form).await;
    assert_oauth_error(resp, 401, "invalid_client").await;
    let resp = token(&app, Some(&basic(&id, &secret)), &form).await;
    assert_eq!(resp.status(), 200);
}
