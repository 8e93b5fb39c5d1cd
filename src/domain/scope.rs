use std::fmt;

use crate::domain::Role;

/// One permission of the DZDESK API (the seed's "Key Permissions" table),
/// or one of the OpenID Connect identity scopes (`openid`, `profile`,
/// `email`: OIDC Core 3.1.2.1, 5.4), which grant no API access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    RequestsRead,
    RequestsWrite,
    UsersRead,
    UsersWrite,
    Admin,
    Openid,
    Profile,
    Email,
}

impl Scope {
    pub const ALL: [Scope; 8] = [
        Scope::RequestsRead,
        Scope::RequestsWrite,
        Scope::UsersRead,
        Scope::UsersWrite,
        Scope::Admin,
        Scope::Openid,
        Scope::Profile,
        Scope::Email,
    ];

    /// The scopes of the DZDESK API: what API keys hold and `/v1` checks.
    pub const API: [Scope; 5] = [
        Scope::RequestsRead,
        Scope::RequestsWrite,
        Scope::UsersRead,
        Scope::UsersWrite,
        Scope::Admin,
    ];

    /// An OpenID Connect identity scope: it says who the user is (the ID
    /// token, UserInfo) and grants nothing on `/v1`.
    pub fn is_identity(self) -> bool {
        matches!(self, Scope::Openid | Scope::Profile | Scope::Email)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::RequestsRead => "requests:read",
            Scope::RequestsWrite => "requests:write",
            Scope::UsersRead => "users:read",
            Scope::UsersWrite => "users:write",
            Scope::Admin => "admin",
            Scope::Openid => "openid",
            Scope::Profile => "profile",
            Scope::Email => "email",
        }
    }

    /// Plain-language description for the consent page.
    pub fn description(self) -> &'static str {
        match self {
            Scope::RequestsRead => "Read your requests",
            Scope::RequestsWrite => "Create and update requests",
            Scope::UsersRead => "Read user data",
            Scope::UsersWrite => "Manage users",
            Scope::Admin => "Full access to your DZDESK account, including administration",
            Scope::Openid => "Know who you are: your DZDESK user id, and when you signed in",
            Scope::Profile => "See your user name (it is your email address)",
            Scope::Email => "See your email address",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    /// Whether a user of `role` may grant this scope (admin: all; agent:
    /// requests:read, requests:write, users:read; every role: the identity
    /// scopes, which are about the user alone).
    pub fn grantable_by(self, role: Role) -> bool {
        match role {
            Role::Admin => true,
            Role::Agent => matches!(
                self,
                Scope::RequestsRead
                    | Scope::RequestsWrite
                    | Scope::UsersRead
                    | Scope::Openid
                    | Scope::Profile
                    | Scope::Email
            ),
        }
    }
}

/// A set of scopes, written space-separated (RFC 6749 3.3) in a canonical
/// order. A bit set over [`Scope::ALL`]: parsing, checking and copying
/// allocate nothing (introspection and `/v1` do all three per request).
/// Stored as its string form; a stored list that does not parse fails the
/// load (`db::types`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, diesel::deserialize::FromSqlRow)]
pub struct ScopeSet(u16);

// A bit per scope: a scope past the width would wrap onto another's bit.
const _: () = assert!(Scope::ALL.len() <= u16::BITS as usize);

impl Scope {
    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl ScopeSet {
    /// Parses a space-delimited list (RFC 6749 3.3). Unknown scope tokens are
    /// an error, named in the message; repeated ones count once.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut set = 0u16;
        for token in raw.split(' ').filter(|t| !t.is_empty()) {
            let scope = Scope::parse(token).ok_or_else(|| {
                let shown: String = token.chars().take(40).collect();
                format!("unknown scope '{shown}'")
            })?;
            set |= scope.bit();
        }
        Ok(Self(set))
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// In canonical order.
    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        Scope::ALL.into_iter().filter(|s| self.contains(*s))
    }

