use dzdesk_auth::credentials::jwt::{generate_key, KeyRing};
use dzdesk_auth::db::{Database, DatabaseUrl};
use dzdesk_auth::startup::Application;
use dzdesk_auth::state::ServerKeys;

use crate::helpers::{spawn_app, test_settings};

#[tokio::test]
async fn healthz_and_readyz_answer_200_with_the_database_up() {
    let app = spawn_app().await;
    let resp = app.get("/healthz").await;
    assert_eq!(resp.status(), 200);
    let resp = app.get("/readyz").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );
}

#[tokio::test]
async fn readyz_is_503_when_the_database_is_down() {
    // A PostgreSQL URL on a port where nothing listens: the service still
    // starts (lazy pool), stays live, and says it is not ready.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("postgres://postgres@127.0.0.1:{port}/dzdesk");
    let settings = test_settings(&url);
    let db = Database::connect_lazy(&DatabaseUrl::parse(&url).unwrap(), 2);
    let now = chrono::Utc::now().naive_utc();
    let ring = KeyRing::from_rows(&[generate_key(now).unwrap()]).unwrap();
    let keys = ServerKeys {
        csrf: [1; 32],
        signing: std::sync::Arc::new(ring),
    };
    let app = Application::build_with(settings, db, keys, |_| {})
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());

    let client = crate::helpers::client_builder().build().unwrap();
    let live = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["status"],
        "unavailable"
    );
    handle.stop(false).await;
}
