//! The WAF engine of `type: waf` (docs/protection.md). It reads an installed OWASP Core
//! Rule Set (ModSecurity's SecLang rule language) rather than shipping rules of its own.
//! The reader of rules files ([`seclang`]), the transformations ([`transformation`])
//! and operators ([`operator`]) of CRS request rules, a request's collections as the
//! rules read them ([`request`]), and the engine that runs the compiled request rules
//! over them ([`engine`]); `gatehouse-policies`' `waf` puts it on the request path.

pub mod engine;
pub mod operator;
mod phrasebook;
pub mod request;
pub mod seclang;
mod template;
pub mod transformation;
