//! GET /.well-known/oauth-authorization-server (RFC 8414).

use serde_json::Value;

use crate::helpers::spawn_app_custom;

#[tokio::test]
async fn metadata_is_built_from_the_issuer_and_every_endpoint_answers() {
    let app = spawn_app_custom(|_| {}, |_| {}).await;
    let resp = app.get("/.well-known/oauth-authorization-server").await;
    assert_eq!(resp.status(), 200);
    let meta: Value = resp.json().await.unwrap();
    let issuer = &app.settings.issuer;
    assert_eq!(meta["issuer"], *issuer);
    assert_eq!(
        meta["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        meta["response_types_supported"],
        serde_json::json!(["code"])
    );
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
    assert!(meta["scopes_supported"]
        .as_array()
        .unwrap()
        .contains(&Value::from("requests:read")));
    for m in [
        "token_endpoint_auth_methods_supported",
        "introspection_endpoint_auth_methods_supported",
        "revocation_endpoint_auth_methods_supported",
    ] {
        assert!(meta[m]
            .as_array()
            .unwrap()
            .contains(&Value::from("client_secret_basic")));
    }
    // Public clients revoke (RFC 7009 2.1); they never introspect.
    let methods = |m: &str| meta[m].as_array().unwrap().clone();
    assert!(methods("revocation_endpoint_auth_methods_supported").contains(&Value::from("none")));
    assert!(
        !methods("introspection_endpoint_auth_methods_supported").contains(&Value::from("none"))
    );

    // Every advertised URL is ours and answers (not 404, not 5xx): the
    // POST endpoints refuse an empty request with an RFC error.
    let urls: Vec<(&str, &str)> = vec![
        ("authorization_endpoint", "GET"),
        ("token_endpoint", "POST"),
        ("introspection_endpoint", "POST"),
        ("revocation_endpoint", "POST"),
        ("registration_endpoint", "POST"),
        ("jwks_uri", "GET"),
        ("service_documentation", "GET"),
    ];
    for (field, method) in urls {
        let url = meta[field].as_str().unwrap_or_else(|| panic!("{field}"));
        let path = url
            .strip_prefix(issuer.as_str())
            .expect("built from the issuer");
        let req = match method {
            "GET" => app.client.get(app.url(path)),
            _ => app.client.post(app.url(path)).form(&[("x", "y")]),
        };
        let status = req.send().await.unwrap().status().as_u16();
        assert!(status != 404 && status < 500, "{field}: {status}");
        if field == "jwks_uri" || field == "service_documentation" {
            assert_eq!(status, 200, "{field}");
        }
    }
}

#[tokio::test]
async fn without_dzdesk_issuer_metadata_and_tokens_name_the_listen_address_and_the_log_says_so() {
    // Only DZDESK_LISTEN changed (0.0.0.0, port 0 here: a free one): the
    // issuer follows it, with localhost for the unspecified address.
    let db = crate::helpers::TestDatabase::new();
    let mut server = crate::https::Server::start(&[
        ("DATABASE_URL", db.url.as_str()),
        ("DZDESK_LISTEN", "0.0.0.0:0"),
    ]);
    let issuer = format!("http://localhost:{}", server.port());
    let logged = server
        .wait_for("issuer ")
        .expect("the issuer is logged at start-up");
    assert!(logged.contains(&format!("issuer {issuer} ")), "{logged}");
    let meta: Value = crate::helpers::http_get(format!(
        "http://127.0.0.1:{}/.well-known/oauth-authorization-server",
        server.port()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(meta["issuer"], issuer.as_str());
    assert_eq!(meta["token_endpoint"], format!("{issuer}/oauth/token"));

    // Tokens name it too: iss, and aud (the audience defaults to the
    // issuer), and the server's own introspection accepts them.
    let created = crate::cli::run(
        &[
            "client",
            "create",
            "--name",
            "Service",
            "--scope",
            "requests:read",
            "--grant-type",
            "client_credentials",
        ],
        &[("DATABASE_URL", db.url.as_str())],
        None,
    );
    assert!(created.status.success());
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    let (id, secret) = (
        created["client_id"].as_str().unwrap(),
        created["client_secret"].as_str().unwrap(),
    );
    let base = format!("http://127.0.0.1:{}", server.port());
    let client = crate::helpers::new_client();
    let tokens: Value = client
        .post(format!("{base}/oauth/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = tokens["access_token"].as_str().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iss"], issuer.as_str());
    assert_eq!(claims["aud"], issuer.as_str());
    let answer: Value = client
        .post(format!("{base}/oauth/introspect"))
        .basic_auth(id, Some(secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["iss"], issuer.as_str(), "{answer}");
    server.stop();
}

#[tokio::test]
async fn an_issuer_with_a_path_has_its_metadata_at_the_path_suffixed_well_known_url() {
    // RFC 8414 3.1: issuer https://host/auth -> /.well-known/oauth-authorization-server/auth.
    let app = crate::helpers::spawn_app_custom(
        |s| s.issuer = "http://127.0.0.1/tenant/auth".into(),
        |_| {},
    )
    .await;
    for path in [
        "/.well-known/oauth-authorization-server/tenant/auth",
        "/.well-known/oauth-authorization-server/tenant/auth/",
    ] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), 200, "{path}");
        let meta: Value = resp.json().await.unwrap();
        assert_eq!(meta["issuer"], "http://127.0.0.1/tenant/auth");
        assert_eq!(
            meta["token_endpoint"],
            "http://127.0.0.1/tenant/auth/oauth/token"
        );
    }
    for path in [
        "/.well-known/oauth-authorization-server/tenant",
        "/.well-known/oauth-authorization-server/other/auth",
    ] {
        assert_eq!(app.get(path).await.status(), 404, "{path}");
    }
    // An issuer without a path has no such URL.
    let plain = crate::helpers::spawn_app().await;
    let resp = plain
        .get("/.well-known/oauth-authorization-server/auth")
        .await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn docs_say_how_to_get_a_client_id_and_an_initial_access_token() {
    let app = crate::helpers::spawn_app().await;
    let resp = app.get("/docs").await;
    assert_eq!(resp.status(), 200);
    let docs = resp.text().await.unwrap();
    let start = docs
        .find(r#"id="getting-started""#)
        .expect("a Getting started part");
    let part = &docs[start
        ..docs[start..]
            .find("<h2>Endpoints")
            .map_or(docs.len(), |e| start + e)];
    for needle in [
        "client_id",
        "dzdesk-auth client create",
        "--public",
        "--cors-origin",
        "initial access token",
        "dzdesk-auth api-key create --email ADMIN-EMAIL --name registration --scope admin --expires-in-days 1",
        "http://127.0.0.1/oauth/register",
        "Walkthrough: from zero to a token",
    ] {
        assert!(part.contains(needle), "/docs lacks {needle:?}");
    }
    // The walkthrough it points to is in the README the suite runs.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains("## Walkthrough: from zero to a token"));
    assert!(readme.contains("<!-- walkthrough:begin -->"));
}
