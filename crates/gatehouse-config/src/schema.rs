//! The YAML schema: the public config contract (DESIGN.md section 3). Unknown fields are
//! errors everywhere. Defaults live here, next to the field they belong to, and are
//! documented in docs/configuration.md.

use crate::observability::{AccessLogConfig, AnalyticsConfig, RouteAnalytics, TracingConfig};
use crate::resilience::{CircuitBreaker, HealthCheck, Retries};
use crate::units::{Duration, Size};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole `gatehouse.yaml` document.
#[derive(Debug, Clone, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listening sockets for client traffic.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// The admin API listener; absent means no admin listener.
    #[serde(default)]
    pub admin: Option<Admin>,
    /// Named upstreams (groups of targets).
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    /// Named, reusable policies.
    #[serde(default)]
    pub policies: BTreeMap<String, PolicyConfig>,
    /// The embedded store for API keys created through the admin API; absent = none.
    #[serde(default)]
    pub store: Option<StoreConfig>,
    /// State shared by several gateway processes (docs/traffic.md: cluster scope).
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Consumers declared in config (docs/identity.md): who may call, in which groups,
    /// with which credentials.
    #[serde(default)]
    pub consumers: Vec<ConsumerConfig>,
    /// Named CIDR groups reusable in `ip_filter` lists and `trusted_proxies`.
    #[serde(default)]
    pub ip_groups: BTreeMap<String, Vec<String>>,
    /// Routes, matched by the precedence rules of docs/routing.md.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Policies applied to every route, before the route's own.
    #[serde(default)]
    pub default_policies: Vec<String>,
    /// Peers whose X-Forwarded-For is believed (CIDRs or ip_groups names).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Who is never limited and who is refused outright (docs/protection.md).
    #[serde(default)]
    pub protection: ProtectionConfig,
    /// The JSON access log: a target (`stdout`, `stderr`, `off`, a file path) or
    /// `{ output, sample, always }`.
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// What the gateway keeps about recent requests (transactions).
    #[serde(default)]
    pub analytics: AnalyticsConfig,
    /// The Prometheus endpoint and request-path recording.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// OpenTelemetry span export; absent: none.
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
    /// Reload behaviour.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Shutdown behaviour.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// How the gateway's own error responses read.
    #[serde(default)]
    pub errors: ErrorsConfig,
}

/// `errors:`: the problem+json bodies of the gateway's own responses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorsConfig {
    /// Put each error's full cause (upstream names, addresses, policy names) in `detail`;
    /// default false. For development only.
    #[serde(default)]
    pub verbose: bool,
    /// Base URL of `type` (`{type_base}/{status}`), for operators who publish error pages;
    /// default none, which gives `about:blank`.
    #[serde(default)]
    pub type_base: Option<String>,
}

/// One client-facing listener.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Stable name, used in logs and metrics.
    pub name: String,
    /// `ip:port`, e.g. `127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:8080`.
    pub address: String,
    /// Protocols served on the socket; default `[http1, h2c]`.
    #[serde(default = "default_protocols")]
    pub protocols: Vec<Protocol>,
    /// Largest request head accepted (431 beyond); default 64KiB.
    #[serde(default = "default_max_header_size")]
    pub max_header_size: Size,
    /// Time a client has to send a complete request head (slow clients); default 10s.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Duration,
    /// Keep-alive connections with no request for this long are closed; default 60s.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// Concurrent connections accepted by this listener (all workers); default 10000.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Concurrent connections from one peer address (IPv6 peers counted per /64); more
    /// are closed at accept. Absent: no cap.
    #[serde(default)]
    pub max_connections_per_ip: Option<usize>,
    /// Requests per client IP (after `trusted_proxies`; IPv6 per /64) before routing, a
    /// token bucket; more get 429 with `Retry-After`. Absent: no limit.
    #[serde(default)]
    pub request_rate_per_ip: Option<RequestRate>,
    /// Longest wait for more request body bytes (408 beyond); default 60s.
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout: Duration,
    /// Least mean body rate, per second, since the first byte, once the body is older
    /// than `body_read_timeout` (408 below). Absent: no minimum.
    #[serde(default)]
    pub min_body_rate: Option<Size>,
    /// Most header fields a request may carry (431 beyond); default 100.
    #[serde(default = "default_max_header_count")]
    pub max_header_count: usize,
    /// Streams an HTTP/2 client may have open at once, advertised in SETTINGS and
    /// enforced (REFUSED_STREAM beyond); default 100.
    #[serde(default = "default_http2_max_concurrent_streams")]
    pub http2_max_concurrent_streams: u32,
    /// Stream resets (RST_STREAM) an HTTP/2 client may send per connection per window;
    /// beyond, GOAWAY ENHANCE_YOUR_CALM. Default 200 per 10s.
    #[serde(default = "default_http2_max_resets")]
    pub http2_max_resets: FrameRate,
    /// How request paths are normalized before routing (docs/routing.md).
    #[serde(default)]
    pub path_normalization: PathNormalization,
    /// TLS on this listener (docs/tls.md); absent means cleartext.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
}

