//! `enforcer`: per-container syscall policy enforcer on BPF LSM.
mod bpf;
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
mod ops;
mod paths;
mod policy;
mod refusal;
mod signals;
mod store;
mod workload;

use std::process::ExitCode;

use clap::FromArgMatches;

use crate::{
    bpf::Bpf,
    cli::{Cli, Command, command},
    error::{Exit, exit_code},
};

fn main() -> ExitCode {
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|err| err.exit());
    let bpf = match bpf_of(&cli) {
        Ok(bpf) => bpf,
        Err(err) => {
            eprintln!("enforcer: {:#}", anyhow::Error::from(err));
            return ExitCode::from(Exit::Failure as u8);
        }
    };
    let result = match cli.command {
        Command::Attach(args) => cmd::attach::run(args, bpf),
        Command::Detach(args) => cmd::detach::run(args, bpf),
        Command::List(args) => cmd::list::run(args, bpf),
        Command::Tail(args) => cmd::tail::run(args, bpf),
        Command::Record(args) => cmd::record::run(args, bpf),
        Command::Daemon(args) => cmd::daemon::run(args, bpf),
        Command::Reset => reset(bpf),
        Command::Check(args) => cmd::check::run(args, bpf),
        Command::CheckChild(args) => cmd::check::child(args),
        Command::Apply(args) => cmd::apply::run(args, bpf),
        Command::Debug(args) => cmd::debug::run(args, bpf),
        Command::Crds => cmd::crds::run(),
        Command::Version => cmd::meta::version(bpf),
        Command::Completion(args) => cmd::meta::completion(args, command()),
        Command::Man(args) => cmd::meta::man(args, command()),
        #[cfg(feature = "testing")]
        Command::BenchEvents { mode } => bench_events(bpf, mode),
        #[cfg(feature = "testing")]
        Command::BenchEmpty { hook } => bpf::bench::attach_empty(&bpf, &hook)
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

/// The BPF object and map ABI every command uses: the shipped ones, or (feature `testing`) the
/// hidden test options' (see [`Cli`]).
#[cfg(not(feature = "testing"))]
fn bpf_of(_cli: &Cli) -> Result<Bpf, bpf::LoaderError> {
    Ok(Bpf::shipped())
}

#[cfg(feature = "testing")]
fn bpf_of(cli: &Cli) -> Result<Bpf, bpf::LoaderError> {
    let bpf = match &cli.bpf_object {
        Some(path) => Bpf::from_object_file(path)?,
        None => Bpf::shipped(),
    };
    match cli.test_abi {
        Some(version) => bpf.pretending_abi(version),
        None => Ok(bpf),
    }
}

fn reset(bpf: Bpf) -> anyhow::Result<()> {
    let lock = bpf.lock()?;
    let removed = bpf::reset(&lock)?;
    // The directory of the ABI versions too, when nothing else (another pin scheme) is in it.
    let _ = std::fs::remove_dir(paths::PIN_BASE);
    if removed {
        println!("removed every enforcer program, map and policy");
    } else {
        println!("nothing to remove");
    }
    Ok(())
}

#[cfg(feature = "testing")]
fn bench_events(bpf: Bpf, mode: cli::EventMode) -> anyhow::Result<()> {
    use enforcer_common::config::{BENCH_NO_EVENTS, BENCH_UNLIMITED_BUDGET, BENCH_WAKEUP_EACH};
    let set = match mode {
        cli::EventMode::Normal => 0,
        cli::EventMode::None => BENCH_NO_EVENTS,
        cli::EventMode::WakeupEach => BENCH_WAKEUP_EACH,
    };
    let lock = bpf.lock()?;
    // The benches measure the event path, which a budget that ran out would skip.
    let set = set | BENCH_UNLIMITED_BUDGET;
    bpf::update_config(&lock, set, (BENCH_NO_EVENTS | BENCH_WAKEUP_EACH) & !set)?;
    let name = clap::ValueEnum::to_possible_value(&mode).expect("no variant is skipped");
    println!("event mode {}", name.get_name());
    Ok(())
}
