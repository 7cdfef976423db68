//! The daemon's control socket: `attach`, `detach`, `apply` and `list` hand their request to a
//! running daemon, which makes the change itself (and logs it), so that while it runs it is the
//! one writer of the policy maps.
//!
//! The socket is [`CONTROL_SOCKET`] (mode 0600 in the 0700 [`crate::paths::RUN_DIR`]). One request per
//! connection, each way one line of JSON:
//!
//! ```text
//! > {"version":1,"op":"attach","cgroup":{"id":4711,"path":"/pod","level":1},"policy":{"actions":[0,0,2,…],"level":1}}
//! < {"stdout":"attached /pod (id 4711): settime=deny\n","error":null}
//! ```
//!
//! Requests are validated by the client exactly as the direct path validates them (the cgroup is
//! resolved, the policy compiled, the file checked), so the daemon receives resolved cgroups and
//! compiled policies: `attach` {`cgroup`, `policy`}, `detach` {`id`, `shown`}, `apply`
//! {`policies`: [{`cgroup`, `policy`}], `dry_run`, `prune`}, `list` {`json`}. The daemon runs the
//! functions of the direct path under the same state lock ([`super::requests`]) and answers with
//! what the direct path would print on stdout, and on failure its exit code and one-line message. A client whose
//! `SO_PEERCRED` uid is not 0 is refused as not privileged.
//!
//! When nothing accepts on the socket (no daemon, or one that was killed), the CLI takes the
//! direct path, silently. A daemon that goes away before answering is reported as such (exit 9).
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
};

use anyhow::{Result, bail};
use enforcer_common::{Action, OP_SLOTS, Policy};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{bpf::LoaderError, cgroup::Cgroup, error::ExitError, paths::CONTROL_SOCKET};

/// Bumped when a request or answer changes meaning; a daemon refuses other versions.
pub const VERSION: u32 = 1;
/// The longest request line a daemon reads.
pub const MAX_REQUEST: u64 = 4 << 20;

/// A cgroup as the client resolved it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCgroup {
    pub id: u64,
    pub path: String,
    pub level: u32,
}

impl From<&Cgroup> for WireCgroup {
    fn from(cgroup: &Cgroup) -> Self {
        Self {
            id: cgroup.id,
            path: cgroup.path.clone(),
            level: cgroup.level,
        }
    }
}

impl From<WireCgroup> for Cgroup {
    fn from(wire: WireCgroup) -> Self {
        Self {
            id: wire.id,
            path: wire.path,
            level: wire.level,
        }
    }
}

/// A compiled policy: the kernel record's action per operation slot and its depth.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePolicy {
    pub actions: Vec<u8>,
    pub level: u32,
    /// `policy_flags` bits.
    #[serde(default)]
    pub flags: u32,
}

impl From<Policy> for WirePolicy {
    fn from(policy: Policy) -> Self {
        Self {
            actions: policy.actions.to_vec(),
            level: policy.level,
            flags: policy.flags,
        }
    }
}

impl WirePolicy {
    /// The kernel record, refused when it is not one the client could have compiled for `cgroup`.
    pub fn into_policy(self, cgroup: &Cgroup) -> Result<Policy> {
        let Ok(actions) = <[u8; OP_SLOTS]>::try_from(self.actions.as_slice()) else {
            bail!(
                "the request for {} carries {} action slots, not {OP_SLOTS}; run the enforcer binary of the same version as the daemon",
                cgroup.path,
                self.actions.len()
            );
        };
        if actions.iter().any(|&raw| Action::from_u8(raw).is_none()) || self.level != cgroup.level {
            bail!(
                "the request for {} carries a malformed policy; run the enforcer binary of the same version as the daemon",
                cgroup.path
            );
        }
        Ok(Policy {
            actions,
            level: self.level,
            flags: self.flags,
        })
    }
}

/// One entry of an `apply` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub cgroup: WireCgroup,
    pub policy: WirePolicy,
}

/// A validated request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Attach {
        cgroup: WireCgroup,
        policy: WirePolicy,
    },
    Detach {
        id: u64,
        /// How the user named the cgroup (its path, or the id), for the messages.
        shown: String,
    },
    Apply {
        policies: Vec<Entry>,
        dry_run: bool,
        prune: bool,
    },
    List {
        json: bool,
    },
}

/// A failure: the exit code and the one-line message of the direct path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: u8,
    pub message: String,
}

/// The answer: what the direct path prints on stdout, and its error if it failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub stdout: String,
    pub error: Option<WireError>,
}

impl Response {
    pub fn done(stdout: String) -> Self {
        Self {
            stdout,
            error: None,
        }
    }

    pub fn failed(stdout: String, err: &anyhow::Error) -> Self {
        Self {
            stdout,
            error: Some(WireError {
                code: crate::error::exit_code(err) as u8,
                message: format!("{err:#}"),
            }),
        }
    }

    /// The answer to a client that is not root.
    pub fn not_privileged() -> Self {
        Self::failed(String::new(), &LoaderError::NotPrivileged.into())
    }

    /// The answer to a request the daemon cannot carry out at all (the task running it failed).
    pub fn internal(message: String) -> Self {
        Self::failed(String::new(), &anyhow::anyhow!(message))
    }

    /// The wire form: one JSON line.
    pub fn line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("a response serialises");
        line.push('\n');
        line
    }
}

