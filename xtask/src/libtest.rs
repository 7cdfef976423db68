//! Follows libtest's plain output (`--test-threads=1`) as it streams off the serial console.

/// Result of one test as libtest reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Failed,
    Ignored,
}

/// Parsed state of one libtest run.
#[derive(Debug, Default)]
pub struct Report {
    pub results: Vec<(String, Verdict)>,
    /// The `failures:` block (captured stdout of failed tests), up to `test result:`.
    pub failure_output: Vec<String>,
    /// The `test result: ...` line, once seen.
    pub summary: Option<String>,
    in_failures: bool,
    /// A `test name ... ` line whose verdict was pushed to a later line (a child process wrote
    /// to the console in between).
    pending: Option<String>,
}

fn verdict(word: &str) -> Option<Verdict> {
    match word {
        "ok" => Some(Verdict::Ok),
        "FAILED" => Some(Verdict::Failed),
        w if w.starts_with("ignored") => Some(Verdict::Ignored),
        _ => None,
    }
}

impl Report {
    /// Feeds one console line; returns the `(name, verdict)` it completed, if any.
    pub fn feed(&mut self, line: &str) -> Option<(String, Verdict)> {
        if line.starts_with("test result: ") {
            self.in_failures = false;
            self.summary = Some(line.to_string());
            return None;
        }
        if line == "failures:" {
            self.in_failures = true;
        }
        if self.in_failures {
            self.failure_output.push(line.to_string());
            return None;
        }
        if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, tail)) = rest.split_once(" ... ")
        {
            let name = name.to_string();
            return match verdict(tail.trim()) {
                Some(v) => self.record(name, v),
                None => {
                    // Verdict not on this line: it follows whatever the test's children printed.
                    self.pending = Some(name);
                    None
                }
            };
        }
        if self.pending.is_some() {
            let word = line.split_whitespace().last().unwrap_or_default();
            if let Some(v) = verdict(word) {
                let name = self.pending.take().expect("checked");
                return self.record(name, v);
            }
        }
        None
    }

    fn record(&mut self, name: String, v: Verdict) -> Option<(String, Verdict)> {
        self.pending = None;
        self.results.push((name.clone(), v));
        Some((name, v))
    }

    pub fn count(&self, v: Verdict) -> usize {
        self.results.iter().filter(|(_, r)| *r == v).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_results_and_failures() {
        let mut r = Report::default();
        let lines = [
            "running 3 tests",
            "test a::one ... ok",
            "test a::two ... FAILED",
            "test a::three ... ignored, needs root",
            "",
            "failures:",
            "",
            "---- a::two stdout ----",
            "boom",
            "",
            "failures:",
            "    a::two",
            "",
            "test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out",
        ];
        for l in lines {
            r.feed(l);
        }
        assert_eq!(r.count(Verdict::Ok), 1);
        assert_eq!(r.count(Verdict::Failed), 1);
        assert_eq!(r.count(Verdict::Ignored), 1);
        assert!(r.failure_output.contains(&"boom".to_string()));
        assert!(r.summary.is_some());
    }

    #[test]
    fn verdict_after_interleaved_output() {
        let mut r = Report::default();
        assert_eq!(r.feed("test x ... child says hi"), None);
        assert_eq!(r.feed("ok"), Some(("x".to_string(), Verdict::Ok)));
    }
}
