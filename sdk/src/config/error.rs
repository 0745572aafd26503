//! [`ConfigError`] and the mapping from byte offsets in a TOML file to lines and keys.

use std::fmt;
use std::path::PathBuf;

/// What kind of problem a [`ConfigError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The text is not valid TOML.
    Syntax,
    /// A key twinhub does not know (usually a typo).
    UnknownKey,
    /// A required key is absent.
    Missing,
    /// A value is malformed or out of range.
    Invalid,
    /// A secret could not be read from its environment variable or file, or was given in
    /// more than one way.
    Secret,
    /// The config file itself could not be read.
    Io,
    /// The engine refused the resulting configuration.
    Engine,
}

/// Why a configuration was refused: where (file, line), which key, and what is wrong.
///
/// Displays as `line 12: unknown key `fsyncc` in [outbox]` or
/// `line 7: outbox.max_bytes: "256XB" is not a size (use e.g. 256MiB)`. Never contains a
/// secret's value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    /// What kind of problem this is.
    pub kind: ErrorKind,
    /// The config file, when it was read from one.
    pub file: Option<PathBuf>,
    /// 1-based line in the TOML text, when known.
    pub line: Option<usize>,
    /// The key as a path, e.g. `outbox.max_bytes` or `endpoint[1].url`.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about `key`, without a line yet.
    pub(crate) fn new(kind: ErrorKind, key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            kind,
            file: None,
            line: None,
            key: Some(key.into()),
            message: message.into(),
        }
    }

    /// Sets the line unless one is known already.
    pub(crate) fn at(mut self, line: Option<usize>) -> Self {
        if self.line.is_none() {
            self.line = line;
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        // An unknown-key message names the key and its table itself.
        if let (Some(key), false) = (&self.key, self.kind == ErrorKind::UnknownKey) {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line of byte `offset` in `src` (offsets past the end count as the last line).
pub(crate) fn line_of(src: &str, offset: usize) -> usize {
    let end = offset.min(src.len());
    src.as_bytes()
        .get(..end)
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
        + 1
}

/// The table a byte offset falls in, found from the headers above it. Only used to word
/// serde's errors (which carry a span but not the table), so it reads headers simply.
pub(crate) struct Section {
    /// How the table is written, e.g. `[outbox]`, `[[endpoint]]`, or `the top level`.
    pub shown: String,
    /// Prefix for key paths, e.g. `outbox.` or `endpoint[1].`.
    pub prefix: String,
}

pub(crate) fn section_at(src: &str, offset: usize) -> Section {
    let mut end = offset.min(src.len());
    while !src.is_char_boundary(end) {
        end -= 1;
    }
    let before = src.get(..end).unwrap_or("");
    let mut arrays: Vec<(String, usize)> = Vec::new();
    let mut current = Section {
        shown: "the top level".to_owned(),
        prefix: String::new(),
    };
    for line in before.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("[[") {
            let name = rest.split("]]").next().unwrap_or("").trim().to_owned();
            let index = match arrays.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count - 1
                }
                None => {
                    arrays.push((name.clone(), 1));
                    0
                }
            };
            current = Section {
                shown: format!("[[{name}]]"),
                prefix: format!("{name}[{index}]."),
            };
        } else if let Some(rest) = t.strip_prefix('[') {
            let name = rest.split(']').next().unwrap_or("").trim().to_owned();
            // `[endpoint.headers]` belongs to the latest `[[endpoint]]`.
            let prefix = arrays
                .iter()
                .find_map(|(array, count)| {
                    name.strip_prefix(array.as_str())
                        .and_then(|r| r.strip_prefix('.'))
                        .map(|r| format!("{array}[{}].{r}.", count.saturating_sub(1)))
                })
                .unwrap_or_else(|| format!("{name}."));
            current = Section {
                shown: format!("[{name}]"),
                prefix,
            };
        }
    }
    current
}

/// The line holding byte `offset`, and the offset where it starts.
fn line_at(src: &str, offset: usize) -> Option<(usize, &str)> {
    let mut end = offset.min(src.len());
    while !src.is_char_boundary(end) {
        end -= 1;
    }
    let start = src.get(..end)?.rfind('\n').map_or(0, |i| i + 1);
    Some((start, src.get(start..)?.lines().next().unwrap_or("")))
}

/// What the line holding `offset` declares: a table header (`[outbox]`, `[[endpoint]]`),
/// or the key of a `key = value` line as written (possibly dotted).
enum LineKey {
    Header { name: String, array: bool },
    Key { start: usize, key: String },
}

