//! Active health checks: one probe task per target of every upstream with
//! `health_check.active`, on the control runtime. Each probe uses its own fresh
//! connection (never a pooled client connection), starts at a random offset and keeps a
//! jittered interval so probes of many targets do not fire together. Tasks follow
//! reloads: a target whose check and identity did not change keeps its task and counts.

use crate::gateway::Gateway;
use crate::snapshot::Snapshot;
use crate::upstream_tls::ClientTls;
use bytes::Bytes;
use gatehouse_config::resilience::parse_status_range;
use gatehouse_config::{ActiveCheck, CheckKind};
use gatehouse_upstream::TargetState;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

struct Probe {
    check: ActiveCheck,
    target: Arc<TargetState>,
    /// The upstream's TLS settings id (0: cleartext): a renewed CA restarts the probe.
    tls_id: u64,
    task: JoinHandle<()>,
}

/// Keeps one probe task per checked target in step with the live snapshot until shutdown.
pub async fn supervise(gw: Arc<Gateway>) {
    let mut probes: HashMap<(String, Arc<str>), Probe> = HashMap::new();
    let mut seen: Option<Arc<Snapshot>> = None;
    let mut stop = gw.shutdown_signal();
    loop {
        let snap = gw.live.load_full();
        if !seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &snap)) {
            sync(&snap, &mut probes);
            seen = Some(snap);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.changed() => break,
        }
    }
    for (_, p) in probes.drain() {
        p.task.abort();
    }
}

fn sync(snap: &Snapshot, probes: &mut HashMap<(String, Arc<str>), Probe>) {
    let mut wanted = std::collections::HashSet::new();
    for (name, up) in snap.upstreams.iter() {
        let Some(check) = &up.config.health_check.active else {
            continue;
        };
        let tls = snap.upstream_tls.get(name).cloned();
        let tls_id = tls.as_ref().map_or(0, |t| t.id);
        for t in &up.targets {
            let key = (name.clone(), Arc::clone(&t.address));
            wanted.insert(key.clone());
            if let Some(p) = probes.get(&key)
                && p.check == *check
                && Arc::ptr_eq(&p.target, t)
                && p.tls_id == tls_id
            {
                continue;
            }
            if let Some(old) = probes.remove(&key) {
                old.task.abort();
            }
            let task = tokio::spawn(probe_loop(
                name.clone(),
                t.clone(),
                check.clone(),
                tls.clone(),
            ));
            probes.insert(
                key,
                Probe {
                    check: check.clone(),
                    target: t.clone(),
                    tls_id,
                    task,
                },
            );
        }
    }
    probes.retain(|key, p| {
        let keep = wanted.contains(key);
        if !keep {
            p.task.abort();
            // No check watches it any more: it must not stay held down by an old verdict.
            p.target.health.set_active(true);
        }
        keep
    });
}

async fn probe_loop(
    upstream: String,
    target: Arc<TargetState>,
    check: ActiveCheck,
    tls: Option<Arc<ClientTls>>,
) {
    let interval = check.interval.get();
    let expect: Vec<(u16, u16)> = check
        .expect_status
        .iter()
        .filter_map(|s| parse_status_range(s).ok())
        .collect();
    tokio::time::sleep(jitter(interval, 1.0)).await;
    let (mut passes, mut fails) = (0u32, 0u32);
    loop {
        let verdict = probe(&target, &check, &expect, tls.as_deref()).await;
        match verdict {
            Ok(()) => {
                passes += 1;
                fails = 0;
                if passes >= check.healthy_threshold
                    && target.health.active_down()
                    && target.health.set_active(true)
                {
                    tracing::warn!(%upstream, target = %target.address, "active check: target healthy again");
                }
            }
            Err(why) => {
                fails += 1;
                passes = 0;
                if fails >= check.unhealthy_threshold
                    && !target.health.active_down()
                    && target.health.set_active(false)
                {
                    tracing::warn!(%upstream, target = %target.address, reason = %why, "active check: target unhealthy");
                }
            }
        }
        // +-10% so probes that started together drift apart.
        tokio::time::sleep(interval.mul_f64(0.9) + jitter(interval, 0.2)).await;
    }
}

/// A uniform random share of `d`, up to `share` of it.
fn jitter(d: Duration, share: f64) -> Duration {
    d.mul_f64(share * fastrand::f64())
}

/// One probe on a fresh connection (TLS for an upstream that speaks it, except a `tcp`
/// check, which only connects): Ok when the target passed.
async fn probe(
    target: &TargetState,
    check: &ActiveCheck,
    expect: &[(u16, u16)],
    tls: Option<&ClientTls>,
) -> Result<(), String> {
    let addr = target.socket_addr().ok_or("address not resolved")?;
    let attempt = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if check.kind == CheckKind::Tcp {
            return Ok(());
        }
        match tls {
            None => http_probe(stream, target, check, expect).await,
            Some(tls) => {
                let s = tls
                    .connect(target, stream)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                http_probe(s, target, check, expect).await
            }
        }
    };
    tokio::time::timeout(check.timeout.get(), attempt)
        .await
        .map_err(|_| format!("no answer within {:?}", check.timeout.get()))?
}

/// The HTTP request of a probe on an open connection.
async fn http_probe<T>(
    io: T,
    target: &TargetState,
    check: &ActiveCheck,
    expect: &[(u16, u16)],
) -> Result<(), String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // The connection task ends with this probe: the request says Connection: close.
    let driver = tokio::spawn(conn);
    let host = check
        .host
        .clone()
        .unwrap_or_else(|| match target.host.contains(':') {
            // An IPv6 literal is bracketed in a Host header.
            true => format!("[{}]:{}", target.host, target.port),
            false => format!("{}:{}", target.host, target.port),
        });
    let req = http::Request::get(check.path.as_str())
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "gatehouse-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let resp = tx.send_request(req).await;
    driver.abort();
    let status = resp
        .map_err(|e| format!("exchange: {e}"))?
        .status()
        .as_u16();
    if expect.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status)) {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}
