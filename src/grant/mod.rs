//! [`Grant`]: what a request may do, put in its extensions by whoever authorized it — the
//! crate's [`SignatureLayer`](crate::auth::SignatureLayer) (from an API key or a signed URL)
//! or the app's own middleware (from its session cookie, its JWT, …). The upload
//! [`Handler`](crate::Handler) authorizes every write, and every read of a private stack,
//! from it alone.
//!
//! ```
//! use tower_uploads::Grant;
//! use tower_uploads::path::FilePath;
//!
//! // The app's middleware, for a user it has logged in:
//! let grant = Grant::folder("files/alice").unwrap().read().write();
//! assert!(grant.permits_write(&FilePath::new("files/alice/cat.png").unwrap()));
//! assert!(!grant.permits_write(&FilePath::new("files/bob/cat.png").unwrap()));
//! assert!(!grant.permits_write(&FilePath::new("files/alice").unwrap()));
//! assert!(!grant.is_admin());
//! // A user name is not trusted to be a path:
//! assert!(Grant::folder("files/../etc").is_err());
//! ```

use crate::auth::{SignedMethod, Verified, Via};
use crate::path::{FilePath, PathError};

/// What one request may do: on which files (all, one, or one folder's), read and/or write,
/// whether it may use the API endpoints (`POST /signatures`, `POST /uploads`), and until when.
///
/// Put one in the request's extensions (`req.extensions_mut().insert(grant)`) in front of
/// the upload [`Handler`](crate::Handler); the [`SignatureLayer`](crate::auth::SignatureLayer)
/// lets a request that already carries one through unchecked. The handler answers
/// 401 `token_missing` to an upload (or a private delivery) without a grant, and
/// 403 `forbidden` when the grant does not cover the request; nothing is stored then.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Grant {
    scope: Scope,
    read: bool,
    write: bool,
    admin: bool,
    expires_at: Option<u64>,
}

/// Which files a [`Grant`] covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every file.
    All,
    /// One file.
    File(FilePath),
    /// The files under a folder (at any depth), not the folder's own path.
    Folder(FilePath),
}

impl Grant {
    /// What an API key may do: read and write every file, and use the API endpoints.
    pub fn api_key() -> Grant {
        Grant {
            scope: Scope::All,
            read: true,
            write: true,
            admin: true,
            expires_at: None,
        }
    }

    /// Nothing yet on every file: add [`read`](Self::read) and/or [`write`](Self::write).
    pub fn all_files() -> Grant {
        Grant::on(Scope::All)
    }

    /// Nothing yet on one file: add [`read`](Self::read) and/or [`write`](Self::write).
    pub fn file(path: FilePath) -> Grant {
        Grant::on(Scope::File(path))
    }

    /// Nothing yet on the files under `folder` (a path such as `files/alice`, validated
    /// like a file path: no empty, `.` or `..` segment): add [`read`](Self::read) and/or
    /// [`write`](Self::write).
    ///
    /// # Errors
    /// When `folder` is not a valid path.
    pub fn folder(folder: &str) -> Result<Grant, PathError> {
        Ok(Grant::on(Scope::Folder(FilePath::new(
            folder.trim_end_matches('/'),
        )?)))
    }

    fn on(scope: Scope) -> Grant {
        Grant {
            scope,
            read: false,
            write: false,
            admin: false,
            expires_at: None,
        }
    }

    /// Adds reading (`GET`/`HEAD`; they need a grant only when delivery is private).
    pub fn read(mut self) -> Grant {
        self.read = true;
        self
    }

    /// Adds writing (`PUT`: simple uploads, chunks and their status queries).
    pub fn write(mut self) -> Grant {
        self.write = true;
        self
    }

    /// The grant ends at `unix_secs` (seconds since the Unix epoch): a request that starts
    /// later is refused with 403 `signature_expired`.
    pub fn expires_at(mut self, unix_secs: u64) -> Grant {
        self.expires_at = Some(unix_secs);
        self
    }

    /// The files covered.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// When the grant ends (seconds since the Unix epoch), if it does.
    pub fn expiry(&self) -> Option<u64> {
        self.expires_at
    }