/// `protection`: the client table and automatic bans, addresses exempt from the
/// per-address limits, and addresses refused (docs/protection.md).
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProtectionConfig {
    /// Client addresses whose offences are tracked; the least recently seen is
    /// forgotten beyond it. Default 100000.
    #[serde(default = "default_client_table_size")]
    pub client_table_size: usize,
    /// Bans held at most, apart from the client table (new addresses cannot evict a
    /// ban). Default 100000.
    #[serde(default = "default_max_bans")]
    pub max_bans: usize,
    /// IPv6 clients are counted per network of this prefix length. Default 64.
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// CIDRs or `ip_groups` names never limited per address nor banned.
    #[serde(default)]
    pub exempt: Vec<String>,
    /// CIDRs or `ip_groups` names refused: connections from them are closed at accept,
    /// and requests whose client IP (behind `trusted_proxies`) is in them get 403.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Automatic bans after repeated offences; absent: offences are counted, nobody
    /// is banned automatically.
    #[serde(default)]
    pub ban: Option<BanConfig>,
}

impl Default for ProtectionConfig {
    fn default() -> Self {
        Self {
            client_table_size: default_client_table_size(),
            max_bans: default_max_bans(),
            ipv6_prefix: default_ipv6_prefix(),
            exempt: Vec::new(),
            deny: Vec::new(),
            ban: None,
        }
    }
}

/// `protection.ban`: when repeated offences ban a client, and for how long.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BanConfig {
    /// Offences that ban ...
    pub after: u32,
    /// ... when they fall within this sliding window.
    pub within: Duration,
    /// The first ban's length; each repeat ban doubles it.
    pub duration: Duration,
    /// The longest ban; a client clean for this long after a ban starts again at
    /// `duration`. Default 24h.
    #[serde(default = "default_max_ban")]
    pub max_duration: Duration,
    /// The offences that count: `waf`, `rate_limit`, `connection_limit`, `bot`,
    /// `slow_client`, `http2_abuse`, `bad_request`. Default: all of them.
    #[serde(default = "default_ban_triggers")]
    pub triggers: Vec<String>,
}

fn default_client_table_size() -> usize {
    100_000
}
fn default_max_bans() -> usize {
    100_000
}
fn default_ipv6_prefix() -> u8 {
    64
}
fn default_max_ban() -> Duration {
    Duration(std::time::Duration::from_secs(24 * 3600))
}
fn default_ban_triggers() -> Vec<String> {
    gatehouse_core::Offence::ALL
        .iter()
        .map(|o| o.name().to_string())
        .collect()
}

/// A number of frames per window (`http2_max_resets`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrameRate {
    /// Frames allowed per window.
    pub limit: u32,
    /// The window, e.g. `10s`.
    pub per: Duration,
}

fn default_http2_max_resets() -> FrameRate {
    FrameRate {
        limit: 200,
        per: Duration(std::time::Duration::from_secs(10)),
    }
}

/// `request_rate_per_ip`: a token bucket per client address.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestRate {
    /// Requests refilled per `per`.
    pub limit: u64,
    /// The refill period, e.g. `1s`.
    pub per: Duration,
    /// Requests a client may send at once after being quiet; default `limit`.
    #[serde(default)]
    pub burst: Option<u64>,
}

