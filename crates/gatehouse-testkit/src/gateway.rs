//! Runs the real `gatehouse` binary with a config, and stops exactly that PID.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running gateway process.
pub struct GatewayProcess {
    /// The child.
    pub child: Child,
    /// The config file it reads (rewrite it and reload to change config).
    pub config: PathBuf,
    /// Its stdout (access log) file.
    pub stdout: PathBuf,
    /// Its stderr (process log) file.
    pub stderr: PathBuf,
    dir: PathBuf,
}

impl GatewayProcess {
    /// Writes `yaml` to a temp dir and runs `bin run -c FILE --threads 2`, waiting until
    /// every port of `ready_ports` on 127.0.0.1 accepts connections.
    pub fn start(bin: &str, yaml: &str, ready_ports: &[u16]) -> Self {
        Self::start_with_threads(bin, yaml, ready_ports, 2)
    }

    /// As [`GatewayProcess::start`], with `threads` workers.
    pub fn start_with_threads(bin: &str, yaml: &str, ready_ports: &[u16], threads: u16) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-test-{}-{}",
            std::process::id(),
            fastrand_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("gatehouse.yaml");
        std::fs::write(&config, yaml).unwrap();
        let stdout = dir.join("stdout.log");
        let stderr = dir.join("stderr.log");
        let child = Command::new(bin)
            .args(["run", "-c", config.to_str().unwrap(), "--threads"])
            .arg(threads.to_string())
            .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
            .spawn()
            .unwrap();
        let mut g = GatewayProcess {
            child,
            config,
            stdout,
            stderr,
            dir,
        };
        let until = Instant::now() + Duration::from_secs(15);
        while ready_ports
            .iter()
            .any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err())
        {
            if let Ok(Some(status)) = g.child.try_wait() {
                panic!("gateway exited early with {status}: {}", g.stderr_text());
            }
            assert!(
                Instant::now() < until,
                "gateway not ready: {}",
                g.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        g
    }

    /// Sends a signal (by name, e.g. "HUP", "TERM") to this process only.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for exit up to `within`; returns the exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let until = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process log so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The access log so far.
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// The first access-log line containing `needle` (a request id), waiting up to 2 s
    /// for the log's writer thread.
    pub fn access_line(&self, needle: &str) -> Option<serde_json::Value> {
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(l) = self.stdout_text().lines().find(|l| l.contains(needle)) {
                return serde_json::from_str(l).ok();
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the config file.
    pub fn write_config(&self, yaml: &str) {
        // Write then rename, as editors do, so a reader never sees half a file.
        let tmp = self.dir.join("gatehouse.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}
