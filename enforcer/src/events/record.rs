//! The typed violation record: the raw kernel record read once into the enums user space works
//! with, so renderers and sinks match on names instead of re-reading bytes.
use enforcer_common::{Action, Event, Hook, Operation, kind, refused_by, source};

/// What a record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An audited, denied or killed operation (also any kind this build does not know).
    Violation,
    /// A refused reach for the enforcer itself or a runtime's setup process.
    Tamper,
    /// How many events a policy's event budget suppressed.
    Summary,
}

impl Kind {
    fn from_u8(raw: u8) -> Self {
        match raw {
            kind::TAMPER => Self::Tamper,
            kind::SUMMARY => Self::Summary,
            _ => Self::Violation,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Violation => "violation",
            Self::Tamper => "tamper",
            Self::Summary => "summary",
        }
    }
}

/// Which layer reported the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A BPF LSM hook decided (the call had not finished).
    Lsm,
    /// The syscall layer saw the call return.
    Syscall,
}

impl Source {
    fn from_u8(raw: u8) -> Self {
        if raw == source::SYSCALL {
            Self::Syscall
        } else {
            Self::Lsm
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Lsm => "lsm",
            Self::Syscall => "syscall",
        }
    }
}

/// The layer that refused a call with EPERM or EACCES. Declared in the order of their names, the
/// order `record`'s table lists them in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefusedBy {
    Capability,
    Enforcer,
    Other,
    Seccomp,
}

impl RefusedBy {
    /// `None` when the call was not refused (or refused with another errno).
    fn from_u8(raw: u8) -> Option<Self> {
        match raw {
            refused_by::ENFORCER => Some(Self::Enforcer),
            refused_by::SECCOMP => Some(Self::Seccomp),
            refused_by::CAPABILITY => Some(Self::Capability),
            refused_by::OTHER => Some(Self::Other),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Enforcer => "enforcer",
            Self::Seccomp => "seccomp",
            Self::Capability => "capability",
            Self::Other => "other",
        }
    }
}

/// One decoded event: the kernel's record (kept whole, it is what the daemon's stream carries)
/// and its enum-like bytes read once.
#[derive(Clone, Copy, Debug)]
pub struct Record {
    pub raw: Event,
    pub kind: Kind,
    /// `None` for a number this build does not know.
    pub operation: Option<Operation>,
    /// `None` for a number this build does not know.
    pub hook: Option<Hook>,
    /// An unknown number reads as deny: what the kernel does with one.
    pub action: Action,
    pub source: Source,
    pub refused_by: Option<RefusedBy>,
}

impl From<Event> for Record {
    fn from(raw: Event) -> Self {
        Self {
            kind: Kind::from_u8(raw.kind),
            operation: Operation::from_u8(raw.op),
            hook: Hook::from_u8(raw.hook),
            action: Action::from_u8(raw.action).unwrap_or(Action::Deny),
            source: Source::from_u8(raw.source),
            refused_by: RefusedBy::from_u8(raw.refused_by),
            raw,
        }
    }
}

impl Record {
    /// The operation, or for records about no operation their kind (`tamper`, `summary`).
    pub fn op_name(&self) -> &'static str {
        match self.kind {
            Kind::Violation => self.operation.map_or("unknown", Operation::name),
            other => other.name(),
        }
    }

    pub fn hook_name(&self) -> &'static str {
        self.hook.map_or("unknown", Hook::name)
    }

    /// Which layer refused the call (`-` when it was not refused with EPERM/EACCES).
    pub fn refused_by_name(&self) -> &'static str {
        self.refused_by.map_or("-", RefusedBy::name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::tests::sample;

    #[test]
    fn records_about_no_operation_are_named_by_their_kind() {
        let mut event = sample();
        event.kind = kind::SUMMARY;
        let record = Record::from(event);
        assert_eq!(record.kind, Kind::Summary);
        assert_eq!(record.op_name(), "summary");
        event.kind = kind::VIOLATION;
        assert_eq!(Record::from(event).op_name(), "settime");
    }

    #[test]
    fn unknown_numbers_read_fail_closed_or_as_unknown() {
        let mut event = sample();
        event.action = 99;
        event.hook = 99;
        event.op = 99;
        event.refused_by = refused_by::NONE;
        let record = Record::from(event);
        assert_eq!(record.action, Action::Deny);
        assert_eq!(record.hook_name(), "unknown");
        assert_eq!(record.op_name(), "unknown");
        assert_eq!(record.refused_by_name(), "-");
    }
}
