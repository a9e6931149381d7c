//! One error type for everything a client can be told, mapped to one status code and one
//! machine-readable `kind` in one place ([`ApiError::status`], [`ErrorKind::as_str`]).
//!
//! Every failure of the upload service is a response, never a panic or a service error: the
//! service's error type is [`std::convert::Infallible`].

use http::StatusCode;
use std::borrow::Cow;

/// The machine-readable `kind` of an error response (PROTOCOL.md, "Status codes used").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 400: the path is empty, has an empty/`.`/`..` segment, a control character, …
    PathInvalid,
    /// 401: no credentials at all.
    TokenMissing,
    /// 401: a bearer key that is not in the key set.
    TokenInvalid,
    /// 403: a signature that does not verify, or is malformed.
    SignatureInvalid,
    /// 403: a signature whose expiry has passed.
    SignatureExpired,
    /// 403: a tampered upload-session key.
    KeyInvalid,
    /// 403: valid credentials (a [`Grant`](crate::Grant)) that do not cover this file or
    /// this method, or an endpoint that this stack does not offer to them.
    Forbidden,
    /// 404: nothing stored at that path.
    FileNotFound,
    /// 405: a method the endpoint does not accept.
    MethodNotAllowed,
    /// 409: a chunk whose total differs from the upload's established total.
    RangeConflict,
    /// 410: an upload session that was used or expired.
    UploadGone,
    /// 412: `If-None-Match: *` / `If-Match` did not hold.
    PreconditionFailed,
    /// 413: the body or the declared total is larger than a configured limit.
    FileTooLarge,
    /// 416 (or 400 for a chunk whose length does not match): a bad `Content-Range`.
    RangeInvalid,
    /// 416: a `Range` on a GET that the file cannot satisfy.
    RangeNotSatisfiable,
    /// 400: a `Content-Digest` that does not match the chunk.
    DigestMismatch,
    /// 422: the file does not meet the upload conditions.
    ConditionsFailed,
    /// 400: an invalid conditions document.
    ConditionsInvalid,
    /// 400: nested or otherwise invalid metadata.
    MetadataInvalid,
    /// 400: a missing or mismatched part in an upload-session assembly.
    PartInvalid,
    /// 400: a `/store/single` body that is not `multipart/form-data` with a file part.
    MultipartInvalid,
    /// 409: an upload session's `alias` is already a file's path.
    AliasTaken,
    /// 422 (or the status the app chose): the app's completion hook rejected the upload.
    UploadRejected,
    /// 400: a request body or query that cannot be parsed.
    BadRequest,
    /// 429: too many uploads in progress.
    TooManyUploads,
    /// 408: the request body stalled (no byte for the configured idle period).
    RequestTimeout,
    /// 500: a storage failure (the message names no internal path).
    InternalError,
    /// 507: the storage is full.
    InsufficientStorage,
}

impl From<crate::path::PathError> for ApiError {
    fn from(e: crate::path::PathError) -> Self {
        ApiError::new(ErrorKind::PathInvalid, e.to_string())
    }
}

impl ErrorKind {
    /// The `kind` string sent to clients.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::PathInvalid => "path_invalid",
            ErrorKind::TokenMissing => "token_missing",
            ErrorKind::TokenInvalid => "token_invalid",
            ErrorKind::SignatureInvalid => "signature_invalid",
            ErrorKind::SignatureExpired => "signature_expired",
            ErrorKind::KeyInvalid => "key_invalid",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::FileNotFound => "file_not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::RangeConflict => "range_conflict",
            ErrorKind::UploadGone => "upload_gone",
            ErrorKind::PreconditionFailed => "precondition_failed",
            ErrorKind::FileTooLarge => "file_too_large",
            ErrorKind::RangeInvalid => "range_invalid",
            ErrorKind::RangeNotSatisfiable => "range_not_satisfiable",
            ErrorKind::DigestMismatch => "digest_mismatch",
            ErrorKind::ConditionsFailed => "conditions_failed",
            ErrorKind::ConditionsInvalid => "conditions_invalid",
            ErrorKind::MetadataInvalid => "metadata_invalid",
            ErrorKind::PartInvalid => "part_invalid",
            ErrorKind::MultipartInvalid => "multipart_invalid",
            ErrorKind::AliasTaken => "alias_taken",
            ErrorKind::UploadRejected => "upload_rejected",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::TooManyUploads => "too_many_uploads",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::InternalError => "internal_error",
            ErrorKind::InsufficientStorage => "insufficient_storage",
        }
    }

    /// The status code this kind is answered with by default.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::PathInvalid
            | ErrorKind::DigestMismatch
            | ErrorKind::ConditionsInvalid
            | ErrorKind::MetadataInvalid
            | ErrorKind::PartInvalid
            | ErrorKind::MultipartInvalid
            | ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::TokenMissing | ErrorKind::TokenInvalid => StatusCode::UNAUTHORIZED,
            ErrorKind::SignatureInvalid
            | ErrorKind::SignatureExpired
            | ErrorKind::KeyInvalid
            | ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::FileNotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::RangeConflict | ErrorKind::AliasTaken => StatusCode::CONFLICT,
            ErrorKind::UploadGone => StatusCode::GONE,
            ErrorKind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ErrorKind::FileTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RangeInvalid | ErrorKind::RangeNotSatisfiable => {
                StatusCode::RANGE_NOT_SATISFIABLE
            }
            ErrorKind::ConditionsFailed | ErrorKind::UploadRejected => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ErrorKind::TooManyUploads => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answered to the client: a status, a `kind` and a human-readable message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ApiError {
    kind: ErrorKind,
    status: StatusCode,
    message: Cow<'static, str>,
}

impl ApiError {
    /// An error of `kind` with its default status.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError {
            kind,
            status: kind.status(),
            message: message.into(),
        }
    }

    /// The same error answered with another status (e.g. 400 for a chunk length mismatch).
    #[must_use]
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The machine-readable kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The status code of the response.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 500 `internal_error` for a storage failure. The cause is logged, never sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "storage failure");
        ApiError::new(
            ErrorKind::InternalError,
            "the storage failed; nothing was kept, the request can be retried",
        )
    }
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(e: crate::storage::StorageError) -> Self {
        use crate::storage::StorageError as E;
        match e {
            E::NotFound => ApiError::new(ErrorKind::FileNotFound, "no file at this path"),
            E::PreconditionFailed => ApiError::new(
                ErrorKind::PreconditionFailed,
                "the file at this path does not match the request's precondition",
            ),
            E::StorageFull => ApiError::new(
                ErrorKind::InsufficientStorage,
                "the storage is full; nothing was kept",
            ),
            E::NameTooLong => ApiError::new(
                ErrorKind::PathInvalid,
                "a path segment is too long for the storage",
            ),
            E::ReservedPath(why) => ApiError::new(ErrorKind::PathInvalid, why),
            other => ApiError::internal(&other),
        }
    }
}
