//! The Kubernetes node agent's parts that need no API client: where pods and containers sit on
//! the cgroup tree, and how the policies selecting one cgroup merge into its single record.
// The agent (`daemon --kubernetes`) calls these; until it exists only the tests do.
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
