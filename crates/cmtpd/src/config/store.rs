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

/// `url` as `cmtpd config check` prints it: the password of a `scheme://user:password@…`
/// URL, or of a `password=…` keyword, replaced by `****`, so printing the effective
/// configuration (into a terminal log, a support ticket) does not leak the database's
/// credentials.
pub fn redacted_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        // The user info ends at the last `@` before the host (a password may hold `@`
        // only percent-encoded, but be safe either way).
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            return format!("{scheme}://{}:****{}", &rest[..colon], &rest[at..]);
        }
        return url.to_owned();
    }
    // libpq keyword form: `host=db user=cmtp password=secret`.
    url.split(' ')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=****"),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::redacted_url;

    #[test]
    fn passwords_are_redacted_and_nothing_else() {
        assert_eq!(
            redacted_url("postgres://cmtp:s3cret@db:5432/cmtp"),
            "postgres://cmtp:****@db:5432/cmtp"
        );
        assert_eq!(
            redacted_url("postgres://cmtp:p@ss@db/cmtp?sslmode=require"),
            "postgres://cmtp:****@db/cmtp?sslmode=require"
        );
        assert_eq!(
            redacted_url("postgres://cmtp@db:5432/cmtp"),
            "postgres://cmtp@db:5432/cmtp"
        );
        assert_eq!(
            redacted_url("host=db user=cmtp password=s3cret dbname=cmtp"),
            "host=db user=cmtp password=**** dbname=cmtp"
        );
        assert_eq!(redacted_url("host=db user=cmtp"), "host=db user=cmtp");
    }
}
