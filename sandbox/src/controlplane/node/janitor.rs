//! Everything a node changes outside its state directory, recorded before it starts, and
//! the teardown that undoes it: processes (found by their command line naming the node's
//! directory, so containerd's re-parented shims are found too), pod cgroups, mounts, the
//! kubelet's and kube-proxy's iptables chains, the CNI bridge, sysctls, and the
//! directories the kubelet and containerd create at fixed paths.
//!
//! One node per machine (the iptables chains and `kubepods` cgroups have fixed names): a
//! lock file guards it and a record file next to it describes the running node. A node
//! whose process was killed by a signal left its record behind; whoever takes the lock
//! next (any control-plane start, see [`sweep_stale`]) tears it down from that record.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The CNI bridge the node's pods attach to.
pub(crate) const BRIDGE: &str = "dcr0";

/// Kernel settings the kubelet, kube-proxy and the bridge plugin may change.
const SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/ipv4/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max",
];

/// Fixed paths the kubelet (device plugins, pod logs), containerd (shim sockets) and
/// libcni (result cache) write to whatever their configured roots.
const OUTSIDE_PATHS: &[&str] = &[
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/run/containerd",
    "/var/lib/cni",
];

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const KILL_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Serialize, Deserialize)]
struct OutsidePath {
    path: PathBuf,
    existed: bool,
    entries_before: Vec<String>,
}

/// What a running node changed, written before it starts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    owner_pid: u32,
    /// The node's directory (containerd root/state, kubelet root, CNI config).
    pub dir: PathBuf,
    sysctls: Vec<(String, String)>,
    outside: Vec<OutsidePath>,
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("dcr-node")
}

fn record_path() -> PathBuf {
    lock_dir().join("record.json")
}

/// The machine-wide node lock, held while a node runs (released when the file closes,
/// also when the process dies).
#[derive(Debug)]
pub(crate) struct NodeLock(#[allow(dead_code)] File);

fn open_lock() -> io::Result<File> {
    std::fs::create_dir_all(lock_dir())?;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_dir().join("lock"))
}

