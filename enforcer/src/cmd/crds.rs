//! `enforcer crds`: the CustomResourceDefinitions of the Kubernetes policy kinds, as YAML, for
//! `kubectl apply -f -` (the same text as `deploy/crds.yaml`).
use crate::kubernetes::crd;

pub fn run() -> anyhow::Result<()> {
    print!("{}", crd::manifests()?);
    Ok(())
}
