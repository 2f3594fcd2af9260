//! What can go wrong in the application layer, typed by what the caller should do about it.
//! The HTTP layer maps each kind to one status and error code (`http::error`).

use crate::auth::AuthzError;

/// An application error. The messages of the client kinds are shown to the caller as they are:
/// they name the field or the state at fault. `Internal` is logged, never shown.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed or a parameter out of range.
    #[error("{0}")]
    Invalid(String),
    /// Well-formed, but a value the API cannot accept (an unknown image, a bad key).
    #[error("{0}")]
    Unprocessable(String),
    /// No such resource, or one outside the caller's projects.
    #[error("{0}")]
    NotFound(String),
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// A name is taken, or the resource's state does not allow the change.
    #[error("{0}")]
    Conflict(String),
    /// Over a size limit.
    #[error("{0}")]
    TooLarge(String),
    /// Over one of the project's quotas (the message names it).
    #[error("{0}")]
    QuotaExceeded(String),
    /// No host can take the request now; the message says what each filter removed.
    #[error("{0}")]
    NoCapacity(String),
    /// A dependency cannot serve the request right now.
    #[error("{0}")]
    Unavailable(String),
    /// A failure of the server itself (the database, a file).
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AppError {
    /// An internal error from any error value.
    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(err))
    }
}

impl From<sqlx::Error> for AppError {
    fn from(err: sqlx::Error) -> Self {
        // A quota the database refused at commit (a concurrent request took the last room).
        match crate::quotas::from_database(&err) {
            Some(message) => Self::QuotaExceeded(message),
            None => Self::internal(err),
        }
    }
}

impl From<crate::quotas::QuotaExceeded> for AppError {
    fn from(err: crate::quotas::QuotaExceeded) -> Self {
        Self::QuotaExceeded(err.to_string())
    }
}

/// 403 for an operator endpoint or a role too low, not found for a project the caller is not in
/// (exactly as for one that does not exist), internal when the memberships cannot be read.
impl From<AuthzError> for AppError {
    fn from(err: AuthzError) -> Self {
        match err {
            AuthzError::NotOperator | AuthzError::RoleTooLow { .. } | AuthzError::LimitedToken => {
                Self::Forbidden(err.to_string())
            }
            AuthzError::NoSuchProject => Self::NotFound(err.to_string()),
            AuthzError::Store(source) => Self::internal(source),
        }
    }
}
