//! Who may call `/v1`: with a token configured, every request must carry it as
//! `Authorization: Bearer <token>`; without one, the API only reads (mutations are `403`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::problem::ApiError;
use crate::settings::AdminToken;

/// The token in force, if any.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    token: Option<Arc<AdminToken>>,
}

impl Auth {
    /// Requires `token` when given.
    pub fn new(token: Option<AdminToken>) -> Self {
        Auth {
            token: token.map(Arc::new),
        }
    }

    /// What to do with a request of `method` carrying `authorization` (pure).
    pub fn check(&self, method: &Method, authorization: Option<&str>) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return if method == Method::GET || method == Method::HEAD {
                Ok(())
            } else {
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "the admin API is read-only when no token is configured \
                     (set SAGAS_ADMIN_TOKEN or admin.token_file)",
                ))
            };
        };
        let presented = authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            Some(presented)
                if bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes())) =>
            {
                Ok(())
            }
            Some(_) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "wrong bearer token",
            )),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this route needs `Authorization: Bearer <token>`",
            )),
        }
    }
}

/// Middleware: lets a request through or answers `401`/`403`.
pub async fn require(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth.check(request.method(), authorization) {
        Ok(()) => next.run(request).await,
        Err(error) => {
            let unauthorized = error.status() == StatusCode::UNAUTHORIZED;
            let mut response = error.into_response();
            if unauthorized {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_reads_pass_and_mutations_are_forbidden() {
        let auth = Auth::new(None);
        assert!(auth.check(&Method::GET, None).is_ok());
        let error = auth.check(&Method::POST, Some("Bearer x")).unwrap_err();
        assert_eq!(error.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn with_a_token_every_request_must_carry_it() {
        let auth = Auth::new(Some(AdminToken::new("s3cret")));
        assert!(auth.check(&Method::GET, Some("Bearer s3cret")).is_ok());
        assert!(auth.check(&Method::POST, Some("Bearer s3cret")).is_ok());
        for presented in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("s3cret"),
        ] {
            let error = auth.check(&Method::GET, presented).unwrap_err();
            assert_eq!(error.status(), StatusCode::UNAUTHORIZED, "{presented:?}");
        }
    }
}
