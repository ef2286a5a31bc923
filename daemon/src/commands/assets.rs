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
    println!(
        "wrote man pages to {} and completions to {}",
        man_dir.display(),
        completions.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// netunlockd.8, then netunlockd-<sub>.8 for every visible subcommand (recursively).
fn write_man(cmd: &clap::Command, name: &str, dir: &Path) -> Result<()> {
    let cmd = cmd
        .clone()
        .name(name.to_owned())
        .display_name(name.to_owned())
        .bin_name(name.replace('-', " "));
    let man = clap_mangen::Man::new(cmd.clone()).section("8");
    let mut buf = Vec::new();
    man.render(&mut buf).context("cannot render a man page")?;
    let path = dir.join(format!("{name}.8"));
    std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_man(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
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
