//! Loading: read, interpolate, parse, validate. The result keeps the field locations so
//! later compile steps can report errors against the file too.

use crate::error::{ConfigError, ConfigErrors};
use crate::interpolate::interpolate;
use crate::locate::{Locations, Pos};
use crate::schema::Config;
use crate::validate::{Issue, validate};
use std::sync::OnceLock;

/// A parsed and validated config together with where each field came from.
#[derive(Debug)]
pub struct Loaded {
    /// The config.
    pub config: Config,
    /// The file name used in error messages.
    pub file: String,
    /// The interpolated text, kept to locate errors found after parsing.
    text: String,
    /// Field positions, indexed on the first error: a second parse of the text costs as
    /// much as the first, and a valid config never needs it.
    locations: OnceLock<Locations>,
}

impl Loaded {
    /// The directory relative paths of the config (certificates, the store, key files)
    /// are resolved against: the config file's own.
    pub fn dir(&self) -> &std::path::Path {
        dir_of(&self.file)
    }

    /// The config text after interpolation: what the gateway runs.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Field positions in the (interpolated) text.
    pub fn locations(&self) -> &Locations {
        self.locations.get_or_init(|| Locations::index(&self.text))
    }

    /// An error about `path`, located in the file.
    pub fn error(&self, path: &str, message: impl Into<String>) -> ConfigError {
        locate_issue(&self.file, self.locations(), path, message.into())
    }

    /// Errors about several paths, sorted by position.
    pub fn errors(&self, issues: Vec<Issue>) -> ConfigErrors {
        let mut v: Vec<ConfigError> = issues
            .into_iter()
            .map(|i| self.error(&i.path, i.message))
            .collect();
        v.sort_by_key(|e| (e.line, e.column));
        ConfigErrors(v)
    }
}

fn locate_issue(file: &str, loc: &Locations, path: &str, message: String) -> ConfigError {
    // An unknown field is shown at its key; anything else at its value, or at the
    // nearest ancestor for a field that is absent (a missing required one).
    let pos = message
        .starts_with("unknown field")
        .then(|| loc.find_key(path))
        .flatten()
        .or_else(|| loc.find(path))
        .unwrap_or(Pos { line: 1, column: 1 });
    ConfigError {
        file: file.to_string(),
        line: pos.line,
        column: pos.column,
        path: path.to_string(),
        message,
    }
}

/// A check run with validation, so its issues are reported together with the config's
/// own (the policy kinds validate their settings this way). It is given the config and
/// the directory its relative paths are resolved against.
pub type Check<'a> = &'a dyn Fn(&Config, &std::path::Path) -> Vec<Issue>;

/// The directory of the config file `file` (the current one for a bare name).
pub fn dir_of(file: &str) -> &std::path::Path {
    std::path::Path::new(file)
        .parent()
        .unwrap_or(std::path::Path::new(""))
}

/// Reads and loads the config file at `path`.
pub fn load_file(path: &str) -> Result<Loaded, ConfigErrors> {
    load_file_with(path, &|_, _| Vec::new())
}

/// Reads and loads the config file at `path`, running `check` with validation.
pub fn load_file_with(path: &str, check: Check<'_>) -> Result<Loaded, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let message = match e.kind() {
            std::io::ErrorKind::NotFound => "the config file does not exist".to_string(),
            std::io::ErrorKind::PermissionDenied => {
                "the config file cannot be read: permission denied".to_string()
            }
            std::io::ErrorKind::InvalidData => "the config file is not UTF-8 text".to_string(),
            std::io::ErrorKind::IsADirectory => "the config path is a directory".to_string(),
            _ => format!("the config file cannot be read: {e}"),
        };
        ConfigErrors(vec![ConfigError {
            file: path.to_string(),
            line: 1,
            column: 1,
            path: String::new(),
            message,
        }])
    })?;
    load_str_with(&text, path, check)
}

/// Loads config text; `file` names it in errors.
pub fn load_str(text: &str, file: &str) -> Result<Loaded, ConfigErrors> {
    load_str_with(text, file, &|_, _| Vec::new())
}

/// Loads config text, running `check` with validation; `file` names it in errors.
pub fn load_str_with(text: &str, file: &str, check: Check<'_>) -> Result<Loaded, ConfigErrors> {
    let one = |line, column, path: String, message| {
        ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line,
            column,
            path,
            message,
        }])
    };
    let raw = text;
    let text = interpolate(text, |name| std::env::var(name).ok()).map_err(|e| {
        // The raw text still parses (`${VAR}` is a plain scalar), so the field is known.
        let path = Locations::index(raw)
            .path_at(Pos {
                line: e.line,
                column: e.column,
            })
            .unwrap_or_default();
        one(e.line, e.column, path, e.message)
    })?;
    // An empty document is an empty mapping: every field takes its default.
    let body = if text.trim().is_empty() {
        "{}"
    } else {
        text.as_str()
    };
    let config: Config = match serde_saphyr::from_str(body) {
        Ok(c) => c,
        Err(e) => {
            let (line, column) = e
                .location()
                .map(|l| (l.line() as usize, l.column() as usize))
                .unwrap_or((1, 1));
            let locations = Locations::index(&text);
            // A document that parses as YAML may hold several bad fields: report each.
            if let Ok(doc) = document_json(body) {
                let all = crate::field_errors::field_errors(&doc);
                if !all.is_empty() {
                    let mut errors: Vec<ConfigError> = all
                        .into_iter()
                        .map(|(path, message)| locate_issue(file, &locations, &path, message))
                        .collect();
                    errors.sort_by_key(|e| (e.line, e.column));
                    return Err(ConfigErrors(errors));
                }
            }
            let path = locations.path_at(Pos { line, column }).unwrap_or_default();
            let message =
                crate::field_errors::in_our_words(&first_line(&e.without_snippet().to_string()));
            return Err(one(line, column, path, message));
        }
    };
    let loaded = Loaded {
        config,
        file: file.to_string(),
        text,
        locations: OnceLock::new(),
    };
    let mut issues = validate(&loaded.config);
    issues.extend(check(&loaded.config, loaded.dir()));
    if issues.is_empty() {
        Ok(loaded)
    } else {
        Err(loaded.errors(issues))
    }
}

/// The config text as a JSON document (for the admin API), or why it does not parse.
pub fn document_json(text: &str) -> Result<serde_json::Value, String> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    serde_saphyr::from_str(text).map_err(|e| first_line(&e.without_snippet().to_string()))
}

/// The deserializer's message without its own location suffix (we print ours in front).
fn first_line(msg: &str) -> String {
    let line = msg.lines().next().unwrap_or(msg);
    match line.find(" at line ") {
        Some(i) => line[..i].to_string(),
        None => line.to_string(),
    }
}
