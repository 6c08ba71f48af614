//! Maps field paths (`routes[2].upstream`) to their line and column in the YAML text, so
//! semantic errors found after deserialization can still point into the file.

use serde_saphyr::granit_parser::{Event, Parser};
use std::collections::HashMap;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// Positions of every key and value in a YAML document, by field path.
#[derive(Debug, Default)]
pub struct Locations {
    values: HashMap<String, Pos>,
    keys: HashMap<String, Pos>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Locations {
    /// Indexes `text`; a document that does not parse yields an empty index (the
    /// deserializer reports the syntax error itself).
    pub fn index(text: &str) -> Self {
        let mut out = Locations::default();
        let mut stack: Vec<Frame> = Vec::new();
        for ev in Parser::new_from_str(text) {
            let Ok((ev, span)) = ev else { break };
            let pos = Pos {
                line: span.start.line(),
                column: span.start.col() + 1,
            };
            let is_node = matches!(
                ev,
                Event::Scalar(..)
                    | Event::MappingStart(..)
                    | Event::SequenceStart(..)
                    | Event::Alias(_)
            );
            if is_node {
                // Is this node a mapping key? Then remember it and wait for its value.
                if let Some(Frame::Map { path, key }) = stack.last_mut()
                    && key.is_none()
                {
                    let name = match &ev {
                        Event::Scalar(s, ..) => s.to_string(),
                        _ => String::from("?"),
                    };
                    out.keys.insert(join(path, &name), pos);
                    *key = Some(name);
                    continue;
                }
                let node_path = match stack.last_mut() {
                    Some(Frame::Map { path, key }) => join(path, key.as_deref().unwrap_or("?")),
                    Some(Frame::Seq { path, index }) => format!("{path}[{index}]"),
                    None => String::new(),
                };
                out.values.entry(node_path.clone()).or_insert(pos);
                match ev {
                    Event::MappingStart(..) => stack.push(Frame::Map {
                        path: node_path,
                        key: None,
                    }),
                    Event::SequenceStart(..) => stack.push(Frame::Seq {
                        path: node_path,
                        index: 0,
                    }),
                    _ => advance(&mut stack),
                }
            } else if matches!(ev, Event::MappingEnd | Event::SequenceEnd) {
                stack.pop();
                advance(&mut stack);
            }
        }
        out
    }

    /// Position of the value at `path`, else of its key, else of the nearest ancestor.
    pub fn find(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.values.get(p).or_else(|| self.keys.get(p)) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    /// Position of the key of `path`, when it is a mapping key.
    pub fn find_key(&self, path: &str) -> Option<Pos> {
        self.keys.get(path).copied()
    }

    /// The field path whose key or value starts at `pos`, or the last one before it.
    pub fn path_at(&self, pos: Pos) -> Option<String> {
        self.keys
            .iter()
            .chain(self.values.iter())
            .filter(|(_, p)| **p <= pos)
            .max_by(|a, b| a.1.cmp(b.1).then(a.0.len().cmp(&b.0.len())))
            .map(|(k, _)| k.clone())
    }
}

fn advance(stack: &mut [Frame]) {
    match stack.last_mut() {
        Some(Frame::Map { key, .. }) => *key = None,
        Some(Frame::Seq { index, .. }) => *index += 1,
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_paths() {
        let text = "routes:\n  - name: a\n    upstream: users\n  - name: b\n    match: { path: { type: prefix, value: /x } }\n";
        let loc = Locations::index(text);
        assert_eq!(
            loc.find("routes[0].upstream"),
            Some(Pos {
                line: 3,
                column: 15
            })
        );
        assert_eq!(
            loc.find("routes[1].name"),
            Some(Pos {
                line: 4,
                column: 11
            })
        );
        assert_eq!(
            loc.find("routes[1].match.path.value").map(|p| p.line),
            Some(5)
        );
        // Missing leaf falls back to the nearest ancestor.
        assert_eq!(loc.find("routes[1].nothing").map(|p| p.line), Some(4));
        assert_eq!(
            loc.path_at(Pos { line: 3, column: 5 }).as_deref(),
            Some("routes[0].upstream")
        );
    }
}
