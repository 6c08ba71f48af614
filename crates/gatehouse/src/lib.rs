//! Gatehouse as a library: [`server`] starts and stops a gateway (the binary's `run`
//! uses it), [`embed`] runs one in-process from config text (tests, fuzzing, embedders).

pub mod embed;
pub mod server;
