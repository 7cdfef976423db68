//! Kubernetes: the custom resources policies are stated with (`crd`), the manifests that deploy
//! the agent (checked by `deploy_tests`), and the node agent's parts that need no API client:
//! where pods and containers sit on the cgroup tree (`resolve`), how the policies selecting one
//! cgroup merge into its single record (`merge`), and the names events carry (`names`).
pub mod crd;
#[cfg(test)]
mod deploy_tests;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the node agent calls it; not written yet")
)]
pub mod merge;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the node agent fills it; not written yet")
)]
pub mod names;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the node agent calls it; not written yet")
)]
pub mod resolve;
