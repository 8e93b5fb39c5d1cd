//! The PostgreSQL listener that keeps the instance's revocation view live
//! (see `credentials::revocation_view`): one plain TCP connection that runs
//! `LISTEN dzdesk_revocations`, loads the revoked-jti list, then applies
//! every notification. On any error, a missed heartbeat, or the view taken
//! down by a failed fence, the view goes down (checks fall back to the
//! database) and the listener reconnects after a pause: it always heals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::{self, Either};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::credentials::revocation_view::{RevocationView, MAX_REVOKED_JTIS};
use crate::db::models::RevokedAccessToken;
use crate::db::Database;

/// The notification channel the migration's triggers use.
pub const CHANNEL: &str = "dzdesk_revocations";

/// Pause between reconnection attempts.
const RETRY: Duration = Duration::from_secs(1);

/// How often a live listener proves its connection still delivers.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// No marker back for this long takes the view down (with room for a
/// saturated two-core machine). One marker that could not be sent (the pool
/// or the database slow for a moment) is retried a second later within this
/// bound: it took the view down at once, and introspection read the
/// database until the listener reconnected (a p99 spike under load).
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often expired revoked jtis are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Runs until the task is dropped. `on_notification` hears every payload
/// after the view has applied it (to evict cached client credentials on
/// `c:`, to reload the signing keys on `s:`).
pub async fn listen_forever(
    url: String,
    db: Database,
    view: Arc<RevocationView>,
    on_notification: impl Fn(&str),
) {
    loop {
        if let Err(e) = listen_once(&url, &db, &view, &on_notification).await {
            // The error names the failure, never the URL.
            log::warn!(
                "revocation listener: {e:#}; introspection reads the database until it reconnects"
            );
        }
        view.went_down();
        actix_web::rt::time::sleep(RETRY).await;
    }
}

async fn listen_once(
    url: &str,
    db: &Database,
    view: &RevocationView,
    on_notification: &impl Fn(&str),
) -> anyhow::Result<()> {
    let mut config: tokio_postgres::Config = url.parse()?;
    // A server that went away must not hold the listener longer than any
    // request waits for it (`DZDESK_DB_TIMEOUT_MS`); a URL may say otherwise.
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(db.timeout());
    }
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    // Drives the connection and forwards notifications; ends on error.
    let driver = async move {
        loop {
            match future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        return anyhow::Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("connection closed"),
            }
        }
    };
    // Set once this connection has made the view live.
    let live_here = AtomicBool::new(false);
    let worker = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        // Loaded after LISTEN: a revocation committed meanwhile is either in
        // the list or in a notification still to come. One more than the
        // cap tells the view the list does not fit. Not bounded by the
        // request timeout: a long list on a slow database may take longer,
        // and the view is simply not trusted until it has it.
        let jtis = db
            .run_unbounded(|conn| {
                RevokedAccessToken::live_jtis(conn, Utc::now().naive_utc(), MAX_REVOKED_JTIS + 1)
                    .map_err(anyhow::Error::from)
            })
            .await?;
        // Whatever changed while the view was down (signing keys too), and
        // before the view says live: the authorization endpoint trusts the
        // client cache only while it is.
        on_notification("x:reconnected");
        view.went_live(jtis);
        live_here.store(true, Ordering::Release);
        log::info!("revocation listener: live");
        while let Some(payload) = rx.recv().await {
            view.apply(&payload);
            on_notification(&payload);
        }
        anyhow::Ok(())
    };
    // A connection can die without an error (a silent network partition,
    // a failover): a marker must make the round trip every second, or the
    // view goes down and the listener reconnects. A view taken down by a
    // failed fence reconnects the same way: nothing else would bring it
    // back.
    let heartbeat = async {
        let mut last_prune = std::time::Instant::now();
        // By when a marker must be back: HEARTBEAT_TIMEOUT after the last
        // one was, or after the view went live (at most one HEARTBEAT before
        // this loop first saw it live: counted from then, to err short).
        let mut deadline: Option<std::time::Instant> = None;
        loop {
            actix_web::rt::time::sleep(HEARTBEAT).await;
            if !live_here.load(Ordering::Acquire) {
                continue;
            }
            if !view.is_live() {
                anyhow::bail!("the view was taken down (a fence failed); reconnecting");
            }
            let due = *deadline.get_or_insert_with(|| {
                std::time::Instant::now() + HEARTBEAT_TIMEOUT.saturating_sub(HEARTBEAT)
            });
            let left = due.saturating_duration_since(std::time::Instant::now());
            // The send and the wait both within what is left.
            let marker = actix_web::rt::time::timeout(left, send_marker_and_wait(db, view, left))
                .await
                .unwrap_or(Marker::Lost);
            match marker {
                Marker::Back => {
                    deadline = Some(std::time::Instant::now() + HEARTBEAT_TIMEOUT);
                }
                // Sent and never back: the connection does not deliver.
                Marker::Lost => anyhow::bail!("heartbeat marker not delivered in time"),
                // Not sent: tried again after HEARTBEAT, if that is before
                // the deadline.
                Marker::NotSent if std::time::Instant::now() + HEARTBEAT >= due => {
                    anyhow::bail!("no heartbeat marker could be sent for {HEARTBEAT_TIMEOUT:?}")
                }
                Marker::NotSent => continue,
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = std::time::Instant::now();
                if view.prune(Utc::now().timestamp()) {
                    anyhow::bail!("the revoked-jti list fits again; reloading it");
                }
            }
        }
    };
    let listening = future::select(Box::pin(driver), Box::pin(worker));
    // Bound to a local (not a tail expression) so that the futures left
    // unfinished are dropped before the connection they borrow.
    let result = match future::select(listening, Box::pin(heartbeat)).await {
        Either::Left((Either::Left((result, _)) | Either::Right((result, _)), _))
        | Either::Right((result, _)) => result,
    };
    result?;
    anyhow::bail!("listener stopped")
}

/// What became of a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// The listener applied it.
    Back,
    /// Sent, and not applied within the timeout.
    Lost,
    /// Not sent: no connection, or the database did not answer.
    NotSent,
}

/// Sends a marker through the channel on a pool connection and waits until
/// this instance's listener has applied it.
async fn send_marker_and_wait(db: &Database, view: &RevocationView, timeout: Duration) -> Marker {
    let marker = crate::tokens::new_id("");
    // The marker is our own alphanumeric id: safe to inline.
    let sql = format!("SELECT pg_notify('{CHANNEL}', 'm:{marker}')");
    let sent = db
        .run(move |conn| {
            use diesel::RunQueryDsl;
            diesel::sql_query(sql)
                .execute(conn)
                .map_err(anyhow::Error::from)
        })
        .await;
    if let Err(e) = sent {
        log::warn!("revocation marker: {e:#}");
        return Marker::NotSent;
    }
    if view.wait_marker(&marker, timeout).await {
        Marker::Back
    } else {
        Marker::Lost
    }
}

/// Read-your-writes for revocations: after a change that can deactivate
/// tokens has committed, sends a marker through the channel and waits until
/// this instance's listener has applied it. PostgreSQL delivers
/// notifications in commit order, so every earlier change has been applied
/// too, and every other listener has been sent it. A no-op when the view is
/// not live (introspection then reads the database anyway).
pub async fn fence(db: &Database, view: &RevocationView) {
    if !view.is_live() {
        return;
    }
    if send_marker_and_wait(db, view, Duration::from_secs(2)).await != Marker::Back {
        // The listener is not delivering: stop trusting the view (the
        // listener reconnects and goes live again).
        log::warn!("revocation fence: marker not seen within 2 s; view down");
        view.went_down();
    }
}
