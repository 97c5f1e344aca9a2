//! Round trips (through a delaying proxy) and pgbouncer in transaction mode.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use futures_util::future::join_all;
use tenantry_core::Plan;
use tenantry_rls_pool::{DbError, RlsPool};
use tenantry_testkit::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::config::Host;
use tokio_postgres::types::Type;

use crate::support::*;

fn server_addr(config: &tokio_postgres::Config) -> (String, u16) {
    match &config.get_hosts()[0] {
        Host::Tcp(h) => (h.clone(), config.get_ports()[0]),
        #[allow(unreachable_patterns)]
        other => panic!("these tests need a TCP server address, not {other:?}"),
    }
}

fn pool_via(config: &tokio_postgres::Config, host: &str, port: u16, size: usize) -> Pool {
    // `Config::host` appends to the host list: build a fresh config, not a modified clone.
    let mut fresh = tokio_postgres::Config::new();
    fresh.host(host).port(port);
    if let Some(user) = config.get_user() {
        fresh.user(user);
    }
    if let Some(dbname) = config.get_dbname() {
        fresh.dbname(dbname);
    }
    if let Some(password) = config.get_password() {
        fresh.password(password);
    }
    tenantry_testkit::pool(fresh, size)
}

/// A loopback TCP proxy that delivers every chunk `delay` after it was read, in each
/// direction: a link with a fixed one-way latency.
async fn delaying_proxy(target: (String, u16), delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect((target.0.as_str(), target.1)).await else {
                continue;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pipe(ri, wo, delay));
            tokio::spawn(pipe(ro, wi, delay));
        }
    });
    addr
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((read_at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(read_at + delay).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx
                    .send((tokio::time::Instant::now(), buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
}

async fn median_of<F, Fut>(runs: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f().await;
        times.push(start.elapsed());
    }
    times.sort();
    times[runs / 2]
}

#[tokio::test]
async fn a_scoped_read_costs_one_round_trip_not_four() {
    let (db, a, _) = seeded().await;
    let one_way = Duration::from_millis(25);
    let rtt = one_way * 2;
    let proxy = delaying_proxy(server_addr(&db.app_config()), one_way).await;
    let pool = pool_via(&db.app_config(), "127.0.0.1", proxy.port(), 1);
    let rls = RlsPool::new(pool);
    let tenant_db = rls.for_tenant(a.clone());
    let sql = "SELECT title FROM documents WHERE tenant_id = $1";
    let id = a.id();
    let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 1] =
        [(id.as_uuid(), Type::UUID)];
    // Connect once (the handshake takes several round trips of its own).
    assert_eq!(tenant_db.query_typed(sql, &params).await.unwrap().len(), 2);

    let one_shot = median_of(5, || async {
        let rows = tenant_db.query_typed(sql, &params).await.unwrap();
        assert_eq!(rows.len(), 2);
    })
    .await;
    let explicit = median_of(5, || async {
        let tx = tenant_db.begin().await.unwrap();
        let rows = tx.query_typed(sql, &params).await.unwrap();
        assert_eq!(rows.len(), 2);
        tx.commit().await.unwrap();
    })
    .await;
    // What the seed-style code does: each statement awaited before the next is sent.
    let sequential = median_of(3, || async {
        let client = rls.pool().get().await.unwrap();
        client.batch_execute("BEGIN").await.unwrap();
        client
            .query_typed(
                "SELECT set_config('app.tenant_id', $1, true)",
                &[(&id.to_string(), Type::TEXT)],
            )
            .await
            .unwrap();
        let rows = client.query_typed(sql, &params).await.unwrap();
        assert_eq!(rows.len(), 2);
        client.batch_execute("COMMIT").await.unwrap();
    })
    .await;
    eprintln!("rtt {rtt:?}: one-shot {one_shot:?}, begin+query+commit {explicit:?}, sequential {sequential:?}");
    assert!(
        sequential >= rtt * 4 - one_way / 2,
        "the proxy does not delay ({sequential:?})"
    );
    // One round trip (BEGIN, context, query and COMMIT pipelined), with a wide margin.
    assert!(
        one_shot < rtt * 2 - one_way / 2,
        "one-shot read took {one_shot:?}"
    );
    assert!(one_shot >= rtt - one_way / 2);
    // BEGIN, context and query in one round trip, COMMIT in a second.
    assert!(
        explicit < rtt * 3 - one_way / 2,
        "begin/query/commit took {explicit:?}"
    );
}

/// pgbouncer, started by this test in transaction mode on a free port, stopped on drop.
struct Pgbouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        // SIGTERM to the pgbouncer process this test started (its own pid file), then reap
        // the wrapper we spawned.
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pgbouncer.pid")) {
            let _ = Command::new("kill").args(["-TERM", pid.trim()]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn start_pgbouncer(server: &(String, u16)) -> Pgbouncer {
    let binary = [
        "/usr/sbin/pgbouncer",
        "/usr/bin/pgbouncer",
        "/usr/local/bin/pgbouncer",
    ]
    .into_iter()
    .map(Path::new)
    .find(|p| p.exists())
    .unwrap_or_else(|| {
        panic!(
            "pgbouncer is not installed: this test needs it (Debian/Ubuntu: \
                 `apt-get install pgbouncer`)"
        )
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::Builder::new()
        .prefix("tenantry-pgbouncer-")
        .tempdir()
        .unwrap()
        .keep();
    let ini = format!(
        "[databases]\n* = host={} port={}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
         listen_port = {port}\nunix_socket_dir =\nauth_type = trust\nauth_file = {dir}/users.txt\n\
         pool_mode = transaction\ndefault_pool_size = 8\nmax_client_conn = 500\n\
         logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n\
         ignore_startup_parameters = extra_float_digits,options\n",
        server.0,
        server.1,
        dir = dir.display()
    );
    std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
    std::fs::write(dir.join("users.txt"), "\"tenantry_app\" \"\"\n").unwrap();
    let mut cmd = if running_as_root() {
        // pgbouncer refuses to run as root.
        let ok = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot hand {} to the OS user postgres", dir.display());
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(binary);
        c
    } else {
        Command::new(binary)
    };
    let child = cmd
        .arg(dir.join("pgbouncer.ini"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let bouncer = Pgbouncer { child, dir, port };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "pgbouncer did not listen; log: {}",
            std::fs::read_to_string(bouncer.dir.join("pgbouncer.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    bouncer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_mixed_tenant_requests_through_pgbouncer_transaction_mode() {
    let db = TestDb::new().await;
    let mut tenants = Vec::new();
    for i in 0..4 {
        let id = db.create_tenant(&format!("tenant-{i}"), "pro").await;
        db.insert_document(id, &format!("seed-{i}")).await;
        tenants.push(tenant(id, &format!("tenant-{i}"), Plan::enterprise()));
    }
    let bouncer = start_pgbouncer(&server_addr(&db.app_config()));
    let pool = pool_via(&db.app_config(), "127.0.0.1", bouncer.port, 32);
    let rls = RlsPool::builder(pool)
        .checkout_timeout(Duration::from_secs(20))
        .tenant_wait(Duration::from_secs(20))
        .build()
        .unwrap();
    let cross_tenant_rows = Arc::new(AtomicUsize::new(0));
    let requests = (0..1000).map(|i| {
        let t = tenants[(i / 4) % tenants.len()].clone();
        let db = rls.for_tenant(t.clone());
        let cross = cross_tenant_rows.clone();
        async move {
            let own = *t.id().as_uuid();
            let check = |rows: &[tokio_postgres::Row]| {
                let foreign = rows
                    .iter()
                    .filter(|r| r.get::<_, uuid::Uuid>(0) != own)
                    .count();
                cross.fetch_add(foreign, Ordering::Relaxed);
            };
            match i % 4 {
                // One round trip, unnamed statements only.
                0 => check(
                    &db.query_typed("SELECT tenant_id FROM documents", &[])
                        .await?,
                ),
                // A string statement: prepared (named) inside the transaction that uses it.
                1 => {
                    let tx = db.begin().await?;
                    check(
                        &tx.query("SELECT tenant_id FROM documents WHERE title <> $1", &[&"x"])
                            .await?,
                    );
                    check(
                        &tx.query("SELECT tenant_id FROM document_revisions", &[])
                            .await?,
                    );
                    tx.commit().await?;
                }
                // A write, then a read of it in the same transaction.
                2 => {
                    db.run(|tx| async move {
                        tx.execute(
                            "INSERT INTO documents (tenant_id, title) VALUES ($1, $2)",
                            &[&own, &format!("req-{i}")],
                        )
                        .await?;
                        let rows = tx
                            .query(
                                "SELECT tenant_id FROM documents WHERE title = $1",
                                &[&format!("req-{i}")],
                            )
                            .await?;
                        check(&rows);
                        Ok::<_, DbError>(())
                    })
                    .await?;
                }
                // A transaction abandoned half-way (rolled back on drop).
                _ => {
                    let tx = db.begin().await?;
                    check(&tx.query("SELECT tenant_id FROM documents", &[]).await?);
                    drop(tx);
                }
            }
            Ok::<_, DbError>(())
        }
    });
    let start = Instant::now();
    let results = join_all(requests).await;
    let elapsed = start.elapsed();
    let errors: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| {
            format!(
                "{e} / {:?}",
                std::error::Error::source(e).map(|s| s.to_string())
            )
        })
        .collect();
    eprintln!("1000 requests through pgbouncer in {elapsed:?}");
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert_eq!(cross_tenant_rows.load(Ordering::Relaxed), 0);
    // Every write landed for its own tenant.
    for (idx, t) in tenants.iter().enumerate() {
        let expected = (0..1000)
            .filter(|i| i % 4 == 2 && (i / 4) % tenants.len() == idx)
            .count() as i64;
        let n: i64 = db
            .admin()
            .query_one(
                "SELECT count(*) FROM documents WHERE tenant_id = $1 AND title LIKE 'req-%'",
                &[t.id().as_uuid()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, expected);
    }
    drop(rls);
    // The requests really went through pgbouncer.
    let log = std::fs::read_to_string(bouncer.dir.join("pgbouncer.log")).unwrap_or_default();
    assert!(
        log.contains(db.name()),
        "pgbouncer saw no client of this database"
    );
    drop(bouncer);
}
