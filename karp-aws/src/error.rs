//! Typed errors of the AWS calls, and the classification of EC2 error codes that the provider
//! branches on (never on message text).

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_smithy_types::error::display::DisplayErrorContext;
use karp_core::cloud::CloudError;

/// What an EC2 / SSM / SQS error code means to karp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The resource does not exist (`InvalidInstanceID.NotFound`, `ParameterNotFound`, ...).
    NotFound,
    /// No capacity for the offering (`InsufficientInstanceCapacity`, `MaxSpotInstanceCountExceeded`,
    /// `UnfulfillableCapacity`, ...): cache the offering as unavailable.
    InsufficientCapacity,
    /// Rate limited (`RequestLimitExceeded`, `Throttling`): retry with back-off.
    Throttled,
    /// Credentials or permissions (`UnauthorizedOperation`, `AuthFailure`, ...).
    Unauthorized,
    /// A launch-template name that already exists (a concurrent creator won).
    AlreadyExists,
    /// Anything else.
    Other,
}

/// Classifies an AWS error code.
#[must_use]
pub fn classify(code: &str) -> ErrorKind {
    match code {
        "InsufficientInstanceCapacity"
        | "InsufficientCapacity"
        | "InsufficientHostCapacity"
        | "InsufficientReservedInstanceCapacity"
        | "ReservationCapacityExceeded"
        | "MaxSpotInstanceCountExceeded"
        | "SpotMaxPriceTooLow"
        | "UnfulfillableCapacity"
        | "Unsupported"
        | "VcpuLimitExceeded"
        | "InsufficientFreeAddressesInSubnet" => ErrorKind::InsufficientCapacity,
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "TooManyRequests" => {
            ErrorKind::Throttled
        }
        "UnauthorizedOperation" | "AuthFailure" | "AccessDenied" | "AccessDeniedException" => {
            ErrorKind::Unauthorized
        }
        "InvalidLaunchTemplateName.AlreadyExistsException" | "EntityAlreadyExists" => {
            ErrorKind::AlreadyExists
        }
        c if c.ends_with(".NotFound")
            || c.ends_with("NotFoundException")
            || c == "ParameterNotFound"
            || c == "NoSuchEntity"
            || c == "InvalidPlacementGroup.Unknown"
            || c == "InvalidInstanceID.Malformed" =>
        {
            ErrorKind::NotFound
        }
        _ => ErrorKind::Other,
    }
}

/// Whether an InsufficientCapacity-kind code is about the account rather than one offering
/// (then every offering of that capacity type fails alike: Karpenter caches them all).
#[must_use]
pub fn is_account_wide(code: &str) -> bool {
    matches!(code, "MaxSpotInstanceCountExceeded" | "VcpuLimitExceeded")
}

/// A failed AWS call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{operation} failed{}: {message}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
pub struct AwsError {
    /// The API operation (`CreateFleet`, `DescribeSubnets`, ...).
    pub operation: &'static str,
    /// The AWS error code, when the service returned one.
    pub code: Option<String>,
    /// The full error chain.
    pub message: String,
}

impl AwsError {
    /// Wraps an SDK error of `operation`.
    pub fn from_sdk<E>(operation: &'static str, err: &E) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error,
    {
        AwsError {
            operation,
            code: err.code().map(str::to_string),
            message: DisplayErrorContext(err).to_string(),
        }
    }

    /// An error karp raises about a response (missing field, nothing matched, ...).
    #[must_use]
    pub fn invalid_response(operation: &'static str, message: impl Into<String>) -> Self {
        AwsError {
            operation,
            code: None,
            message: message.into(),
        }
    }

    /// What the error code means.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.code.as_deref().map_or(ErrorKind::Other, classify)
    }

    /// The core's error for this failure.
    #[must_use]
    pub fn into_cloud_error(self) -> CloudError {
        let retryable = matches!(self.kind(), ErrorKind::Throttled)
            || self.code.is_none()
            || self
                .code
                .as_deref()
                .is_some_and(|c| c.starts_with("Internal") || c == "ServiceUnavailable");
        CloudError::Api {
            operation: self.operation.to_string(),
            message: self.to_string(),
            retryable,
        }
    }
}

impl From<AwsError> for CloudError {
    fn from(e: AwsError) -> Self {
        e.into_cloud_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        assert_eq!(
            classify("InsufficientInstanceCapacity"),
            ErrorKind::InsufficientCapacity
        );
        assert_eq!(classify("InvalidInstanceID.NotFound"), ErrorKind::NotFound);
        assert_eq!(classify("ParameterNotFound"), ErrorKind::NotFound);
        assert_eq!(classify("RequestLimitExceeded"), ErrorKind::Throttled);
        assert_eq!(classify("UnauthorizedOperation"), ErrorKind::Unauthorized);
        assert_eq!(
            classify("InvalidLaunchTemplateName.AlreadyExistsException"),
            ErrorKind::AlreadyExists
        );
        assert_eq!(classify("InvalidParameterValue"), ErrorKind::Other);
        assert!(is_account_wide("MaxSpotInstanceCountExceeded"));
        assert!(!is_account_wide("InsufficientInstanceCapacity"));
    }

    #[test]
    fn error_names_operation_and_code() {
        let e = AwsError {
            operation: "CreateFleet",
            code: Some("RequestLimitExceeded".into()),
            message: "slow down".into(),
        };
        assert_eq!(
            e.to_string(),
            "CreateFleet failed (RequestLimitExceeded): slow down"
        );
        match e.into_cloud_error() {
            CloudError::Api {
                operation,
                retryable,
                ..
            } => {
                assert_eq!(operation, "CreateFleet");
                assert!(retryable);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
