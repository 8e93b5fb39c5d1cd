use std::collections::BTreeSet;
use std::fmt;

use crate::domain::Role;

/// One permission of the DZDESK API (the seed's "Key Permissions" table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    RequestsRead,
    RequestsWrite,
    UsersRead,
    UsersWrite,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::RequestsRead,
        Scope::RequestsWrite,
        Scope::UsersRead,
        Scope::UsersWrite,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::RequestsRead => "requests:read",
            Scope::RequestsWrite => "requests:write",
            Scope::UsersRead => "users:read",
            Scope::UsersWrite => "users:write",
            Scope::Admin => "admin",
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
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    /// Whether a user of `role` may grant this scope (admin: all; agent:
    /// requests:read, requests:write, users:read).
    pub fn grantable_by(self, role: Role) -> bool {
        match role {
            Role::Admin => true,
            Role::Agent => matches!(
                self,
                Scope::RequestsRead | Scope::RequestsWrite | Scope::UsersRead
            ),
        }
    }
}

/// A set of scopes, written space-separated (RFC 6749 3.3) in a canonical
/// order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    /// Parses a space-delimited list (RFC 6749 3.3). Unknown scope tokens are
    /// an error, named in the message; repeated ones count once.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut set = BTreeSet::new();
        for token in raw.split(' ').filter(|t| !t.is_empty()) {
            let scope = Scope::parse(token).ok_or_else(|| {
                let shown: String = token.chars().take(40).collect();
                format!("unknown scope '{shown}'")
            })?;
            set.insert(scope);
        }
        Ok(Self(set))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// Whether holding `self` is enough for `other`: `self` contains
    /// `admin` (which implies every scope), or `other` is a subset of it.
    pub fn covers(&self, other: &ScopeSet) -> bool {
        self.contains(Scope::Admin) || other.is_subset(self)
    }

    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.intersection(&other.0).copied().collect())
    }

    /// The scopes a user of `role` may grant, and the ones left out.
    pub fn split_by_role(&self, role: Role) -> (ScopeSet, ScopeSet) {
        let (ok, denied): (BTreeSet<Scope>, BTreeSet<Scope>) =
            self.0.iter().partition(|s| s.grantable_by(role));
        (Self(ok), Self(denied))
    }

    pub fn to_vec(&self) -> Vec<&'static str> {
        self.0.iter().map(|s| s.as_str()).collect()
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_vec().join(" "))
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
    fn unknown_scope_is_rejected_by_name() {
        let err = ScopeSet::parse("requests:read openid").unwrap_err();
        assert!(err.contains("openid"));
        assert!(ScopeSet::parse("Requests:Read").is_err());
    }

    #[test]
    fn admin_covers_every_scope_and_otherwise_covering_is_containing() {
        let admin = ScopeSet::parse("admin").unwrap();
        let reader = ScopeSet::parse("requests:read").unwrap();
        let both = ScopeSet::parse("requests:read users:write").unwrap();
        assert!(admin.covers(&both));
        assert!(both.covers(&reader));
        assert!(!reader.covers(&both));
        assert!(reader.covers(&ScopeSet::default()));
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
