//! One way every vantage configuration file reports a problem: `file:line: key: problem; fix`.
//! The fleet file and the status endpoint's file both parse through [`ConfigText`] and place
//! their errors with it, so an operator reads the same shape everywhere. The line comes from a
//! value's span or, for values that carry none, from finding the key in the text. Errors name
//! the key and never quote the source line, because that line may hold a bearer token or a
//! database password; URLs in messages go through [`redact_userinfo`] for the same reason, and
//! every message is rendered through [`super::redact`] (secret-named keys' values masked, URLs'
//! userinfo and secret query parameters removed).

use super::redact::redact_message;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use toml::Spanned as Located;

/// A configuration problem, with where it is and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, a value of the wrong type (the message holds the line).
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}:{line}: {key}: {}", redact_message(key, message))]
    Invalid {
        origin: String,
        line: usize,
        key: String,
        message: String,
    },
    #[error("{name}: {}", redact_message(name, message))]
    Environment { name: String, message: String },
    /// A value with no line to point at: set by a flag or an environment variable, or missing.
    #[error("{key}: {}", redact_message(key, message))]
    Setting { key: String, message: String },
}

impl ConfigError {
    /// The same error with `prefix` before its key (`services[2].` before `regions[0].name`).
    pub fn with_key_prefix(self, prefix: &str) -> ConfigError {
        match self {
            ConfigError::Invalid {
                origin,
                line,
                key,
                message,
            } => ConfigError::Invalid {
                origin,
                line,
                key: format!("{prefix}{key}"),
                message,
            },
            ConfigError::Setting { key, message } => ConfigError::Setting {
                key: format!("{prefix}{key}"),
                message,
            },
            other => other,
        }
    }

    /// The key the error is about, when it names one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } | ConfigError::Setting { key, .. } => Some(key),
            ConfigError::Environment { name, .. } => Some(name),
            ConfigError::Read { .. } | ConfigError::Parse { .. } => None,
        }
    }
}

/// A problem a section finds in itself before it knows its file: the key, the value's span when
/// the value has one, and the message. [`ConfigText::place`] turns it into a [`ConfigError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct Problem {
    pub key: String,
    pub span: Option<Range<usize>>,
    pub message: String,
}

impl Problem {
    /// A problem at a value read from the file.
    pub fn at<T>(value: &Located<T>, key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            span: Some(value.span()),
            message: message.into(),
        }
    }

    /// A problem at a key with no span (a table, a map key, a number).
    pub fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            span: None,
            message: message.into(),
        }
    }
}

/// A configuration text and where it came from (a path, or the name of a variable).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConfigText {
    pub origin: String,
    pub text: String,
}

/// Only the origin and size: the text may hold secrets.
impl fmt::Debug for ConfigText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigText")
            .field("origin", &self.origin)
            .field("bytes", &self.text.len())
            .finish()
    }
}

impl ConfigText {
    pub fn new(text: &str, origin: &str) -> Self {
        ConfigText {
            origin: origin.to_owned(),
            text: text.to_owned(),
        }
    }

    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(ConfigText {
            origin: path.display().to_string(),
            text,
        })
    }

    /// Deserializes strictly; see [`parse_toml`].
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        parse_toml(&self.text, &self.origin)
    }

    pub fn line_of(&self, offset: usize) -> usize {
        line_of(&self.text, offset)
    }

    /// An error at a value read from this text.
    pub fn invalid_at<T>(
        &self,
        at: &Located<T>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        self.place(Problem::at(at, key, message))
    }

    /// An error at the line that sets `key`, or a [`ConfigError::Setting`] when the text does
    /// not set it (the value is missing, or came from elsewhere).
    pub fn invalid_key(&self, key: &str, message: impl Into<String>) -> ConfigError {
        match line_of_key(&self.text, key) {
            Some(line) => ConfigError::Invalid {
                origin: self.origin.clone(),
                line,
                key: key.to_owned(),
                message: message.into(),
            },
            None => ConfigError::Setting {
                key: key.to_owned(),
                message: message.into(),
            },
        }
    }

    /// A section's problem, on the line of its span, else of its key, else line 1.
    pub fn place(&self, problem: Problem) -> ConfigError {
        let line = match &problem.span {
            Some(span) => self.line_of(span.start),
            None => line_of_key(&self.text, &problem.key).unwrap_or(1),
        };
        ConfigError::Invalid {
            origin: self.origin.clone(),
            line,
            key: problem.key,
            message: problem.message,
        }
    }
}

