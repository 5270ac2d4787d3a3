//! Databases for tests: a fresh SQLite file in a temporary directory, or a
//! fresh PostgreSQL database on the server `CSP_TEST_POSTGRES_URL` names.
//! Every storage contract suite and the whole-system tests run on both: CI
//! runs the test command once without the variable and once with it. With
//! the variable set, a server that does not answer fails the test; nothing
//! is skipped.

use uuid::Uuid;

use crate::db::{self, Db, Migrations};

/// The variable naming the PostgreSQL server tests use.
pub const POSTGRES_ENV: &str = "CSP_TEST_POSTGRES_URL";

/// A fresh database for one test. Drop it with [`TestDb::remove`].
pub struct TestDb {
    /// The database.
    pub db: Db,
    /// Its URL, to open it again (a second replica, a restart).
    pub url: String,
    place: Place,
}

enum Place {
    Sqlite(std::path::PathBuf),
    Postgres { server_url: String, name: String },
}

impl TestDb {
    /// A new, empty database.
    ///
    /// # Panics
    ///
    /// When the database cannot be created: a test without its database
    /// must fail, not pass.
    pub async fn new() -> TestDb {
        let (place, url) = match std::env::var(POSTGRES_ENV) {
            Ok(server) if !server.is_empty() => {
                let name = format!("t{}_store", Uuid::new_v4().simple());
                let url = db::ensure_postgres_database(&server, &name)
                    .await
                    .unwrap_or_else(|error| panic!("cannot create a test database: {error:#}"));
                (
                    Place::Postgres {
                        server_url: server,
                        name,
                    },
                    url,
                )
            }
            _ => {
                let dir =
                    std::env::temp_dir().join(format!("csp-test-{}", Uuid::new_v4().simple()));
                let url = format!("sqlite://{}", dir.join("test.db").display());
                (Place::Sqlite(dir), url)
            }
        };
        let db = Db::connect(&url)
            .await
            .unwrap_or_else(|error| panic!("cannot open the test database: {error:#}"));
        TestDb { db, url, place }
    }

    /// A new database with `migrations` applied.
    ///
    /// # Panics
    ///
    /// When the database cannot be created or migrated.
    pub async fn migrated(migrations: &Migrations) -> TestDb {
        let test = Self::new().await;
        test.db
            .migrate(migrations)
            .await
            .unwrap_or_else(|error| panic!("cannot migrate the test database: {error:#}"));
        test
    }

    /// Which backend this is, for assertion messages.
    pub fn backend(&self) -> &'static str {
        self.db.backend_name()
    }

    /// Closes and removes the database.
    pub async fn remove(self) {
        self.db.close().await;
        match self.place {
            Place::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Place::Postgres { server_url, name } => {
                if let Err(error) = db::drop_postgres_database(&server_url, &name).await {
                    eprintln!("cannot drop test database {name}: {error:#}");
                }
            }
        }
    }
}
