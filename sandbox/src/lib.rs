//! Local stand-ins for dcr-operator tests and the sandbox: a Microsoft Graph / Entra
//! emulator ([`graph`]) and a real local Kubernetes control plane ([`controlplane`]).
//! Never linked into the operator itself.

pub mod controlplane;
pub mod demo;
pub mod graph;
pub mod oidc;