/// Deserializes `text` (strict types reject unknown keys). A syntax error, unknown key or value
/// of the wrong type becomes `origin: line N: message`: toml's own rendering would quote the
/// offending source line, and that line may be `token = "..."`.
pub fn parse_toml<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().trim_end();
        ConfigError::Parse {
            origin: origin.to_owned(),
            message: match e.span() {
                Some(span) => {
                    let key = key_on_line(text, span.start);
                    let line = line_of(text, span.start);
                    let message = redact_message(&key, message);
                    // toml names the key itself only for unknown and missing fields.
                    if key.is_empty() || message.contains("field `") {
                        format!("line {line}: {message}")
                    } else {
                        format!("line {line}: {key}: {message}")
                    }
                }
                None => redact_message("", message).into_owned(),
            },
        }
    })
}

/// The key set on the line holding `offset`, under the nearest table header above it
/// (`aggregator.keys.k1` for `k1 = ...` after `[aggregator.keys]`), or "" for other lines:
/// enough for [`redact_message`] to know whether the value there is a secret.
fn key_on_line(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let Some((key, _)) = text[start..end].split_once('=') else {
        return String::new();
    };
    let key = dotted(key);
    let table = text[..start].lines().rev().find_map(|l| {
        let l = strip_comment(l).trim();
        header(l, "[[", "]]").or_else(|| header(l, "[", "]"))
    });
    match table {
        Some(t) => format!("{t}.{key}"),
        None => key,
    }
}

/// 1-based line of a byte offset in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The 1-based line that sets `key` in a TOML text: `section.key`, with `[i]` for the i-th of an
/// array of tables (`http[0].url`). Without an exact line, the closest enclosing table or inline
/// table that does appear; `None` when nothing of the key is in the text. A line finder for
/// messages, not a TOML parser: it follows headers and `key =` lines and skips the insides of
/// multi-line arrays and strings.
pub fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let mut table = String::new();
    let mut arrays: HashMap<String, usize> = HashMap::new();
    let mut best: Option<(usize, usize)> = None;
    let mut depth = 0usize;
    let mut in_multiline: Option<&str> = None;
    for (i, raw) in text.lines().enumerate() {
        if let Some(quote) = in_multiline {
            if raw.matches(quote).count() % 2 == 1 {
                in_multiline = None;
            }
            continue;
        }
        let line = strip_comment(raw).trim();
        if depth > 0 {
            depth = (depth + count_brackets(line).0).saturating_sub(count_brackets(line).1);
            continue;
        }
        let path = if let Some(inner) = header(line, "[[", "]]") {
            let array = indexed_path(&inner, &arrays);
            let n = arrays.entry(array.clone()).or_insert(0);
            table = format!("{array}[{n}]");
            *n += 1;
            table.clone()
        } else if let Some(inner) = header(line, "[", "]") {
            table = indexed_path(&inner, &arrays);
            table.clone()
        } else if let Some((k, value)) = line.split_once('=') {
            for quote in ["\"\"\"", "'''"] {
                if value.matches(quote).count() % 2 == 1 {
                    in_multiline = Some(quote);
                }
            }
            let (open, close) = count_brackets(value);
            depth = open.saturating_sub(close);
            let k = dotted(k);
            if table.is_empty() {
                k
            } else {
                format!("{table}.{k}")
            }
        } else {
            continue;
        };
        if path == key {
            return Some(i + 1);
        }
        let encloses = key
            .strip_prefix(path.as_str())
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['));
        if encloses && best.is_none_or(|(len, _)| path.len() > len) {
            best = Some((path.len(), i + 1));
        }
    }
    best.map(|(_, line)| line)
}

/// The inside of a `[table]` / `[[array]]` header, when the line is one.
fn header(line: &str, open: &str, close: &str) -> Option<String> {
    let inner = line.strip_prefix(open)?.strip_suffix(close)?;
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_. \"'".contains(c);
    (!inner.is_empty() && inner.chars().all(plain)).then(|| dotted(inner))
}

