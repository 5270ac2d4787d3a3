//! API errors and their one mapping to `tonic::Status`, with google.rpc
//! details (BadRequest field violations, PreconditionFailure, ErrorInfo,
//! ResourceInfo) so a client can act on them.
//!
//! Services turn their domain errors into [`ApiError`]; handlers return
//! `Result<_, Status>` through `?` and this `From` impl. Unexpected errors
//! ([`ApiError::Internal`]) are logged here, once, with their cause chain;
//! the caller sees only a generic message.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// The reverse-DNS domain of our ErrorInfo details.
const ERROR_DOMAIN: &str = "csp";

/// A bad field of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path, for example `lines[2].quantity`.
    pub field: String,
    /// What is wrong and what would be right.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// What can go wrong in a public or internal RPC.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// One or more fields are invalid (INVALID_ARGUMENT).
    #[error("{}", describe_violations(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// A resource does not exist, or belongs to another partner (NOT_FOUND).
    #[error("{resource_type} {} was not found", quoted(.name))]
    NotFound {
        /// For example `product`.
        resource_type: &'static str,
        /// The id asked for.
        name: String,
    },
    /// A resource with the same identity exists (ALREADY_EXISTS).
    #[error("{message}")]
    AlreadyExists {
        /// For example `customer`.
        resource_type: &'static str,
        /// The clashing id.
        name: String,
        /// A sentence for a person.
        message: String,
    },
    /// The system is not in a state where the call can succeed
    /// (FAILED_PRECONDITION).
    #[error("{message}")]
    FailedPrecondition {
        /// A machine-readable reason, for example `AZURE_RESERVATIONS_UNAVAILABLE`.
        reason: &'static str,
        /// What the precondition is about, for example `market/BR`.
        subject: String,
        /// A sentence for a person.
        message: String,
    },
    /// The caller may not do this (PERMISSION_DENIED).
    #[error("{0}")]
    PermissionDenied(String),
    /// The call would take the caller past a quota (RESOURCE_EXHAUSTED, with
    /// a google.rpc `QuotaFailure`).
    #[error("{message}")]
    QuotaExceeded {
        /// What the quota is about, for example `partner/<id>/attachment-bytes`.
        subject: String,
        /// A sentence for a person.
        message: String,
    },
    /// A service this one depends on cannot be reached (UNAVAILABLE); the
    /// caller may retry.
    #[error("{0}")]
    Unavailable(String),
    /// Something unexpected broke (INTERNAL); logged, not shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// A result of an RPC's work.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// INVALID_ARGUMENT for one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        ApiError::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// NOT_FOUND.
    pub fn not_found(resource_type: &'static str, name: impl Into<String>) -> Self {
        ApiError::NotFound {
            resource_type,
            name: name.into(),
        }
    }

    /// FAILED_PRECONDITION.
    pub fn failed_precondition(
        reason: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ApiError::FailedPrecondition {
            reason,
            subject: subject.into(),
            message: message.into(),
        }
    }
}

/// Collects the field violations of a request, so one INVALID_ARGUMENT
/// names every bad field at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// None yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps a field's value, or its violations (another error becomes a
    /// violation of `request`).
    pub fn check<T>(&mut self, result: ApiResult<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(ApiError::InvalidArgument(violations)) => {
                self.0.extend(violations);
                None
            }
            Err(other) => {
                self.0
                    .push(FieldViolation::new("request", other.to_string()));
                None
            }
        }
    }

    /// Adds a violation of `field`.
    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// The INVALID_ARGUMENT naming every violation collected.
    pub fn into_error(self) -> ApiError {
        ApiError::InvalidArgument(self.0)
    }
}

/// The longest caller value a message repeats whole.
const MAX_QUOTED: usize = 64;