fn line_key(src: &str, offset: usize) -> Option<LineKey> {
    let (start, line) = line_at(src, offset)?;
    let t = line.trim();
    if let Some(rest) = t.strip_prefix("[[") {
        let name = rest.split("]]").next().unwrap_or("").trim().to_owned();
        return Some(LineKey::Header { name, array: true });
    }
    if let Some(rest) = t.strip_prefix('[') {
        let name = rest.split(']').next().unwrap_or("").trim().to_owned();
        return Some(LineKey::Header { name, array: false });
    }
    let (key, _) = t.split_once('=')?;
    let key: String = key
        .split('.')
        .map(|p| p.trim().trim_matches('"'))
        .collect::<Vec<_>>()
        .join(".");
    (!key.is_empty() && !key.starts_with('#')).then_some(LineKey::Key { start, key })
}

/// The full key path of the line holding `offset`, e.g. `endpoint[1].url`.
fn key_path(src: &str, offset: usize) -> Option<String> {
    match line_key(src, offset)? {
        LineKey::Header { name, .. } => Some(name),
        LineKey::Key { start, key } => Some(format!("{}{key}", section_at(src, start).prefix)),
    }
}

/// Turns a TOML deserialization error into a [`ConfigError`] naming the line and key.
pub(crate) fn from_toml(src: &str, e: &toml::de::Error) -> ConfigError {
    let span = e.span();
    let offset = span.as_ref().map(|s| s.start);
    let line = offset.map(|o| line_of(src, o));
    let message = e.message().trim().replace('\n', "; ");
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or("");
        let section = section_at(src, offset.unwrap_or(0));
        // `outbox.fsyncc = ..` at the top level is a key of [outbox].
        let dotted = match offset.and_then(|o| line_key(src, o)) {
            Some(LineKey::Key { key, .. }) => key
                .strip_suffix(name)
                .and_then(|k| k.strip_suffix('.'))
                .map(str::to_owned),
            _ => None,
        };
        let (path, shown) = match dotted {
            Some(d) if section.prefix.is_empty() => (format!("{d}."), format!("[{d}]")),
            Some(d) => (format!("{}{d}.", section.prefix), section.shown),
            None => (section.prefix, section.shown),
        };
        let known = rest
            .split_once("expected ")
            .map(|(_, list)| format!(" (expected {list})"))
            .unwrap_or_default();
        return ConfigError {
            kind: ErrorKind::UnknownKey,
            file: None,
            line,
            key: Some(format!("{path}{name}")),
            message: format!("unknown key `{name}` in {shown}{known}"),
        };
    }
    let kind = if offset.is_some() && !looks_like_data_error(&message) {
        ErrorKind::Syntax
    } else {
        ErrorKind::Invalid
    };
    // The usual slip: `[endpoint]` for `[[endpoint]]` or the other way round.
    let hint = match offset.and_then(|o| line_key(src, o)) {
        Some(LineKey::Header { name, array: false }) if message.contains("expected a sequence") => {
            format!(" (write [[{name}]] once per entry)")
        }
        Some(LineKey::Header { name, array: true }) if message.starts_with("invalid type") => {
            format!(" ([[{name}]] makes a list; write [{name}])")
        }
        _ => String::new(),
    };
    let key = offset.and_then(|o| key_path(src, o));
    // serde quotes the offending value; for a secret-bearing key that may be the secret.
    let secret = key.as_deref().is_some_and(|k| {
        let last = k.rsplit('.').next().unwrap_or(k);
        last.starts_with("connection_string")
            || last.starts_with("password")
            || k.contains(".headers.")
    });
    let message = if secret && kind == ErrorKind::Invalid {
        "must be a string (the value is not shown: it may be secret)".to_owned()
    } else {
        format!("{message}{hint}")
    };
    ConfigError {
        kind,
        file: None,
        line,
        key,
        message,
    }
}

/// serde's data errors (as opposed to TOML syntax errors).
fn looks_like_data_error(message: &str) -> bool {
    [
        "invalid type",
        "invalid value",
        "invalid length",
        "missing field",
        "unknown variant",
    ]
    .iter()
    .any(|p| message.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_keys() {
        let src = "a = 1\n[outbox]\nx = 2\n[[endpoint]]\n[[endpoint]]\ny = 3\n[endpoint.headers]\nz = 4\n";
        assert_eq!(line_of(src, 0), 1);
        assert_eq!(line_of(src, src.find("x =").unwrap_or(0)), 3);
        let at = |needle: &str| section_at(src, src.find(needle).unwrap_or(0));
        assert_eq!(at("a =").prefix, "");
        assert_eq!(at("x =").shown, "[outbox]");
        assert_eq!(at("y =").prefix, "endpoint[1].");
        assert_eq!(at("z =").prefix, "endpoint[1].headers.");
        assert_eq!(
            key_path(src, src.find("2").unwrap_or(0)).as_deref(),
            Some("outbox.x")
        );
        assert_eq!(
            key_path(src, src.find("4").unwrap_or(0)).as_deref(),
            Some("endpoint[1].headers.z")
        );
        assert_eq!(line_of(src, usize::MAX), src.lines().count() + 1);
    }
}