/// TLS settings of a listener.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificates with their keys (PEM). SNI picks the one whose own names (DNS SANs, or
    /// the CN without SANs; `*.` wildcards) match; the first is the default.
    pub certificates: Vec<CertificateFiles>,
    /// Lowest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Client certificates: none (default), optional or required, checked against `ca`.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// A certificate chain and its private key, PEM files; relative paths are resolved
/// against the config file's directory.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// Certificate chain, leaf first.
    pub cert: String,
    /// Private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: String,
    /// A DER OCSP response for the certificate, stapled to handshakes that ask for one
    /// (as nginx's `ssl_stapling_file`); reloaded when the file changes. Default none.
    #[serde(default)]
    pub ocsp: Option<String>,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, JsonSchema)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientAuth {
    /// `none` (default), `optional` (checked when presented) or `required`.
    #[serde(default)]
    pub mode: ClientAuthMode,
    /// CA certificates (PEM) client certificates must chain to; required unless `none`.
    #[serde(default)]
    pub ca: Option<String>,
}

/// How a listener treats client certificates.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    /// No certificate is asked for.
    #[default]
    None,
    /// A certificate is asked for and verified when sent; clients without one connect.
    Optional,
    /// The handshake fails without a valid certificate.
    Required,
}

/// Path normalization settings of a listener; normalization itself is always on.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathNormalization {
    /// Merge repeated slashes (`/a//b` is `/a/b`); default true.
    #[serde(default = "default_true")]
    pub merge_slashes: bool,
    /// `%2F`, `%5C` and `\` in a path: keep (default), reject (400) or decode (to `/`).
    #[serde(default)]
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathNormalization {
    fn default() -> Self {
        Self {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Keep,
        }
    }
}

/// What a listener does with encoded slashes and backslashes in a path.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EscapedSlashes {
    /// Forward unchanged; not separators for routing.
    #[default]
    Keep,
    /// Answer 400.
    Reject,
    /// Decode each to `/` before normalizing.
    Decode,
}

fn default_upgrades() -> Vec<String> {
    vec!["websocket".into()]
}

fn default_protocols() -> Vec<Protocol> {
    vec![Protocol::Http1, Protocol::H2c]
}
fn default_max_header_size() -> Size {
    Size(64 * 1024)
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_connections() -> usize {
    10_000
}
fn default_body_read_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_header_count() -> usize {
    100
}
fn default_http2_max_concurrent_streams() -> u32 {
    100
}

/// A protocol a listener speaks.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 (and 1.0).
    Http1,
    /// HTTP/2 over cleartext with prior knowledge; on a TLS listener, HTTP/2 by ALPN.
    H2c,
    /// HTTP/2: by ALPN on a TLS listener, with prior knowledge on a cleartext one.
    H2,
}

/// The admin API listener.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `ip:port` of the admin API.
    pub address: String,
    /// Client addresses allowed (CIDRs or `ip_groups` names); others get 403 on every
    /// path. Absent: any address.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// Tokens asked for as `Authorization: Bearer` (or Basic with the token as the
    /// password). Absent: no token is asked, which only suits an admin API on loopback.
    #[serde(default)]
    pub tokens: Option<Vec<AdminToken>>,
    /// TLS on the admin listener, optionally with client certificates.
    #[serde(default)]
    pub tls: Option<AdminTls>,
}

/// One admin token and what it may do.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// The token itself (use `${VAR}`); or `token_sha256`.
    #[serde(default)]
    pub token: Option<String>,
    /// Lower-case hex SHA-256 of the token, so the config never holds it.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// `read` (GET and HEAD only) or `admin` (everything).
    pub role: AdminRole,
    /// Who holds it, for the audit log; default `tokens[N]`.
    #[serde(default)]
    pub name: Option<String>,
}

/// What an admin token may do.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AdminRole {
    /// GET and HEAD.
    Read,
    /// Every method.
    Admin,
}

