//! The header of every signed-in page: where you can go, who you are, and
//! the sign-out button (a CSRF-protected form, so every such page carries a
//! logout token).

use crate::auth::csrf::CsrfBinding;
use crate::routes::web::login::LOGOUT_PURPOSE;
use crate::routes::web::session::SignedIn;
use crate::state::AppState;

/// The account pages, in header order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Account,
    ApiKeys,
    ConnectedApps,
}

/// One header link.
pub struct NavLink {
    pub href: &'static str,
    pub label: &'static str,
    /// Marked `aria-current="page"`.
    pub current: bool,
}

/// What `account.html` needs for its header.
pub struct Nav {
    pub links: [NavLink; 3],
    pub email: String,
    pub logout_token: String,
}

impl Nav {
    /// The header of a page in `section`, for `signed_in`.
    pub fn new(state: &AppState, signed_in: &SignedIn, section: Section) -> Self {
        let link = |href, label, of| NavLink {
            href,
            label,
            current: section == of,
        };
        Self {
            links: [
                link("/", "Account", Section::Account),
                link("/settings/api", "API keys", Section::ApiKeys),
                link("/settings/apps", "Connected apps", Section::ConnectedApps),
            ],
            email: signed_in.user.email.clone(),
            logout_token: state
                .csrf
                .token(CsrfBinding::Session(&signed_in.session_id), LOGOUT_PURPOSE),
        }
    }
}