fn try_flock(file: &File) -> bool {
    // SAFETY: flock on a descriptor we own.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Takes the node lock, waiting at most `wait` for another node on this machine to stop,
/// and tears down a node left behind by a dead process.
pub(crate) fn lock(wait: Duration) -> io::Result<NodeLock> {
    let file = open_lock()?;
    let started = Instant::now();
    while !try_flock(&file) {
        if started.elapsed() > wait {
            return Err(io::Error::other(format!(
                "another local node runs on this machine (lock {} held for {}s); only one \
                 node runs at a time",
                lock_dir().join("lock").display(),
                wait.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if let Some(stale) = read_record() {
        tracing::warn!("tearing down a node left behind by process {}", stale.owner_pid);
        teardown(&stale);
    }
    Ok(NodeLock(file))
}

/// Tears down a node left behind by a process that died, if nobody holds the lock.
/// Never waits. Called by every control-plane start.
pub(crate) fn sweep_stale() {
    let Ok(file) = open_lock() else { return };
    if !try_flock(&file) {
        return; // a live node
    }
    if let Some(stale) = read_record() {
        tracing::warn!("tearing down a node left behind by process {}", stale.owner_pid);
        teardown(&stale);
    }
}

fn read_record() -> Option<Record> {
    let text = std::fs::read_to_string(record_path()).ok()?;
    match serde_json::from_str(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!("ignoring an unreadable node record: {e}");
            let _ = std::fs::remove_file(record_path());
            None
        }
    }
}

/// Snapshots what the node may change and writes the record (under the lock).
pub(crate) fn record(_lock: &NodeLock, dir: &Path) -> io::Result<Record> {
    let sysctls = SYSCTLS
        .iter()
        .filter_map(|k| {
            let v = std::fs::read_to_string(Path::new("/proc/sys").join(k)).ok()?;
            Some((k.to_string(), v.trim().to_string()))
        })
        .collect();
    let outside = OUTSIDE_PATHS
        .iter()
        .map(|p| {
            let path = PathBuf::from(p);
            let entries_before = list(&path);
            OutsidePath {
                existed: path.exists(),
                path,
                entries_before,
            }
        })
        .collect();
    let rec = Record {
        owner_pid: std::process::id(),
        dir: dir.to_path_buf(),
        sysctls,
        outside,
    };
    let tmp = record_path().with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&rec).map_err(io::Error::other)?)?;
    std::fs::rename(&tmp, record_path())?;
    Ok(rec)
}

fn list(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Undoes everything the node recorded in `rec` did. Best effort: each step runs even
/// when an earlier one failed; failures are logged.
pub(crate) fn teardown(rec: &Record) {
    kill_processes_naming(&rec.dir);
    kill_pod_cgroups();
    unmount_under(&rec.dir);
    remove_pod_cgroups();
    for tool in ["iptables", "ip6tables"] {
        remove_kube_chains(tool);
    }
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        quiet("ip", &["link", "del", BRIDGE]);
    }
    for (key, value) in &rec.sysctls {
        let path = Path::new("/proc/sys").join(key);
        if std::fs::read_to_string(&path).is_ok_and(|now| now.trim() != value) {
            if let Err(e) = std::fs::write(&path, value) {
                tracing::warn!("node teardown: restoring {key}={value}: {e}");
            }
        }
    }
    for o in &rec.outside {
        restore_outside(o);
    }
    let _ = std::fs::remove_file(record_path());
}

fn restore_outside(o: &OutsidePath) {
    if !o.existed {
        let _ = std::fs::remove_dir_all(&o.path);
        return;
    }
    for name in list(&o.path) {
        if !o.entries_before.contains(&name) {
            let p = o.path.join(&name);
            let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
        }
    }
}

/// SIGKILLs every process whose command line mentions `dir` (kubelet, kube-proxy,
/// containerd, its shims), then waits for them to go.
fn kill_processes_naming(dir: &Path) {
    let needle = dir.as_os_str().as_encoded_bytes();
    let me = std::process::id();
    let matching = || -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid as u32 != me)
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
            })
            .collect()
    };
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let pids = matching();
        if pids.is_empty() || Instant::now() > deadline {
            if !pids.is_empty() {
                tracing::warn!("node teardown: processes {pids:?} survive SIGKILL");
            }
            return;
        }
        for pid in pids {
            // SAFETY: plain kill(2).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every cgroup v1 hierarchy's `kubepods` directory.
fn pod_cgroup_roots() -> Vec<PathBuf> {
    list(Path::new(CGROUP_ROOT))
        .into_iter()
        .map(|c| Path::new(CGROUP_ROOT).join(c).join("kubepods"))
        .filter(|p| p.is_dir())
        .collect()
}

/// Sub-directories of `root` (itself included), deepest first.
fn cgroup_tree(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        out.push(dir);
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

fn kill_pod_cgroups() {
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let mut alive = 0;
        for root in pod_cgroup_roots() {
            for cg in cgroup_tree(&root) {
                let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    alive += 1;
                    // SAFETY: plain kill(2).
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
        if alive == 0 || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn remove_pod_cgroups() {
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let mut left = 0;
        for root in pod_cgroup_roots() {
            for cg in cgroup_tree(&root) {
                if std::fs::remove_dir(&cg).is_err() {
                    left += 1;
                }
            }
        }
        if left == 0 {
            return;
        }
        if Instant::now() > deadline {
            tracing::warn!("node teardown: {left} kubepods cgroups could not be removed");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Mount points at or under `dir`, deepest first (from /proc/self/mountinfo).
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

fn unescape_mount_path(s: &str) -> PathBuf {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let mut bytes = Vec::with_capacity(s.len());
    let raw = s.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && i + 3 < raw.len() && raw[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let oct = std::str::from_utf8(&raw[i + 1..i + 4]).unwrap_or("0");
            bytes.push(u8::from_str_radix(oct, 8).unwrap_or(b'?'));
            i += 4;
        } else {
            bytes.push(raw[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from(
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&bytes),
    ))
}

fn unmount_under(dir: &Path) {
    // Repeated: unmounting one mount can reveal another stacked beneath it.
    for _ in 0..5 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return;
        }
        for m in mounts {
            let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: umount2 with a valid C string.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
    let left = mounts_under(dir);
    if !left.is_empty() {
        tracing::warn!("node teardown: mounts left under {}: {left:?}", dir.display());
    }
}

/// Deletes the rules that jump to `KUBE-*` chains and then those chains, in every table.
/// Only the kubelet and kube-proxy use the prefix.
fn remove_kube_chains(tool: &str) {
    for table in ["filter", "nat", "mangle"] {
        let Some(rules) = output(tool, &["-w", "5", "-t", table, "-S"]) else {
            continue;
        };
        let mut chains = Vec::new();
        for line in rules.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["-N", chain] if chain.starts_with("KUBE-") => chains.push(chain.to_string()),
                ["-A", chain, rest @ ..] if !chain.starts_with("KUBE-") && jumps_to_kube(rest) => {
                    let mut args = vec!["-w", "5", "-t", table, "-D", chain];
                    args.extend(rest.iter().map(|w| w.trim_matches('"')));
                    // A comment with spaces cannot be re-split from -S output; delete by
                    // number instead when that fails.
                    if !quiet(tool, &args) {
                        delete_by_target(tool, table, chain, rest);
                    }
                }
                _ => {}
            }
        }
        for chain in &chains {
            quiet(tool, &["-w", "5", "-t", table, "-F", chain]);
        }
        for chain in &chains {
            quiet(tool, &["-w", "5", "-t", table, "-X", chain]);
        }
    }
}

fn jumps_to_kube(rule: &[&str]) -> bool {
    rule.windows(2)
        .any(|w| (w[0] == "-j" || w[0] == "-g") && w[1].starts_with("KUBE-"))
}

fn delete_by_target(tool: &str, table: &str, chain: &str, rule: &[&str]) {
    let Some(target) = rule
        .windows(2)
        .find(|w| w[0] == "-j" || w[0] == "-g")
        .map(|w| w[1])
    else {
        return;
    };
    let Some(listing) = output(
        tool,
        &["-w", "5", "-t", table, "-L", chain, "--line-numbers", "-n"],
    ) else {
        return;
    };
    let numbers: Vec<String> = listing
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(target))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    // Highest first, so the numbers stay valid.
    for n in numbers.iter().rev() {
        quiet(tool, &["-w", "5", "-t", table, "-D", chain, n]);
    }
}

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn quiet(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What of a node is left on this machine (for tests of the teardown): processes naming
/// `dir`, mounts under it, `kubepods` cgroups, `KUBE-*` chains, the bridge.
pub fn leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for m in mounts_under(dir) {
        out.push(format!("mount {}", m.display()));
    }
    for root in pod_cgroup_roots() {
        out.push(format!("cgroup {}", root.display()));
    }
    for tool in ["iptables", "ip6tables"] {
        for table in ["filter", "nat", "mangle"] {
            for line in output(tool, &["-w", "5", "-t", table, "-S"])
                .unwrap_or_default()
                .lines()
            {
                if line.contains("KUBE-") {
                    out.push(format!("{tool} -t {table}: {line}"));
                }
            }
        }
    }
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        out.push(format!("link {BRIDGE}"));
    }
    let needle = dir.as_os_str().as_encoded_bytes();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if cmd.windows(needle.len()).any(|w| w == needle) {
            out.push(format!(
                "process {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
    }
    out
}

/// The host settings a node may change (sysctls, and the entries of the fixed paths the
/// kubelet and containerd write to), for tests comparing before and after a node.
pub fn host_state() -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for k in SYSCTLS {
        if let Ok(v) = std::fs::read_to_string(Path::new("/proc/sys").join(k)) {
            out.insert(format!("sysctl {k}"), v.trim().to_string());
        }
    }
    for p in OUTSIDE_PATHS {
        let path = Path::new(p);
        let mut entries = list(path);
        entries.sort();
        let state = if path.exists() {
            entries.join(",")
        } else {
            "<absent>".into()
        };
        out.insert(format!("path {p}"), state);
    }
    out
}