/// TLS of the admin listener.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminTls {
    /// Certificate chain (PEM).
    pub cert: String,
    /// Private key (PEM).
    pub key: String,
    /// Client certificates, as on a listener.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// A named group of targets and how to balance over them.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// The servers of this upstream.
    pub targets: Vec<Target>,
    /// How a target is picked; default round_robin.
    #[serde(default)]
    pub balancer: BalancerKind,
    /// Hash key for consistent_hash (and the fallback key of sticky): `ip`, `header:NAME`,
    /// `cookie:NAME`, `query:NAME`, `path`.
    #[serde(default)]
    pub hash_on: Option<String>,
    /// Sticky-session cookie settings (balancer: sticky).
    #[serde(default)]
    pub sticky: StickyConfig,
    /// Protocol spoken to the targets: http1 (default) or h2c (gRPC).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Connection pool limits.
    #[serde(default)]
    pub pool: PoolConfig,
    /// How often hostnames of targets are resolved again; default 30s.
    #[serde(default = "default_resolve_interval")]
    pub resolve_interval: Duration,
    /// Active probes and passive ejection (docs/resilience.md).
    #[serde(default)]
    pub health_check: HealthCheck,
    /// Ramp a (re)admitted target's share of traffic up over this window; default off.
    #[serde(default)]
    pub slow_start: Option<Duration>,
    /// Retry policy; absent = a failed connect moves on to another target once.
    #[serde(default)]
    pub retries: Option<Retries>,
    /// Circuit breaker and in-flight cap; absent = none.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// TLS to the targets (docs/tls.md); also implied by `https://` targets.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
}

/// TLS from the gateway to an upstream's targets.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq, Hash, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// CA certificates (PEM) the targets' certificates must chain to; default the
    /// system's trust store.
    #[serde(default)]
    pub ca: Option<String>,
    /// Name sent as SNI and checked against the certificate; default the target's host.
    #[serde(default)]
    pub sni: Option<String>,
    /// Client certificate chain (PEM) for targets that require one; with `key`.
    #[serde(default)]
    pub cert: Option<String>,
    /// Private key of `cert`.
    #[serde(default)]
    pub key: Option<String>,
}

impl Upstream {
    /// Whether connections to the targets use TLS: a `tls` block or `https://` targets.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
            || self
                .targets
                .iter()
                .any(|t| t.address.starts_with("https://"))
    }
}

fn default_resolve_interval() -> Duration {
    Duration::from_secs(30)
}

/// One target of an upstream.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `host:port`, `http://host:port` or `https://host:port` (TLS, docs/tls.md).
    pub address: String,
    /// Relative share of traffic; default 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// The load-balancing algorithm of an upstream.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BalancerKind {
    /// Smooth weighted round robin, as nginx.
    #[default]
    RoundRobin,
    /// Fewest in-flight requests (weights honoured).
    LeastConnections,
    /// Power of two choices on EWMA latency.
    LeastLatency,
    /// Weighted random.
    Random,
    /// Hash of the client IP over a consistent ring.
    IpHash,
    /// Hash of `hash_on` over a consistent ring.
    ConsistentHash,
    /// Cookie set by the gateway pins a client to a target.
    Sticky,
}

/// Sticky-session cookie settings.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StickyConfig {
    /// Cookie name; default `gh_sticky`.
    #[serde(default = "default_sticky_cookie")]
    pub cookie: String,
    /// Cookie Max-Age; absent = session cookie.
    #[serde(default)]
    pub ttl: Option<Duration>,
}

impl Default for StickyConfig {
    fn default() -> Self {
        Self {
            cookie: default_sticky_cookie(),
            ttl: None,
        }
    }
}

fn default_sticky_cookie() -> String {
    "gh_sticky".into()
}

/// Protocol spoken to an upstream's targets.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 cleartext with prior knowledge (gRPC backends); over TLS, HTTP/2 by ALPN.
    H2c,
    /// HTTP/2: by ALPN over TLS, with prior knowledge in cleartext (the same as `h2c`).
    H2,
}

/// Upstream timeouts.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// TCP connect; default 2s.
    #[serde(default = "default_connect")]
    pub connect: Duration,
    /// From sending the request to the response head; default 30s.
    #[serde(default = "default_request")]
    pub request: Duration,
    /// Idle pooled connections are closed after this; default 90s.
    #[serde(default = "default_idle")]
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: default_connect(),
            request: default_request(),
            idle: default_idle(),
        }
    }
}

