//! Throwaway servers started from local binaries, watched so they die with the test process.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (free when this returns; good enough for tests).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("testkit: cannot bind a loopback port")
}

/// Finds an executable on PATH or in the given extra directories.
pub(crate) fn find_binary(name: &str, extra_dirs: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().cloned())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// PostgreSQL's binary directories on Debian/Ubuntu (`/usr/lib/postgresql/<major>/bin`),
/// newest first.
pub(crate) fn debian_pg_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((major, e.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    dirs.into_iter().map(|(_, d)| d).collect()
}

/// Whether this process runs as root (initdb and postgres refuse to).
pub(crate) fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Starts `program args...` in the background under a shell watchdog: when the current
/// (test) process exits, the server is stopped with `stop_signal` and `cleanup_dir` removed.
/// `as_user` runs the server as another OS user (via `runuser`) when set.
pub(crate) fn spawn_watched(
    program: &Path,
    args: &[String],
    as_user: Option<&str>,
    stop_signal: &str,
    cleanup_dir: Option<&Path>,
    log: &Path,
) {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut cmd = String::new();
    if let Some(user) = as_user {
        cmd.push_str(&format!("runuser -u {} -- ", quote(user)));
    }
    cmd.push_str(&quote(&program.to_string_lossy()));
    for a in args {
        cmd.push(' ');
        cmd.push_str(&quote(a));
    }
    let cleanup = cleanup_dir
        .map(|d| format!("rm -rf {}", quote(&d.to_string_lossy())))
        .unwrap_or_default();
    let script = format!(
        "{cmd} >{log} 2>&1 & srv=$!\n\
         while kill -0 {parent} 2>/dev/null && kill -0 $srv 2>/dev/null; do sleep 0.5; done\n\
         pkill -{stop_signal} -P $srv 2>/dev/null; kill -{stop_signal} $srv 2>/dev/null; wait $srv 2>/dev/null\n\
         {cleanup}\n",
        log = quote(&log.to_string_lossy()),
        parent = std::process::id(),
    );
    // Deliberately detached: the watchdog outlives this process to stop the server after it.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("testkit: cannot spawn sh");
}

/// Waits until a TCP port on 127.0.0.1 accepts connections.
pub(crate) fn wait_for_port(port: u16, timeout: Duration, what: &str, log: &Path) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    panic!("testkit: {what} did not start on port {port} within {timeout:?}; its log:\n{log}");
}

/// Runs `fut` to completion on a new thread with its own runtime, and waits for it. For
/// `Drop` impls: they cannot await, and the test's runtime may already be shutting down.
pub(crate) fn block_on_detached<F>(fut: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let handle = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(fut);
        }
    });
    // A panic in the clean-up (say, the server is gone) must not turn a passing test red.
    let _ = handle.join();
}
