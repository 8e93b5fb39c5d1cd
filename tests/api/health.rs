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

/// Pooled connections are tested at checkout at most once per
/// `CHECK_EVERY` (`db::CHECK_EVERY`): connections PostgreSQL closed under
/// the pool may be handed out until then, each answered 503 (never a 500 or
/// a hang); after it, every checkout tests its connection and r2d2 opens a
/// new one in place of each dead one.
#[tokio::test]
async fn pooled_connections_the_server_closed_are_replaced_within_check_every() {
    use dzdesk_auth::db::{Backend, CHECK_EVERY};
    let app = spawn_app().await;
    if app.db.backend() != Backend::Postgres {
        eprintln!("(PostgreSQL only: SQLite connections are files, nothing closes them)");
        return;
    }
    let ready = |app: &crate::helpers::TestApp| {
        let (client, url) = (app.client.clone(), format!("{}/readyz", app.address));
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    };
    // Several connections in the pool, all of them just used.
    let statuses = futures_util::future::join_all((0..8).map(|_| ready(&app))).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    // The server closes every connection of the service (as a restart or
    // an idle timeout would), from a connection of the test's own.
    let closed = crate::helpers::close_server_connections(&app.settings.database_url).await;
    assert!(closed >= 1, "no connection of the service was closed");
    // Within CHECK_EVERY: 200 (a connection tested or opened anew) or 503
    // (a closed one, not tested yet), nothing else.
    for _ in 0..8 {
        let status = ready(&app).await;
        assert!(
            status == 200 || status == 503,
            "{status} after the server closed connections"
        );
    }
    tokio::time::sleep(CHECK_EVERY + std::time::Duration::from_millis(200)).await;
    // After it: every checkout tests first, so no closed connection is
    // handed out any more.
    for _ in 0..20 {
        assert_eq!(ready(&app).await, 200);
    }
    let statuses = futures_util::future::join_all((0..8).map(|_| ready(&app))).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
}
