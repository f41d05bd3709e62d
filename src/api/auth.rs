//! Named bearer tokens with roles. FastNetMon's callback URL can only carry `user:password`, so
//! Basic auth is accepted too (user = token name, password = token), and its InfluxDB export
//! sends `?u=&p=`. Tokens are compared in constant time and never logged.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use base64::Engine;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;
use crate::config::{Role, Token};

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name; `anonymous` when no tokens are configured.
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// `admin` may do everything; `read` and `notify` only their own part.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role == Role::Admin || self.role == needed {
            Ok(())
        } else {
            Err(ApiError::forbidden(needed.as_str()))
        }
    }
}

#[derive(Clone)]
pub struct Tokens(Arc<Vec<Token>>);

impl Tokens {
    pub fn new(tokens: Vec<Token>) -> Self {
        Tokens(Arc::new(tokens))
    }

    pub fn is_open(&self) -> bool {
        self.0.is_empty()
    }

    /// Finds the token whose secret (and name, if given) matches. Every configured token is
    /// compared, whatever matched, so the time taken does not tell which one did.
    fn lookup(&self, name: Option<&str>, secret: &str) -> Option<&Token> {
        let mut found = None;
        for t in self.0.iter() {
            let secret_ok = t.token.as_bytes().ct_eq(secret.as_bytes());
            let name_ok = match name {
                Some(n) => t.name.as_bytes().ct_eq(n.as_bytes()),
                None => subtle::Choice::from(1),
            };
            if bool::from(secret_ok & name_ok) && found.is_none() {
                found = Some(t);
            }
        }
        found
    }

    /// Authenticates from the Authorization header, or (if allowed) the `u`/`p` query
    /// parameters of InfluxDB's API.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query_credentials: Option<(Option<&str>, &str)>,
    ) -> Result<Caller, ApiError> {
        if self.is_open() {
            return Ok(Caller {
                name: "anonymous".into(),
                role: Role::Admin,
            });
        }
        let found = match headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            Some(h) => {
                let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h, ""));
                if scheme.eq_ignore_ascii_case("bearer") {
                    self.lookup(None, rest.trim())
                } else if scheme.eq_ignore_ascii_case("basic") {
                    base64::engine::general_purpose::STANDARD
                        .decode(rest.trim())
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .and_then(|s| {
                            let (user, pass) = s.split_once(':')?;
                            self.lookup(Some(user), pass)
                        })
                } else {
                    None
                }
            }
            None => match query_credentials {
                Some((user, pass)) => self.lookup(user.filter(|u| !u.is_empty()), pass),
                None => None,
            },
        };
        match found {
            Some(t) => Ok(Caller {
                name: t.name.clone(),
                role: t.role,
            }),
            None => {
                tracing::debug!("request with missing or invalid credentials");
                Err(ApiError::unauthorized())
            }
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.tokens.authenticate(&parts.headers, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(vec![
            Token {
                name: "fastnetmon".into(),
                token: "notify-secret".into(),
                role: Role::Notify,
            },
            Token {
                name: "noc".into(),
                token: "admin-secret".into(),
                role: Role::Admin,
            },
        ])
    }

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            v.parse().expect("header value"),
        );
        h
    }

    #[test]
    fn bearer_token_names_the_caller() {
        let c = tokens()
            .authenticate(&headers("Bearer admin-secret"), None)
            .expect("valid");
        assert_eq!(c.name, "noc");
        assert_eq!(c.role, Role::Admin);
    }

    #[test]
    fn basic_auth_needs_name_and_token() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("fastnetmon:notify-secret");
        let c = tokens()
            .authenticate(&headers(&format!("Basic {b64}")), None)
            .expect("valid");
        assert_eq!(c.role, Role::Notify);
        let wrong = base64::engine::general_purpose::STANDARD.encode("noc:notify-secret");
        assert!(tokens()
            .authenticate(&headers(&format!("Basic {wrong}")), None)
            .is_err());
    }

    #[test]
    fn wrong_or_missing_credentials_are_401() {
        for h in ["Bearer nope", "Basic !!!", "Token admin-secret", "Bearer"] {
            let e = tokens().authenticate(&headers(h), None).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::UNAUTHORIZED, "{h}");
        }
        assert!(tokens().authenticate(&HeaderMap::new(), None).is_err());
    }

    #[test]
    fn roles_limit_what_a_caller_may_do() {
        let notify = Caller {
            name: "f".into(),
            role: Role::Notify,
        };
        assert!(notify.require(Role::Notify).is_ok());
        assert_eq!(
            notify.require(Role::Read).unwrap_err().status,
            axum::http::StatusCode::FORBIDDEN
        );
        let admin = Caller {
            name: "a".into(),
            role: Role::Admin,
        };
        assert!(admin.require(Role::Read).is_ok() && admin.require(Role::Notify).is_ok());
    }

    #[test]
    fn query_credentials_for_influxdb() {
        let c = tokens()
            .authenticate(&HeaderMap::new(), Some((None, "notify-secret")))
            .expect("valid");
        assert_eq!(c.name, "fastnetmon");
    }
}
