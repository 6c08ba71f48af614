//! Gatehouse configuration: the YAML schema (the public contract of DESIGN.md section 3),
//! loading with `${VAR}` interpolation, and validation whose every error names
//! file, line, column and field path. Depends only on gatehouse-core.

pub mod aggregate;
pub mod error;
pub mod field_errors;
pub mod interpolate;
pub mod load;
pub mod locate;
pub mod observability;
pub mod resilience;
pub mod schema;
pub mod units;
pub mod validate;
pub mod versions;

pub use aggregate::{Aggregate, AggregateCall, Merge};
pub use error::{ConfigError, ConfigErrors};
pub use load::{load_file, load_str};
pub use resilience::{
    ActiveCheck, Backoff, CheckKind, CircuitBreaker, HealthCheck, PassiveCheck, Retries,
    RetryBudget, RetryMethods, RetryOn,
};
pub use schema::*;
pub use units::{Duration, Size};
pub use versions::{AfterSunset, ApiVersion, VersionSource, Versions, WhenMissing};

/// The JSON Schema (draft 2020-12) of `gatehouse.yaml` with policy settings left open;
/// `gatehouse_policies::Kinds::config_schema` fills them in per kind.
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(Config).to_value();
    describe_schema(&mut schema);
    schema
}

/// Gives a generated config schema its title and description.
pub fn describe_schema(schema: &mut serde_json::Value) {
    if let Some(o) = schema.as_object_mut() {
        o.insert("title".into(), "gatehouse.yaml".into());
        o.insert(
            "description".into(),
            "Gatehouse configuration (docs/configuration.md)".into(),
        );
    }
}
