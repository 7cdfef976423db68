//! Kubernetes: the custom resources policies are stated with, and the manifests that deploy the
//! agent.
pub mod crd;
#[cfg(test)]
mod deploy_tests;
