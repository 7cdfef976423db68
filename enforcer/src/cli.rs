//! The command line (clap only): every subcommand's arguments live in its `cmd` module.
use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

use crate::cmd;

#[derive(Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// VM tests only: load the BPF programs from this object file instead of the embedded one,
    /// acting as another build (upgrade tests).
    #[arg(long, global = true, hide = true, value_name = "FILE")]
    pub bpf_object: Option<PathBuf>,
    /// VM tests only: act as the next map layout (pins under its directory), so that this
    /// build's real layout is an older one to migrate (upgrade tests).
    #[arg(long, global = true, hide = true, value_name = "N")]
    pub test_layout: Option<u32>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Set the policy of a cgroup (and every cgroup below it); replaces any policy it had.
    Attach(cmd::attach::Args),
    /// Remove the policy of a cgroup.
    Detach(cmd::detach::Args),
    /// Show the policies in force and their counters.
    List(cmd::list::Args),
    /// Follow violation events live.
    Tail(cmd::tail::Args),
    /// Watch a workload's guarded calls for a while; `--suggest` prints the strictest policy.
    Record(cmd::record::Args),
    /// The node agent: keep enforcement loaded, fan events out to tails, stdout and metrics.
    Daemon(cmd::daemon::Args),
    /// Remove every program, map and policy of enforcer from the kernel.
    Reset,
    /// Say whether this machine can enforce: preflight checks, then a live self-test.
    Check(cmd::check::Args),
    /// The self-test's process inside the throwaway cgroup (started by `check`).
    #[command(hide = true)]
    CheckChild(cmd::check::ChildArgs),
    /// Make the kernel hold the policies of a YAML file (`--dry-run` shows the diff).
    Apply(cmd::apply::Args),
    /// Kernel-side debug logs: switch them on or off, or follow them.
    Debug(cmd::debug::Args),
    /// Print this binary's version and commit, its BPF object's build and the build pinned here.
    Version,
    /// Print a shell completion script (`source <(enforcer completion bash)`).
    Completion(cmd::meta::CompletionArgs),
    /// Print the man page in roff (`enforcer man | man -l -`), or write every page (`--dir`).
    Man(cmd::meta::ManArgs),
    /// Benches only: event mode of the programs (`normal`, `none`, `wakeup-each`).
    #[command(hide = true)]
    BenchEvents { mode: String },
    /// Attach a do-nothing program to an LSM hook (`settime` or `capable`) or a syscall-layer
    /// tracepoint (`sys_enter`, `sys_exit`), for benches.
    #[command(hide = true)]
    BenchEmpty {
        #[arg(long)]
        hook: String,
    },
}

/// The command line, with the operation names and examples (from the operations table) at the
/// end of `--help`.
pub fn command() -> clap::Command {
    Cli::command().after_help(cmd::meta::after_help())
}
