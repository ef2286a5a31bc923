//! The docs match the program: every `netunlockd …` command line in `docs/*.md` and the README
//! runs against a test daemon (paths of the packaged layout mapped into its directories), the
//! files they name exist, and every example recovery password passes validation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::escrow_support::{Backend, EscrowDaemon, netunlockd_bin};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn doc_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files.push(repo().join("README.md"));
    files
}

/// `netunlockd …` command lines: lines of fenced code blocks, and inline code spans with arguments, that start
/// with the command (after `sudo`, `runuser -u netunlockd --`, a `$ ` prompt). Continuation lines
/// are joined; comments, pipes and `&&` end the command.
fn commands(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            let l = line.trim();
            if !pending.is_empty() {
                pending.push(' ');
                pending.push_str(l.trim_end_matches('\\').trim());
                if !l.ends_with('\\') {
                    out.push(std::mem::take(&mut pending));
                }
                continue;
            }
            if let Some(cmd) = command_start(l) {
                if l.ends_with('\\') {
                    pending = cmd.trim_end_matches('\\').trim().to_owned();
                } else {
                    out.push(cmd.to_owned());
                }
            }
        } else {
            // Inline code names a command as often as it shows one (`netunlockd escrow backup`,
            // see …): only spans with arguments are command lines.
            for (i, span) in line.split('`').enumerate() {
                if i % 2 == 1
                    && let Some(cmd) = command_start(span)
                    && cmd.split_whitespace().count() >= 4
                {
                    out.push(cmd.to_owned());
                }
            }
        }
    }
    out.into_iter()
        .map(|c| {
            let c = c.split(" #").next().unwrap_or("");
            let c = c.split(" && ").next().unwrap_or("");
            let c = c.split(" | ").next().unwrap_or("");
            let c = c.split(" > ").next().unwrap_or("");
            c.trim().to_owned()
        })
        .collect()
}

fn command_start(line: &str) -> Option<&str> {
    let mut l = line.trim();
    for prefix in [
        "$ ",
        "sudo -u netunlockd ",
        "sudo ",
        "runuser -u netunlockd -- ",
    ] {
        l = l.strip_prefix(prefix).unwrap_or(l);
    }
    let rest = l.strip_prefix("netunlockd ")?;
    let sub = rest.split_whitespace().next()?;
    [
        "serve",
        "config",
        "certs",
        "probe",
        "status",
        "operator",
        "enroll-token",
        "escrow",
        "audit",
    ]
    .contains(&sub)
    .then_some(l)
}

/// Placeholders a reader replaces (FILE, KEY, <id>, …): such a line is a pattern, not a command.
fn is_pattern(cmd: &str) -> bool {
    cmd.contains('<')
        || cmd.contains('…')
        || cmd.contains("...")
        || cmd.split_whitespace().any(|w| {
            w.len() > 1
                && w.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                && w != "ADMIN_TOKEN"
        })
}

#[test]
fn commands_are_extracted_from_blocks_spans_and_continuations() {
    let md = "text `netunlockd status` and `netunlockd certs inspect FILE`\n```sh\n\
              netunlockd status\n\
              sudo netunlockd probe v4 --cert a.cer \\\n    --interface eth0   # comment\n\
              runuser -u netunlockd -- netunlockd audit verify && echo ok\nnetunlockd-agent x\n```\n";
    assert_eq!(
        commands(md),
        vec![
            "netunlockd certs inspect FILE",
            "netunlockd status",
            "netunlockd probe v4 --cert a.cer --interface eth0",
            "netunlockd audit verify",
        ]
    );
    assert!(is_pattern("netunlockd certs inspect FILE"));
    assert!(!is_pattern(
        "netunlockd enroll-token create --token $ADMIN_TOKEN"
    ));
}

#[test]
fn example_recovery_passwords_in_the_docs_are_valid() {
    let mut found = 0;
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for word in text.split(|c: char| !(c.is_ascii_digit() || c == '-')) {
            let groups: Vec<&str> = word.split('-').collect();
            if groups.len() == 8 && groups.iter().all(|g| g.len() == 6) {
                found += 1;
                escrow::model::parse_recovery_password(word)
                    .unwrap_or_else(|e| panic!("{}: {word}: {e}", file.display()));
            }
        }
    }
    assert!(found > 0, "no example recovery password found in the docs");
}

