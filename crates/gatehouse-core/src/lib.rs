//! The shared vocabulary of Gatehouse: the per-request context, the policy trait and its
//! flow, body needs and filters, state that outlives a snapshot, and RFC 9457 problem
//! responses. It performs no I/O and depends on no other crate of ours, so every layer
//! above can speak it.

pub mod attack;
pub mod body_needs;
pub mod connection;
pub mod consumer;
pub mod ctx;
pub mod dispatch;
pub mod flow;
pub mod offence;
pub mod policy;
pub mod problem;
pub mod state;
pub mod trace;

pub use attack::Attack;
pub use body_needs::{
    Bodies, BodyFilter, BodyNeeds, FilterError, RequestBodyNeed, ResponseBodyNeed,
};
pub use connection::{Connection, Scheme, TlsInfo};
pub use consumer::{CREDENTIALS_INVALID, CREDENTIALS_MISSING, Consumer, Credential};
pub use ctx::{PhaseTimings, RequestCtx, ShortCircuit};
pub use dispatch::Dispatch;
pub use flow::{Flow, LocalResponse, Resume, Wait};
pub use offence::Offence;
pub use policy::Policy;
pub use problem::{Problem, ProblemStyle, problem_response};
pub use state::{Fingerprint, Stage, StateRegistry};
pub use trace::TraceContext;
