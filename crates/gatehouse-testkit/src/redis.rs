//! A real `redis-server` (Debian's package, which scripts/test.sh installs) on a
//! 127.0.0.1 port of its own, without persistence; stopped by its PID, and restartable
//! on the same port to play a Redis that dies and comes back.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) redis-server.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Arguments before the common ones (a config file for a sentinel).
    lead: Vec<String>,
    /// Arguments after them (`--replicaof`, `--sentinel`, TLS settings).
    extra: Vec<String>,
    /// A scratch directory of its own (a sentinel rewrites its config file).
    dir: std::path::PathBuf,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(Vec::new(), Vec::new())
    }

    /// Starts one with `lead` arguments before the usual ones and `extra` after them.
    pub fn start_with(lead: Vec<String>, extra: Vec<String>) -> Self {
        let port = crate::free_port();
        let dir = crate::scratch_dir("redis", port);
        let mut r = RedisServer {
            child: None,
            port,
            lead,
            extra,
            dir,
        };
        r.first_start();
        r
    }

    /// A replica of `primary`.
    pub fn replica_of(primary: &RedisServer) -> Self {
        let p = primary.port.to_string();
        Self::start_with(
            Vec::new(),
            vec!["--replicaof".into(), "127.0.0.1".into(), p],
        )
    }

    /// A Redis Cluster of `n` primaries (no replicas), its slots assigned by
    /// `redis-cli --cluster create`; returns once the cluster says it is ok.
    pub fn cluster(n: usize) -> Vec<Self> {
        let extra = || {
            ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
                .map(String::from)
                .to_vec()
        };
        let nodes: Vec<Self> = (0..n)
            .map(|_| Self::start_with(Vec::new(), extra()))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|r| format!("127.0.0.1:{}", r.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}); scripts/test.sh installs it"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            let info = Command::new("redis-cli")
                .args(["-p", &nodes[0].port.to_string(), "cluster", "info"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                return nodes;
            }
            assert!(Instant::now() < until, "the cluster did not form");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A sentinel watching `primary` under `name`, quorum 1, quick to fail over (down
    /// after 500 ms).
    pub fn sentinel_for(primary: &RedisServer, name: &str) -> Self {
        let port = crate::free_port();
        let dir = crate::scratch_dir("sentinel", port);
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "sentinel monitor {name} 127.0.0.1 {} 1\nsentinel down-after-milliseconds {name} 500\nsentinel failover-timeout {name} 2000\nsentinel parallel-syncs {name} 1\n",
                primary.port
            ),
        )
        .unwrap();
        let mut r = RedisServer {
            child: None,
            port,
            lead: vec![conf.to_string_lossy().into_owned()],
            extra: vec!["--sentinel".into()],
            dir,
        };
        r.first_start();
        r
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server again on its port (empty: nothing is saved).
    pub fn restart(&mut self) {
        assert!(
            self.spawn(),
            "redis-server did not start on port {}",
            self.port
        );
    }

    /// Starts the server on a free port, trying another when the one picked was taken
    /// meanwhile (parallel tests start gateways and servers of their own).
    fn first_start(&mut self) {
        for _ in 0..5 {
            if self.spawn() {
                return;
            }
            self.port = crate::free_port();
        }
        panic!("redis-server did not start");
    }

    /// Runs the server and waits until it answers; false when it exited instead (its
    /// port was taken) or stayed silent for 10 s.
    fn spawn(&mut self) -> bool {
        assert!(self.child.is_none(), "already running");
        let sentinel = self.extra.iter().any(|a| a == "--sentinel");
        let mut cmd = Command::new("redis-server");
        cmd.args(&self.lead)
            .args(["--port", &self.port.to_string()]);
        cmd.args(["--bind", "127.0.0.1", "--dir", &self.dir.to_string_lossy()]);
        if !sentinel {
            cmd.args(["--save", "", "--appendonly", "no"]);
        }
        let mut child = cmd
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}); scripts/test.sh installs it")
            });
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if self.command(&["PING"]).as_deref() == Some("+PONG") {
                self.child = Some(child);
                return true;
            }
            if matches!(child.try_wait(), Ok(Some(_))) || Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL, this PID only) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends one command (inline protocol) and returns the first line of the answer.
    pub fn command(&self, words: &[&str]) -> Option<String> {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("{}\r\n", words.join(" ")).as_bytes())
            .ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        Some(line.trim_end().to_string())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
