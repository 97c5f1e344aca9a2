//! The SQL migrations and their runner.
//!
//! The migrations live as plain SQL in the repository's `migrations/` folder and are embedded
//! in this crate. [`run`] applies the ones a database lacks, in order, in one transaction,
//! under an advisory lock, recording each in `tenantry_schema_migrations` with the SHA-256 of
//! its text. Running it again is a no-op; a migration whose text changed after it was applied
//! is an error ([`MigrateErrorKind::Modified`]), never silently re-run or skipped.
//!
//! Run it as an administrative role (one that may create roles and schemas), never as the
//! application role.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let (mut client, conn) =
//!     tokio_postgres::connect("host=127.0.0.1 user=postgres dbname=app", tokio_postgres::NoTls)
//!         .await?;
//! tokio::spawn(conn);
//! let report = tenantry::migrate::run(&mut client).await?;
//! println!("applied {:?}", report.applied);
//! # Ok(()) }
//! ```

use std::fmt;

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its version: applied in increasing order.
    pub version: i32,
    /// Its name, from the file name.
    pub name: &'static str,
    /// Its SQL.
    pub sql: &'static str,
}

impl Migration {
    /// The lowercase hex SHA-256 of the SQL text.
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

macro_rules! migrations {
    ($($version:literal $name:literal $file:literal),* $(,)?) => {
        /// Every migration, in order.
        pub const MIGRATIONS: &[Migration] = &[
            $(Migration {
                version: $version,
                name: $name,
                sql: include_str!(concat!("../migrations/", $file)),
            }),*
        ];
    };
}

migrations! {
    1 "roles" "V0001__roles.sql",
    2 "tenancy" "V0002__tenancy.sql",
    3 "documents" "V0003__documents.sql",
    4 "slug_not_uuid" "V0004__slug_not_uuid.sql",
}

/// The SHA-256 over every migration's checksum: changes whenever any migration does.
/// Test fixtures use it to name a migrated template database.
pub fn fingerprint() -> String {
    let mut h = Sha256::new();
    for m in MIGRATIONS {
        h.update(m.version.to_be_bytes());
        h.update(m.checksum().as_bytes());
    }
    hex::encode(h.finalize())
}

/// What [`run`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Versions applied by this run.
    pub applied: Vec<i32>,
    /// Versions that were already applied (and whose checksums matched).
    pub already_applied: Vec<i32>,
}

/// Why [`run`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MigrateErrorKind {
    /// An applied migration's text differs from the embedded one.
    Modified,
    /// The database has a migration this build does not know (it is newer than this build).
    Unknown,
    /// The database refused a statement.
    Database,
}

/// A migration failure; the database error, if any, is the [`source`](std::error::Error::source).
#[derive(Debug)]
pub struct MigrateError {
    kind: MigrateErrorKind,
    version: Option<i32>,
    source: Option<tokio_postgres::Error>,
}

impl MigrateError {
    /// What went wrong.
    pub fn kind(&self) -> MigrateErrorKind {
        self.kind
    }

    /// The migration concerned, if any.
    pub fn version(&self) -> Option<i32> {
        self.version
    }

    fn db(version: Option<i32>) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |source| Self {
            kind: MigrateErrorKind::Database,
            version,
            source: Some(source),
        }
    }
}

impl fmt::Display for MigrateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, self.version) {
            (MigrateErrorKind::Modified, Some(v)) => write!(
                f,
                "migration {v} was edited after it was applied; add a new migration instead"
            ),
            (MigrateErrorKind::Unknown, Some(v)) => write!(
                f,
                "the database has migration {v}, which this build does not know (is it older than the database?)"
            ),
            (_, Some(v)) => write!(f, "migration {v} failed"),
            _ => f.write_str("could not read the applied migrations"),
        }
    }
}

impl std::error::Error for MigrateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Applies [`MIGRATIONS`] to the database `client` is connected to. See the
/// [module documentation](self).
pub async fn run(client: &mut Client) -> Result<Report, MigrateError> {
    run_migrations(client, MIGRATIONS).await
}

/// Applies `migrations` (sorted by version) like [`run`]; for tests and custom sets.
pub async fn run_migrations(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<Report, MigrateError> {
    let tx = client.transaction().await.map_err(MigrateError::db(None))?;
    // One runner at a time per database; the lock ends with the transaction.
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(hashtext('tenantry.migrate'));
         CREATE TABLE IF NOT EXISTS tenantry_schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             checksum   text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    )
    .await
    .map_err(MigrateError::db(None))?;

    let applied = tx
        .query(
            "SELECT version, checksum FROM tenantry_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(MigrateError::db(None))?;

    let mut report = Report::default();
    for row in &applied {
        let version: i32 = row.get(0);
        let checksum: &str = row.get(1);
        match migrations.iter().find(|m| m.version == version) {
            None => {
                return Err(MigrateError {
                    kind: MigrateErrorKind::Unknown,
                    version: Some(version),
                    source: None,
                })
            }
            Some(m) if m.checksum() != checksum => {
                return Err(MigrateError {
                    kind: MigrateErrorKind::Modified,
                    version: Some(version),
                    source: None,
                })
            }
            Some(_) => report.already_applied.push(version),
        }
    }

    for m in migrations {
        if report.already_applied.contains(&m.version) {
            continue;
        }
        tx.batch_execute(m.sql)
            .await
            .map_err(MigrateError::db(Some(m.version)))?;
        // A migration may change the role (SET LOCAL ROLE); the bookkeeping row is written
        // as the runner's own role.
        tx.batch_execute("RESET ROLE")
            .await
            .map_err(MigrateError::db(Some(m.version)))?;
        tx.execute(
            "INSERT INTO tenantry_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &m.checksum()],
        )
        .await
        .map_err(MigrateError::db(Some(m.version)))?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
        report.applied.push(m.version);
    }
    tx.commit().await.map_err(MigrateError::db(None))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_in_strictly_increasing_order() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
    }

    #[test]
    fn every_migration_file_is_embedded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        assert_eq!(files.len(), MIGRATIONS.len(), "{files:?}");
        for (file, m) in files.iter().zip(MIGRATIONS) {
            assert_eq!(*file, format!("V{:04}__{}.sql", m.version, m.name));
            assert_eq!(
                std::fs::read_to_string(format!("{dir}/{file}")).unwrap(),
                m.sql
            );
        }
    }

    #[test]
    fn no_policy_uses_a_subquery_or_session_level_context() {
        for m in MIGRATIONS {
            let sql = m.sql.to_lowercase();
            assert!(!sql.contains("set app."), "session-level SET in {}", m.name);
            for policy in sql.split("create policy").skip(1) {
                let body = policy.split(';').next().unwrap_or_default();
                assert!(
                    !body.contains("select"),
                    "subquery in a policy of {}",
                    m.name
                );
                assert!(body.contains("using (") && body.contains("with check ("));
            }
        }
    }
}
