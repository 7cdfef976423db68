//! The CLI's conventions, natively on the host without BPF state: the shell completion script
//! and the man page that `enforcer completion` and `enforcer man` print.
mod common;

use std::{
    env, fs,
    io::Write,
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use common::{enforcer_bin, text};

fn plain(args: &[&str]) -> Output {
    Command::new(enforcer_bin())
        .args(args)
        .output()
        .expect("run enforcer")
}

/// The bash completion script loads in a plain bash and completes subcommands, options and
/// operation names.
#[test]
fn bash_completion_completes_subcommands_and_operations() {
    let script = plain(&["completion", "bash"]);
    assert!(script.status.success(), "{}", text(&script.stderr));
    let scratch = Scratch::new("enforcer-ops-completion");
    let dir = &scratch.0;
    let file = dir.join("enforcer.bash");
    fs::write(&file, &script.stdout).expect("write script");
    // COMP_WORDS as bash fills them for `enforcer <words>`, the cursor on the last word.
    let complete = |words: &str| {
        let body = format!(
            "set -e; source {}; complete -p enforcer >/dev/null; COMP_WORDS=(enforcer {words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; _enforcer enforcer \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display()
        );
        let out = Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &body])
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "{words}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let subcommands = complete("''");
    for name in [
        "attach",
        "detach",
        "list",
        "tail",
        "record",
        "check",
        "apply",
        "completion",
        "man",
        "version",
    ] {
        assert!(
            subcommands.iter().any(|word| word == name),
            "{name}: {subcommands:?}"
        );
    }
    assert!(
        !subcommands.iter().any(|word| word == "check-child"),
        "hidden commands are not offered: {subcommands:?}"
    );
    assert_eq!(complete("at"), ["attach"]);
    assert!(complete("attach --d").contains(&"--deny".to_owned()));
    assert_eq!(
        complete("attach --deny ''"),
        ["mount", "keyctl", "settime", "reboot", "kexec", "all"]
    );
}

/// The man page is roff that `man` (or groff) renders, naming every subcommand.
#[test]
fn the_man_page_renders() {
    let page = plain(&["man"]);
    assert!(page.status.success(), "{}", text(&page.stderr));
    let roff = text(&page.stdout);
    assert!(roff.contains(".TH enforcer 8"), "{roff}");
    for name in ["attach", "record", "apply", "completion", "version"] {
        assert!(roff.contains(name), "{name} is not in the page");
    }
    let render = |program: &str, args: &[&str]| {
        let mut child = Command::new(program)
            .args(args)
            .env("MANWIDTH", "100")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&page.stdout)
            .ok()?;
        let out = child.wait_with_output().ok()?;
        assert!(out.status.success(), "{program}: {}", text(&out.stderr));
        Some(text(&out.stdout))
    };
    let rendered = render("man", &["-l", "-"]).or_else(|| render("groff", &["-man", "-Tutf8"]));
    match rendered {
        Some(text) => assert!(
            text.contains("attach") && text.contains("SUBCOMMANDS"),
            "{text}"
        ),
        None => eprintln!("neither man nor groff is installed: only the roff was checked"),
    }
}

/// A directory under the temporary directory, removed on drop (a failed test included).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = env::temp_dir().join(format!("{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("mkdir {}: {err}", dir.display()));
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
