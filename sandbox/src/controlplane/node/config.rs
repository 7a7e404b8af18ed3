//! The node's configuration files: containerd (private root, state, socket), the CNI
//! bridge network, the kubelet. Facts behind each setting: shared/local-node.md.

use std::net::Ipv4Addr;
use std::path::Path;

use super::janitor::BRIDGE;

/// The pod network (one node, one bridge).
pub(crate) const POD_CIDR: &str = "10.244.0.0/24";
/// containerd's sandbox image, imported from the node build's `pause.oci.tar`.
pub const PAUSE_IMAGE: &str = "localhost/dcr-operator/pause:1";

fn toml_str(p: &Path) -> String {
    // TOML basic strings share JSON's escapes for what a path can hold.
    serde_json::to_string(&p.display().to_string()).expect("string serialises")
}

/// containerd 1.6 with everything under `dir`: nothing in /etc, /var/lib/containerd or
/// /opt. `restrict_oom_score_adj`: lowering oom_score_adj is refused on these machines.
pub(crate) fn containerd(dir: &Path) -> String {
    let p = |name: &str| toml_str(&dir.join(name));
    format!(
        r#"version = 2
root = {root}
state = {state}
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = {sock}

[ttrpc]
  address = {ttrpc}

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = {runc}

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = {cni}
    max_conf_num = 1
"#,
        root = p("containerd/root"),
        state = p("containerd/state"),
        sock = p("containerd.sock"),
        ttrpc = p("containerd.sock.ttrpc"),
        opt = p("containerd/opt"),
        runc = p("containerd/runc"),
        cni = p("cni"),
    )
}

/// A bridge with host-local addresses. No IP masquerading (pods only talk to this host),
/// so the CNI plugins add no iptables rules.
pub(crate) fn cni_conflist(ipam_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "dcr-node",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": POD_CIDR}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": ipam_dir,
            }
        }]
    })
    .to_string()
}

/// The kubelet's ports.
pub(crate) struct KubeletPorts {
    pub server: u16,
    pub healthz: u16,
}

/// KubeletConfiguration: x509 client authentication against the cluster CA (the
/// apiserver's kubelet client certificate), no webhook authorization (a test node),
/// cgroupfs, generous eviction and image GC thresholds so the imported images stay.
pub(crate) fn kubelet(address: Ipv4Addr, ports: &KubeletPorts, ca: &Path, root: &Path) -> String {
    serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": address.to_string(),
        "port": ports.server,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.healthz,
        "cgroupDriver": "cgroupfs",
        "failSwapOn": false,
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": false},
            "x509": {"clientCAFile": ca},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": false,
        "volumePluginDir": root.join("volume-plugins"),
        "resolvConf": "/etc/resolv.conf",
        "nodeStatusReportFrequency": "10s",
    })
    .to_string()
}
