//! The sandbox (`make demo`): the operator against a real local control plane and the
//! Graph emulator, with the samples applied, ending with the Secret it produced and a
//! token obtained with it.
//!
//! Everything talks over loopback exactly as in a cluster: kubectl applies the manifests,
//! the operator is the same binary (`dcr-operator run`) with a kubeconfig and the
//! emulator's CA, and the DcrProvider sample is pointed at the emulator by its
//! `authorityHost`/`graphEndpoint` overrides, which users behind a proxy use too.

use crate::controlplane::{spawn_tied_to_process, ControlPlane, ControlPlaneOptions};
use crate::graph::{AppSpec, EmulatorConfig, GraphEmulator, GraphPermission, TenantSpec};
use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The sample objects, as named in config/samples.
const SAMPLE_TENANT: &str = "8a4b7e9c-2f5d-4c1e-9b3a-6d2e1f0c7a58";
const SAMPLE_CLIENT_ID: &str = "3f2c9d1e-7a6b-4e58-9c0d-1b2a3c4d5e6f";
const SAMPLE_APP: (&str, &str) = ("orders", "orders-client");
const SAMPLE_SECRET: &str = "orders-client-credentials";

/// How to run the sandbox.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The `dcr-operator` binary.
    pub operator_bin: PathBuf,
    /// The repository (for crds/ and config/samples).
    pub repo: PathBuf,
    /// kubectl to use.
    pub kubectl: PathBuf,
    /// Stop after showing the result instead of waiting for Ctrl-C.
    pub once: bool,
    /// How long the Application may take to become Ready.
    pub timeout: Duration,
}

/// What the sandbox produced, for callers that check it (tests).
#[derive(Debug)]
pub struct DemoResult {
    pub client_id: String,
    pub secret_keys: Vec<String>,
    pub token_obtained: bool,
    pub operator_log: PathBuf,
}

