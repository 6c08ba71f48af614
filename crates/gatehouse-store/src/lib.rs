//! The embedded store (`store.path`, docs/identity.md): API keys created through the admin
//! API for the consumers of the config, in SQLite (WAL, `synchronous = FULL`, so a key
//! acknowledged with 201 survives a crash). Only a key's SHA-256 is stored; the key
//! itself is returned once, at creation. Requests look keys up in an in-memory index
//! rebuilt after every write, so a revocation applies to the very next request and no
//! request waits on the database.

use arc_swap::ArcSwap;
use base64::Engine;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Where a config's open store is kept in the state registry (kind, name), so the admin
/// API and the policies of one config share one connection.
pub const STATE: (&str, &str) = ("store", "default");

/// The store a config opened, or why it could not.
#[derive(Debug)]
pub struct Opened(pub Result<Arc<Store>, String>);

/// A stored key as the admin API lists it: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's id (`DELETE .../keys/{id}`).
    pub id: String,
    /// Its consumer.
    pub consumer: String,
    /// Creation time, seconds since the Unix epoch.
    pub created: i64,
}

/// The SQLite store.
pub struct Store {
    db: Mutex<Connection>,
    /// Key digest -> consumer name.
    index: ArcSwap<HashMap<[u8; 32], String>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("keys", &self.index.load().len())
            .finish()
    }
}

fn sql(e: rusqlite::Error) -> String {
    e.to_string()
}

fn random(n: usize) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness from the system: {e}"))?;
    Ok(b)
}

/// The SHA-256 of a key.
pub fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, String> {
        let db = Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        db.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
        db.pragma_update(None, "synchronous", "FULL").map_err(sql)?;
        db.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS api_keys (
                 id TEXT PRIMARY KEY,
                 consumer TEXT NOT NULL,
                 sha256 BLOB NOT NULL UNIQUE,
                 created INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS api_keys_consumer ON api_keys (consumer);",
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        let store = Self {
            db: Mutex::new(db),
            index: ArcSwap::from_pointee(HashMap::new()),
        };
        store.reindex()?;
        Ok(store)
    }

    fn reindex(&self) -> Result<(), String> {
        let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = db
            .prepare("SELECT sha256, consumer FROM api_keys")
            .map_err(sql)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(sql)?;
        let mut index = HashMap::new();
        for row in rows {
            let (d, consumer) = row.map_err(sql)?;
            if let Ok(d) = <[u8; 32]>::try_from(d.as_slice()) {
                index.insert(d, consumer);
            }
        }
        self.index.store(Arc::new(index));
        Ok(())
    }

    /// The consumer whose stored key has this digest.
    pub fn consumer_of(&self, digest: &[u8; 32]) -> Option<String> {
        self.index.load().get(digest).cloned()
    }

    /// Creates a key for `consumer`: its record, and the key itself (shown once).
    pub fn create_key(&self, consumer: &str) -> Result<(KeyInfo, String), String> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let key = format!("gh_{}", b64.encode(random(32)?));
        let id = b64.encode(random(12)?);
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        {
            let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
            db.execute(
                "INSERT INTO api_keys (id, consumer, sha256, created) VALUES (?1, ?2, ?3, ?4)",
                params![id, consumer, digest(key.as_bytes()).to_vec(), created],
            )
            .map_err(sql)?;
        }
        self.reindex()?;
        let info = KeyInfo {
            id,
            consumer: consumer.to_string(),
            created,
        };
        Ok((info, key))
    }

    /// The keys of `consumer`, oldest first.
    pub fn keys(&self, consumer: &str) -> Result<Vec<KeyInfo>, String> {
        let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = db
            .prepare("SELECT id, created FROM api_keys WHERE consumer = ?1 ORDER BY created, id")
            .map_err(sql)?;
        let rows = stmt
            .query_map([consumer], |r| {
                Ok(KeyInfo {
                    id: r.get(0)?,
                    consumer: consumer.to_string(),
                    created: r.get(1)?,
                })
            })
            .map_err(sql)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql)
    }

    /// Revokes key `id` of `consumer`; false when it has no such key.
    pub fn revoke(&self, consumer: &str, id: &str) -> Result<bool, String> {
        let gone = {
            let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
            let found: Option<String> = db
                .query_row(
                    "SELECT id FROM api_keys WHERE id = ?1 AND consumer = ?2",
                    params![id, consumer],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql)?;
            if found.is_none() {
                return Ok(false);
            }
            db.execute("DELETE FROM api_keys WHERE id = ?1", params![id])
                .map_err(sql)?
        };
        self.reindex()?;
        Ok(gone > 0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_listed_revoked_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.db");
        let s = Store::open(&path).unwrap();
        let (info, key) = s.create_key("mobile-app").unwrap();
        assert!(key.starts_with("gh_") && key.len() > 40);
        assert_eq!(
            s.consumer_of(&digest(key.as_bytes())).as_deref(),
            Some("mobile-app")
        );
        assert_eq!(s.keys("mobile-app").unwrap(), vec![info.clone()]);
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(
            s.consumer_of(&digest(key.as_bytes())).as_deref(),
            Some("mobile-app")
        );
        assert!(!s.revoke("someone-else", &info.id).unwrap());
        assert!(s.revoke("mobile-app", &info.id).unwrap());
        assert_eq!(s.consumer_of(&digest(key.as_bytes())), None);
        assert!(s.keys("mobile-app").unwrap().is_empty());
    }
}