    /// Whether the grant may use `POST /signatures` and `POST /uploads` (only
    /// [`api_key`](Self::api_key) grants may).
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// Whether the grant covers `path`.
    pub fn covers(&self, path: &FilePath) -> bool {
        match &self.scope {
            Scope::All => true,
            Scope::File(file) => file == path,
            Scope::Folder(folder) => path
                .as_str()
                .strip_prefix(folder.as_str())
                .is_some_and(|rest| rest.starts_with('/')),
        }
    }

    /// Whether the grant may write `path` (expiry aside: see [`expired`](Self::expired)).
    pub fn permits_write(&self, path: &FilePath) -> bool {
        self.write && self.covers(path)
    }

    /// Whether the grant may read `path` (expiry aside).
    pub fn permits_read(&self, path: &FilePath) -> bool {
        self.read && self.covers(path)
    }

    /// Whether the grant had ended at `now` (seconds since the Unix epoch).
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|end| now > end)
    }
}

impl From<Verified> for Grant {
    /// An API key's grant, or a signed URL's: its one file, for its one method, until its
    /// expiry (a legacy URL without `method` writes). Anything else grants nothing.
    fn from(v: Verified) -> Grant {
        match (v.via, v.path) {
            (Via::Bearer, _) => Grant::api_key(),
            (Via::SignedUrl, Some(path)) => {
                let grant = Grant::file(path);
                let grant = match v.method {
                    Some(SignedMethod::Get) => grant.read(),
                    Some(SignedMethod::Put) | None => grant.write(),
                };
                match v.expiry {
                    Some(end) => grant.expires_at(end),
                    None => grant,
                }
            }
            // Nothing else is produced by the verifier; grant nothing.
            _ => Grant::all_files(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> FilePath {
        FilePath::new(s).unwrap()
    }

    #[test]
    fn coverage_table() {
        let alice = Grant::folder("files/alice/").unwrap().write();
        let one = Grant::file(p("a/b.png")).read();
        let rows: &[(&Grant, &str, bool, bool)] = &[
            (&alice, "files/alice/x.png", true, false),
            (&alice, "files/alice/deep/er/x.png", true, false),
            (&alice, "files/alice", false, false),
            (&alice, "files/alicex/y.png", false, false),
            (&alice, "files/bob/x.png", false, false),
            (&alice, "x.png", false, false),
            (&one, "a/b.png", false, true),
            (&one, "a/b.pn", false, false),
            (&one, "a/b.png/c", false, false),
        ];
        for (grant, path, write, read) in rows {
            assert_eq!(grant.permits_write(&p(path)), *write, "write {path}");
            assert_eq!(grant.permits_read(&p(path)), *read, "read {path}");
        }
        let key = Grant::api_key();
        assert!(key.permits_write(&p("any/x")) && key.permits_read(&p("y")) && key.is_admin());
        assert!(!Grant::all_files().write().is_admin());
    }

    #[test]
    fn folders_are_paths() {
        for bad in ["", "/", "a//b", "../a", "a/./b", "a\\b", "a/\u{0}"] {
            assert!(Grant::folder(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn from_verified() {
        let signed = |method| Verified {
            via: Via::SignedUrl,
            path: Some(p("a.png")),
            method,
            expiry: Some(100),
        };
        let put = Grant::from(signed(Some(SignedMethod::Put)));
        assert!(put.permits_write(&p("a.png")) && !put.permits_read(&p("a.png")));
        assert!(!put.permits_write(&p("b.png")));
        assert!(!put.expired(100) && put.expired(101));
        let get = Grant::from(signed(Some(SignedMethod::Get)));
        assert!(get.permits_read(&p("a.png")) && !get.permits_write(&p("a.png")));
        let legacy = Grant::from(signed(None));
        assert!(legacy.permits_write(&p("a.png")));
        let bearer = Grant::from(Verified {
            via: Via::Bearer,
            path: None,
            method: None,
            expiry: None,
        });
        assert_eq!(bearer, Grant::api_key());
    }
}
