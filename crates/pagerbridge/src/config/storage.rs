//! The `storage:` section: which store `serve` opens, SQLite (the default) or PostgreSQL.
//!
//! The file's shape ([`StorageConfig`]) allows combinations that make no sense (a `url` for
//! SQLite, both `url` and `url_file`); [`StorageConfig::resolve`] turns it into a [`Storage`],
//! which can only hold one of the two meaningful ones. A PostgreSQL URL usually carries a
//! password, so it is a [`SecretUrl`] from the moment it is read: its `Debug` and `Display`
//! mask the password, so it cannot reach a log line or an error message by accident.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use serde::{Deserialize, Serialize};

/// The section as written in the file (and overridden by `PAGERBRIDGE_STORAGE__…`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub backend: Backend,
    /// Embedded SQLite database, created with its parent directories if missing. Relative
    /// paths (here and everywhere in the file) are relative to the working directory.
    /// SQLite only.
    pub path: PathBuf,
    /// `postgres://user:password@host:port/database`; PostgreSQL only.
    pub url: Option<SecretUrl>,
    /// A file holding that URL (trailing newline ignored), so the password can come from a
    /// secret mount instead of the config file; PostgreSQL only.
    pub url_file: Option<PathBuf>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Sqlite,
            path: PathBuf::from("data/pagerbridge.db"),
            url: None,
            url_file: None,
        }
    }
}

/// `storage.backend`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Sqlite,
    Postgres,
}

/// The store `serve` opens: the only two shapes a valid `storage:` section can take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    Sqlite { path: PathBuf },
    Postgres { url: SecretUrl },
}

impl fmt::Display for Storage {
    /// For logs and `check-config`: the backend and where it is, the password masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Storage::Sqlite { path } => write!(f, "{} (SQLite)", path.display()),
            Storage::Postgres { url } => write!(f, "{url} (PostgreSQL)"),
        }
    }
}

impl StorageConfig {
    /// The store this section selects; reads `url_file` when it is set.
    pub fn resolve(&self) -> anyhow::Result<Storage> {
        match self.backend {
            Backend::Sqlite => {
                ensure!(
                    self.url.is_none() && self.url_file.is_none(),
                    "storage.url and storage.url_file are for backend postgres; backend is sqlite (set storage.backend: postgres, or remove them)"
                );
                ensure!(
                    !self.path.as_os_str().is_empty(),
                    "storage.path must not be empty"
                );
                Ok(Storage::Sqlite {
                    path: self.path.clone(),
                })
            }
            Backend::Postgres => {
                let url = match (&self.url, &self.url_file) {
                    (Some(url), None) => url.clone(),
                    (None, Some(file)) => read_url_file(file)?,
                    (Some(_), Some(_)) => {
                        bail!("storage.url and storage.url_file are both set; set only one")
                    }
                    (None, None) => bail!(
                        "storage.backend is postgres but neither storage.url nor storage.url_file is set"
                    ),
                };
                Ok(Storage::Postgres { url })
            }
        }
    }
}

fn read_url_file(path: &Path) -> anyhow::Result<SecretUrl> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("storage.url_file: cannot read {}", path.display()))?;
    SecretUrl::parse(text.trim_end_matches(['\n', '\r']))
        .with_context(|| format!("storage.url_file {}", path.display()))
}

/// A `postgres://` URL whose password never shows: `Debug` and `Display` print `***` in its
/// place. [`SecretUrl::expose`] gives the whole URL to the database driver, and serialization
/// does too, because figment layers the environment over the file through it (nothing else
/// serializes the configuration).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(url::Url);

impl SecretUrl {
    /// Accepts `postgres://` and `postgresql://` URLs with a host. Errors never quote the
    /// input, which may hold the password.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        // url's own errors say what is wrong without repeating the input.
        let url = url::Url::parse(text).map_err(|e| anyhow::anyhow!("not a URL: {e}"))?;
        ensure!(
            matches!(url.scheme(), "postgres" | "postgresql"),
            "the scheme must be postgres:// or postgresql://, not {}://",
            url.scheme()
        );
        ensure!(url.has_host(), "the URL names no host");
        Ok(Self(url))
    }

    /// The URL with its password, for the database driver only.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// The URL with the password (if any) replaced by `***`.
    pub fn masked(&self) -> String {
        let mut url = self.0.clone();
        if url.password().is_some() {
            // Cannot fail: a URL with a password has a host.
            let _ = url.set_password(Some("***"));
        }
        url.to_string()
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.masked())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        SecretUrl::parse(&text).map_err(|e| serde::de::Error::custom(format!("storage.url: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "postgres://pagerbridge:s3cret-pw@db.example.com:5432/pagerbridge";

    fn postgres(url: Option<&str>, url_file: Option<PathBuf>) -> StorageConfig {
        StorageConfig {
            backend: Backend::Postgres,
            url: url.map(|u| SecretUrl::parse(u).expect("valid url")),
            url_file,
            ..StorageConfig::default()
        }
    }

    fn error(config: &StorageConfig) -> String {
        format!("{:#}", config.resolve().expect_err("should be refused"))
    }

    #[test]
    fn sqlite_is_the_default() {
        assert_eq!(
            StorageConfig::default().resolve().expect("valid"),
            Storage::Sqlite {
                path: PathBuf::from("data/pagerbridge.db")
            }
        );
    }

    #[test]
    fn the_password_never_shows() {
        let url = SecretUrl::parse(URL).expect("valid");
        let storage = postgres(Some(URL), None).resolve().expect("valid");
        let shown = format!("{url} {url:?} {storage} {storage:?} {storage:#?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(
            shown.contains("postgres://pagerbridge:***@db.example.com:5432/pagerbridge"),
            "{shown}"
        );
        assert_eq!(url.expose(), URL);
    }

    #[test]
    fn url_file_is_read_without_its_trailing_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("url");
        std::fs::write(&file, format!("{URL}\n")).expect("write");
        let storage = postgres(None, Some(file)).resolve().expect("valid");
        let Storage::Postgres { url } = storage else {
            panic!("postgres expected, got {storage:?}");
        };
        assert_eq!(url.expose(), URL);
    }

    #[test]
    fn nonsense_combinations_are_refused_clearly() {
        let sqlite_with_url = StorageConfig {
            url: Some(SecretUrl::parse(URL).expect("valid")),
            ..StorageConfig::default()
        };
        assert!(error(&sqlite_with_url).contains("backend is sqlite"));
        let both = postgres(Some(URL), Some(PathBuf::from("/x")));
        assert!(error(&both).contains("both set"));
        assert!(error(&postgres(None, None)).contains("neither storage.url nor"));
        let missing = postgres(None, Some(PathBuf::from("/nonexistent/pagerbridge-url")));
        let message = error(&missing);
        assert!(
            message.contains("cannot read /nonexistent/pagerbridge-url"),
            "{message}"
        );
    }

    #[test]
    fn only_postgres_urls_are_accepted_and_errors_do_not_quote_them() {
        for (text, expected) in [
            ("mysql://u:s3cret-pw@db/x", "postgres:// or postgresql://"),
            ("s3cret-pw", "not a URL"),
            ("postgres:s3cret-pw", "no host"),
        ] {
            let message = format!("{:#}", SecretUrl::parse(text).expect_err(text));
            assert!(message.contains(expected), "{text}: {message}");
            assert!(!message.contains("s3cret-pw"), "{text}: {message}");
        }
        assert!(SecretUrl::parse("postgresql://db/x").is_ok());
    }
}
