//! What the CLI says about itself: `completion`, `man` and `version`.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::bpf::Bpf;

/// `enforcer completion <SHELL>`.
#[derive(clap::Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Prints the completion script of `shell` for `command`.
pub fn completion(args: CompletionArgs, command: clap::Command) -> Result<()> {
    let mut command = public(command);
    clap_complete::generate(args.shell, &mut command, "enforcer", &mut io::stdout());
    Ok(())
}

/// `enforcer man [--dir DIR]`.
#[derive(clap::Args)]
pub struct ManArgs {
    /// Write enforcer.8 and a page per subcommand (enforcer-attach.8, ...) into this directory
    /// instead of printing enforcer.8.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints the man page (roff) of `command`, or writes its pages into a directory.
pub fn man(args: ManArgs, command: clap::Command) -> Result<()> {
    // Built, so that the subcommands' pages are named `enforcer-<subcommand>` as the main page's
    // list refers to them.
    let mut command = public(command).disable_help_subcommand(true);
    command.build();
    let Some(dir) = args.dir else {
        return quiet_pipe(page(command).render(&mut io::stdout()));
    };
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_pages(command, &dir)
}

/// A reader that went away (`enforcer man | head`) is not an error.
fn quiet_pipe(written: io::Result<()>) -> Result<()> {
    match written {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn page(command: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(command).section("8")
}

fn write_pages(command: clap::Command, dir: &Path) -> Result<()> {
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(sub.clone(), dir)?;
    }
    let page = page(command);
    let path = dir.join(page.get_filename());
    let mut roff = Vec::new();
    page.render(&mut roff)?;
    fs::write(&path, roff).with_context(|| format!("cannot write {}", path.display()))?;
    println!("{}", path.display());
    Ok(())
}

/// `command` without its hidden subcommands and options (the self-test's child, the benches'
/// and the VM tests' switches): the generators list hidden ones too, and a user has no use for
/// them.
fn public(command: clap::Command) -> clap::Command {
    let mut public = clap::Command::new("enforcer")
        .version(env!("CARGO_PKG_VERSION"))
        .args(
            command
                .get_arguments()
                .filter(|arg| !arg.is_hide_set())
                .cloned(),
        )
        .subcommands(
            command
                .get_subcommands()
                .filter(|sub| !sub.is_hide_set())
                .cloned(),
        );
    if let Some(about) = command.get_about() {
        public = public.about(about.clone());
    }
    if let Some(after) = command.get_after_help() {
        public = public.after_help(after.clone());
    }
    public
}

/// The git commit this binary was built from (`unknown` when git was not there).
pub const COMMIT: &str = env!("ENFORCER_GIT_COMMIT");

/// `enforcer version`: this binary, its BPF object, and what is pinned on this node.
pub fn version(bpf: Bpf) -> Result<()> {
    print!("{}", version_text(bpf.build(), pinned(bpf)));
    Ok(())
}

/// The build whose programs are pinned here, in words.
fn pinned(bpf: Bpf) -> String {
    if !nix::unistd::geteuid().is_root() {
        return "unknown (reading the pins needs root)".to_owned();
    }
    let dir = bpf.pin_dir();
    let maps = fs::read_dir(dir.join("maps")).is_ok_and(|mut maps| maps.next().is_some());
    match bpf.pinned_build() {
        Some(build) => format!("build {build:016x} (under {})", dir.display()),
        // The LSM programs record their build; the syscall layer's alone record none.
        None if maps => format!("no LSM programs (maps pinned under {})", dir.display()),
        None => "none".to_owned(),
    }
}

fn version_text(build: u64, pinned: String) -> String {
    format!(
        "enforcer {}\ncommit      {COMMIT}\nbpf object  build {:016x}\npinned      {pinned}\n",
        env!("CARGO_PKG_VERSION"),
        build
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_the_commit_and_both_builds() {
        let text = version_text(0x1234, "none".to_owned());
        assert!(text.starts_with(&format!("enforcer {}\n", env!("CARGO_PKG_VERSION"))));
        assert!(text.contains(&format!("commit      {COMMIT}\n")), "{text}");
        assert!(text.contains(&format!("build {:016x}", 0x1234)), "{text}");
        assert!(text.ends_with("pinned      none\n"), "{text}");
    }
}