/// Every documented command runs: no usage error, no crash; the read-only ones succeed here, and
/// the files they name exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_commands_run_against_a_test_daemon() {
    let d = EscrowDaemon::start(&Backend::Sqlite).await;
    let admin = d.bootstrap_admin();
    let root = d.dir.path();
    let state = root.join("state");
    // The generated Network Unlock certificate, as the packaged daemon keeps it.
    let unlock_dir = state.join("network-unlock");
    std::fs::create_dir_all(&unlock_dir).unwrap();
    let generated = certs::generate_unlock_certificate("docs test", 3650).unwrap();
    certs::write_unlock_files(&unlock_dir, "network-unlock", &generated).unwrap();
    // The working directory holds what docs copy "here" (network-unlock.cer, escrow.pem).
    let cwd = root.join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::copy(
        unlock_dir.join("network-unlock.cer"),
        cwd.join("network-unlock.cer"),
    )
    .unwrap();
    std::fs::copy(
        unlock_dir.join("network-unlock.pem"),
        cwd.join("network-unlock.pem"),
    )
    .unwrap();
    std::fs::copy(root.join("escrow.crt"), cwd.join("escrow.pem")).unwrap();
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(root.join("netunlockd")).unwrap();
    // The backup directory docs/operations.md has root create (`install -d … netunlockd-escrow`).
    std::fs::create_dir_all(root.join("netunlockd-escrow")).unwrap();

    let map = |cmd: &str| -> String {
        cmd.replace(
            "/etc/netunlockd/netunlockd.toml",
            d.config.to_str().unwrap(),
        )
        .replace("/etc/netunlockd", etc.to_str().unwrap())
        .replace("/var/lib/netunlockd", state.to_str().unwrap())
        .replace("/var/backups", root.to_str().unwrap())
        .replace("/root/", &format!("{}/", root.display()))
        .replace("https://escrow.example:8443", &d.base_url())
        .replace("--interface eth0", "--interface lo --timeout-ms 300")
        .replace("-i eth0", "-i lo --timeout-ms 300")
    };
    // Commands that must succeed against this daemon (the others must at least parse).
    let must_succeed = [
        "netunlockd certs inspect",
        "netunlockd config check",
        "netunlockd status",
        "netunlockd operator list",
        "netunlockd enroll-token create",
        "netunlockd escrow find",
        "netunlockd escrow devices",
        "netunlockd escrow report",
        "netunlockd escrow backup",
        "netunlockd audit verify",
    ];
    let mut ran = 0;
    let mut problems = Vec::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for cmd in commands(&text) {
            if is_pattern(&cmd) || cmd.starts_with("netunlockd serve") {
                continue;
            }
            let mapped = map(&cmd);
            // Files the command names in the packaged layout must exist there.
            let words: Vec<&str> = mapped.split_whitespace().collect();
            for pair in words.windows(2) {
                if (pair[0] == "--cert" || pair[0] == "inspect" || pair[0] == "--ca")
                    && pair[1].starts_with(root.to_str().unwrap())
                    && !Path::new(pair[1]).exists()
                {
                    problems.push(format!("{name}: `{cmd}`: {} does not exist", pair[1]));
                }
            }
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "exec {} {}",
                    netunlockd_bin().display(),
                    mapped.strip_prefix("netunlockd ").unwrap()
                ))
                .current_dir(&cwd)
                .env("ADMIN_TOKEN", &admin)
                .env("NETUNLOCKD_TOKEN", &admin)
                .env("NETUNLOCKD_CONFIG", &d.config)
                .env_remove("RUST_LOG")
                .output()
                .unwrap();
            ran += 1;
            let stderr = String::from_utf8_lossy(&out.stderr);
            let code = out.status.code();
            if code == Some(2) || code.is_none() || stderr.contains("panicked") {
                problems.push(format!("{name}: `{cmd}`: exit {code:?}: {stderr}"));
            } else if must_succeed.iter().any(|p| cmd.starts_with(p)) && code != Some(0) {
                problems.push(format!("{name}: `{cmd}` failed here ({code:?}): {stderr}"));
            }
        }
    }
    assert!(ran >= 15, "only {ran} documented commands found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
