//! What the daemon does with a control request: runs the same [`crate::ops`] functions as the
//! CLI's direct path (under the same state lock), answers with what that path would print, and
//! records each policy change for its log. [`super::control`] only carries requests and answers.
use std::time::SystemTime;

use enforcer_common::Policy;
use serde_json::{Value, json};

use super::control::{Entry, Request, Response};
use crate::{
    bpf::Bpf,
    cgroup::{Cgroup, PathCache},
    ops, policy,
};

/// Who sent a request, for the log.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    pub uid: u32,
    pub pid: Option<i32>,
}

/// Daemon side: carries out a request from a root client with the direct path's functions (which
/// take the state lock), blocking. Returns the answer and a state record per policy change made.
pub fn execute(bpf: Bpf, request: Request, client: Client) -> (Response, Vec<Value>) {
    let mut records = Vec::new();
    let response = match request {
        Request::Attach { cgroup, policy } => {
            let target = Cgroup::from(cgroup);
            match policy
                .into_policy(&target)
                .and_then(|policy| Ok((policy, ops::attach(bpf, &target, policy)?)))
            {
                Ok((policy, previous)) => {
                    records.push(state(
                        "policy-attached",
                        "attach",
                        target.id,
                        &target.path,
                        &policy,
                        previous.as_ref(),
                        client,
                    ));
                    Response::done(ops::attach_report(&target, &policy))
                }
                Err(err) => Response::failed(String::new(), &err),
            }
        }
        Request::Detach { id, shown } => {
            let path = if shown.parse::<u64>().is_ok() {
                PathCache::default().path(id)
            } else {
                shown.clone()
            };
            match ops::detach(bpf, id, &shown) {
                Ok(removed) => {
                    records.push(state(
                        "policy-detached",
                        "detach",
                        id,
                        &path,
                        &removed,
                        None,
                        client,
                    ));
                    Response::done(ops::detach_report(&shown))
                }
                Err(err) => Response::failed(String::new(), &err),
            }
        }
        Request::Apply {
            policies,
            dry_run,
            prune,
        } => {
            let mut desired = ops::Desired::new();
            let mut malformed = None;
            for Entry { cgroup, policy } in policies {
                let target = Cgroup::from(cgroup);
                match policy.into_policy(&target) {
                    Ok(policy) => {
                        desired.insert(target.id, (target, policy));
                    }
                    Err(err) => malformed = Some(err),
                }
            }
            let mut out = String::new();
            let mut made = Vec::new();
            let result = match malformed {
                Some(err) => Err(err),
                None => ops::apply(bpf, &desired, dry_run, prune, &mut out, &mut made),
            };
            for change in made {
                records.push(match change {
                    ops::Made::Attached {
                        target,
                        policy,
                        previous,
                    } => state(
                        "policy-attached",
                        "apply",
                        target.id,
                        &target.path,
                        &policy,
                        previous.as_ref(),
                        client,
                    ),
                    ops::Made::Detached { id, path, policy } => {
                        state("policy-detached", "apply", id, &path, &policy, None, client)
                    }
                });
            }
            match result {
                Ok(()) => Response::done(out),
                Err(err) => Response::failed(out, &err),
            }
        }
        Request::List { json } => match ops::list(bpf, json) {
            Ok(out) => Response::done(out),
            Err(err) => Response::failed(String::new(), &err),
        },
    };
    (response, records)
}

/// The daemon's stdout record of one policy change (`event.kind` `state`), beside the events.
fn state(
    action: &str,
    command: &str,
    id: u64,
    path: &str,
    policy: &Policy,
    previous: Option<&Policy>,
    client: Client,
) -> Value {
    let operations: serde_json::Map<String, Value> = policy::describe(policy)
        .into_iter()
        .map(|(op, action)| (op.name().to_owned(), json!(action.name())))
        .collect();
    json!({
        "@timestamp": humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
        "event": { "kind": "state", "action": action, "type": ["change"] },
        "cgroup": { "id": id, "path": path },
        "user": { "id": client.uid.to_string() },
        "enforcer": {
            "command": command,
            "policy": policy::summary(policy),
            "operations": operations,
            "previous_policy": previous.map(policy::summary),
            "client_pid": client.pid,
        },
    })
}

#[cfg(test)]
mod tests {
    use enforcer_common::{Action, Operation};

    use super::*;

    #[test]
    fn a_state_record_names_the_cgroup_and_the_policy() {
        let record = state(
            "policy-attached",
            "attach",
            42,
            "/pod",
            &policy::compile(&[(Action::Deny, vec![Operation::Settime])], 1).unwrap(),
            None,
            Client {
                uid: 0,
                pid: Some(7),
            },
        );
        assert_eq!(record["event"]["kind"], "state");
        assert_eq!(record["event"]["action"], "policy-attached");
        assert_eq!(record["cgroup"]["id"], 42);
        assert_eq!(record["cgroup"]["path"], "/pod");
        assert_eq!(record["enforcer"]["policy"], "deny=settime");
        assert_eq!(record["enforcer"]["operations"]["settime"], "deny");
        assert!(record["enforcer"]["previous_policy"].is_null());
    }
}
