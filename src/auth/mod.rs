//! Authorization (PROTOCOL.md §2): API keys, signed URLs, and the middleware that checks them.
//!
//! - [`ApiKey`] / [`KeySet`]: the secret keys; several are valid at once for rotation, the
//!   first one signs.
//! - [`signature`] / [`Signer`]: `base64url_nopad(HMAC-SHA256(key, "<path>?expiry=<e>&method=<m>"))`.
//! - [`Verifier`]: checks `Authorization: Bearer <key>` or a signed URL, purely (the clock is
//!   a parameter), answering the errors of the protocol (`token_missing`, `token_invalid`,
//!   `signature_invalid`, `signature_expired`) without revealing which key exists or which
//!   step failed.
//! - [`SignatureLayer`] / [`Signature`]: a tower middleware applying an [`AuthPolicy`] in front
//!   of any service.
//!
//! A signature designates exactly one stored path: the signed path string, percent-decoded
//! once. A request's path is checked as sent and, failing that, as decoded only when the
//! decoded form has no `%XX` escape left, so that `a/cat%2520one.png` cannot borrow the
//! signature of `a/cat%20one.png` (the file `a/cat one.png`). URLs from [`Signer`] and ittybit
//! SDK URLs (plain `folder/filename` signed, sent percent-encoded) verify as before; see
//! [`Verifier::verify`] for the rule and the reading of PROTOCOL.md §2 it settles.
//!
//! ```
//! use http::Method;
//! use tower_uploads::auth::{
//!     ApiKey, KeySet, SignedMethod, Signer, Verifier, VerifyInput, Via,
//! };
//! use tower_uploads::error::ErrorKind;
//! use tower_uploads::path::FilePath;
//!
//! let keys = KeySet::new([ApiKey::new("new-key"), ApiKey::new("old-key")]);
//! let signer = Signer::new(keys.primary().clone(), "https://uploads.example.com");
//! let path = FilePath::new("photos/cat one.png").unwrap();
//! let signed = signer.sign(&path, SignedMethod::Put, 1_900_000_000);
//! assert!(signed.url.starts_with(
//!     "https://uploads.example.com/photos/cat%20one.png?expiry=1900000000&method=put&signature="
//! ));
//!
//! // The server side: split the URL the client sends back, then verify it.
//! let uri: http::Uri = signed.url.parse().unwrap();
//! let verifier = Verifier::new(keys);
//! let input = VerifyInput {
//!     method: &Method::PUT,
//!     raw_path: uri.path(),
//!     query: uri.query(),
//!     authorization: None,
//!     bearer_only: false,
//! };
//! let verified = verifier.verify(&input, 1_800_000_000).unwrap();
//! assert_eq!(verified.via, Via::SignedUrl);
//! assert_eq!(verified.path, Some(path));
//!
//! // Too late, or for another method:
//! let err = verifier.verify(&input, 1_900_000_001).unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::SignatureExpired);
//! let get = VerifyInput { method: &Method::GET, ..input };
//! assert_eq!(
//!     verifier.verify(&get, 1_800_000_000).unwrap_err().kind(),
//!     ErrorKind::SignatureInvalid
//! );
//! ```

mod keys;
mod layer;
mod signer;
mod verify;

pub use crate::response::ResponseFuture;
pub(crate) use keys::keyed_mac as keyed_hmac;
pub use keys::{ApiKey, KeySet};
pub(crate) use layer::has_body;

/// Now, in seconds since the Unix epoch: the clock of every expiry (signed URLs, grants,
/// upload-session keys).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
pub use layer::{AuthPolicy, Signature, SignatureLayer};
pub use signer::{SignedMethod, SignedUrl, Signer, signature};
pub use verify::{Verified, Verifier, VerifyInput, Via};
