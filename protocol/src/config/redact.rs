//! Secrets out of configuration messages. Every [`super::ConfigError`] is rendered through
//! [`redact_message`]: URLs anywhere in the text lose their userinfo and the values of query
//! parameters named like secrets (`?password=`), and when the key the error is about is named
//! like a secret (`token`, `password`, `secret`, `*_key`, `dsn`, ...) every quoted value in the
//! message is replaced by `***`. Errors still name the file, the line and the key, which is all
//! an operator needs to find and fix the value.

use std::borrow::Cow;

const MASK: &str = "***";

/// Whether a key (or environment variable) name says its value is a secret: the last segment
/// of `a.b[2].c`, case-insensitively. Names of files, ids and variables holding secrets are not.
pub fn is_secret_key(key: &str) -> bool {
    let mut segments = key
        .rsplit('.')
        .map(|s| s.split('[').next().unwrap_or(s).to_ascii_lowercase());
    let last = segments.next().unwrap_or_default();
    // Entries of a map of secrets (`[aggregator.keys] k1 = ...`) are secrets whatever their name.
    if segments
        .next()
        .is_some_and(|parent| ["keys", "secrets", "tokens", "passwords"].contains(&parent.as_str()))
    {
        return true;
    }
    let indirect = ["_id", "_ids", "_file", "_env", "_path"];
    if indirect.iter().any(|s| last.ends_with(s)) {
        return false;
    }
    let words = [
        "token",
        "password",
        "passwd",
        "pwd",
        "secret",
        "credential",
        "passphrase",
        "dsn",
        "apikey",
        "api_key",
        "authorization",
    ];
    words.iter().any(|w| last.contains(w)) || last == "key" || last.ends_with("_key")
}

/// `url` without secrets: `user:password@` becomes `***@`, and the value of every query
/// parameter named like a secret becomes `***`.
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let mut out = match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}{MASK}{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    };
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let (query, fragment) = match query.find('#') {
            Some(h) => query.split_at(h),
            None => (query, ""),
        };
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret_key(name) => format!("{name}={MASK}"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}{fragment}", query.join("&"));
    }
    if out == url {
        Cow::Borrowed(url)
    } else {
        Cow::Owned(out)
    }
}

/// `message` about `key`, with every URL passed through [`redact_url`] and, when `key` is named
/// like a secret, every quoted value ("...", '...', `...`) replaced by `***`.
pub fn redact_message<'a>(key: &str, message: &'a str) -> Cow<'a, str> {
    let mut out = redact_urls(message).into_owned();
    if is_secret_key(key) {
        // In toml's "unknown field `x`, expected one of `a`, `b`" the quotes hold key names.
        let names_only = out.starts_with("unknown field") || out.starts_with("missing field");
        let quotes: &[char] = if names_only {
            &['"', '\'']
        } else {
            &['"', '\'', '`']
        };
        out = mask_quoted(&out, quotes);
    }
    if out == message {
        Cow::Borrowed(message)
    } else {
        Cow::Owned(out)
    }
}

/// Every `scheme://...` in `text`, redacted.
fn redact_urls(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        let scheme_start = rest[..sep]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
            .map_or(0, |i| i + 1);
        let end = rest[sep..]
            .find(|c: char| c.is_whitespace() || "\"'`<>(),".contains(c))
            .map_or(rest.len(), |i| sep + i);
        out.push_str(&rest[..scheme_start]);
        out.push_str(&redact_url(&rest[scheme_start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// `text` with the inside of every pair of `quotes` replaced by `***`; an unclosed quote masks
/// the rest.
fn mask_quoted(text: &str, quotes: &[char]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut open: Option<char> = None;
    for c in text.chars() {
        match open {
            None => {
                out.push(c);
                if quotes.contains(&c) {
                    open = Some(c);
                    out.push_str(MASK);
                }
            }
            Some(q) if c == q => {
                out.push(c);
                open = None;
            }
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for k in [
            "token",
            "aurora.writer.password",
            "http[0].api_key",
            "VANTAGE_AGENT_KEY",
            "client_secret",
            "dsn",
            "key",
            "aggregator.keys.k1",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "key_id",
            "agents.auth.key_file",
            "key_env",
            "aurora.writer.url",
            "region",
            "keys",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn urls_lose_userinfo_and_secret_parameters() {
        assert_eq!(
            redact_url("postgres://u:pw@db:5432/x?sslmode=prefer&password=pw2#f"),
            "postgres://***@db:5432/x?sslmode=prefer&password=***#f"
        );
        assert_eq!(redact_url("https://h/status"), "https://h/status");
    }

    #[test]
    fn messages_keep_their_shape_without_the_secret() {
        let m = redact_message(
            "aurora.writer.url",
            "\"mysql://u:hunter2@h/d?ssl-mode=x\" is bad: use ...",
        );
        assert_eq!(m, "\"mysql://***@h/d?ssl-mode=x\" is bad: use ...");
        let m = redact_message(
            "token",
            "invalid type: integer `123456789`, expected a string",
        );
        assert_eq!(m, "invalid type: integer `***`, expected a string");
        let m = redact_message("token", "unknown field `token`, expected `region`");
        assert_eq!(m, "unknown field `token`, expected `region`");
        let m = redact_message("region", "\"eu-west-9\" is not a Region");
        assert_eq!(m, "\"eu-west-9\" is not a Region");
    }
}
