//! The throwaway PostgreSQL server starts, answers, and leaves nothing behind when dropped.

use tenantry_testkit::ThrowawayPostgres;

#[tokio::test]
async fn throwaway_postgres_answers_and_is_removed_on_drop() {
    let pg = ThrowawayPostgres::start().unwrap();
    let (client, conn) = pg.config().connect(tokio_postgres::NoTls).await.unwrap();
    let task = tokio::spawn(conn);
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    drop(client);
    let _ = task.await;
    let port = pg.port();
    drop(pg);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server still listening after drop"
    );
    let leftovers = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("tenantry-pg-"))
        .filter(|e| e.path().join("data").join("postmaster.pid").exists())
        .count();
    assert_eq!(leftovers, 0, "a running cluster directory was left behind");
}
