//! `enforcer debug on|off|follow`: kernel-side debug logs (aya-log). Off by default; the programs
//! check the switch only after a policy asked for something, so callers outside every policy
//! never pay for it.
use std::{thread, time::Duration};

use anyhow::{Context, Result};
use enforcer_common::{HOOKS, config};

use crate::loader;

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

pub fn run(args: Args) -> Result<()> {
    match args.what {
        What::On => switch(config::DEBUG_LOG, 0, "on"),
        What::Off => switch(0, config::DEBUG_LOG, "off"),
        What::Follow => follow(),
    }
}

fn switch(set: u32, clear: u32, word: &str) -> Result<()> {
    let lock = loader::lock()?;
    loader::update_config(&lock, set, clear)?;
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

fn follow() -> Result<()> {
    // Every program of the object shares one log buffer; any loaded program of ours finds it.
    let program = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|info| {
            info.name_as_str()
                .is_some_and(|name| HOOKS.iter().any(|hook| hook.program == name))
        })
        .context("no enforcer program is loaded; start with `enforcer attach`")?;
    let mut logger = aya_log::EbpfLogger::init_from_id_with_logger(program.id(), Stderr)
        .context("cannot open the kernel log buffer")?;
    eprintln!("following kernel debug logs (enable them with `enforcer debug on`)");
    loop {
        logger.flush();
        thread::sleep(Duration::from_millis(100));
    }
}
