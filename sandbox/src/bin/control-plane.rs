//! `control-plane up`: starts a local Kubernetes control plane (etcd, kube-apiserver
//! v1.20.2, kube-controller-manager on loopback), prints the admin kubeconfig path on
//! stdout, and tears everything down on Ctrl-C / SIGTERM. `--node` adds a real node
//! (containerd, kubelet, kube-scheduler, kube-proxy; `make cluster`), `--image` imports
//! OCI archives into it.
//!
//! ```text
//! cargo run -p sandbox --bin control-plane -- up
//! export KUBECONFIG=<printed path>; kubectl get ns
//! ```

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sandbox::controlplane::node::{ImageArchive, NodeOptions, NODE_NAME};
use sandbox::controlplane::{ControlPlane, ControlPlaneOptions, UserSpec};

#[derive(Parser)]
#[command(about = "A local Kubernetes control plane (kube-apiserver v1.20.2, etcd, kube-controller-manager)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start one, print the kubeconfig path, wait for Ctrl-C, tear down.
    Up {
        /// Directory with kube-apiserver, kube-controller-manager (and etcd).
        /// Default: $DCR_CONTROL_PLANE_BIN_DIR, else the build script's cache.
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Where to write the process logs (kept after teardown).
        #[arg(long)]
        log_dir: Option<PathBuf>,
        /// Extra static-token user: NAME[=GROUP,GROUP...]; a kubeconfig is written for each.
        #[arg(long = "user", value_name = "NAME[=GROUPS]")]
        users: Vec<String>,
        /// Extra user with a ServiceAccount's identity: NAMESPACE/NAME.
        #[arg(long = "service-account", value_name = "NAMESPACE/NAME")]
        service_accounts: Vec<String>,
        /// Also copy the admin kubeconfig to this path (removed again at teardown).
        #[arg(long)]
        kubeconfig_out: Option<PathBuf>,
        /// Also run a real node: containerd, kubelet, kube-scheduler, kube-proxy (root;
        /// binaries from sandbox/scripts/build-node.sh).
        #[arg(long)]
        node: bool,
        /// With --node: import an OCI archive into the node's containerd as REFERENCE.
        #[arg(long = "image", value_name = "REFERENCE=ARCHIVE", requires = "node")]
        images: Vec<String>,
    },
}

fn parse_user(s: &str) -> UserSpec {
    match s.split_once('=') {
        Some((name, groups)) => UserSpec::new(name, groups.split(',').filter(|g| !g.is_empty())),
        None => UserSpec::new(s, Vec::<String>::new()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let Cmd::Up {
        bin_dir,
        log_dir,
        users,
        service_accounts,
        kubeconfig_out,
        node,
        images,
    } = Cli::parse().command;
    let mut extra_users: Vec<UserSpec> = users.iter().map(|u| parse_user(u)).collect();
    for sa in &service_accounts {
        let (ns, name) = sa
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("--service-account wants NAMESPACE/NAME, got {sa:?}"))?;
        extra_users.push(UserSpec::service_account(ns, name));
    }
    let images = images
        .iter()
        .map(|i| {
            let (reference, archive) = i
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--image wants REFERENCE=ARCHIVE, got {i:?}"))?;
            Ok(ImageArchive {
                reference: reference.to_string(),
                archive: archive.into(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cp = ControlPlane::start(ControlPlaneOptions {
        bin_dir,
        extra_users,
        log_dir,
        node: node.then_some(NodeOptions {
            images,
            ..Default::default()
        }),
    })
    .await?;
    if let Some(t) = cp.node_timings() {
        eprintln!(
            "node {NODE_NAME} Ready: containerd and images {:.1?} (imports {:.1?}), kubelet to Ready {:.1?}",
            t.runtime_and_images, t.images, t.node_ready
        );
    }
    eprintln!(
        "control plane ready in {:.1?}: {} (pids {:?}), logs in {}",
        cp.started_in(),
        cp.server_url(),
        cp.processes(),
        cp.log_dir().display()
    );
    for u in cp.users() {
        let path = cp.kubeconfig_for_user(&u.spec.name)?;
        eprintln!("kubeconfig for {}: {}", u.spec.name, path.display());
    }
    if let Some(out) = &kubeconfig_out {
        std::fs::copy(cp.kubeconfig_path(), out)?;
    }
    println!("{}", cp.kubeconfig_path().display());
    eprintln!("Ctrl-C to stop");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("stopping");
    if let Some(out) = &kubeconfig_out {
        let _ = std::fs::remove_file(out);
    }
    cp.stop();
    Ok(())
}
