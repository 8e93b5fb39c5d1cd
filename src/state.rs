//! What every handler shares.

use crate::auth::csrf::CsrfKey;
use crate::config::Settings;
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