/// The request's wire form: one JSON line with the protocol version.
pub fn encode(request: &Request) -> String {
    let mut value = serde_json::to_value(request).expect("a request serialises");
    value["version"] = json!(VERSION);
    let mut line = value.to_string();
    line.push('\n');
    line
}

/// Reads a request line; a refusal (as the answer to send) when it is not one of this version.
pub fn decode(line: &str) -> Result<Request, Response> {
    let refuse = |why: String| {
        Response::internal(format!(
            "the enforcer daemon cannot read this request ({why}); run the enforcer binary of the same version as the daemon"
        ))
    };
    let value: Value = serde_json::from_str(line).map_err(|err| refuse(err.to_string()))?;
    match value.get("version").and_then(Value::as_u64) {
        Some(version) if version == u64::from(VERSION) => {}
        other => {
            return Err(refuse(format!(
                "protocol version {}, the daemon speaks {VERSION}",
                other.map_or_else(|| "none".to_owned(), |v| v.to_string())
            )));
        }
    }
    serde_json::from_value(value).map_err(|err| refuse(err.to_string()))
}

/// Client side: hands `request` to the running daemon and prints its answer as the direct path
/// would. False when no daemon accepts the connection (the caller then takes the direct path);
/// the daemon's failure comes back with the direct path's exit code and message.
pub fn forward(request: &Request) -> Result<bool> {
    let Ok(mut stream) = UnixStream::connect(CONTROL_SOCKET) else {
        return Ok(false);
    };
    let gone = || {
        ExitError::daemon_gone(format!(
            "the enforcer daemon went away before answering on {CONTROL_SOCKET}; `enforcer list` shows what is in force (start the daemon again, or run the command again without it)"
        ))
    };
    if stream.write_all(encode(request).as_bytes()).is_err() {
        return Err(gone().into());
    }
    let mut answer = String::new();
    match BufReader::new(stream).read_line(&mut answer) {
        Ok(_) if answer.ends_with('\n') => {}
        _ => return Err(gone().into()),
    }
    let response: Response = serde_json::from_str(&answer).map_err(|err| {
        anyhow::anyhow!(
            "cannot read the enforcer daemon's answer ({err}); run the enforcer binary of the same version as the daemon"
        )
    })?;
    print!("{}", response.stdout);
    std::io::stdout().flush()?;
    match response.error {
        None => Ok(true),
        Some(WireError { code, message }) => Err(ExitError::from_wire(code, message).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;

    fn sample_policy(level: u32) -> Policy {
        crate::policy::compile(
            &[(Action::Deny, vec![enforcer_common::Operation::Settime])],
            level,
        )
        .unwrap()
    }

    #[test]
    fn requests_round_trip_with_their_version() {
        let cgroup = Cgroup {
            id: 4711,
            path: "/pod".into(),
            level: 1,
        };
        let requests = [
            Request::Attach {
                cgroup: (&cgroup).into(),
                policy: sample_policy(1).into(),
            },
            Request::Detach {
                id: 4711,
                shown: "/pod".into(),
            },
            Request::Apply {
                policies: vec![Entry {
                    cgroup: (&cgroup).into(),
                    policy: sample_policy(1).into(),
                }],
                dry_run: true,
                prune: false,
            },
            Request::List { json: true },
        ];
        for request in requests {
            let line = encode(&request);
            assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
            assert!(line.contains("\"version\":1"), "{line}");
            assert_eq!(decode(&line).unwrap(), request);
        }
        let attach = encode(&Request::List { json: false });
        assert!(attach.contains("\"op\":\"list\""), "{attach}");
    }

    #[test]
    fn other_versions_and_garbage_are_refused_with_one_line() {
        for line in [
            "{\"version\":2,\"op\":\"list\",\"json\":true}",
            "{\"op\":\"list\",\"json\":true}",
            "{\"version\":1,\"op\":\"reset\"}",
            "not json",
        ] {
            let refusal = decode(line).unwrap_err();
            let error = refusal.error.expect("an error");
            assert_eq!(error.code, Exit::Failure as u8, "{line}");
            assert!(!error.message.contains('\n'));
            assert!(error.message.contains("same version"), "{}", error.message);
        }
    }

    #[test]
    fn a_malformed_policy_is_refused() {
        let cgroup = Cgroup {
            id: 1,
            path: "/x".into(),
            level: 1,
        };
        let good = WirePolicy::from(sample_policy(1));
        assert_eq!(good.clone().into_policy(&cgroup).unwrap(), sample_policy(1));
        let mut short = good.clone();
        short.actions.pop();
        assert!(short.into_policy(&cgroup).is_err());
        let mut bad_action = good.clone();
        bad_action.actions[0] = 9;
        assert!(bad_action.into_policy(&cgroup).is_err());
        let mut wrong_level = good;
        wrong_level.level = 2;
        assert!(wrong_level.into_policy(&cgroup).is_err());
    }

    #[test]
    fn a_refusal_keeps_the_direct_paths_code_and_message() {
        let refused = Response::not_privileged();
        let error = refused.error.clone().unwrap();
        assert_eq!(error.code, 6);
        assert_eq!(error.message, LoaderError::NotPrivileged.to_string());
        let parsed: Response = serde_json::from_str(&refused.line()).unwrap();
        assert_eq!(parsed, refused);
        assert_eq!(Exit::try_from(error.code), Ok(Exit::NotPrivileged));
        let no_policy = Response::failed(
            String::new(),
            &anyhow::Error::from(ExitError::no_policy("/x")),
        );
        assert_eq!(no_policy.error.unwrap().code, 7);
    }
}
