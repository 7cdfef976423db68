//! `cargo xtask crds`: `deploy/crds.yaml` from `enforcer crds`. The enforcer binary owns the
//! types, so the file cannot drift from what it enforces (a unit test in the enforcer crate fails
//! when it does).

use std::fs;

use anyhow::{Context, Result};

use crate::{cmd, toolchain, workspace_root};

/// Writes `deploy/crds.yaml` when its text differs from the generated one; says which.
pub fn write() -> Result<()> {
    let mut run = toolchain::cargo()?;
    // No BPF object is needed to print the CRDs.
    run.args(["run", "--quiet", "-p", "enforcer", "--", "crds"])
        .env("AYA_BUILD_SKIP", "1");
    let text = cmd::output(&mut run)?;
    let path = workspace_root().join("deploy/crds.yaml");
    let unchanged = fs::read_to_string(&path).is_ok_and(|old| old == text);
    if !unchanged {
        fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let state = if unchanged { "unchanged" } else { "written" };
    println!("{}: {state}", path.display());
    Ok(())
}
