//! `enforcer`: per-container syscall policy enforcer on BPF LSM.
mod cgroup;
mod cmd;
mod consumer;
mod container;
mod daemon;
mod events;
mod kernel_layout;
mod loader;
mod policy;
mod protect;
mod refusal;

use std::{path::PathBuf, process::ExitCode};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// VM tests only: load the BPF programs from this object file instead of the embedded one,
    /// acting as another build (upgrade tests).
    #[arg(long, global = true, hide = true, value_name = "FILE")]
    bpf_object: Option<PathBuf>,
    /// VM tests only: act as the next map layout (pins under its directory), so that this
    /// build's real layout is an older one to migrate (upgrade tests).
    #[arg(long, global = true, hide = true, value_name = "N")]
    test_layout: Option<u32>,
}

#[derive(Subcommand)]
enum Command {
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

/// Exit codes, one per kind of failure, so scripts can tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Exit {
    Failure = 1,
    // 2 is clap's usage error.
    BadPolicy = 3,
    BadCgroup = 4,
    CannotEnforce = 5,
    NotPrivileged = 6,
    NothingAttached = 7,
    AlreadyRunning = 8,
    DaemonGone = 9,
    UnknownContainer = 10,
    AmbiguousContainer = 11,
    /// The action needs a layer the request did not select (`--deny` with `--layer syscall`).
    NotInLayer = 12,
    /// A command with state to undo was stopped by a signal and undid it first: 128 + the
    /// signal's number, what a shell reports for a process the signal ended.
    Hangup = 129,
    Interrupted = 130,
    Terminated = 143,
}

/// An error that is the user's to fix, with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExitError {
    code: Exit,
    message: String,
}

impl ExitError {
    pub fn no_policy(cgroup: &str) -> Self {
        Self {
            code: Exit::NothingAttached,
            message: format!("{cgroup} has no policy; `enforcer list` shows the attached cgroups"),
        }
    }

    /// A second `enforcer daemon` while one runs.
    pub fn already_running(message: String) -> Self {
        Self {
            code: Exit::AlreadyRunning,
            message,
        }
    }

    /// A tail reading the daemon's event stream saw the daemon go away.
    pub fn daemon_gone(message: String) -> Self {
        Self {
            code: Exit::DaemonGone,
            message,
        }
    }

    /// The cgroup cannot be used for this (`record` on a cgroup with a policy).
    pub fn bad_cgroup(message: String) -> Self {
        Self {
            code: Exit::BadCgroup,
            message,
        }
    }

    pub fn not_in_layer(message: String) -> Self {
        Self {
            code: Exit::NotInLayer,
            message,
        }
    }

    /// `signal` stopped the command, which cleaned up before exiting.
    pub fn interrupted(signal: nix::sys::signal::Signal, message: String) -> Self {
        use nix::sys::signal::Signal;
        Self {
            code: match signal {
                Signal::SIGHUP => Exit::Hangup,
                Signal::SIGTERM => Exit::Terminated,
                _ => Exit::Interrupted,
            },
            message,
        }
    }

    pub fn cannot_enforce(message: String) -> Self {
        Self {
            code: Exit::CannotEnforce,
            message,
        }
    }

    pub fn not_privileged(message: String) -> Self {
        Self {
            code: Exit::NotPrivileged,
            message,
        }
    }
}

