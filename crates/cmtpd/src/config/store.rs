//! `[store]`: which storage backend the server uses.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The environment variable that gives the PostgreSQL URL (wins over `[store] url`, so
/// a password need not be written into the configuration file).
pub const DATABASE_URL_ENV: &str = "CMTPD_DATABASE_URL";

/// Which backend stores users, mail and peer keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// The embedded store in the data directory (one node).
    #[default]
    Embedded,
    /// A PostgreSQL database shared by several nodes (docs/storage.md, "PostgreSQL
    /// backend"); the data directory then holds only the server key.
    Postgres,
}

/// `[store]` settings (read at start; a change needs a restart).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// `embedded` (default) or `postgres`.
    pub backend: StoreBackend,
    /// `postgres://user@host:port/database` for the postgres backend; the environment
    /// variable `CMTPD_DATABASE_URL` wins over it.
    pub url: Option<String>,
}

impl Store {
    /// The database URL: `$CMTPD_DATABASE_URL`, else `url`.
    pub fn database_url(&self) -> Option<String> {
        std::env::var(DATABASE_URL_ENV)
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| self.url.clone())
    }

    /// The postgres backend needs a URL.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.backend == StoreBackend::Postgres && self.database_url().is_none() {
            return Err(ConfigError::Invalid(format!(
                "[store] backend = \"postgres\" needs a database: set [store] url or {DATABASE_URL_ENV}"
            )));
        }
        Ok(())
    }
}
