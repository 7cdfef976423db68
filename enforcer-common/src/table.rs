//! The `operations!` macro: from one row per operation family (in `ops.rs`) it generates
//! everything else that knows about the family, so adding one is that row plus its hook module
//! in `enforcer-ebpf`:
//!
//! - the [`crate::Operation`] enum, its `from_u8`, `from_name`, `name` and `capability`, and
//!   [`crate::OPERATIONS`];
//! - `ops::calls`, re-exported by [`crate::syscalls`]: each call's x86_64 number, its 32-bit
//!   (ia32) numbers and `ia32::native`, `operation`, `judged_at_capability`, `string_args`,
//!   `name`, `GUARDED` and `CALLS`.
//!
//! Everything is generated as `match`es over constants, as they were written by hand before:
//! the BPF verifier cannot bound an index into a static table, and the programs' code must not
//! change with the way it is written. That is also why a family's string arguments are written
//! as a `strings` match of their own: LLVM lays out a match by its arms, so calls that share a
//! value share an arm, as before. The same-numbered 32-bit calls are matched as one range.
//!
//! Each call row must say how a 32-bit caller numbers it: `ia32 numbers [NAME = nr, ...]`,
//! `ia32 same []` (the mount API from 428 on has the same numbers in both tables) or
//! `ia32 none []`. A row without one does not compile, so a family cannot forget its 32-bit
//! callers (who would otherwise bypass the syscall layer and every hook narrowed by number).

/// `judged at hook` or `judged at capability`: whether the call meets the family's own LSM hook,
/// or only its capability check (where the `capable` program judges it by its number).
macro_rules! at_capability {
    (hook) => {
        false
    };
    (capability) => {
        true
    };
}

/// Whether a call has the same number for 32-bit callers.
macro_rules! ia32_same {
    (numbers) => {
        false
    };
    (same) => {
        true
    };
    (none) => {
        false
    };
}

/// A call's [`crate::syscalls::Ia32`]; any other shape (`numbers []`, `same [X = 1]`) fails to
/// compile.
macro_rules! ia32_spec {
    (numbers [$($nr:ident),+]) => {
        $crate::syscalls::Ia32::Numbers(&[$(ia32::$nr),+])
    };
    (same []) => {
        $crate::syscalls::Ia32::Same
    };
    (none []) => {
        $crate::syscalls::Ia32::None
    };
}

