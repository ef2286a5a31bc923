//! Man pages and shell completions, generated from the clap definitions at package build time.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;

pub(crate) fn run(out_dir: &Path) -> Result<ExitCode> {
    let man_dir = out_dir.join("man");
    let completions = out_dir.join("completions");
    for d in [&man_dir, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let cmd = Cli::command();
    write_man(&cmd, "netunlockd", &man_dir)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        let mut c = Cli::command();
        clap_complete::generate_to(shell, &mut c, "netunlockd", &completions)
            .with_context(|| format!("cannot write {shell} completions"))?;
    }
    crate::output::line(format_args!(
        "wrote man pages to {} and completions to {}",
        man_dir.display(),
        completions.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// netunlockd.8, then netunlockd-<sub>.8 for every visible subcommand (recursively).
fn write_man(cmd: &clap::Command, name: &str, dir: &Path) -> Result<()> {
    let cmd = cmd
        .clone()
        .name(name.to_owned())
        .display_name(name.to_owned())
        .bin_name(name.replace('-', " "));
    let buf = render_man(&cmd).context("cannot render a man page")?;
    let path = dir.join(format!("{name}.8"));
    std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_man(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}

/// clap_mangen's sections, with EXAMPLES (from the command's help) and EXIT STATUS in place of
/// its generic EXTRA section.
fn render_man(cmd: &clap::Command) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd.clone()).section("8");
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut buf)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut buf)?;
    }
    let examples = examples(cmd);
    if !examples.is_empty() {
        buf.extend_from_slice(b".SH EXAMPLES\n");
        for e in examples {
            buf.extend_from_slice(format!(".PP\n.nf\n{}\n.fi\n", roff_escape(&e)).as_bytes());
        }
    }
    buf.extend_from_slice(b".SH \"EXIT STATUS\"\n");
    for (code, meaning) in crate::exit::TABLE {
        buf.extend_from_slice(
            format!(".TP\n\\fB{code}\\fR\n{}\n", roff_escape(meaning)).as_bytes(),
        );
    }
    if cmd.get_version().is_some() {
        man.render_version_section(&mut buf)?;
    }
    Ok(buf)
}

/// The indented command lines under "Example:" / "Examples:" in a command's after-help.
pub(crate) fn examples(cmd: &clap::Command) -> Vec<String> {
    let Some(help) = cmd.get_after_help() else {
        return Vec::new();
    };
    let help = help.to_string();
    let Some((_, rest)) = help.split_once("Example") else {
        return Vec::new();
    };
    rest.lines()
        .skip(1)
        .filter_map(|l| l.strip_prefix("  "))
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Text safe in a roff line: backslashes and hyphens escaped, no leading control character.
fn roff_escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every command people run has help for each argument and at least one example, and the man
    /// pages carry the examples and the exit codes.
    #[test]
    fn every_argument_has_help_and_every_command_an_example() {
        fn walk(cmd: &clap::Command, path: &str, problems: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" || arg.is_hide_set() {
                    continue;
                }
                if arg.get_help().is_none() {
                    problems.push(format!("{path}: argument {id} has no help text"));
                }
            }
            let subs: Vec<_> = cmd.get_subcommands().collect();
            if subs.is_empty() && examples(cmd).is_empty() {
                problems.push(format!("{path}: no example in its help"));
            }
            for sub in subs {
                walk(sub, &format!("{path} {}", sub.get_name()), problems);
            }
        }
        let mut problems = Vec::new();
        walk(&Cli::command(), "netunlockd", &mut problems);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn man_pages_document_exit_codes_and_examples() {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path()).unwrap();
        let status = std::fs::read_to_string(dir.path().join("man/netunlockd-status.8")).unwrap();
        assert!(status.contains(".SH \"EXIT STATUS\""), "{status}");
        assert!(status.contains("unreachable") || status.contains("could not be reached"));
        assert!(status.contains(".SH EXAMPLES") && status.contains("netunlockd status"));
        let top = std::fs::read_to_string(dir.path().join("man/netunlockd.8")).unwrap();
        for (code, _) in crate::exit::TABLE {
            assert!(
                top.contains(&format!("\\fB{code}\\fR")),
                "exit code {code} missing"
            );
        }
    }

    #[test]
    fn man_pages_and_completions_are_written() {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path()).unwrap();
        assert!(dir.path().join("man/netunlockd.8").exists());
        assert!(dir.path().join("man/netunlockd-serve.8").exists());
        assert!(
            dir.path()
                .join("man/netunlockd-certs-new-unlock.8")
                .exists()
        );
        assert!(dir.path().join("completions/netunlockd.bash").exists());
        assert!(dir.path().join("completions/_netunlockd").exists());
        assert!(dir.path().join("completions/netunlockd.fish").exists());
    }
}
