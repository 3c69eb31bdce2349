//! Locating the test binaries and supervising etcd / kube-apiserver processes.

use super::{TestEnvError, io};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

/// Where `hack/testbin.sh` put etcd, kube-apiserver, helm and the Gardener CRDs.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub dir: PathBuf,
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub helm: PathBuf,
    pub crds: PathBuf,
}

impl Binaries {
    /// `$TESTBIN_DIR`, else `.testbin/` at the repository root.
    pub fn locate() -> Result<Self, TestEnvError> {
        let dir = std::env::var_os("TESTBIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".testbin"));
        let b = Self {
            etcd: dir.join("etcd"),
            kube_apiserver: dir.join("kube-apiserver"),
            helm: dir.join("helm"),
            crds: dir.join("crds"),
            dir,
        };
        for p in [&b.etcd, &b.kube_apiserver, &b.crds] {
            if !p.exists() {
                return Err(TestEnvError::Missing(format!("{} not found", p.display())));
            }
        }
        Ok(b)
    }

    /// gardener-resource-manager, required only by the tests that run it.
    pub fn gardener_resource_manager(&self) -> Result<PathBuf, TestEnvError> {
        let p = self.dir.join("gardener-resource-manager");
        if p.exists() {
            Ok(p)
        } else {
            Err(TestEnvError::Missing(format!("{} not found", p.display())))
        }
    }
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS:`, `VmHWM:`), 0 when unreadable: benchmarks
/// measure the memory of the processes they start.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

pub fn free_port() -> Result<u16, TestEnvError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("binding a free port"))?;
    Ok(l.local_addr().map_err(io("reading the port"))?.port())
}

/// A child process that is killed when dropped, and also when the spawning thread dies.
pub struct Supervised {
    child: Mutex<Child>,
    log: PathBuf,
}

impl Supervised {
    pub fn spawn(bin: &Path, args: &[String], log: &Path) -> Result<Self, TestEnvError> {
        let out = std::fs::File::create(log).map_err(io(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(io("duplicating the log handle"))?;
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        // gardener-resource-manager prefers these to its config file; never inherit them
        cmd.env_remove("KUBECONFIG").env_remove("TARGET_KUBECONFIG");
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(io(format!("starting {}", bin.display())))?;
        Ok(Self {
            child: Mutex::new(child),
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().map(|c| c.id()).unwrap_or(0)
    }

    pub fn exited(&self) -> Option<std::process::ExitStatus> {
        self.child.lock().ok()?.try_wait().ok().flatten()
    }

    /// The last 4 KiB of the process's log, for error messages.
    pub fn log_tail(&self) -> String {
        let mut buf = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(4096)));
            let _ = f.read_to_string(&mut buf);
        }
        buf
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Ok(child) = self.child.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

static AT_EXIT: Mutex<Option<(Vec<u32>, PathBuf)>> = Mutex::new(None);

extern "C" fn at_exit() {
    if let Ok(mut guard) = AT_EXIT.lock()
        && let Some((pids, dir)) = guard.take()
    {
        for pid in pids {
            // SAFETY: plain syscalls on pids we spawned.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
                libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Statics are never dropped: kill the shared control plane and remove its directory when the
/// test process exits normally (a crash is covered by the parent-death signal).
pub fn cleanup_at_exit(pids: &[u32], dir: &Path) {
    if let Ok(mut guard) = AT_EXIT.lock() {
        *guard = Some((pids.to_vec(), dir.to_path_buf()));
    }
    // SAFETY: registering a plain extern "C" fn.
    unsafe {
        libc::atexit(at_exit);
    }
}
