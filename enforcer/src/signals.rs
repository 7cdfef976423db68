//! Termination signals held back while a command has machine-wide state to undo (`record`'s
//! policy and the syscall layer it attaches, `check`'s throwaway policy): SIGINT, SIGTERM and
//! SIGHUP are blocked, so their default action (ending the process on the spot) cannot leave that
//! state behind, and the command takes them when it is ready to clean up.
//!
//! The mask is per thread and inherited by the threads started after it is set, so [`Held::new`]
//! must come before the command starts any thread: a process-directed signal then stays pending
//! until [`Held::wait`] takes it. Child processes start with an empty mask (the standard library
//! clears it before exec), so they stay killable as usual.
use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

/// The signals that end a command run from a terminal, a service manager or `timeout`.
const TERMINATING: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The terminating signals, blocked on this thread until dropped (then the previous mask is put
/// back, and a signal still pending is delivered with its default action).
pub struct Held {
    set: SigSet,
    previous: SigSet,
}

impl Held {
    pub fn new() -> nix::Result<Self> {
        let mut set = SigSet::empty();
        for signal in TERMINATING {
            set.add(signal);
        }
        let mut previous = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut previous))?;
        Ok(Self { set, previous })
    }

    /// Waits up to `timeout` for one of the held signals; takes it (it is not delivered again).
    pub fn wait(&self, timeout: Duration) -> Option<Signal> {
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
        };
        // SAFETY: the set and the timespec are valid for the call; no siginfo is wanted.
        let taken =
            unsafe { libc::sigtimedwait(self.set.as_ref(), std::ptr::null_mut(), &timeout) };
        // -1 is the timeout (EAGAIN) or another signal's handler (EINTR): nothing taken.
        Signal::try_from(taken).ok()
    }

    /// A held signal that came already, taken.
    pub fn pending(&self) -> Option<Signal> {
        self.wait(Duration::ZERO)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.previous), None);
    }
}
