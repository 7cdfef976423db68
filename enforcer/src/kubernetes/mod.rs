//! The Kubernetes node agent's parts that need no API client: where pods and containers sit on
//! the cgroup tree.
// The agent (`daemon --kubernetes`) calls these; until it exists only the tests do.
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the node agent calls it; not written yet")
)]
pub mod resolve;
