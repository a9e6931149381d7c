//! The conformance suite every [`Storage`] backend must pass, check by check. Run it from a
//! test of your own backend (feature `conformance`): all of it,
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use tower_uploads::storage::{MemoryStorage, conformance};
//! conformance::run(Arc::new(MemoryStorage::new())).await;
//! # });
//! ```
//!
//! or one test per check, each named after its check, with
//! [`storage_conformance_tests!`](crate::storage_conformance_tests):
//!
//! ```
//! # use tower_uploads::storage::MemoryStorage;
//! mod conformance {
//!     tower_uploads::storage_conformance_tests!(super::MemoryStorage::new());
//! }
//! ```
//!
//! Each check uses fresh random paths, so the suite can run against a storage that already
//! holds data. A broken promise fails the check with a panic that names the check and the
//! promise, followed by what was seen. Checks of a [`Capabilities`](super::Capabilities)
//! promise check it only where the backend declares it. Needs a multi-threaded tokio runtime
//! with timers.

use futures_util::future::BoxFuture;
use std::sync::Arc;

use super::Storage;

mod checks;
use checks::*;

/// One promise of the [`Storage`] contract, checked on its own (see [`CHECKS`]).
#[derive(Clone, Copy)]
pub struct Check {
    /// The check's name (also the test name that
    /// [`storage_conformance_tests!`](crate::storage_conformance_tests) gives it).
    pub name: &'static str,
    /// The promise it checks, as a failure states it.
    pub promise: &'static str,
    body: fn(Arc<dyn Storage>) -> BoxFuture<'static, ()>,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check")
            .field("name", &self.name)
            .field("promise", &self.promise)
            .finish_non_exhaustive()
    }
}

impl Check {
    /// Runs the check against `storage`.
    ///
    /// # Panics
    /// When the backend breaks the promise: the message names the check and the promise,
    /// then what was seen.
    pub async fn run(&self, storage: Arc<dyn Storage>) {
        let Err(e) = tokio::spawn((self.body)(storage)).await else {
            return;
        };
        let seen = if e.is_panic() {
            let payload = e.into_panic();
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic without a message".to_owned())
        } else {
            e.to_string()
        };
        let mut seen: String = seen.chars().take(2_000).collect();
        if seen.len() >= 2_000 {
            seen.push_str(" …");
        }
        panic!(
            "storage conformance check `{}` failed: the backend broke the promise that {}.\nseen: {seen}",
            self.name, self.promise
        );
    }
}

/// Declares the checks once: [`CHECKS`] and the tests of
/// [`storage_conformance_tests!`](crate::storage_conformance_tests) are both made from this
/// list (`name: ref | arc "promise"`; `ref` checks take `&dyn Storage`).
#[doc(hidden)]
#[macro_export]
macro_rules! __storage_conformance_checks {
    (@list [table] $($name:ident : $kind:ident $promise:literal),* $(,)?) => {
        /// Every check, in the order [`run`] runs them.
        pub const CHECKS: &[Check] = &[
            $($crate::__storage_conformance_checks!(@one $name $kind $promise)),*
        ];
    };
    (@list [tests $make:expr] $($name:ident : $kind:ident $promise:literal),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let storage: ::std::sync::Arc<dyn $crate::storage::Storage> =
                    ::std::sync::Arc::new($make);
                $crate::storage::conformance::check(stringify!($name))
                    .expect("a conformance check of this version")
                    .run(storage)
                    .await;
            }
        )*
    };
    (@one $name:ident ref $promise:literal) => {
        Check {
            name: stringify!($name),
            promise: $promise,
            body: |s: Arc<dyn Storage>| -> BoxFuture<'static, ()> {
                Box::pin(async move { $name(&s).await })
            },
        }
    };
    (@one $name:ident arc $promise:literal) => {
        Check {
            name: stringify!($name),
            promise: $promise,
            body: |s: Arc<dyn Storage>| -> BoxFuture<'static, ()> { Box::pin($name(s)) },
        }
    };
    ($($mode:tt)*) => {
        $crate::__storage_conformance_checks! { @list [$($mode)*]
            single_upload_roundtrip: ref "a published file reads back byte for byte, with the size, etag, content type and attributes publish gave",
            overwrite_and_preconditions: ref "publish honours PutMode atomically: Create fails on an existing file, Update(etag) only replaces that version, nothing is left behind by a failed one",
            empty_attributes_and_stable_meta: ref "empty attributes round-trip, and with Capabilities::stable_meta head and read give the etag and time publish gave, and a new version a new etag",
            create_only_race: arc "exactly one of several concurrent create-only publications of a path wins, and the file is the winner's",
            ranged_reads: ref "read returns exactly the requested range",
            uncommitted_bytes_do_not_count: ref "bytes count as received only at commit: a dropped writer counts nothing",
            resumable_create_join_and_ranges: ref "open_upload creates a path's resumable upload once and joins it after (keeping the first total), and commit returns every received range, merged",
            parallel_chunks_and_single_claim: arc "parallel chunks land in one upload, exactly one of several concurrent claims wins, and its publication is the assembled bytes",
            closed_after_claim: ref "after a claim no writer can commit (one opened before it included, even with its bytes written), until an unclaim lets the next claim win",
            abort_and_listing: ref "list_uploads lists uploads in progress (single ones once they hold bytes), and abort removes them, idempotently",
            reader_keeps_its_version: ref "a read stream keeps reading the version it opened, whole, when the file is replaced meanwhile",
            empty_file: ref "an empty file publishes and reads back",
            reads_stream: ref "read streams a file in bounded frames (at most 16 MiB) without holding it whole in memory",
            lasting_upload: arc "a Lasting upload, once committed, is listed, and another request can claim and publish it",
            claim_take_over: ref "on the crate's coordination, a claim whose lease is over is taken over, a live one is not, and a holder whose claim was taken over publishes nothing",
            records: arc "records: create-only has exactly one winner among concurrent creators, so has compare-and-swap among updates from one etag, overwrite replaces, listing finds what is under a prefix, delete says whether there was one",
        }
    };
}

crate::__storage_conformance_checks!(table);

/// One `#[tokio::test]` per conformance [`Check`], named after it, each on a storage made by
/// `$make` (an expression of a type that implements [`Storage`], evaluated once per test).
/// Needs `tokio` (with the `macros` and `rt-multi-thread` features) in the caller's
/// dev-dependencies. Use it inside a module of its own, as the test names are the checks'.
#[macro_export]
macro_rules! storage_conformance_tests {
    ($make:expr) => {
        $crate::__storage_conformance_checks!(tests $make);
    };
}

/// The check named `name`.
pub fn check(name: &str) -> Option<&'static Check> {
    CHECKS.iter().find(|c| c.name == name)
}

/// Runs every check against `storage`, in order; the first broken promise panics, naming
/// its check (see [`Check::run`]). Needs a multi-threaded tokio runtime with timers.
pub async fn run(storage: Arc<dyn Storage>) {
    for check in CHECKS {
        check.run(storage.clone()).await;
    }
}