/// `a . "b-c"` as `a.b-c`.
fn dotted(key: &str) -> String {
    key.split('.')
        .map(|part| part.trim().trim_matches(['"', '\'']))
        .collect::<Vec<_>>()
        .join(".")
}

/// A header path with the current index of every array of tables it passes through, so
/// `[regions.probe]` after the second `[[regions]]` is `regions[1].probe`.
fn indexed_path(path: &str, arrays: &HashMap<String, usize>) -> String {
    let mut out = String::new();
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(part);
        if i + 1 < parts.len() {
            if let Some(n) = arrays.get(&out) {
                out = format!("{out}[{}]", n.saturating_sub(1));
            }
        }
    }
    out
}

fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') => return &line[..i],
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
    }
    line
}

/// Opening and closing brackets outside strings.
fn count_brackets(text: &str) -> (usize, usize) {
    let (mut open, mut close, mut quote) = (0, 0, None);
    for c in text.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '[') => open += 1,
            (None, ']') => close += 1,
            _ => {}
        }
    }
    (open, close)
}

/// `url` with any `user:password@` replaced by `***@`, for messages.
pub fn redact_userinfo(url: &str) -> Cow<'_, str> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => Cow::Owned(format!("{}***{}", &url[..start], &url[start + at..])),
        None => Cow::Borrowed(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
region = "eu-west-1"   # a comment with key = value
[aurora.writer]
url = "postgres://u@db/x"
json = [
  "/a=b",
  [1, 2]
]
timeout = "1s"

[[http]]
name = "a"

[[http]]
name = "b"
probe = { interval = "1s" }

[http.extra]
x = 1
"#;

    #[test]
    fn keys_are_found_on_their_lines() {
        let line = |k| line_of_key(TEXT, k);
        assert_eq!(line("region"), Some(2));
        assert_eq!(line("aurora.writer.url"), Some(4));
        assert_eq!(line("aurora.writer.timeout"), Some(9));
        assert_eq!(line("aurora.writer.lag_warn"), Some(3), "enclosing table");
        assert_eq!(line("http[0].name"), Some(12));
        assert_eq!(line("http[1].name"), Some(15));
        assert_eq!(line("http[1].probe.interval"), Some(16), "inline table");
        assert_eq!(line("http[1].extra.x"), Some(19));
        assert_eq!(line("deadline"), None);
        assert_eq!(line("aurora.reader.url"), None);
    }

    #[test]
    fn parse_errors_give_the_line_not_the_text() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            token: Option<String>,
        }
        let e = parse_toml::<T>("\ntokne = \"s3cret-token-value\"\n", "t.toml").unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("t.toml: line 2: unknown field `tokne`"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        // A secret of the wrong type: toml would quote the value.
        let e = parse_toml::<T>("[x]\n", "t.toml").unwrap_err().to_string();
        assert!(e.contains("unknown field `x`"), "{e}");
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct K {
            keys: std::collections::BTreeMap<String, u32>,
        }
        let e = parse_toml::<K>("[keys]\nk1 = \"s3cret-key-value\"\n", "t.toml").unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = parse_toml::<T>("token = 1234567890123\n", "t.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.toml: line 1: token: invalid type: integer `***`, expected a string"
        );
    }

    #[test]
    fn userinfo_is_redacted() {
        assert_eq!(
            redact_userinfo("postgres://u:pw@db:5432/x?a=b@c"),
            "postgres://***@db:5432/x?a=b@c"
        );
        assert_eq!(
            redact_userinfo("https://api.example.com/status"),
            "https://api.example.com/status"
        );
        assert_eq!(redact_userinfo("u:pw@host"), "***@host");
    }

    #[test]
    fn problems_are_placed_by_span_then_key() {
        let t = ConfigText::new(TEXT, "c.toml");
        let e = t.place(Problem::key("aurora.writer.timeout", "too long; use 1s"));
        assert_eq!(
            e.to_string(),
            "c.toml:9: aurora.writer.timeout: too long; use 1s"
        );
        let e = t.invalid_key("deadline", "missing");
        assert_eq!(e.to_string(), "deadline: missing");
        assert_eq!(e.key(), Some("deadline"));
    }
}
