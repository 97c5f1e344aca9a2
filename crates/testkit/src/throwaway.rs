//! A throwaway PostgreSQL cluster from the locally installed binaries.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio_postgres::Config;

use crate::server;

/// A PostgreSQL cluster in a temporary directory on a free loopback port, started from the
/// locally installed `initdb` and `postgres` (on PATH or in `/usr/lib/postgresql/<major>/bin`).
///
/// Trust authentication, superuser `postgres`, `fsync=off`: for tests and demos only. Dropping
/// it stops the server and removes the directory; if the process dies first, a watchdog does.
/// As root, the server runs as the OS user `postgres` (PostgreSQL refuses to run as root).
///
/// ```no_run
/// let pg = tenantry_testkit::ThrowawayPostgres::start()?;
/// println!("connect to {}", pg.url());
/// # Ok::<(), tenantry_testkit::ThrowawayError>(())
/// ```
#[derive(Debug)]
pub struct ThrowawayPostgres {
    port: u16,
    dir: PathBuf,
}

/// Why a throwaway server could not be started; the message says what to install or fix.
#[derive(Debug)]
pub struct ThrowawayError(String);

impl fmt::Display for ThrowawayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ThrowawayError {}

impl ThrowawayPostgres {
    /// Initialises and starts the cluster, and waits until it accepts connections.
    pub fn start() -> Result<Self, ThrowawayError> {
        let err = |m: String| ThrowawayError(m);
        let dirs = server::debian_pg_bin_dirs();
        let (Some(initdb), Some(postgres)) = (
            server::find_binary("initdb", &dirs),
            server::find_binary("postgres", &dirs),
        ) else {
            return Err(err(
                "no PostgreSQL server binaries (`initdb`, `postgres`) were found on PATH or in \
                 /usr/lib/postgresql/*/bin. Install PostgreSQL (Debian/Ubuntu: `apt-get install \
                 postgresql`; Fedora: `dnf install postgresql-server`; macOS: `brew install \
                 postgresql`), or point the configuration at a running server."
                    .to_owned(),
            ));
        };
        let dir = tempfile::Builder::new()
            .prefix("tenantry-pg-")
            .tempdir()
            .map_err(|e| err(format!("cannot create a temporary directory: {e}")))?
            .keep();
        let me = Self { port: 0, dir };
        // From here on, dropping `me` removes the directory.
        me.init_and_start(&initdb, &postgres)
    }

    fn init_and_start(mut self, initdb: &Path, postgres: &Path) -> Result<Self, ThrowawayError> {
        let err = |m: String| ThrowawayError(m);
        let as_user = server::running_as_root().then_some("postgres");
        if let Some(user) = as_user {
            let ok = Command::new("chown")
                .args(["-R", user])
                .arg(&self.dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(err(format!(
                    "running as root, and cannot hand {} to the OS user `{user}` that PostgreSQL \
                     must run as (does the user exist?)",
                    self.dir.display()
                )));
            }
        }
        let data = self.dir.join("data");
        let mut init = match as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(initdb);
                c
            }
            None => Command::new(initdb),
        };
        let out = init
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .map_err(|e| err(format!("cannot run {}: {e}", initdb.display())))?;
        if !out.status.success() {
            return Err(err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        self.port = server::free_port();
        let args: Vec<String> = vec![
            "-D".into(),
            data.to_string_lossy().into_owned(),
            "-p".into(),
            self.port.to_string(),
            "-k".into(),
            self.dir.to_string_lossy().into_owned(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            "fsync=off".into(),
            "-c".into(),
            "max_connections=300".into(),
        ];
        let log = self.dir.join("postgres.log");
        server::spawn_watched(postgres, &args, as_user, "INT", Some(&self.dir), &log);
        server::wait_for_port(self.port, Duration::from_secs(30), "postgres", &log);
        // The port opens before the server accepts sessions ("the database system is starting
        // up"); pg_isready tells the two apart.
        if let Some(isready) = server::find_binary("pg_isready", &server::debian_pg_bin_dirs()) {
            let start = Instant::now();
            while !Command::new(&isready)
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success())
            {
                if start.elapsed() > Duration::from_secs(30) {
                    return Err(err(format!(
                        "postgres did not accept connections within 30 s; see {}",
                        log.display()
                    )));
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        Ok(self)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Connection settings for the superuser and the `postgres` database.
    pub fn config(&self) -> Config {
        let mut c = Config::new();
        c.host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname("postgres");
        c
    }

    fn postmaster_pid(&self) -> Option<String> {
        let pid_file = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).ok()?;
        pid_file.lines().next().map(str::to_owned)
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        if let Some(pid) = self.postmaster_pid() {
            // SIGINT: fast shutdown (roll back open transactions, disconnect, exit).
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10)
                && Command::new("kill")
                    .args(["-0", &pid])
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