/// Runs the sandbox. With `once`, returns after the Secret was shown and proven.
pub async fn run(opts: DemoOptions) -> Result<DemoResult> {
    let started = Instant::now();
    say("starting the local control plane (kube-apiserver v1.20.2, etcd, kube-controller-manager)");
    let plane = ControlPlane::start(ControlPlaneOptions::default()).await.context(
        "starting the control plane (build it first with `make control-plane`, or see README for using your own cluster)",
    )?;
    let kubeconfig = plane.kubeconfig_path().to_path_buf();
    let kubectl = Kubectl {
        bin: opts.kubectl.clone(),
        kubeconfig: kubeconfig.clone(),
    };

    say("starting the Microsoft Graph emulator");
    let emu = GraphEmulator::start(EmulatorConfig::default()).await?;
    let tenant = emu.seed_tenant(TenantSpec {
        id: Some(SAMPLE_TENANT.into()),
        ..Default::default()
    });
    let admin = emu.seed_app(
        &tenant.id,
        AppSpec {
            display_name: "dcr-operator admin".into(),
            client_id: Some(SAMPLE_CLIENT_ID.into()),
            graph_permissions: vec![GraphPermission::ApplicationReadWriteOwnedBy.as_str().into()],
            service_principal: true,
            ..Default::default()
        },
    );

    say("installing the CRDs and the samples");
    kubectl.run(&["apply", "--validate=false", "-k", &path(&opts.repo.join("crds"))])?;
    let crds = ["dcrproviders", "authstrategies", "applications"].map(|k| format!("crd/{k}.dcr-operator.io"));
    let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    wait.extend(crds.iter().map(String::as_str));
    kubectl.run(&wait)?;
    kubectl.run(&["create", "namespace", "dcr-system"])?;
    let samples = kubectl.output(&["kustomize", &path(&opts.repo.join("config/samples"))])?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&samples) {
        let mut v: Value =
            serde_json::to_value(<serde_yaml::Value as serde::Deserialize>::deserialize(doc)?)?;
        if v.is_null() {
            continue;
        }
        point_at_emulator(&mut v, &emu, &admin.client_secret);
        docs.push(v);
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    kubectl.run_with_stdin(&["apply", "-f", "-"], &serde_json::to_string(&list)?)?;

    say("running the operator");
    let log_path = plane.state_dir().join("dcr-operator.log");
    let mut operator = start_operator(&opts.operator_bin, &kubeconfig, emu.ca_path(), &log_path)?;

    let (ns, name) = SAMPLE_APP;
    let deadline = Instant::now() + opts.timeout;
    loop {
        if let Ok(Some(status)) = operator.try_wait() {
            bail!("the operator exited ({status}); its log: {}", log_path.display());
        }
        let ready = kubectl
            .output(&[
                "get",
                "application",
                name,
                "-n",
                ns,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ])
            .unwrap_or_default();
        if ready.trim() == "True" {
            break;
        }
        if Instant::now() > deadline {
            let status = kubectl
                .output(&["get", "dcr", "-A", "-o", "wide"])
                .unwrap_or_default();
            bail!(
                "the Application was not Ready within {:?}:\n{status}\noperator log: {}",
                opts.timeout,
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    say(&format!(
        "Application {ns}/{name} is Ready after {:.1}s",
        started.elapsed().as_secs_f64()
    ));

    println!("\n$ kubectl get dcr -A");
    println!("{}", kubectl.output(&["get", "dcr", "-A"])?);

    let secret: Value =
        serde_json::from_str(&kubectl.output(&["get", "secret", SAMPLE_SECRET, "-n", ns, "-o", "json"])?)?;
    let data = decode_data(&secret)?;
    println!("$ kubectl get secret {SAMPLE_SECRET} -n {ns}   (decoded; client_secret redacted)");
    for (k, v) in &data {
        let shown = if k == "client_secret" {
            format!("<redacted, {} characters>", v.len())
        } else {
            v.clone()
        };
        println!("  {k:<14} {shown}");
    }
    let client_id = data.get("client_id").cloned().unwrap_or_default();
    let token = get_token(&emu, &data).await;
    match &token {
        Ok(expires_in) => println!(
            "\nproved: the Secret's credentials obtained an access token at {} (expires in {expires_in}s)",
            data.get("token_url").cloned().unwrap_or_default()
        ),
        Err(e) => println!("\nthe Secret's credentials did NOT obtain a token: {e}"),
    }
    let result = DemoResult {
        client_id,
        secret_keys: data.keys().cloned().collect(),
        token_obtained: token.is_ok(),
        operator_log: log_path.clone(),
    };

    if !opts.once {
        println!(
            "\nThe sandbox keeps running. Try:\n  export KUBECONFIG={}\n  kubectl get dcr -A\n  kubectl describe application {name} -n {ns}\n  kubectl annotate application {name} -n {ns} dcr-operator.io/rotate=$(date +%s)\n  kubectl delete application {name} -n {ns}\n  curl --cacert {} {}/_emulator/state    # the Entra side\noperator log: {}\nCtrl-C stops everything.",
            kubeconfig.display(),
            emu.ca_path().display(),
            emu.base_url(),
            log_path.display()
        );
        tokio::signal::ctrl_c().await?;
        say("stopping");
    }
    let _ = operator.kill();
    let _ = operator.wait();
    emu.shutdown().await;
    plane.stop();
    if !result.token_obtained {
        bail!("the delivered credentials did not work");
    }
    Ok(result)
}

/// Rewrites the samples for the emulator: the provider's endpoints, the admin secret.
fn point_at_emulator(doc: &mut Value, emu: &GraphEmulator, admin_secret: &str) {
    match doc["kind"].as_str() {
        Some("DcrProvider") => {
            let azure = &mut doc["spec"]["azureAD"];
            azure["authorityHost"] = json!(emu.authority_host());
            azure["graphEndpoint"] = json!(emu.graph_endpoint());
        }
        Some("Secret") if doc["metadata"]["name"] == "entra-dcr-admin" => {
            doc["stringData"] = json!({ "client_secret": admin_secret });
        }
        _ => {}
    }
}

fn start_operator(bin: &Path, kubeconfig: &Path, ca: &Path, log: &Path) -> Result<Child> {
    let log_file = std::fs::File::create(log)?;
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--extra-ca-file")
        .arg(ca)
        .args([
            "--cluster-name",
            "sandbox",
            "--metrics-addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
        ])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    spawn_tied_to_process(cmd).with_context(|| format!("starting {}", bin.display()))
}

async fn get_token(emu: &GraphEmulator, data: &std::collections::BTreeMap<String, String>) -> Result<u64> {
    let field = |k: &str| {
        data.get(k)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("the Secret has no {k}"))
    };
    let resp = emu
        .http_client()
        .post(field("token_url")?)
        .form(&[
            ("grant_type", "client_credentials".to_string()),
            ("client_id", field("client_id")?),
            ("client_secret", field("client_secret")?),
            ("scope", "https://graph.microsoft.com/.default".to_string()),
        ])
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    if !status.is_success() {
        bail!("{status}: {}", body["error_description"]);
    }
    Ok(body["expires_in"].as_u64().unwrap_or_default())
}

fn decode_data(secret: &Value) -> Result<std::collections::BTreeMap<String, String>> {
    use base64::Engine;
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in secret["data"].as_object().cloned().unwrap_or_default() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default())?;
        out.insert(k, String::from_utf8(bytes)?);
    }
    Ok(out)
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        cmd
    }

    fn output(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command(args)
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn run(&self, args: &[&str]) -> Result<()> {
        self.output(args).map(|_| ())
    }

    fn run_with_stdin(&self, args: &[&str], input: &str) -> Result<()> {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().expect("piped").write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn say(message: &str) {
    eprintln!("sandbox: {message}");
}
