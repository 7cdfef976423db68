//! `enforcer debug on|off|follow`: kernel-side debug logs (aya-log). Off by default; the programs
//! check the switch only after a policy asked for something, so callers outside every policy
//! never pay for it.
use std::{
    collections::HashSet,
    fs, thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::{maps::MapInfo, programs::ProgramInfo};
use enforcer_common::config;

use crate::bpf;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand)]
pub enum What {
    /// Log every reported decision from the kernel.
    On,
    /// Stop logging.
    Off,
    /// Print the kernel's debug log lines as they come (Ctrl-C ends).
    Follow,
}

pub fn run(args: Args, bpf: bpf::Bpf) -> Result<()> {
    match args.what {
        What::On => switch(bpf, config::DEBUG_LOG, 0, "on"),
        What::Off => switch(bpf, 0, config::DEBUG_LOG, "off"),
        What::Follow => follow(bpf),
    }
}

fn switch(bpf: bpf::Bpf, set: u32, clear: u32, word: &str) -> Result<()> {
    let lock = bpf.lock()?;
    bpf::update_config(&lock, set, clear)?;
    println!("kernel debug logs {word}");
    Ok(())
}

/// Writes aya-log records to stderr.
struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        eprintln!("kernel {}: {}", record.level(), record.args());
    }

    fn flush(&self) {}
}

fn follow(bpf: bpf::Bpf) -> Result<()> {
    // Programs loaded together share one log buffer; each load (the LSM programs, the syscall
    // layer attached later by another command, an upgrade) has its own. Every one is followed,
    // once, looking again each second for programs loaded since.
    let mut followed = HashSet::new();
    let mut loggers = Vec::new();
    let mut said_silent = false;
    let mut scanned: Option<Instant> = None;
    loop {
        if scanned.is_none_or(|at| at.elapsed() >= RESCAN) {
            let programs = our_programs(bpf);
            if programs.is_empty() && scanned.is_none() {
                anyhow::bail!("no enforcer program is loaded; start with `enforcer attach`");
            }
            scanned = Some(Instant::now());
            for program in &programs {
                let Some(buffer) = log_buffer(program) else {
                    continue;
                };
                if followed.insert(buffer) {
                    loggers.push(
                        aya_log::EbpfLogger::init_from_id_with_logger(program.id(), Stderr)
                            .context("cannot open the kernel log buffer")?,
                    );
                    eprintln!(
                        "following kernel debug logs from {} (enable them with `enforcer debug on`)",
                        program.name_as_str().unwrap_or("an enforcer program")
                    );
                }
            }
            if loggers.is_empty() && !said_silent {
                let names: Vec<&str> = programs.iter().filter_map(|p| p.name_as_str()).collect();
                eprintln!(
                    "the loaded enforcer programs ({}) write no debug logs (the LSM programs do: attach --layer lsm|both); waiting for programs that do",
                    names.join(", ")
                );
                said_silent = true;
            }
        }
        for logger in &mut loggers {
            logger.flush();
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// How often `follow` looks for programs loaded since.
const RESCAN: Duration = Duration::from_secs(1);

/// The loaded programs that use this enforcer's pinned maps: found by map, not by name, because
/// other tools load programs called `sys_enter` too.
fn our_programs(bpf: bpf::Bpf) -> Vec<ProgramInfo> {
    let maps_dir = bpf.pin_dir().join("maps");
    let ours: HashSet<u32> = fs::read_dir(&maps_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| MapInfo::from_pin(entry.path()).ok())
        .map(|info| info.id())
        .collect();
    if ours.is_empty() {
        return Vec::new();
    }
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|program| {
            program
                .map_ids()
                .ok()
                .flatten()
                .is_some_and(|ids| ids.iter().any(|id| ours.contains(id)))
        })
        .collect()
}

/// The id of the aya-log buffer a program writes to, if it logs at all.
fn log_buffer(program: &ProgramInfo) -> Option<u32> {
    program
        .map_ids()
        .ok()
        .flatten()?
        .into_iter()
        .find(|id| MapInfo::from_id(*id).is_ok_and(|map| map.name_as_str() == Some("AYA_LOGS")))
}