fn default_connect() -> Duration {
    Duration::from_secs(2)
}
fn default_request() -> Duration {
    Duration::from_secs(30)
}
fn default_idle() -> Duration {
    Duration::from_secs(90)
}

/// Upstream connection pool limits (per worker thread and target).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Idle keep-alive connections kept per target and worker; default 512.
    #[serde(default = "default_max_idle")]
    pub max_idle_per_target: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_idle_per_target: default_max_idle(),
        }
    }
}

fn default_max_idle() -> usize {
    512
}

/// `metrics:`: the Prometheus endpoint (`GET /metrics` on the admin listener).
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Record metrics on the request path; default true. When false, `/metrics` still
    /// answers with the control-plane and process families.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Duration histogram bucket bounds, seconds, ascending; default the OpenTelemetry
    /// HTTP ones up to 10 s. Set when the process starts (a reload cannot change them).
    #[serde(default = "default_buckets")]
    pub buckets: Vec<f64>,
    /// Per-consumer request series.
    #[serde(default)]
    pub consumers: ConsumerMetrics,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            buckets: default_buckets(),
            consumers: ConsumerMetrics::default(),
        }
    }
}

/// `metrics.consumers`: `gatehouse_consumer_requests_total{consumer,status_class}`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerMetrics {
    /// Count requests per consumer; default false.
    #[serde(default)]
    pub enabled: bool,
    /// Consumers given their own series, the first seen; the rest count as `other`;
    /// default 100.
    #[serde(default = "default_consumer_series")]
    pub max: usize,
}

impl Default for ConsumerMetrics {
    fn default() -> Self {
        Self {
            enabled: false,
            max: default_consumer_series(),
        }
    }
}

fn default_consumer_series() -> usize {
    100
}

fn default_buckets() -> Vec<f64> {
    vec![
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
}

fn yes() -> bool {
    true
}

/// A named policy: `type` selects the kind (docs/policies.md), which reads the other
/// fields itself when the config compiles.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
pub struct PolicyConfig {
    /// The policy kind: `headers`, `ip_filter`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Longest a wait of this policy may take (a key-set fetch, a Redis round trip)
    /// before the request is answered 503; default 5s.
    #[serde(default = "default_policy_timeout")]
    pub timeout: Duration,
    /// The kind's own settings.
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

fn default_policy_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(5))
}

/// A route: match conditions, policies, an optional rewrite and exactly one action.
#[derive(Debug, Clone, Deserialize, PartialEq, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique route name.
    pub name: String,
    /// Conditions; an absent block matches everything.
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    /// Policy names run after default_policies.
    #[serde(default)]
    pub policies: Vec<String>,
    /// With several authenticating policies: `any` one admits (default) or `all` must.
    #[serde(default)]
    pub auth_mode: AuthMode,
    /// Path rewrite applied before proxying.
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    /// Largest request body accepted (413 beyond); absent = unlimited.
    #[serde(default)]
    pub max_body_size: Option<Size>,
    /// Protocol upgrades forwarded (`Upgrade` tokens); default `[websocket]`. Others are
    /// stripped and the request goes on as a plain one; `h2c` is never allowed.
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<String>,
    /// Action: proxy to one upstream.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Action: weighted split over upstreams (canary).
    #[serde(default)]
    pub split: Option<Vec<SplitEntry>>,
    /// A split side with no healthy target hands its requests to another side; default true.
    #[serde(default = "default_true")]
    pub split_fallback: bool,
    /// Keeps one client on one split side: `ip`, `header:NAME`, `cookie:NAME`,
    /// `query:NAME` or `path`; default none (random per request).
    #[serde(default)]
    pub split_hash_on: Option<String>,
    /// Action: redirect the client.
    #[serde(default)]
    pub redirect: Option<Redirect>,
    /// Action: answer with a fixed response.
    #[serde(default)]
    pub respond: Option<Respond>,
    /// Action: API versions, each with its own action (docs/routing.md).
    #[serde(default)]
    pub versions: Option<crate::versions::Versions>,
    /// Action: parallel upstream calls merged into one JSON answer (docs/edge.md).
    #[serde(default)]
    pub aggregate: Option<crate::aggregate::Aggregate>,
    /// The route's own quality-score settings (`latency_target`).
    #[serde(default)]
    pub analytics: RouteAnalytics,
}

