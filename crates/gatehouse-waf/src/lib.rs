//! The WAF engine of `type: waf` (docs/protection.md). It reads an installed OWASP Core
//! Rule Set (ModSecurity's SecLang rule language) rather than shipping rules of its own.
//! Built so far: the reader of rules files ([`seclang`]), the transformations
//! ([`transformation`]) and operators ([`operator`]) of CRS request rules, a request's
//! collections as the rules read them ([`request`]), and the interpreter that runs the
//! request rules over them ([`engine`]); the `waf` policy that puts it on the request
//! path comes next.

pub mod engine;
pub mod operator;
pub mod request;
pub mod seclang;
pub mod transformation;
