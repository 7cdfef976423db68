//! `enforcer`: per-container syscall policy enforcer on BPF LSM.
mod cgroup;
mod check;
mod cli;
mod cmd;
mod container;
mod daemon;
mod error;
mod events;
mod host;
mod kernel_layout;
mod kubernetes;
mod loader;
mod ops;
mod policy;
mod protect;
mod refusal;
mod signals;
mod store;
mod workload;

use std::process::ExitCode;

use clap::FromArgMatches;

use crate::{
    cli::{Cli, Command, command},
    error::{Exit, exit_code},
};

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
        Command::Crds => cmd::crds::run(),
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
