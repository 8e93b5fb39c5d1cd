//! What every handler shares.

use chrono::Utc;

use crate::auth::csrf::CsrfKey;
use crate::config::Settings;
use crate::db::models::ServerSecret;
use crate::db::Database;

pub struct AppState {
    pub db: Database,
    pub csrf: CsrfKey,
    pub settings: Settings,
}

impl AppState {
    /// Cookies are `Secure` when the public issuer URL is https.
    pub fn secure_cookies(&self) -> bool {
        self.settings.issuer.starts_with("https://")
    }
}

/// Keys generated on first start and kept in the database, so that every
/// instance on the same database shares them.
#[derive(Clone)]
pub struct ServerKeys {
    /// HMAC key of CSRF tokens.
    pub csrf: [u8; 32],
}

impl std::fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKeys(<redacted>)")
    }
}

impl ServerKeys {
    pub async fn load(db: &Database) -> anyhow::Result<Self> {
        let now = Utc::now().naive_utc();
        let csrf = db
            .run(move |conn| {
                ServerSecret::get_or_create(conn, "csrf", now).map_err(anyhow::Error::from)
            })
            .await?;
        Ok(Self { csrf })
    }
}