/// A caller's value for a message: quoted, and cut short when long, so an
/// error never repeats a large value back (its size stays bounded).
pub fn quoted(value: &str) -> String {
    if value.chars().count() <= MAX_QUOTED {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(MAX_QUOTED / 2).collect();
    format!("{head:?}… ({} bytes)", value.len())
}

/// A caller's value for a machine-readable detail: cut short when long.
pub fn shortened(value: &str) -> String {
    if value.chars().count() <= MAX_QUOTED {
        return value.to_owned();
    }
    let head: String = value.chars().take(MAX_QUOTED / 2).collect();
    format!("{head}…")
}

fn describe_violations(violations: &[FieldViolation]) -> String {
    let parts: Vec<String> = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect();
    format!("invalid request: {}", parts.join("; "))
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        let message = error.to_string();
        match error {
            ApiError::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_bad_request_violation(v.field, v.description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::NotFound {
                resource_type,
                name,
            } => Status::with_error_details(
                Code::NotFound,
                message,
                ErrorDetails::with_resource_info(resource_type, shortened(&name), "", "not found"),
            ),
            ApiError::AlreadyExists {
                resource_type,
                name,
                ..
            } => Status::with_error_details(
                Code::AlreadyExists,
                message,
                ErrorDetails::with_resource_info(
                    resource_type,
                    shortened(&name),
                    "",
                    "already exists",
                ),
            ),
            ApiError::FailedPrecondition {
                reason,
                subject,
                message,
            } => {
                let mut details = ErrorDetails::with_precondition_failure_violation(
                    reason,
                    subject,
                    message.clone(),
                );
                details.set_error_info(reason, ERROR_DOMAIN, []);
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            ApiError::PermissionDenied(message) => Status::permission_denied(message),
            ApiError::QuotaExceeded { subject, message } => Status::with_error_details(
                Code::ResourceExhausted,
                message.clone(),
                ErrorDetails::with_quota_failure_violation(subject, message),
            ),
            ApiError::Unavailable(message) => Status::unavailable(message),
            ApiError::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "internal error");
                Status::internal("internal error; the service logged the cause")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_every_field() {
        let status: Status = ApiError::InvalidArgument(vec![
            FieldViolation::new("market", "unknown market \"XX\""),
            FieldViolation::new("page_size", "must not be negative"),
        ])
        .into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .map(|b| {
                b.field_violations
                    .iter()
                    .map(|v| v.field.as_str())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(fields, ["market", "page_size"]);
        assert!(status.message().contains("market: unknown market"));
    }

    #[test]
    fn long_values_are_never_repeated_whole() {
        let long = "p".repeat(8192);
        let status: Status = ApiError::not_found("product", long.as_str()).into();
        assert!(status.message().len() < 120, "{}", status.message());
        assert!(status.message().contains("8192 bytes"));
        let details = status.get_error_details();
        assert!(details.resource_info().unwrap().resource_name.len() < 80);
        assert_eq!(quoted("US"), "\"US\"");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status: Status = ApiError::Internal(anyhow::anyhow!("password=hunter2")).into();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }

    #[test]
    fn failed_precondition_carries_reason_and_subject() {
        let status: Status = ApiError::failed_precondition(
            "AZURE_RESERVATIONS_UNAVAILABLE",
            "market/BR",
            "not in BR",
        )
        .into();
        assert_eq!(status.code(), Code::FailedPrecondition);
        let details = status.get_error_details();
        let violation = &details.precondition_failure().unwrap().violations[0];
        assert_eq!(violation.subject, "market/BR");
        assert_eq!(
            details.error_info().unwrap().reason,
            "AZURE_RESERVATIONS_UNAVAILABLE"
        );
    }

    #[test]
    fn quota_exceeded_is_resource_exhausted_with_a_quota_failure() {
        let status: Status = ApiError::QuotaExceeded {
            subject: "partner/p1/attachment-bytes".to_owned(),
            message: "past the quota".to_owned(),
        }
        .into();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "past the quota");
        let details = status.get_error_details();
        let violation = &details.quota_failure().unwrap().violations[0];
        assert_eq!(violation.subject, "partner/p1/attachment-bytes");
        assert_eq!(violation.description, "past the quota");
    }
}
