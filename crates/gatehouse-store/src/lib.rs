//! The embedded store (`store.path`, docs/identity.md): consumers and API keys created
//! through the admin API, in SQLite (WAL, `synchronous = FULL`, so a write acknowledged
//! with 201 or 204 survives a crash). Only a key's SHA-256 is stored; the key itself is
//! returned once, at creation. Requests look keys and consumers up in an in-memory index
//! rebuilt after every write, so a revocation applies to the very next request and no
//! request waits on the database.

use arc_swap::ArcSwap;
use base64::Engine;
use gatehouse_core::{Consumer, Credential};
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

/// A consumer created through the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Its name (`x-consumer`).
    pub name: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created: i64,
}

/// What a request reads: keys and stored consumers.
#[derive(Debug, Default)]
struct Index {
    /// Key digest -> consumer name.
    keys: HashMap<[u8; 32], String>,
    /// Stored consumers by name, as requests carry them.
    consumers: HashMap<String, Arc<Consumer>>,
}

/// The SQLite store.
pub struct Store {
    db: Mutex<Connection>,
    index: ArcSwap<Index>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = self.index.load();
        f.debug_struct("Store")
            .field("keys", &i.keys.len())
            .field("consumers", &i.consumers.len())
            .finish()
    }
}

/// Whether `s` may be a consumer or group name: it travels in `x-consumer` and the
/// comma-separated `x-consumer-groups`, so letters, digits and `._@-`, 1 to 128 of them.
pub fn valid_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
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
             CREATE INDEX IF NOT EXISTS api_keys_consumer ON api_keys (consumer);
             CREATE TABLE IF NOT EXISTS consumers (
                 name TEXT PRIMARY KEY,
                 groups TEXT NOT NULL,
                 created INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS quota_usage (
                 policy TEXT NOT NULL,
                 key TEXT NOT NULL,
                 period_start INTEGER NOT NULL,
                 used INTEGER NOT NULL,
                 PRIMARY KEY (policy, key)
             );",
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        let store = Self {
            db: Mutex::new(db),
            index: ArcSwap::from_pointee(Index::default()),
        };
        store.reindex()?;
        Ok(store)
    }

    fn reindex(&self) -> Result<(), String> {
        let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let mut index = Index::default();
        let mut stmt = db
            .prepare("SELECT sha256, consumer FROM api_keys")
            .map_err(sql)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(sql)?;
        for row in rows {
            let (d, consumer) = row.map_err(sql)?;
            if let Ok(d) = <[u8; 32]>::try_from(d.as_slice()) {
                index.keys.insert(d, consumer);
            }
        }
        for c in list_consumers(&db)? {
            let consumer = Consumer {
                name: c.name.clone(),
                groups: c.groups,
                credential: Credential::ApiKey,
                claims: Default::default(),
            };
            index.consumers.insert(c.name, Arc::new(consumer));
        }
        self.index.store(Arc::new(index));
        Ok(())
    }

    /// The name of the consumer whose stored key has this digest.
    pub fn consumer_of(&self, digest: &[u8; 32]) -> Option<String> {
        self.index.load().keys.get(digest).cloned()
    }

    /// The stored consumer named `name`, as requests carry it (authenticated by API key).
    pub fn consumer(&self, name: &str) -> Option<Arc<Consumer>> {
        self.index.load().consumers.get(name).cloned()
    }

    /// Creates consumer `name` with `groups`; `None` when one of that name exists.
    pub fn create_consumer(
        &self,
        name: &str,
        groups: &[String],
    ) -> Result<Option<ConsumerInfo>, String> {
        let created = now();
        let groups_json = serde_json::to_string(groups).map_err(|e| e.to_string())?;
        let inserted = {
            let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
            db.execute(
                "INSERT OR IGNORE INTO consumers (name, groups, created) VALUES (?1, ?2, ?3)",
                params![name, groups_json, created],
            )
            .map_err(sql)?
        };
        if inserted == 0 {
            return Ok(None);
        }
        self.reindex()?;
        Ok(Some(ConsumerInfo {
            name: name.to_string(),
            groups: groups.to_vec(),
            created,
        }))
    }

    /// The stored consumers, by name.
    pub fn consumers(&self) -> Result<Vec<ConsumerInfo>, String> {
        let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        list_consumers(&db)
    }

    /// Deletes stored consumer `name` and its keys, in one transaction; false when there
    /// is none.
    pub fn delete_consumer(&self, name: &str) -> Result<bool, String> {
        let gone = {
            let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
            let tx = db.transaction().map_err(sql)?;
            let gone = tx
                .execute("DELETE FROM consumers WHERE name = ?1", params![name])
                .map_err(sql)?;
            if gone > 0 {
                tx.execute("DELETE FROM api_keys WHERE consumer = ?1", params![name])
                    .map_err(sql)?;
            }
            tx.commit().map_err(sql)?;
            gone
        };
        if gone > 0 {
            self.reindex()?;
        }
        Ok(gone > 0)
    }

    /// Creates a key for `consumer`: its record, and the key itself (shown once).
    pub fn create_key(&self, consumer: &str) -> Result<(KeyInfo, String), String> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let key = format!("gh_{}", b64.encode(random(32)?));
        let id = b64.encode(random(12)?);
        let created = now();
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

