//! One renderer of a cell's Kubernetes and Istio objects, owned by neither backend and used
//! by both: the local lab hands them to Istio's control plane on this host, the kind backend
//! applies them to a cluster.

pub mod istio;
pub mod manifests;
pub mod objects;
