//! What the daemon's `/healthz` and `/readyz` answer: a probe (the DaemonSet's liveness and
//! readiness checks) must tell "the process serves" from "events flow and, on Kubernetes, the
//! node agent has caught up", without reaching into the agent loop.
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

/// The daemon's readiness, shared by the agent loop (which sets it) and the HTTP responder.
#[derive(Debug, Default)]
pub struct Health {
    /// The ring buffer is being consumed (false after `enforcer reset`, until the next attach).
    consuming: AtomicBool,
    /// Set by the Kubernetes node agent once it has synced; absent without `--kubernetes`.
    kubernetes: Option<Arc<AtomicBool>>,
}

impl Health {
    /// `kubernetes`: the node agent's flag, which it sets once its first sync is done.
    pub fn new(kubernetes: Option<Arc<AtomicBool>>) -> Self {
        Self {
            consuming: AtomicBool::new(false),
            kubernetes,
        }
    }

    pub fn set_consuming(&self, consuming: bool) {
        self.consuming.store(consuming, Ordering::Relaxed);
    }

    /// `Ok` when ready, else why not (the body of the 503).
    pub fn ready(&self) -> Result<(), &'static str> {
        if !self.consuming.load(Ordering::Relaxed) {
            return Err("the ring buffer is not being consumed (no pins: `enforcer reset`?)");
        }
        if let Some(agent) = &self.kubernetes
            && !agent.load(Ordering::Relaxed)
        {
            return Err("the Kubernetes node agent has not synced yet");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_consuming_and_the_agent_synced() {
        let agent = Arc::new(AtomicBool::new(false));
        let health = Health::new(Some(Arc::clone(&agent)));
        assert!(health.ready().unwrap_err().contains("ring buffer"));
        health.set_consuming(true);
        assert!(health.ready().unwrap_err().contains("Kubernetes"));
        agent.store(true, Ordering::Relaxed);
        assert_eq!(health.ready(), Ok(()));
        assert!(Health::new(None).ready().is_err());
    }
}
