//! Redis fixtures: a namespaced client per test, and redis-server processes tests own.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fred::prelude::*;

use crate::server;

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// The URL of the Redis server tests share.
fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("TENANTRY_REDIS_URL") {
        Ok(url) => url,
        Err(_) => {
            if !crate::force_throwaway()
                && std::net::TcpStream::connect(("127.0.0.1", 6379)).is_ok()
            {
                DEFAULT_URL.to_owned()
            } else {
                start_shared_redis()
            }
        }
    })
}

/// Starts the redis-server shared by the whole test process, under a watchdog that stops it
/// and removes its directory when the process exits (statics are never dropped, so an
/// `OwnedRedis` here would outlive the tests).
fn start_shared_redis() -> String {
    let dir = tempfile::Builder::new()
        .prefix("tenantry-redis-")
        .tempdir()
        .expect("testkit: temp dir")
        .keep();
    let port = server::free_port();
    let log = dir.join("redis.log");
    let args: Vec<String> = vec![
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        String::new(),
        "--appendonly".into(),
        "no".into(),
        "--dir".into(),
        dir.to_string_lossy().into_owned(),
    ];
    server::spawn_watched(
        &redis_server_binary(),
        &args,
        None,
        "TERM",
        Some(&dir),
        &log,
    );
    server::wait_for_port(port, Duration::from_secs(10), "redis-server", &log);
    format!("redis://127.0.0.1:{port}")
}

async fn connect(url: &str) -> Client {
    let config =
        Config::from_url(url).unwrap_or_else(|e| panic!("testkit: bad Redis URL {url}: {e}"));
    let client = Builder::from_config(config)
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(5))
        .build()
        .expect("testkit: Redis client");
    client
        .init()
        .await
        .unwrap_or_else(|e| panic!("testkit: cannot connect to Redis at {url}: {e}"));
    client
}

/// A Redis client and a key prefix unique to one test. Keys under the prefix are deleted when
/// this is dropped.
///
/// ```no_run
/// # async fn demo() {
/// use fred::prelude::*;
/// let redis = tenantry_testkit::TestRedis::new().await;
/// let key = redis.key("counter");
/// let n: i64 = redis.client().incr(&key).await.unwrap();
/// assert_eq!(n, 1);
/// # }
/// ```
#[derive(Debug)]
pub struct TestRedis {
    client: Client,
    prefix: String,
    url: String,
}

impl TestRedis {
    /// Connects to the shared test server with a fresh prefix.
    pub async fn new() -> Self {
        let url = server_url().to_owned();
        Self {
            client: connect(&url).await,
            prefix: format!("tenantry-test:{}", uuid::Uuid::new_v4().simple()),
            url,
        }
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// This test's key prefix (no trailing separator).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>:<name>`.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// The server's URL, to build other clients from.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let url = self.url.clone();
        let pattern = format!("{}*", self.prefix);
        server::block_on_detached(async move {
            let client = connect(&url).await;
            let _: Result<(), _> = client
                .eval(
                    "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end",
                    Vec::<String>::new(),
                    vec![pattern],
                )
                .await;
            let _ = client.quit().await;
        });
    }
}

fn redis_server_binary() -> PathBuf {
    server::find_binary("redis-server", &[]).unwrap_or_else(|| {
        panic!(
            "testkit: `redis-server` is not installed. Install Redis (Debian/Ubuntu: \
             `apt-get install redis-server`; macOS: `brew install redis`)."
        )
    })
}

/// A redis-server process owned by one test: it can be stopped and started again on the same
/// port (outage tests). Killed when dropped.
#[derive(Debug)]
pub struct OwnedRedis {
    port: u16,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl OwnedRedis {
    /// Starts a standalone server on a free loopback port.
    pub fn start() -> Self {
        Self::start_with(Vec::new())
    }

    fn start_with(extra_args: Vec<String>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tenantry-redis-")
            .tempdir()
            .expect("testkit: temp dir");
        let mut me = Self {
            port: server::free_port(),
            dir,
            extra_args,
            child: None,
        };
        me.restart();
        me
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same port (stopping it first if it runs).
    pub fn restart(&mut self) {
        self.stop();
        let log = self.dir.path().join(format!("redis-{}.log", self.port));
        let child = Command::new(redis_server_binary())
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &self.dir.path().to_string_lossy(),
                "--logfile",
                &log.to_string_lossy(),
            ])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("testkit: cannot start redis-server");
        self.child = Some(child);
        server::wait_for_port(self.port, Duration::from_secs(10), "redis-server", &log);
    }
}

impl Drop for OwnedRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A Redis Cluster of `n` primaries (no replicas) on loopback, owned by one test.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<OwnedRedis>,
}

impl RedisCluster {
    /// Starts `n` (at least 3) cluster-enabled servers and joins them with
    /// `redis-cli --cluster create`, then waits for `cluster_state:ok`.
    pub fn start(n: usize) -> Self {
        assert!(n >= 3, "Redis Cluster needs at least 3 primaries");
        let nodes: Vec<OwnedRedis> = (0..n)
            .map(|_| {
                OwnedRedis::start_with(
                    ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect(),
                )
            })
            .collect();
        let cli = server::find_binary("redis-cli", &[]).unwrap_or_else(|| {
            panic!("testkit: `redis-cli` is not installed (it ships with Redis)")
        });
        let out = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("testkit: redis-cli --cluster create");
        assert!(
            out.status.success(),
            "testkit: redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let start = Instant::now();
        loop {
            let ok = nodes.iter().all(|n| {
                Command::new(&cli)
                    .args(["-p", &n.port().to_string(), "cluster", "info"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
            });
            if ok {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "testkit: Redis Cluster did not reach cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { nodes }
    }

    /// A fred URL for the cluster: `redis-cluster://127.0.0.1:<p1>?node=127.0.0.1:<p2>&...`.
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port());
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", n.port()));
        }
        url
    }

    /// The nodes.
    pub fn nodes(&self) -> &[OwnedRedis] {
        &self.nodes
    }
}