macro_rules! operations {
    (
        $(
            $(#[$op_meta:meta])*
            family $op:ident = $disc:literal {
                name: $op_name:literal,
                summary: $summary:literal,
                hooks: [$($hook:ident),+ $(,)?],
                capability: $capability:expr,
                self_test: $self_test:ident,
                calls: {
                    $(
                        $(#[$call_meta:meta])*
                        $call:ident = $nr:literal, $call_name:literal, judged at $where:ident,
                        ia32 $ia32_kind:ident [$($(#[$ia32_meta:meta])* $ia32:ident = $ia32_nr:literal),* $(,)?];
                    )+
                }
                strings: { $( $($strings_call:ident)|+ => $strings:expr ),* $(,)? }
            }
        )+
        seen: {
            calls: {
                $(
                    $(#[$seen_meta:meta])*
                    $seen:ident = $seen_nr:literal, $seen_name:literal;
                )*
            }
            strings: { $( $($seen_strings_call:ident)|+ => $seen_strings:expr ),* $(,)? }
        }
    ) => {
        /// An operation a policy can act on. The discriminant indexes
        /// [`crate::Policy::actions`] and [`crate::Counters`].
        #[repr(u8)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Operation {
            $( $(#[$op_meta])* $op = $disc, )+
        }

        impl Operation {
            pub const fn from_u8(raw: u8) -> Option<Self> {
                match raw {
                    $( $disc => Some(Self::$op), )+
                    _ => None,
                }
            }

            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $( $op_name => Some(Self::$op), )+
                    _ => None,
                }
            }

            /// The name a policy and the CLI use.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Self::$op => $op_name, )+
                }
            }

            /// The capability the family's calls check before anything else, if any: a refusal
            /// the syscall layer sees with the caller lacking it is the capability's.
            pub const fn capability(self) -> Option<i32> {
                match self {
                    $( Self::$op => $capability, )+
                }
            }
        }

        /// Every operation a policy can name. Adding an operation is one row of `operations!`
        /// plus one hook module in `enforcer-ebpf`.
        pub const OPERATIONS: &[OpSpec] = &[
            $(
                OpSpec {
                    op: Operation::$op,
                    name: $op_name,
                    summary: $summary,
                    hooks: &[$(Hook::$hook),+],
                    capability: $capability,
                    calls: &[$(calls::$call),+],
                    self_test: calls::$self_test,
                },
            )+
        ];

        /// The system calls of every family, re-exported by [`crate::syscalls`].
        pub mod calls {
            use super::Operation;
            use $crate::syscalls::{CallSpec, NEWEST_VERIFIED, NO_ARG};

            $( $( $(#[$call_meta])* pub const $call: i64 = $nr; )+ )+
            $( $(#[$seen_meta])* pub const $seen: i64 = $seen_nr; )*

            /// The guarded calls as a 32-bit (ia32) caller numbers them. Such a caller may be a
            /// 32-bit program or a 64-bit one using `int $0x80`; the kernel marks both with
            /// [`crate::TS_COMPAT`].
            pub mod ia32 {
                $( $( $( $(#[$ia32_meta])* pub const $ia32: i64 = $ia32_nr; )* )+ )+

                /// The x86_64 number of the call a 32-bit caller's `nr` makes, for the guarded
                /// calls; -1 for every other call. The strings read the same; the requested time
                /// is not read (32-bit time layouts).
                pub const fn native(nr: i64) -> i64 {
                    match nr {
                        $( $( $( $ia32 => super::$call, )* )+ )+
                        // The guarded calls numbered the same in both tables, as one range (a
                        // test checks that every guarded call in it is one of them).
                        SAME_FIRST..=SAME_LAST if super::operation(nr).is_some() => nr,
                        // Newer than the verified table: same number in both tables from 403 on.
                        n if n > super::NEWEST_VERIFIED => n,
                        _ => -1,
                    }
                }

                /// The lowest and the highest guarded call numbered the same in both tables
                /// (`ia32 same`); a table without one does not compile (empty range).
                pub const SAME_FIRST: i64 = same_bounds().0;
                pub const SAME_LAST: i64 = same_bounds().1;

                const fn same_bounds() -> (i64, i64) {
                    let same = [$( $( if $crate::table::ia32_same!($ia32_kind) { super::$call } else { -1 }, )+ )+];
                    let (mut first, mut last) = (i64::MAX, i64::MIN);
                    let mut i = 0;
                    while i < same.len() {
                        if same[i] >= 0 && same[i] < first {
                            first = same[i];
                        }
                        if same[i] > last {
                            last = same[i];
                        }
                        i += 1;
                    }
                    (first, last)
                }
            }

            /// The operation a system call belongs to (x86_64 numbers, see
            /// [`crate::syscalls::native`]); `None` for every call the enforcer does not guard.
            pub const fn operation(nr: i64) -> Option<Operation> {
                match nr {
                    $( $( $call )|+ => Some(Operation::$op), )+
                    _ => None,
                }
            }

            /// The operation whose calls numbered `nr` meet no dedicated hook, only their
            /// family's capability check, where the `capable` program judges them.
            pub const fn judged_at_capability(nr: i64) -> Option<Operation> {
                match nr {
                    $( $( $call if $crate::table::at_capability!($where) => Some(Operation::$op), )+ )+
                    _ => None,
                }
            }

            /// Which argument of the call fills each of [`crate::Event::strings`]' slots
            /// ([`crate::string_slot`]): source, target, file system type.
            pub const fn string_args(nr: i64) -> [usize; 3] {
                match nr {
                    $( $( $($strings_call)|+ => $strings, )* )+
                    $( $($seen_strings_call)|+ => $seen_strings, )*
                    _ => [NO_ARG; 3],
                }
            }

            pub fn name(nr: i64) -> Option<&'static str> {
                Some(match nr {
                    $( $( $call => $call_name, )+ )+
                    $( $seen => $seen_name, )*
                    _ => return None,
                })
            }

            /// Every guarded system call, for tests and tables.
            pub const GUARDED: [i64; { [$( $( $call, )+ )+].len() }] = [$( $( $call, )+ )+];

            /// Every guarded system call with its row.
            pub const CALLS: &[CallSpec] = &[
                $( $(
                    CallSpec {
                        nr: $call,
                        name: $call_name,
                        op: Operation::$op,
                        at_capability: $crate::table::at_capability!($where),
                        ia32: $crate::table::ia32_spec!($ia32_kind [$($ia32),*]),
                        strings: string_args($call),
                    },
                )+ )+
            ];
        }
    };
}

pub(crate) use {at_capability, ia32_same, ia32_spec, operations};
