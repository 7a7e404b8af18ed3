//! The local Kubernetes control plane (kube-apiserver, etcd, kube-controller-manager).