fn exit_code(err: &anyhow::Error) -> Exit {
    use loader::LoaderError as L;
    for cause in err.chain() {
        if let Some(err) = cause.downcast_ref::<ExitError>() {
            return err.code;
        }
        if cause.is::<policy::PolicyError>() {
            return Exit::BadPolicy;
        }
        if let Some(err) = cause.downcast_ref::<container::ContainerError>() {
            return match err {
                container::ContainerError::Ambiguous { .. } => Exit::AmbiguousContainer,
                container::ContainerError::Cgroup(_) => Exit::BadCgroup,
                _ => Exit::UnknownContainer,
            };
        }
        if cause.is::<cgroup::CgroupError>() {
            return Exit::BadCgroup;
        }
        if let Some(err) = cause.downcast_ref::<L>() {
            return match err {
                L::NotPrivileged => Exit::NotPrivileged,
                L::LsmInactive(_)
                | L::LsmRefused(..)
                | L::NoBtf(_)
                | L::KernelLayout(_)
                | L::MissingHook { .. } => Exit::CannotEnforce,
                L::NotInstalled(_) => Exit::NothingAttached,
                _ => Exit::Failure,
            };
        }
    }
    Exit::Failure
}

/// The command line, with the operation names and examples (from the operations table) at the
/// end of `--help`.
fn command() -> clap::Command {
    Cli::command().after_help(cmd::meta::after_help())
}

fn main() -> ExitCode {
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|err| err.exit());
    if let Err(err) = test_overrides(cli.bpf_object.as_deref(), cli.test_layout) {
        eprintln!("enforcer: {err}");
        return ExitCode::from(Exit::Failure as u8);
    }
    let result = match cli.command {
        Command::Attach(args) => cmd::attach::run(args),
        Command::Detach(args) => cmd::detach::run(args),
        Command::List(args) => cmd::list::run(args),
        Command::Tail(args) => cmd::tail::run(args),
        Command::Record(args) => cmd::record::run(args),
        Command::Daemon(args) => cmd::daemon::run(args),
        Command::Reset => reset(),
        Command::Check(args) => cmd::check::run(args),
        Command::CheckChild(args) => cmd::check::child(args),
        Command::Apply(args) => cmd::apply::run(args),
        Command::Debug(args) => cmd::debug::run(args),
        Command::Version => cmd::meta::version(),
        Command::Completion(args) => cmd::meta::completion(args, command()),
        Command::Man(args) => cmd::meta::man(args, command()),
        Command::BenchEvents { mode } => bench_events(&mode),
        Command::BenchEmpty { hook } => loader::attach_empty(&hook)
            .map(|path| {
                println!("pinned {}", path.display());
            })
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the cause chain joined, which names the fix at its end.
            eprintln!("enforcer: {err:#}");
            ExitCode::from(exit_code(&err) as u8)
        }
    }
}

/// The hidden test options (see [`Cli`]).
fn test_overrides(
    object: Option<&std::path::Path>,
    layout: Option<u32>,
) -> Result<(), loader::LoaderError> {
    if let Some(path) = object {
        loader::use_object_file(path)?;
    }
    if let Some(version) = layout {
        loader::pretend_layout(version)?;
    }
    Ok(())
}

fn reset() -> anyhow::Result<()> {
    let lock = loader::lock()?;
    let removed = loader::reset(&lock)?;
    // The directory of the layouts too, when nothing else (another layout scheme) is in it.
    let _ = std::fs::remove_dir(loader::PIN_BASE);
    if removed {
        println!("removed every enforcer program, map and policy");
    } else {
        println!("nothing to remove");
    }
    Ok(())
}

fn bench_events(mode: &str) -> anyhow::Result<()> {
    use enforcer_common::config::{BENCH_NO_EVENTS, BENCH_UNLIMITED_BUDGET, BENCH_WAKEUP_EACH};
    let set = match mode {
        "normal" => 0,
        "none" => BENCH_NO_EVENTS,
        "wakeup-each" => BENCH_WAKEUP_EACH,
        other => anyhow::bail!("unknown event mode {other}; use normal, none or wakeup-each"),
    };
    let lock = loader::lock()?;
    // The benches measure the event path, which a budget that ran out would skip.
    let set = set | BENCH_UNLIMITED_BUDGET;
    loader::update_config(&lock, set, (BENCH_NO_EVENTS | BENCH_WAKEUP_EACH) & !set)?;
    println!("event mode {mode}");
    Ok(())
}
