//! Registered clients kept in memory, so that the authorization endpoint and
//! the token endpoint need no database round trip for them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::db::models::Client;
use crate::db::AnyConnection;

/// Registered clients kept in memory for `DZDESK_CLIENT_CACHE_SECS`, so the
/// token and authorization endpoints need no database round trip for them.
/// Only rows that exist are kept (unknown ids cannot fill it), and at most
/// [`ClientCache::MAX_ENTRIES`].
pub struct ClientCache {
    ttl: Duration,
    entries: RwLock<HashMap<String, (Arc<Client>, Instant)>>,
    /// Counts [`ClientCache::forget`] and [`ClientCache::clear`]: a read
    /// that began before one is not kept ([`ReadTicket`]).
    forgets: AtomicU64,
}

/// Taken before reading a client from the database, handed to
/// [`ClientCache::put`]: a read that raced a change (a forget came in while
/// it ran) is used for its own request but not kept, where it would have
/// undone the forget for a whole TTL.
#[derive(Debug, Clone, Copy)]
pub struct ReadTicket {
    at: Instant,
    forgets: u64,
}

impl ClientCache {
    pub const MAX_ENTRIES: usize = 10_000;

    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
            forgets: AtomicU64::new(0),
        }
    }

    /// Take before reading a client from the database.
    pub fn ticket(&self) -> ReadTicket {
        ReadTicket {
            at: Instant::now(),
            forgets: self.forgets.load(Ordering::SeqCst),
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
            self.forgets.fetch_add(1, Ordering::SeqCst);
            entries.remove(id);
        }
    }

    /// Drops every client (the revocation listener reconnected: changes
    /// may have been missed meanwhile).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            self.forgets.fetch_add(1, Ordering::SeqCst);
            entries.clear();
        }
    }

    /// The client `id`: from the cache, else [`ClientCache::read`].
    /// Blocking. Unknown ids are read every time and never kept.
    pub fn find(
        &self,
        conn: &mut AnyConnection,
        id: &str,
    ) -> diesel::QueryResult<Option<Arc<Client>>> {
        match self.get(id) {
            Some(client) => Ok(Some(client)),
            None => self.read(conn, id),
        }
    }

    /// The client `id` read from the database (whatever the cache holds),
    /// and kept ([`ClientCache::put`]). Blocking.
    pub fn read(
        &self,
        conn: &mut AnyConnection,
        id: &str,
    ) -> diesel::QueryResult<Option<Arc<Client>>> {
        let ticket = self.ticket();
        Ok(Client::find(conn, id)?.map(|c| self.put(c, ticket)))
    }

    /// Keeps a client read from the database by a query that started when
    /// `ticket` was taken, unless a forget came in since (the read may have
    /// seen the row before the change); a newer entry is not replaced.
    pub fn put(&self, client: Client, ticket: ReadTicket) -> Arc<Client> {
        let client = Arc::new(client);
        if self.ttl.is_zero() {
            return client;
        }
        let read_at = ticket.at;
        if let Ok(mut entries) = self.entries.write() {
            // Under the write lock, which forget and clear count under.
            if self.forgets.load(Ordering::SeqCst) != ticket.forgets {
                return client;
            }
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
        cache.put(client("client_a"), cache.ticket());
        assert_eq!(cache.get("client_a").unwrap().id, "client_a");

        let off = ClientCache::new(Duration::ZERO);
        off.put(client("client_a"), off.ticket());
        assert!(off.get("client_a").is_none());
    }

    #[test]
    fn a_read_that_raced_a_forget_is_not_kept() {
        let cache = ClientCache::new(Duration::from_secs(60));
        // A read begins; meanwhile the client changes and is forgotten.
        let ticket = cache.ticket();
        cache.forget("client_a");
        let served = cache.put(client("client_a"), ticket);
        assert_eq!(served.id, "client_a", "its own request still gets it");
        assert!(
            cache.get("client_a").is_none(),
            "the stale read undid the forget"
        );
        // So after a clear.
        let ticket = cache.ticket();
        cache.clear();
        cache.put(client("client_a"), ticket);
        assert!(cache.get("client_a").is_none());
        // A read that began after the forget is kept.
        cache.put(client("client_a"), cache.ticket());
        assert!(cache.get("client_a").is_some());
    }

    #[test]
    fn client_cache_is_bounded() {
        let cache = ClientCache::new(Duration::from_secs(60));
        for i in 0..=ClientCache::MAX_ENTRIES {
            cache.put(client(&format!("client_{i}")), cache.ticket());
        }
        let len = cache.entries.read().unwrap().len();
        assert!(len <= ClientCache::MAX_ENTRIES, "{len}");
    }
}
