//! Policy kinds, one module each, and [`build`], which compiles a named policy from its
//! config. Policies see `http` request/response parts and the RequestCtx only; they never
//! see connections or each other.

pub mod cidr;
pub mod headers;
pub mod ip_filter;

use gatehouse_config::{Config, PolicyConfig};
use gatehouse_core::Policy;
use std::sync::Arc;

/// Compiles policy `name` of `config` (already validated).
pub fn build(name: &str, cfg: &PolicyConfig, config: &Config) -> Result<Arc<dyn Policy>, String> {
    Ok(match cfg {
        PolicyConfig::Headers(h) => Arc::new(headers::HeadersPolicy::build(name, h)?),
        PolicyConfig::IpFilter(f) => {
            Arc::new(ip_filter::IpFilter::build(name, f, &config.ip_groups)?)
        }
    })
}
