//! Child processes that cannot outlive the test process.
//!
//! Three layers, so that no etcd / kube-apiserver / kube-controller-manager is ever left
//! behind:
//! 1. `Drop` / [`super::ControlPlane::stop`] kill and reap them (a test that panics
//!    unwinds through them).
//! 2. A control plane kept in a `static` is never dropped: an `atexit` handler, registered
//!    once, kills every control plane still registered and removes its state directory
//!    when the process exits normally (libtest ends with `std::process::exit`).
//! 3. A process killed by a signal runs no code at all: every child is spawned with
//!    `prctl(PR_SET_PDEATHSIG, SIGKILL)`, so the kernel kills it when its parent goes.
//!    PDEATHSIG fires when the *thread* that forked the child exits, not the process; so
//!    all children are forked by one dedicated thread that lives as long as the process
//!    (its channel's sender is in a `static` and is never dropped). A state directory left
//!    by such a death is swept by the next start ([`sweep_stale_state_dirs`]).

use std::collections::HashMap;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Prefix of the state directories under the temp dir; the owner's pid follows.
pub(crate) const STATE_DIR_PREFIX: &str = "dcr-control-plane-";
const OWNER_FILE: &str = "owner.pid";

struct SpawnRequest {
    cmd: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("dcr-control-plane-spawner".into())
            .spawn(move || {
                // Lives until the process exits: the sender is never dropped.
                for mut req in rx {
                    let _ = req.reply.send(spawn_here(&mut req.cmd));
                }
            })
            .expect("spawning the control-plane spawner thread");
        Mutex::new(tx)
    })
}

fn spawn_here(cmd: &mut Command) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Spawns `cmd` from the long-lived spawner thread, with PDEATHSIG=SIGKILL: the child dies
/// with this process (even on a panic or `exit`), never with the thread that asked.
pub fn spawn(cmd: Command) -> io::Result<Child> {
    let (reply, rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(SpawnRequest { cmd, reply })
        .map_err(|_| io::Error::other("control-plane spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("control-plane spawner thread did not answer"))?
}

/// A running component: its child process and its log file.
pub(crate) struct Proc {
    pub name: &'static str,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL after `grace`; reaps the process.
    pub fn terminate(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        // SAFETY: plain kill(2) on our own, not yet reaped, child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `lines` lines of a log file (for error messages).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

// ---- exit-time cleanup registry --------------------------------------------------------

struct Registered {
    pids: Vec<u32>,
    dir: Option<PathBuf>,
    node: Option<super::node::janitor::Record>,
}

fn registry() -> &'static Mutex<HashMap<u64, Registered>> {
    static REGISTRY: OnceLock<Mutex<HashMap<u64, Registered>>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        // SAFETY: registering a plain `extern "C" fn` that never unwinds.
        unsafe {
            libc::atexit(cleanup_at_exit);
        }
        Mutex::new(HashMap::new())
    })
}

/// Registers (or updates) the processes and state dir of one control plane, so that
/// process exit cleans them up even if the control plane is never dropped.
/// `node`: a node's record, torn down (after the pids are killed, before the state dir is
/// removed, since the node's mounts are inside it).
pub(crate) fn register(
    id: u64,
    pids: Vec<u32>,
    dir: Option<PathBuf>,
    node: Option<super::node::janitor::Record>,
) {
    registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, Registered { pids, dir, node });
}

pub(crate) fn unregister(id: u64) {
    registry().lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
}

pub(crate) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

extern "C" fn cleanup_at_exit() {
    let _ = std::panic::catch_unwind(|| {
        // Registered from inside `registry()`'s initialiser, so this never initialises.
        let entries: Vec<Registered> = match registry().try_lock() {
            Ok(mut map) => map.drain().map(|(_, v)| v).collect(),
            Err(_) => return, // PDEATHSIG still kills the children
        };
        for entry in &entries {
            for &pid in &entry.pids {
                // SAFETY: kill/waitpid on our own children; errors (already reaped) ignored.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                    libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
                }
            }
        }
        for entry in &entries {
            if let Some(rec) = &entry.node {
                super::node::janitor::teardown(rec);
            }
        }
        for entry in entries {
            if let Some(dir) = entry.dir {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    });
}

// ---- state directories -----------------------------------------------------------------

/// Creates a fresh state directory under `base`, recording the owning pid.
pub(crate) fn create_state_dir(base: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(base)?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("{STATE_DIR_PREFIX}{}-", std::process::id()))
        .tempdir_in(base)?
        .keep();
    std::fs::write(dir.join(OWNER_FILE), std::process::id().to_string())?;
    Ok(dir)
}

/// Removes state directories under `base` whose owning process no longer exists (left
/// behind by a test process killed by a signal). Best effort.
pub(crate) fn sweep_stale_state_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(STATE_DIR_PREFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(owner) = std::fs::read_to_string(path.join(OWNER_FILE)) else {
            continue;
        };
        let Ok(pid) = owner.trim().parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}
