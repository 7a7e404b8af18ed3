//! A real third-party RFC 7591/7592 server for tests: panva/node-oidc-provider from npm
//! (`sandbox/oidc/`, installed by `make oidc-sandbox`), started on a free loopback port over
//! https with a leaf of the sandbox test CA, and stopped when the handle is dropped.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

/// How long the server may take to print its issuer and answer discovery.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A running node-oidc-provider.
pub struct OidcServer {
    /// `https://127.0.0.1:<port>`.
    pub issuer: String,
    /// The CA its certificate chains to.
    pub ca_pem: String,
    /// The initial access token registration requires.
    pub initial_access_token: String,
    child: Child,
    _dir: tempfile::TempDir,
}

/// Where the harness lives: `sandbox/oidc` of this workspace.
pub fn harness_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

impl OidcServer {
    /// Starts the server with `initial_access_token` and waits until discovery answers.
    pub async fn start(initial_access_token: &str) -> anyhow::Result<Self> {
        let dir = harness_dir();
        if !dir.join("node_modules/oidc-provider").is_dir() {
            bail!(
                "{} has no node_modules: run `make oidc-sandbox` (npm ci)",
                dir.display()
            );
        }
        let ca = crate::graph::tls::ca()?;
        let (cert, key) = ca.leaf_pem()?;
        let tmp = tempfile::tempdir()?;
        let (cert_path, key_path) = (tmp.path().join("tls.crt"), tmp.path().join("tls.key"));
        std::fs::write(&cert_path, cert)?;
        std::fs::write(&key_path, key)?;
        let stderr = std::fs::File::create(tmp.path().join("stderr.log"))?;
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(&dir)
            .env("OIDC_TLS_CERT", &cert_path)
            .env("OIDC_TLS_KEY", &key_path)
            .env("OIDC_INITIAL_ACCESS_TOKEN", initial_access_token)
            .env("OIDC_PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("starting node (Node.js 20.19+ must be on PATH)")?;
        let issuer = match child.stdout.take() {
            Some(out) => wait_for_issuer(out, tmp.path().join("stderr.log")).await,
            None => Err(anyhow::anyhow!("no stdout pipe")),
        };
        let mut server = Self {
            issuer: String::new(),
            ca_pem: ca.pem.clone(),
            initial_access_token: initial_access_token.to_string(),
            child,
            _dir: tmp,
        };
        // From here a failure drops `server`, which stops the process.
        server.issuer = issuer?;
        server.wait_for_discovery().await?;
        Ok(server)
    }

    async fn wait_for_discovery(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes())?)
            .timeout(Duration::from_secs(5))
            .build()?;
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                other if Instant::now() > deadline => bail!("{url} did not answer in time: {other:?}"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// Reads stdout (on a thread: it is a blocking pipe) until `listening <issuer>`.
async fn wait_for_issuer(out: std::process::ChildStdout, stderr: PathBuf) -> anyhow::Result<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(issuer) = line.strip_prefix("listening ") {
                let _ = tx.send(issuer.trim().to_string());
            }
        }
    });
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        match rx.try_recv() {
            Ok(issuer) => return Ok(issuer),
            Err(mpsc::TryRecvError::Disconnected) => {
                let log = std::fs::read_to_string(&stderr).unwrap_or_default();
                bail!("oidc-provider exited before listening:\n{log}")
            }
            Err(mpsc::TryRecvError::Empty) if Instant::now() > deadline => {
                bail!("oidc-provider did not print its issuer within {START_DEADLINE:?}")
            }
            Err(mpsc::TryRecvError::Empty) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

impl Drop for OidcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