/// Match conditions of a route; all present conditions must hold.
#[derive(Debug, Clone, Deserialize, PartialEq, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Host names, exact or `*.suffix`; empty = any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path condition; absent = prefix `/`.
    #[serde(default)]
    pub path: Option<PathMatch>,
    /// Methods; empty = any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header conditions.
    #[serde(default)]
    pub headers: Vec<ValueMatch>,
    /// Query-parameter conditions.
    #[serde(default)]
    pub query: Vec<ValueMatch>,
}

/// How a path is matched.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// The whole path equals the value.
    Exact,
    /// The path starts with the value on a segment boundary.
    #[default]
    Prefix,
    /// The whole path matches the regex.
    Regex,
    /// `/users/{id}` and `/files/{*rest}` with captured parameters.
    Template,
}

/// A path condition.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathMatch {
    /// Kind of match; default prefix.
    #[serde(default, rename = "type")]
    pub kind: PathKind,
    /// The path, prefix, regex or template.
    pub value: String,
}

/// How a header or query value is matched.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    /// Equal to `value`.
    #[default]
    Exact,
    /// Matches the regex `value` (anchored).
    Regex,
    /// Present with any value.
    Present,
}

/// A header or query condition.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueMatch {
    /// Header (case-insensitive) or query parameter (case-sensitive) name.
    pub name: String,
    /// Expected value (not used for `present`).
    #[serde(default)]
    pub value: Option<String>,
    /// Kind of match; default exact.
    #[serde(default, rename = "type")]
    pub kind: ValueKind,
}

/// Path rewrite; exactly one field.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Remove this leading prefix (segment-wise).
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// Replace the matched path prefix of the route with this value.
    #[serde(default)]
    pub replace_prefix: Option<String>,
    /// Replace the whole path; `{param}` placeholders take template captures.
    #[serde(default)]
    pub replace_path: Option<String>,
}

/// One branch of a weighted split.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitEntry {
    /// Upstream name.
    pub upstream: String,
    /// Relative weight (0 disables the branch).
    pub weight: u32,
}

/// A redirect action.
#[derive(Debug, Clone, Deserialize, PartialEq, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// New scheme (`http` or `https`).
    #[serde(default)]
    pub scheme: Option<String>,
    /// New host (without port).
    #[serde(default)]
    pub host: Option<String>,
    /// New port.
    #[serde(default)]
    pub port: Option<u16>,
    /// New path (query is kept).
    #[serde(default)]
    pub path: Option<String>,
    /// Full target template with `{scheme}`, `{host}`, `{path}`, `{query}` and template params.
    #[serde(default)]
    pub to: Option<String>,
    /// 301, 302 (default), 303, 307 or 308.
    #[serde(default = "default_redirect_status")]
    pub status: u16,
}

fn default_redirect_status() -> u16 {
    302
}

/// A fixed-response action.
#[derive(Debug, Clone, Deserialize, PartialEq, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Respond {
    /// Status; default 200.
    #[serde(default = "default_ok")]
    pub status: u16,
    /// Response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Response body; default empty.
    #[serde(default)]
    pub body: String,
}

fn default_ok() -> u16 {
    200
}

/// Hot-reload settings.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Watch the config file and reload on change; default true.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Wait this long after the last change before reloading; default 300ms.
    #[serde(default = "default_debounce")]
    pub debounce: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: true,
            debounce: default_debounce(),
        }
    }
}

pub(crate) fn default_true() -> bool {
    true
}
fn default_debounce() -> Duration {
    Duration::from_millis(300)
}

/// Shutdown settings.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long in-flight requests get to finish after SIGTERM; default 30s.
    #[serde(default = "default_drain")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: default_drain(),
        }
    }
}

fn default_drain() -> Duration {
    Duration::from_secs(30)
}

