//! Cache purges shared by the gateways of a cluster: each purge made through one
//! gateway's admin API is appended to a Redis stream (`gatehouse:cache:{policy}:purges`,
//! capped near 1,000 entries), which every gateway reads every 200 ms and applies, so a
//! purge reaches every node within a second. Read on a thread of its own that starts
//! with the first request the policy sees (never for `gatehouse validate`).

use crate::cache_store::{CacheStore, Purge};
use gatehouse_cluster::Cluster;
use redis::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the stream is read.
const POLL: Duration = Duration::from_millis(200);

/// One cache policy's link to the shared purge stream.
#[derive(Debug)]
pub struct PurgeRelay {
    cluster: Arc<Cluster>,
    stream: String,
    /// This gateway's mark on what it published (its own purges are already applied).
    origin: String,
    started: AtomicBool,
    stopped: AtomicBool,
}

/// A purge as published.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Published {
    purge: Purge,
    soft: bool,
}

impl PurgeRelay {
    /// A relay for policy `policy` over `cluster` (not started).
    pub fn new(cluster: Arc<Cluster>, policy: &str) -> Self {
        Self {
            cluster,
            stream: format!("gatehouse:cache:{policy}:purges"),
            // Randomly seeded per relay: a mark no other gateway draws.
            origin: format!("{:016x}", ahash::RandomState::new().hash_one(policy)),
            started: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        }
    }

    /// Whether it relays over `cluster`.
    pub fn uses(&self, cluster: &Arc<Cluster>) -> bool {
        Arc::ptr_eq(&self.cluster, cluster)
    }

    /// Stops its reader (a reload changed or removed the link).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// Starts the reader, once, applying others' purges to `store`.
    pub fn ensure_started(self: &Arc<Self>, store: &Arc<CacheStore>) {
        if self.started.load(Ordering::Relaxed) || self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let relay = Arc::clone(self);
        let store = Arc::downgrade(store);
        let spawned = std::thread::Builder::new()
            .name("gatehouse-purges".into())
            .spawn(move || relay.read(&store));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the cache purge reader");
        }
    }

    /// Appends a purge to the stream.
    pub async fn publish(
        &self,
        purge: &Purge,
        soft: bool,
    ) -> Result<(), gatehouse_cluster::Unavailable> {
        let body = serde_json::to_string(&Published {
            purge: purge.clone(),
            soft,
        })
        .unwrap_or_default();
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(1000)
            .arg("*")
            .arg("origin")
            .arg(&self.origin)
            .arg("purge")
            .arg(body);
        match self.cluster.call(cmd).await? {
            Value::ServerError(_) => Err(gatehouse_cluster::Unavailable),
            _ => Ok(()),
        }
    }

    /// Runs a command on the driver and waits (this thread only) for its answer.
    fn run(&self, cmd: redis::Cmd) -> Option<Value> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.cluster.submit(
            cmd,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(Value::ServerError(_))) | Ok(Err(_)) | Err(_) => None,
            Ok(Ok(v)) => Some(v),
        }
    }

    /// The reader: from the stream's current end, applies every purge another gateway
    /// publishes, until stopped or the store is gone.
    fn read(&self, store: &Weak<CacheStore>) {
        let alive = || !self.stopped.load(Ordering::Relaxed) && store.strong_count() > 0;
        // Start after what is already there: those purges were made before this
        // gateway's entries.
        let mut last = loop {
            if !alive() {
                return;
            }
            let mut cmd = redis::cmd("XREVRANGE");
            cmd.arg(&self.stream).arg("+").arg("-").arg("COUNT").arg(1);
            if let Some(v) = self.run(cmd) {
                break entries(&v)
                    .into_iter()
                    .next()
                    .map_or_else(|| "0-0".to_string(), |e| e.0);
            }
            std::thread::sleep(POLL);
        };
        while alive() {
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(100)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(&last);
            if let Some(v) = self.run(cmd) {
                for (id, fields) in streamed(&v) {
                    last = id;
                    let origin = field(&fields, "origin");
                    let Some(body) = field(&fields, "purge") else {
                        continue;
                    };
                    if origin.as_deref() == Some(self.origin.as_str()) {
                        continue;
                    }
                    let (Some(store), Ok(p)) =
                        (store.upgrade(), serde_json::from_str::<Published>(&body))
                    else {
                        continue;
                    };
                    store.purge(&p.purge, p.soft);
                }
            }
            std::thread::sleep(POLL);
        }
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn list(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => &[],
    }
}

/// Stream entries `[[id, [field, value, ...]], ...]`.
fn entries(v: &Value) -> Vec<(String, Vec<(String, String)>)> {
    list(v)
        .iter()
        .filter_map(|e| {
            let [id, fields] = list(e) else { return None };
            let fields = list(fields)
                .chunks(2)
                .filter_map(|kv| Some((text(kv.first()?)?, text(kv.get(1)?)?)))
                .collect();
            Some((text(id)?, fields))
        })
        .collect()
}

/// XREAD's answer, `[[stream, entries]]` (RESP2) or `{stream: entries}` (RESP3).
fn streamed(v: &Value) -> Vec<(String, Vec<(String, String)>)> {
    match v {
        Value::Map(m) => m.iter().flat_map(|(_, e)| entries(e)).collect(),
        _ => list(v)
            .iter()
            .flat_map(|s| match list(s) {
                [_, e] => entries(e),
                _ => Vec::new(),
            })
            .collect(),
    }
}

fn field(fields: &[(String, String)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}
