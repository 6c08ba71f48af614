//! The policy-kind registry: a kind is its `type:` name, its config schema, and a build
//! function that parses its settings once (reporting each bad field at its config path,
//! so errors carry file:line:col) and returns the compiled policy. Validation is the
//! build: `gatehouse validate` compiles, so there is no second parser for a field.

use gatehouse_config::validate::Issue;
use gatehouse_config::{Config, PolicyConfig};
use gatehouse_core::{Policy, Stage};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;

/// What a kind's build returns: the compiled policy, or every issue found.
pub type BuildResult = Result<Arc<dyn Policy>, Vec<Issue>>;

/// One policy kind.
#[derive(Clone, Copy)]
pub struct Kind {
    /// The `type:` value that selects it.
    pub name: &'static str,
    /// The JSON Schema of its settings (a `subschema_for` of its config type).
    pub schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    /// Parses the settings and compiles the policy.
    pub build: fn(&Build<'_>) -> BuildResult,
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kind({})", self.name)
    }
}

/// Everything a kind's build may use.
#[derive(Debug)]
pub struct Build<'a> {
    /// The policy's name (its key under `policies:`).
    pub name: &'a str,
    /// Its config entry (`type`, `timeout` and the kind's own settings).
    pub policy: &'a PolicyConfig,
    /// The whole config (ip_groups, upstreams, ... that settings may name).
    pub config: &'a Config,
    /// The directory relative paths in settings (key files, CAs) are resolved against.
    pub dir: &'a std::path::Path,
    /// Process-wide state that outlives this config (docs/policies.md: state).
    pub state: &'a Stage<'a>,
}

impl Build<'_> {
    /// The kind's settings parsed as `T`; each error names its field's full path.
    pub fn settings<T: DeserializeOwned>(&self) -> Result<T, Vec<Issue>> {
        let doc = Value::Object(self.policy.settings.clone());
        serde_path_to_error::deserialize(doc).map_err(|e| {
            let field = e.path().to_string();
            let field = (field != ".").then_some(field);
            let message = gatehouse_config::field_errors::in_our_words(&e.inner().to_string());
            vec![self.issue(field.as_deref(), message)]
        })
    }

    /// An issue about `field` of this policy (the policy itself when `None`).
    pub fn issue(&self, field: Option<&str>, message: impl Into<String>) -> Issue {
        let path = match field {
            Some(f) => format!("policies.{}.{f}", self.name),
            None => format!("policies.{}", self.name),
        };
        Issue {
            path,
            message: message.into(),
        }
    }
}

/// The kinds a gateway knows: the built-in ones plus any an embedder adds.
#[derive(Debug, Clone)]
pub struct Kinds(Vec<Kind>);

impl Default for Kinds {
    fn default() -> Self {
        Self(crate::BUILTIN.to_vec())
    }
}

impl Kinds {
    /// The built-in kinds.
    pub fn builtin() -> Self {
        Self::default()
    }

    /// These kinds and `kind` (replacing a kind of the same name).
    pub fn with(mut self, kind: Kind) -> Self {
        self.0.retain(|k| k.name != kind.name);
        self.0.push(kind);
        self
    }

    /// The kind named `name`.
    pub fn get(&self, name: &str) -> Option<&Kind> {
        self.0.iter().find(|k| k.name == name)
    }

    /// Compiles policy `name` of `config` (whose relative paths are resolved against `dir`),
    /// or says why it cannot be.
    pub fn build(
        &self,
        name: &str,
        policy: &PolicyConfig,
        config: &Config,
        dir: &std::path::Path,
        state: &Stage<'_>,
    ) -> BuildResult {
        let b = Build {
            name,
            policy,
            config,
            dir,
            state,
        };
        let Some(kind) = self.get(&policy.kind) else {
            let known: Vec<_> = self.0.iter().map(|k| k.name).collect();
            return Err(vec![b.issue(
                Some("type"),
                format!(
                    "unknown value {:?}; expected one of: {}",
                    policy.kind,
                    known.join(", ")
                ),
            )]);
        };
        (kind.build)(&b)
    }