/// How a route's authenticating policies combine.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Any one of them admits the request.
    #[default]
    Any,
    /// Every one of them must.
    All,
}

/// A consumer declared in config.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Unique name; forwarded upstream as `x-consumer`.
    pub name: String,
    /// Groups, for `acl` policies; forwarded as `x-consumer-groups`.
    #[serde(default)]
    pub groups: Vec<String>,
    /// How the consumer proves who it is.
    #[serde(default)]
    pub credentials: Vec<CredentialConfig>,
}

/// One credential of a consumer.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialConfig {
    /// An API key, checked by `api_key` policies: the key itself (`key`, use `${VAR}`) or
    /// the lower-case hex SHA-256 of it (`key_sha256`).
    ApiKey {
        /// The key.
        #[serde(default)]
        key: Option<String>,
        /// Its SHA-256, lower-case hex.
        #[serde(default)]
        key_sha256: Option<String>,
    },
    /// HTTP Basic, checked by `basic_auth` policies: a user name and the Argon2 PHC
    /// string of the password (`$argon2id$v=19$...`), never the password itself.
    Basic {
        /// The user name.
        username: String,
        /// `$argon2id$...` (argon2i and argon2d are accepted too).
        password_hash: String,
    },
    /// A TLS client certificate, checked by `mtls_auth` policies: its subject (RFC 4514,
    /// `CN=mobile-app,O=Example`) or one of its subject alternative names
    /// (`spiffe://...`, a DNS name, an e-mail address).
    Mtls {
        /// The certificate's subject.
        #[serde(default)]
        subject: Option<String>,
        /// One of its subject alternative names.
        #[serde(default)]
        san: Option<String>,
    },
    /// A JSON Web Token, checked by `jwt` policies: a verified token whose `sub` claim is
    /// `subject` is this consumer.
    Jwt {
        /// The token's `sub`.
        subject: String,
    },
    /// A key that signs requests (RFC 9421), checked by `http_signature` policies: the
    /// signature's `keyid` is `key_id`; the key is an HMAC-SHA256 `secret` (use `${VAR}`)
    /// or an Ed25519 `public_key` (a PEM file, relative to the config file).
    HttpSignature {
        /// The `keyid` signatures name.
        key_id: String,
        /// Shared secret for `hmac-sha256`.
        #[serde(default)]
        secret: Option<String>,
        /// PEM file of an Ed25519 public key, for `ed25519`.
        #[serde(default)]
        public_key: Option<String>,
    },
}

/// `cluster:`: what gateway processes share.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The Redis server that holds shared counters; absent = nothing is shared.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
}

/// `cluster.redis:`: one Redis server (or a TLS one) every gateway of the cluster uses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db`, `rediss://...` (TLS), or
    /// `redis+sentinel://[user:password@]host:port[,host:port...]/PRIMARY_NAME[/db]`
    /// (`rediss+sentinel://` with TLS): the sentinels are asked for the current primary.
    pub url: String,
    /// TLS: a PEM file of the CA the server's certificate must chain to; default the
    /// system's trust store. Relative to the config file's directory.
    #[serde(default)]
    pub ca: Option<String>,
    /// TLS: a PEM client certificate for servers that ask for one (with `key`).
    #[serde(default)]
    pub cert: Option<String>,
    /// TLS: the PEM private key of `cert`.
    #[serde(default)]
    pub key: Option<String>,
    /// What a limit decides while Redis does not answer: `allow` (default: requests
    /// pass) or `deny` (503).
    #[serde(default)]
    pub on_failure: OnFailure,
    /// How long a gateway keeps budget it reserved and has not used, and how often it
    /// tries Redis again while it is down; default 50ms.
    #[serde(default = "default_sync_interval")]
    pub sync_interval: Duration,
}

fn default_sync_interval() -> Duration {
    Duration::from_millis(50)
}

/// What happens to limited requests while Redis is unreachable.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Requests pass unlimited.
    #[default]
    Allow,
    /// Requests are refused with 503.
    Deny,
}

/// The embedded SQLite store.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Database file, created when missing; relative to the config file's directory.
    pub path: String,
}
