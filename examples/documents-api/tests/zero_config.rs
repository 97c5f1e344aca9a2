//! The no-configuration default: the binary boots with no DATABASE_URL, REDIS_URL or
//! JWT_SECRET, prints curl lines that work as printed, and removes its throwaway PostgreSQL
//! when it gets SIGTERM.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Kills the child if the test fails before it stopped it (never leaves a server behind).
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One HTTP/1.1 GET with `Connection: close`; returns status, headers and body.
fn http_get(url: &str, bearer: &str) -> (u16, String, String) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = TcpStream::connect(authority).expect("connect to the printed address");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {bearer}\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("a response");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers and body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "expected a Content-Length body: {head}"
    );
    (status, head.to_owned(), body.to_owned())
}

/// Parses `curl -H 'Authorization: Bearer <token>' <url>`.
fn parse_curl(line: &str) -> (String, String) {
    let token = line
        .split("Authorization: Bearer ")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .unwrap_or_else(|| panic!("no bearer token in {line:?}"));
    let url = line
        .split_whitespace()
        .last()
        .filter(|u| u.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL at the end of {line:?}"));
    (url.to_owned(), token.to_owned())
}

fn throwaway_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("tenantry-pg-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn zero_config_boots_answers_its_curl_lines_and_cleans_up_on_sigterm() {
    // A TMPDIR of its own, so the throwaway cluster's directory is known to be this run's.
    // Traversable by others: as root, PostgreSQL runs as the `postgres` user inside it.
    let tmp = std::env::temp_dir().join(format!(
        "documents-api-zero-config-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&tmp).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_documents-api"))
        .env_remove("DATABASE_URL")
        .env_remove("DATABASE_ADMIN_URL")
        .env_remove("REDIS_URL")
        .env_remove("JWT_SECRET")
        .env_remove("JWT_PUBLIC_KEY_FILE")
        .env_remove("BASE_DOMAIN")
        .env("BIND", format!("127.0.0.1:{port}"))
        .env("TMPDIR", &tmp)
        // Run where no `.env` file can configure it.
        .current_dir(&tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the documents-api binary starts");
    let mut guard = Guard(Some(child));
    let pid = guard.0.as_ref().unwrap().id();

    // Read stdout on a thread; wait (bounded) for the banner and the three curl lines.
    let stdout = guard.0.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut printed = Vec::new();
    let mut curls = Vec::new();
    while curls.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if line.starts_with("curl ") {
                    curls.push(line.clone());
                }
                printed.push(line);
            }
            Err(e) => panic!(
                "no 3 curl lines within 90 s ({e}); printed so far:\n{}",
                printed.join("\n")
            ),
        }
    }
    assert!(
        printed
            .iter()
            .any(|l| l.contains(&format!("http://127.0.0.1:{port}"))),
        "the banner names the address: {printed:?}"
    );
    let dirs = throwaway_dirs(&tmp);
    assert_eq!(
        dirs.len(),
        1,
        "one throwaway cluster in {}: {dirs:?}",
        tmp.display()
    );

    let mut slugs = Vec::new();
    for line in &curls {
        let (url, token) = parse_curl(line);
        assert_eq!(url, format!("http://127.0.0.1:{port}/api/v1/documents"));
        let (status, head, body) = http_get(&url, &token);
        assert_eq!(status, 200, "{line}\n{head}\n{body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let page: serde_json::Value = serde_json::from_str(&body).expect("a JSON page");
        let docs = page["data"].as_array().expect("`data` is a list");
        assert_eq!(docs.len(), 3, "the seeded documents: {page}");
        // Each token sees its own tenant's documents: the title names the slug.
        let title = docs[0]["title"].as_str().unwrap();
        let slug = title
            .rsplit_once('(')
            .unwrap()
            .1
            .trim_end_matches(')')
            .to_owned();
        assert!(
            docs.iter()
                .all(|d| d["title"].as_str().unwrap().ends_with(&format!("({slug})"))),
            "{page}"
        );
        slugs.push(slug);
    }
    slugs.sort();
    assert_eq!(slugs, ["acme", "globex", "initech"]);
    // A made-up token is refused: the printed ones work because they are signed, not because
    // nothing is checked.
    let (url, token) = parse_curl(&curls[0]);
    let mut forged = token.clone();
    forged.truncate(token.len() - 2);
    let (status, _, body) = http_get(&url, &forged);
    assert_eq!(status, 401, "{body}");

    // SIGTERM: a clean exit, and the throwaway cluster removed.
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -TERM {pid}");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = guard.0.as_mut().unwrap().try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no exit 30 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    guard.0 = None;
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let left = throwaway_dirs(&tmp);
    assert!(
        left.is_empty(),
        "the throwaway PostgreSQL directory is left behind: {left:?}"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
