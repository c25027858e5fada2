//! "Every problem with its location": the [`Walker`] that each section's parser extends, and the
//! checks they share (keys, strings, parsed strings, choices, flags, relative files).
//!
//! A parser reports what is wrong at `location` and carries on, returning `None` for the part it
//! could not build, so one pass finds every problem in the file.

use std::fmt;
use std::path::PathBuf;

use serde_norway::{Mapping, Value};

use super::template::Template;
use crate::env::Env;
use crate::event::WorkspaceId;
use crate::folder::ConfigFolder;

/// `workspace:` and `target_workspace:` must be workspace ARM ids; `hint` ends the message.
pub(super) fn workspace_arm_id(raw: &str, hint: &str) -> Result<WorkspaceId, String> {
    WorkspaceId::parse(raw)
        .ok()
        .filter(WorkspaceId::is_workspace_arm_id)
        .ok_or_else(|| format!("{raw:?} is not an Azure ML workspace ARM id{hint}"))
}

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// A path such as `rules[1] (fraud-workflow).github.repository`.
    pub location: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.location.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.location, self.message)
        }
    }
}

/// Walks the YAML of one config file and collects its problems.
pub(super) struct Walker<'e> {
    /// Everything found so far, in file order.
    pub(super) problems: Vec<ConfigProblem>,
    /// The config file's folder: relative files in the config resolve against it.
    pub(super) base: PathBuf,
    /// The folder every referenced file must stay inside.
    pub(super) folder: ConfigFolder,
    /// Things that are allowed but may fail at run time, in file order.
    pub(super) warnings: Vec<ConfigProblem>,
    /// The length of the configured `workspace:`, once read.
    pub(super) workspace_len: Option<usize>,
    /// Where `url_env` settings are read.
    pub(super) env: &'e dyn Env,
}

impl Walker<'_> {
    pub(super) fn problem(&mut self, location: &str, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            location: location.to_string(),
            message: message.into(),
        });
    }

    pub(super) fn warning(&mut self, location: &str, message: impl Into<String>) {
        self.warnings.push(ConfigProblem {
            location: location.to_string(),
            message: message.into(),
        });
    }

    pub(super) fn mapping<'a>(&mut self, value: &'a Value, location: &str) -> Option<&'a Mapping> {
        match value {
            Value::Mapping(m) => Some(m),
            other => {
                self.problem(location, format!("expected a mapping, got {}", kind(other)));
                None
            }
        }
    }

    /// Reports keys not in `allowed`, and non-string keys.
    pub(super) fn check_keys(&mut self, map: &Mapping, allowed: &[&str], location: &str) {
        for key in map.keys() {
            match key.as_str() {
                Some(k) if allowed.contains(&k) => {}
                Some(k) => {
                    let hint = allowed
                        .iter()
                        .find(|a| {
                            a.eq_ignore_ascii_case(k)
                                || a.replace('_', "") == k.replace(['_', '-'], "")
                        })
                        .map(|a| format!(" (did you mean `{a}`?)"))
                        .unwrap_or_default();
                    self.problem(
                        &join(location, k),
                        format!(
                            "unknown key `{k}`{hint}; allowed here: {}",
                            allowed.join(", ")
                        ),
                    )
                }
                None => self.problem(location, format!("keys must be strings, got {}", kind(key))),
            }
        }
    }

    /// A non-empty string under `key` (`None` when absent, or when wrong and reported).
    pub(super) fn string(
        &mut self,
        map: &Mapping,
        key: &str,
        location: &str,
        required: bool,
    ) -> Option<String> {
        match map.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.problem(&join(location, key), "is required");
                }
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                self.problem(&join(location, key), "must not be empty");
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.problem(
                    &join(location, key),
                    format!("expected a string, got {}", kind(other)),
                );
                None
            }
        }
    }

    /// A string under `key` turned into a `T` by `parse`, whose error is reported at the key.
    pub(super) fn parsed<T>(
        &mut self,
        map: &Mapping,
        key: &str,
        location: &str,
        required: bool,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.string(map, key, location, required)?;
        parse(&raw)
            .map_err(|e| self.problem(&join(location, key), e))
            .ok()
    }

    /// One of `options` (name, value) under `key`: `default` when absent (or not a string, as
    /// always), `None` when another string and reported as "must be a, b or c".
    pub(super) fn choice<T: Clone>(
        &mut self,
        map: &Mapping,
        key: &str,
        location: &str,
        default: T,
        options: &[(&str, T)],
    ) -> Option<T> {
        let Some(raw) = map.get(key).and_then(Value::as_str) else {
            return Some(default);
        };
        if let Some((_, value)) = options.iter().find(|(name, _)| *name == raw) {
            return Some(value.clone());
        }
        let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
        let (last, rest) = names.split_last().expect("a choice has options");
        self.problem(
            &join(location, key),
            format!("must be {} or {last}, got {raw:?}", rest.join(", ")),
        );
        None
    }

    /// A boolean under `key`: `default` when absent, `None` when not a boolean (reported).
    pub(super) fn flag(
        &mut self,
        map: &Mapping,
        key: &str,
        location: &str,
        default: bool,
    ) -> Option<bool> {
        match present(map, key) {
            None => Some(default),
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.problem(&join(location, key), "must be true or false");
                None
            }
        }
    }

    pub(super) fn template(&mut self, source: &str, location: &str) -> Option<Template> {
        match Template::parse(source) {
            Ok(t) => Some(t),
            Err(problems) => {
                for p in problems {
                    self.problem(location, p);
                }
                None
            }
        }
    }

    /// Reads the file named under `key` (required), relative to the config file's folder and
    /// inside it (see [`ConfigFolder`]); returns its path and text. A file outside is never read.
    pub(super) fn file(
        &mut self,
        map: &Mapping,
        key: &str,
        location: &str,
    ) -> Option<(PathBuf, String)> {
        let file = self.string(map, key, location, true)?;
        let path = match self.folder.resolve(&self.base, &file) {
            Ok(path) => path,
            Err(problem) => {
                self.problem(&join(location, key), problem.to_string());
                return None;
            }
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Some((path, text)),
            Err(e) => {
                self.problem(
                    &join(location, key),
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    }
}

/// The value under `key`, unless absent or null (both mean "not set").
pub(super) fn present<'m>(map: &'m Mapping, key: &str) -> Option<&'m Value> {
    map.get(key).filter(|v| !matches!(v, Value::Null))
}

/// The location of `key` inside `location`.
pub(super) fn join(location: &str, key: &str) -> String {
    if location.is_empty() {
        key.to_string()
    } else {
        format!("{location}.{key}")
    }
}

/// A scalar's text (strings, booleans and numbers); `None` for anything else.
pub(super) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// What kind of value this is, for messages.
pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A scalar quoted, or the kind of anything else, for messages.
pub(super) fn describe(value: &Value) -> String {
    match scalar_text(value) {
        Some(text) => format!("{text:?}"),
        None => kind(value).to_string(),
    }
}
