//! Registered clients kept in memory, so that the authorization endpoint and
//! the token endpoint need no database round trip for them. Every lookup by
//! client id goes through [`ClientCache::find`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::db::models::Client;
use crate::db::AnyConnection;

/// Registered clients kept in memory for `DZDESK_CLIENT_CACHE_SECS`, so the
/// token and authorization endpoints need no database round trip for them. Only rows that
/// exist are kept (unknown ids cannot fill it), and at most
/// [`ClientCache::MAX_ENTRIES`].
pub struct ClientCache {
    ttl: Duration,
    entries: RwLock<HashMap<String, (Arc<Client>, Instant)>>,
}

impl ClientCache {
    pub const MAX_ENTRIES: usize = 10_000;

    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The client, if read from the database less than the TTL ago.
    pub fn get(&self, id: &str) -> Option<Arc<Client>> {
        let entries = self.entries.read().ok()?;
        let (client, at) = entries.get(id)?;
        (at.elapsed() < self.ttl).then(|| client.clone())
    }

    /// Drops a client changed or deleted by this instance (other instances
    /// catch up within the TTL).
    pub fn forget(&self, id: &str) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(id);
        }
    }

    /// Drops every client (the revocation listener reconnected: changes
    /// may have been missed meanwhile).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }

    /// The client `id`: from the cache, else read from the database and
    /// kept. Blocking. Unknown ids are read every time and never kept.
    pub fn find(
        &self,
        conn: &mut AnyConnection,
        id: &str,
    ) -> diesel::QueryResult<Option<Arc<Client>>> {
        if let Some(client) = self.get(id) {
            return Ok(Some(client));
        }
        let read_at = Instant::now();
        Ok(Client::find(conn, id)?.map(|c| self.put(c, read_at)))
    }

    /// Keeps a client read from the database by a query that started at
    /// `read_at` (so a read racing a change is not kept a full TTL longer); a
    /// newer entry is not replaced.
    pub fn put(&self, client: Client, read_at: Instant) -> Arc<Client> {
        let client = Arc::new(client);
        if self.ttl.is_zero() {
            return client;
        }
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= Self::MAX_ENTRIES {
                entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
                if entries.len() >= Self::MAX_ENTRIES {
                    entries.clear();
                }
            }
            let newer = entries.get(&client.id).is_some_and(|(_, at)| *at > read_at);
            if !newer {
                entries.insert(client.id.clone(), (client.clone(), read_at));
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn client(id: &str) -> Client {
        let now = Utc::now().naive_utc();
        Client {
            id: id.to_owned(),
            name: "c".into(),
            confidential: true,
            secret_hash: None,
            redirect_uris: String::new(),
            scopes: String::new(),
            grant_types: String::new(),
            require_pkce: false,
            disabled: false,
            created_at: now,
            updated_at: now,
            can_introspect: false,
            registration_token_hash: None,
            registered_by: None,
            plan: "standard".into(),
            rate_limit: None,
            token_endpoint_auth_method: "client_secret_basic".into(),
            previous_secret_hash: None,
            previous_secret_expires_at: None,
            cors_origins: String::new(),
            post_logout_redirect_uris: String::new(),
            require_par: false,
        }
    }

    #[test]
    fn client_cache_keeps_clients_for_its_ttl_only() {
        let cache = ClientCache::new(Duration::from_secs(60));
        assert!(cache.get("client_a").is_none());
        cache.put(client("client_a"), Instant::now());
        assert_eq!(cache.get("client_a").unwrap().id, "client_a");

        let off = ClientCache::new(Duration::ZERO);
        off.put(client("client_a"), Instant::now());
        assert!(off.get("client_a").is_none());
    }

    #[test]
    fn client_cache_is_bounded() {
        let cache = ClientCache::new(Duration::from_secs(60));
        for i in 0..=ClientCache::MAX_ENTRIES {
            cache.put(client(&format!("client_{i}")), Instant::now());
        }
        let len = cache.entries.read().unwrap().len();
        assert!(len <= ClientCache::MAX_ENTRIES, "{len}");
    }
}