    /// Every issue of every policy of `config` (in `dir`), found by building each one against a
    /// throwaway state stage: the check `load_*_with` runs, so policy settings are
    /// reported together with the rest of the config.
    pub fn check(&self, config: &Config, dir: &std::path::Path) -> Vec<Issue> {
        let scratch = gatehouse_core::StateRegistry::new();
        let stage = scratch.stage();
        config
            .policies
            .iter()
            .filter_map(|(name, p)| self.build(name, p, config, dir, &stage).err())
            .flatten()
            .collect()
    }

    /// The JSON Schema of `gatehouse.yaml` with each kind's settings under `policies`.
    pub fn config_schema(&self) -> Value {
        let mut g = schemars::generate::SchemaSettings::draft2020_12().into_generator();
        let refs: Vec<_> = self
            .0
            .iter()
            .map(|k| (k.name, (k.schema)(&mut g)))
            .collect();
        let mut root = g.root_schema_for::<Config>().to_value();
        gatehouse_config::describe_schema(&mut root);
        let Some(defs) = root.get_mut("$defs").and_then(Value::as_object_mut) else {
            return root;
        };
        let generic = defs.get("PolicyConfig").cloned().unwrap_or(Value::Null);
        let timeout = generic.pointer("/properties/timeout").cloned();
        let one_of: Vec<Value> = refs
            .into_iter()
            .map(|(name, schema)| {
                let resolved = schema
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| r.strip_prefix("#/$defs/"))
                    .and_then(|d| defs.get(d))
                    .cloned()
                    .unwrap_or_else(|| schema.to_value());
                let mut s = resolved;
                if let Some(o) = s.as_object_mut() {
                    let props = o
                        .entry("properties")
                        .or_insert_with(|| Value::Object(Default::default()));
                    if let Some(p) = props.as_object_mut() {
                        p.insert("type".into(), serde_json::json!({ "const": name }));
                        if let Some(t) = &timeout {
                            p.insert("timeout".into(), t.clone());
                        }
                    }
                    let req = o
                        .entry("required")
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Some(r) = req.as_array_mut() {
                        r.push("type".into());
                    }
                }
                s
            })
            .collect();
        let description = generic.get("description").cloned().unwrap_or(Value::Null);
        defs.insert(
            "PolicyConfig".into(),
            serde_json::json!({ "description": description, "oneOf": one_of }),
        );
        root
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds policy `name` of the config `yaml` with the built-in kinds.
    pub(crate) fn build_one(yaml: &str, name: &str) -> BuildResult {
        let loaded = gatehouse_config::load_str(yaml, "t.yaml").map_err(|e| {
            e.0.into_iter()
                .map(|e| Issue {
                    path: e.path,
                    message: e.message,
                })
                .collect::<Vec<_>>()
        })?;
        let c = &loaded.config;
        let registry = gatehouse_core::StateRegistry::new();
        let stage = registry.stage();
        Kinds::builtin().build(name, &c.policies[name], c, loaded.dir(), &stage)
    }

    #[test]
    fn policy_settings_are_reported_with_the_rest_of_the_config() {
        let yaml = "policies:\n  f: { type: ip_filter, allow: [10.0.0.0/33] }\n  g: { type: headers, request: { set: { \"bad name\": x } } }\nroutes:\n  - { name: r, policies: [missing], respond: { status: 200 } }\n";
        let kinds = Kinds::builtin();
        let e = gatehouse_config::load::load_str_with(yaml, "t.yaml", &|c, d| kinds.check(c, d))
            .unwrap_err();
        let paths: Vec<_> = e.0.iter().map(|e| (e.path.as_str(), e.line)).collect();
        assert_eq!(
            paths,
            [
                ("policies.f.allow[0]", 2),
                ("policies.g.request.set.bad name", 3),
                ("routes[0].policies[0]", 5)
            ]
        );
    }

    #[test]
    fn an_unknown_type_names_the_known_ones() {
        let e = build_one("policies:\n  p: { type: nope }\n", "p").unwrap_err();
        assert_eq!(e[0].path, "policies.p.type");
        assert_eq!(
            e[0].message,
            "unknown value \"nope\"; expected one of: headers, ip_filter, api_key, basic_auth, acl, rbac, mtls_auth, jwt, oauth2_introspection, http_signature, cors, rate_limit, concurrency_limit, quota, compress, json_schema, transform, cache, bot_filter, waf"
        );
    }
}
