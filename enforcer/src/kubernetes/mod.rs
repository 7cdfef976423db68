//! Kubernetes: the custom resources policies are stated with (`crd`), the manifests that deploy
//! the agent (checked by `deploy_tests`), and the node agent behind `daemon --kubernetes`
//! (`agent`): its watchers (`watch`), where pods and containers sit on the cgroup tree
//! (`resolve`), which policies select them (`selector`), how the policies selecting one cgroup
//! merge into its single record (`merge`), the plan it carries out (`reconcile`), the policies'
//! status (`status`) and the names events carry (`names`).
pub mod agent;
pub mod crd;
#[cfg(test)]
mod deploy_tests;
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "`policies_for` is for events' rule.name, not rendered yet"
    )
)]
pub mod merge;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the daemon's events read it; not rendered yet")
)]
pub mod names;
pub mod reconcile;
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "`with_walk_limit` is for tests of the bounded walk"
    )
)]
pub mod resolve;
pub mod selector;
pub mod status;
pub mod watch;
