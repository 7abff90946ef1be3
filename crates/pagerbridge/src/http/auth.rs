//! Bearer-token checks. Tokens come from files (one per line), never from the command line.

use std::path::Path;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// A set of accepted bearer tokens. `Debug` does not show them.
pub struct Tokens(Vec<String>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    /// Reads one token per line; blank lines and `#` comments are ignored.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read token file {}", path.display()))?;
        let tokens: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        anyhow::ensure!(
            !tokens.is_empty(),
            "token file {} holds no token",
            path.display()
        );
        Ok(Self(tokens))
    }

    pub fn new(tokens: Vec<String>) -> Self {
        Self(tokens)
    }

    /// Compares in time independent of where a wrong token differs.
    pub fn accepts(&self, presented: &str) -> bool {
        self.0.iter().fold(false, |found, token| {
            found | constant_time_eq(token, presented)
        })
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the request's bearer token; `what` names the API in the error ("this endpoint",
/// "the admin API").
pub(super) fn check_bearer(tokens: &Tokens, request: &Request, what: &str) -> Result<(), ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if tokens.accepts(token) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("the bearer token for {what} is not valid"),
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("{what} needs an `Authorization: Bearer <token>` header"),
        )),
    }
}

pub(super) async fn require_ingest_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(tokens) = &state.ingest_tokens
        && let Err(error) = check_bearer(tokens, &request, "this endpoint")
    {
        return error.into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_tokens() {
        let tokens = Tokens::new(vec!["alpha".into(), "beta".into()]);
        assert!(tokens.accepts("alpha"));
        assert!(tokens.accepts("beta"));
        assert!(!tokens.accepts("alph"));
        assert!(!tokens.accepts(""));
        assert!(!format!("{tokens:?}").contains("alpha"));
    }
}
