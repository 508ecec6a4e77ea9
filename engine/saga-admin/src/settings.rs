//! Settings of the admin server.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize, Serializer};

/// Where and how the admin API listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Listen address (default `127.0.0.1:8080`). A non-loopback address needs a token.
    pub addr: SocketAddr,
    /// Bearer token every `/v1` route requires (env `SAGAS_ADMIN_TOKEN`). Without one the
    /// API is read-only and loopback-only.
    pub token: Option<AdminToken>,
    /// A file holding the token (first line), instead of `token`.
    pub token_file: Option<PathBuf>,
    /// Sagas per page when the request names no `limit` (default 50).
    pub page_size: u32,
    /// The largest `limit` a request may ask for; larger ones are capped (default 500).
    pub max_page_size: u32,
    /// Largest request body in bytes (default 64 KiB).
    pub body_limit: usize,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            token_file: None,
            page_size: 50,
            max_page_size: 500,
            body_limit: 64 * 1024,
        }
    }
}

impl AdminSettings {
    /// The token in force: `token`, else the first line of `token_file`.
    pub fn resolve_token(&self) -> Result<Option<AdminToken>, String> {
        if let Some(token) = &self.token {
            return Ok(Some(token.clone()));
        }
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("admin.token_file {}: {error}", path.display()))?;
        let token = text.lines().next().unwrap_or_default().trim();
        if token.is_empty() {
            return Err(format!("admin.token_file {} is empty", path.display()));
        }
        Ok(Some(AdminToken::new(token)))
    }
}

/// A bearer token: never printed, compared in constant time.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct AdminToken(String);

impl AdminToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        AdminToken(token.into())
    }

    /// The token itself, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<hidden>)")
    }
}

impl Serialize for AdminToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<hidden>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_prints() {
        let settings = AdminSettings {
            token: Some(AdminToken::new("s3cret")),
            ..AdminSettings::default()
        };
        assert!(!format!("{settings:?}").contains("s3cret"));
        assert!(!serde_json::to_string(&settings).unwrap().contains("s3cret"));
        assert_eq!(
            settings.resolve_token().unwrap().unwrap().expose(),
            "s3cret"
        );
    }

    #[test]
    fn a_token_file_gives_its_first_line() {
        let path = std::env::temp_dir().join(format!("admin-token-{}", std::process::id()));
        std::fs::write(&path, "  from-file \nignored\n").unwrap();
        let settings = AdminSettings {
            token_file: Some(path.clone()),
            ..AdminSettings::default()
        };
        assert_eq!(
            settings.resolve_token().unwrap().unwrap().expose(),
            "from-file"
        );
        std::fs::write(&path, "\n").unwrap();
        assert!(settings.resolve_token().unwrap_err().contains("is empty"));
        std::fs::remove_file(&path).unwrap();
        assert!(settings.resolve_token().is_err());
    }
}
