//! The WAF engine of `type: waf` (docs/protection.md). It reads an installed OWASP Core
//! Rule Set (ModSecurity's SecLang rule language) rather than shipping rules of its own.
//! Built so far: the reader of rules files ([`seclang`]), which turns them into
//! directives with their file and line, the transformations CRS request rules use
//! ([`transformation`]), their operators ([`operator`]) and the request's collections
//! they read ([`request`]); the compiler and the inspection come next.

pub mod operator;
pub mod request;
pub mod seclang;
pub mod transformation;