/// Quota usage (`type: quota`): requests counted for one key of one policy in the period
/// that started at `period_start` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The counted key (the key parts' values joined by commas).
    pub key: String,
    /// The period's start, Unix seconds.
    pub period_start: i64,
    /// Requests counted in it.
    pub used: u64,
}

impl Store {
    /// The usage stored for `key` of quota `policy`.
    pub fn quota_usage(&self, policy: &str, key: &str) -> Result<Option<Usage>, String> {
        let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        db.query_row(
            "SELECT period_start, used FROM quota_usage WHERE policy = ?1 AND key = ?2",
            params![policy, key],
            |r| {
                Ok(Usage {
                    key: key.to_string(),
                    period_start: r.get(0)?,
                    used: r.get::<_, i64>(1)?.max(0).unsigned_abs(),
                })
            },
        )
        .optional()
        .map_err(sql)
    }

    /// Writes `rows` of quota `policy` in one transaction (durable when this returns).
    pub fn save_quota_usage(&self, policy: &str, rows: &[Usage]) -> Result<(), String> {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let tx = db.transaction().map_err(sql)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO quota_usage (policy, key, period_start, used) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (policy, key) DO UPDATE SET period_start = ?3, used = ?4",
                )
                .map_err(sql)?;
            for u in rows {
                let used = i64::try_from(u.used).unwrap_or(i64::MAX);
                stmt.execute(params![policy, u.key, u.period_start, used])
                    .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    /// Forgets the usage of `key` of quota `policy` (`DELETE /admin/limits`).
    pub fn delete_quota_usage(&self, policy: &str, key: &str) -> Result<(), String> {
        let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        db.execute(
            "DELETE FROM quota_usage WHERE policy = ?1 AND key = ?2",
            params![policy, key],
        )
        .map_err(sql)?;
        Ok(())
    }
}

fn list_consumers(db: &Connection) -> Result<Vec<ConsumerInfo>, String> {
    let mut stmt = db
        .prepare("SELECT name, groups, created FROM consumers ORDER BY name")
        .map_err(sql)?;
    let rows = stmt
        .query_map([], |r| {
            let groups: String = r.get(1)?;
            Ok(ConsumerInfo {
                name: r.get(0)?,
                groups: serde_json::from_str(&groups).unwrap_or_default(),
                created: r.get(2)?,
            })
        })
        .map_err(sql)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(sql)
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

    #[test]
    fn consumers_are_created_once_and_deleted_with_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.db");
        let s = Store::open(&path).unwrap();
        let groups = vec!["gold".to_string()];
        let made = s.create_consumer("partner-7", &groups).unwrap().unwrap();
        assert_eq!(made.groups, groups);
        assert!(s.create_consumer("partner-7", &[]).unwrap().is_none());
        let (_, key) = s.create_key("partner-7").unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.consumer("partner-7").unwrap().groups, groups);
        assert_eq!(s.consumers().unwrap().len(), 1);
        assert!(s.delete_consumer("partner-7").unwrap());
        assert!(!s.delete_consumer("partner-7").unwrap());
        assert!(s.consumer("partner-7").is_none());
        assert_eq!(
            s.consumer_of(&digest(key.as_bytes())),
            None,
            "its keys went too"
        );
        assert!(valid_name("a.b_c@d-1") && !valid_name("a,b") && !valid_name(""));
    }
}
