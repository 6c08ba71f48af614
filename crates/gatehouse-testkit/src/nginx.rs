//! A real nginx with libmodsecurity and the installed OWASP CRS (Debian's `nginx`,
//! `libnginx-mod-http-modsecurity` and `modsecurity-crs`, which scripts/test.sh
//! installs), proxying to a backend on 127.0.0.1: the reference the `waf` policy is
//! compared with. One foreground process (no master) in a scratch directory of its own,
//! stopped by its PID.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's package puts the module.
pub const MODSECURITY_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_modsecurity_module.so";

/// A running nginx + ModSecurity.
pub struct ModSecurityNginx {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

impl ModSecurityNginx {
    /// Starts nginx in front of `upstream` with CRS from `rules_dir` (and the setup file
    /// beside Debian's package) at `paranoia_level`, allowing `allowed_methods`, the
    /// anomaly threshold CRS's default (5); waits until it accepts connections.
    ///
    /// Configured as the `waf` policy runs CRS: request rules, the JSON and XML body
    /// processors switched on by content type (as ModSecurity's recommended
    /// configuration does), bodies inspected up to 128 KiB and the rest passed.
    pub fn start(
        upstream: SocketAddr,
        rules_dir: &Path,
        paranoia_level: u8,
        allowed_methods: &str,
    ) -> Self {
        let port = crate::free_port();
        let dir = crate::scratch_dir("nginx", port);
        let modsec = dir.join("modsecurity.conf");
        std::fs::write(
            &modsec,
            format!(
                r#"SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit 13107200
SecRequestBodyNoFilesLimit 131072
SecRequestBodyLimitAction ProcessPartial
SecResponseBodyAccess Off
SecAuditEngine Off
SecArgumentSeparator &
SecCookieFormat 0
SecPcreMatchLimit 100000
SecPcreMatchLimitRecursion 100000
SecRule REQUEST_HEADERS:Content-Type "(?:application(?:/soap\+|/)|text/)xml" "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "application/json" "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecAction "id:900000,phase:1,nolog,pass,t:none,setvar:tx.paranoia_level={paranoia_level}"
SecAction "id:900200,phase:1,nolog,pass,t:none,setvar:'tx.allowed_methods={allowed_methods}'"
Include /etc/modsecurity/crs/crs-setup.conf
Include {}/*.conf
"#,
                rules_dir.display()
            ),
        )
        .unwrap();
        let d = dir.display();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                r#"load_module {MODSECURITY_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log error;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  client_max_body_size 1m;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      modsecurity on;
      modsecurity_rules_file {};
      proxy_pass http://{upstream};
    }}
  }}
}}
"#,
                modsec.display()
            ),
        )
        .unwrap();
        // Debian installs it in /usr/sbin, which a user's PATH may lack.
        let bin = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|b| !b.starts_with('/') || Path::new(b).exists())
            .unwrap_or("nginx");
        let child = Command::new(bin)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nginx ({e}); scripts/test.sh installs it"));
        let mut n = ModSecurityNginx { child, port, dir };
        // Loading CRS takes libmodsecurity a second or two.
        let until = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = n.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = n.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                let log = std::fs::read_to_string(n.dir.join("error.log")).unwrap_or_default();
                panic!("nginx exited ({status}): {err}{log}");
            }
            assert!(Instant::now() < until, "nginx did not start on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        n
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ModSecurityNginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
