//! The command line (clap only): the subcommands, the operation names that `--deny`, `--audit`
//! and `--kill` take (for `--help` and completions) and the examples at the end of `--help`.
//! Every subcommand's own arguments live in its `cmd` module.
#[cfg(feature = "testing")]
use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};
use enforcer_common::OPERATIONS;

use crate::cmd;

#[derive(Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// VM tests only (feature `testing`): load the BPF programs from this object file instead of
    /// the embedded one, acting as another build (upgrade tests).
    #[cfg(feature = "testing")]
    #[arg(long, global = true, hide = true, value_name = "FILE")]
    pub bpf_object: Option<PathBuf>,
    /// VM tests only (feature `testing`): act as the next map ABI version (pins under its
    /// directory), so that this build's real ABI is an older one to migrate (upgrade tests).
    #[cfg(feature = "testing")]
    #[arg(long, global = true, hide = true, value_name = "N")]
    pub test_abi: Option<u32>,
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
    /// Print the Kubernetes CustomResourceDefinitions (ContainerPolicy, ClusterContainerPolicy)
    /// as YAML (`enforcer crds | kubectl apply -f -`).
    #[command(visible_alias = "crd")]
    Crds,
    /// Print this binary's version and commit, its BPF object's build and the build pinned here.
    Version,
    /// Print a shell completion script (`source <(enforcer completion bash)`).
    Completion(cmd::meta::CompletionArgs),
    /// Print the man page in roff (`enforcer man | man -l -`), or write every page (`--dir`).
    Man(cmd::meta::ManArgs),
    /// Benches only: event mode of the programs.
    #[cfg(feature = "testing")]
    #[command(hide = true)]
    BenchEvents { mode: EventMode },
    /// Attach a do-nothing program to an LSM hook (`settime` or `capable`) or a syscall-layer
    /// tracepoint (`sys_enter`, `sys_exit`), for benches.
    #[cfg(feature = "testing")]
    #[command(hide = true)]
    BenchEmpty {
        #[arg(long)]
        hook: String,
    },
}

/// Benches only: what the programs do with an event (the bench object's switches).
#[cfg(feature = "testing")]
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum EventMode {
    /// Submitted without a wakeup, as shipped.
    Normal,
    /// No event at all.
    None,
    /// Submitted with a wakeup each.
    WakeupEach,
}

/// The command line, with the operation names and examples (from the operations table) at the
/// end of `--help`.
pub fn command() -> clap::Command {
    Cli::command().after_help(after_help())
}

/// The end of the top-level `--help`: the operations and a few examples.
pub fn after_help() -> String {
    let mut out = String::from("Operations (for --deny, --audit and --kill, as a comma list):\n");
    for spec in OPERATIONS {
        out += &format!("  {:<9} {}\n", spec.name, spec.summary);
    }
    out += "  all       every operation\n";
    let first = OPERATIONS.first().map_or("mount", |spec| spec.name);
    let last = OPERATIONS.last().map_or("settime", |spec| spec.name);
    out += &format!(
        "\nExamples:
  enforcer check                                   can this machine enforce?
  enforcer attach --cgroup kubepods.slice/pod1 --deny {first},{last}
  enforcer attach --container 3f2a9c1b --audit all
  enforcer attach --cgroup app --layer syscall --kill {first}   (no BPF LSM here)
  enforcer list
  enforcer tail --cgroup kubepods.slice/pod1
  enforcer record --cgroup app --duration 10m --suggest | enforcer apply -f -
  source <(enforcer completion bash)
  enforcer man | man -l -
"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_in_the_help() {
        let help = after_help();
        for spec in OPERATIONS {
            assert!(help.contains(spec.name), "{}: {help}", spec.name);
        }
    }
}