    /// Whether a holder of `self` holds every scope of `other`: `admin`
    /// implies every other scope (spec), else `other` must be a subset. The
    /// one ceiling rule: registration, API-key creation, consent, refresh
    /// narrowing and the users API all ask it.
    pub fn covers(&self, other: &ScopeSet) -> bool {
        self.contains(Scope::Admin) || other.0 & !self.0 == 0
    }

    /// The scopes of `self` that `ceiling` covers (see [`ScopeSet::covers`]).
    pub fn within(&self, ceiling: &ScopeSet) -> ScopeSet {
        if ceiling.contains(Scope::Admin) {
            return *self;
        }
        Self(self.0 & ceiling.0)
    }

    /// The scopes a user of `role` may grant, and the ones left out.
    pub fn split_by_role(&self, role: Role) -> (ScopeSet, ScopeSet) {
        let ok: ScopeSet = self.iter().filter(|s| s.grantable_by(role)).collect();
        (ok, Self(self.0 & !ok.0))
    }

    pub fn to_vec(&self) -> Vec<&'static str> {
        self.iter().map(|s| s.as_str()).collect()
    }

    /// The API scopes of `self` (identity scopes dropped): what `/v1`
    /// sees.
    pub fn api_only(&self) -> ScopeSet {
        self.iter().filter(|s| !s.is_identity()).collect()
    }

    /// Whether any identity scope is in `self`.
    pub fn has_identity(&self) -> bool {
        self.iter().any(Scope::is_identity)
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Self(iter.into_iter().fold(0, |set, s| set | s.bit()))
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(scope.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_list_is_space_separated_and_canonical() {
        let set = ScopeSet::parse("users:read  requests:read users:read").unwrap();
        assert_eq!(set.to_string(), "requests:read users:read");
    }

    #[test]
    fn identity_scopes_are_grantable_by_every_role_and_covered_by_admin() {
        let identity = ScopeSet::parse("openid profile email").unwrap();
        for role in [Role::Admin, Role::Agent] {
            assert_eq!(identity.split_by_role(role).0, identity);
        }
        assert!(ScopeSet::parse("admin").unwrap().covers(&identity));
        assert!(!ScopeSet::parse("requests:read").unwrap().covers(&identity));
        let mixed = ScopeSet::parse("openid requests:read email").unwrap();
        assert_eq!(mixed.api_only().to_string(), "requests:read");
        assert!(mixed.has_identity() && !mixed.api_only().has_identity());
    }

    #[test]
    fn unknown_scope_is_rejected_by_name() {
        let err = ScopeSet::parse("requests:read offline_access").unwrap_err();
        assert!(err.contains("offline_access"));
        assert!(ScopeSet::parse("Requests:Read").is_err());
    }

    #[test]
    fn admin_covers_every_scope_and_others_only_themselves() {
        let admin = ScopeSet::parse("admin").unwrap();
        let all =
            ScopeSet::parse("requests:read requests:write users:read users:write admin").unwrap();
        assert!(admin.covers(&all));
        let reader = ScopeSet::parse("requests:read").unwrap();
        assert!(reader.covers(&reader));
        assert!(reader.covers(&ScopeSet::default()));
        assert!(!reader.covers(&admin));
        assert!(!reader.covers(&ScopeSet::parse("requests:read users:read").unwrap()));
        assert_eq!(all.within(&admin), all);
        assert_eq!(all.within(&reader), reader);
    }

    #[test]
    fn agent_cannot_grant_admin_or_users_write() {
        let set = ScopeSet::parse("admin users:write requests:read").unwrap();
        let (ok, denied) = set.split_by_role(Role::Agent);
        assert_eq!(ok.to_string(), "requests:read");
        assert_eq!(denied.to_string(), "users:write admin");
        let (ok, denied) = set.split_by_role(Role::Admin);
        assert_eq!(ok, set);
        assert!(denied.is_empty());
    }
}
