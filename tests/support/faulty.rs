//! A fault-injecting [`Storage`] for tests: wraps any storage and makes chosen calls fail —
//! the Nth call of an operation, or each call with a seeded probability — with an I/O error
//! or "storage full". Every trait method goes through it (uploads, published files and the
//! records API), and so do the writers it hands out and the byte streams it returns (a read
//! can fail half-way through a delivery).
//!
//! A mutating operation can fail *before* reaching the wrapped storage (nothing happened) or,
//! for `Commit` and `Publish`, *after* it (it happened, but the caller is told it failed: a
//! lost acknowledgement). Counters say how many calls were made and how many failed.
#![allow(dead_code)]

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tower_uploads::path::FilePath;
use tower_uploads::storage::{
    ByteStream, ChunkWriter, Claim, Coordinate, ObjectMeta, PublishOptions, Record, RecordKey,
    RecordMode, Storage, StorageError, StorageResult, UploadId, UploadInfo, UploadSpec,
    UploadWriter,
};

/// The operations faults can be injected into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Head,
    /// Opening a read of a published file.
    Read,
    /// A frame of a read stream (published file or staged upload).
    ReadFrame,
    OpenUpload,
    FindUpload,
    /// Getting a writer.
    Writer,
    /// `UploadWriter::write`.
    Write,
    /// `UploadWriter::flush`.
    Flush,
    /// `UploadWriter::commit` (may fail after the range was recorded).
    Commit,
    Received,
    Claim,
    Unclaim,
    /// Opening a read of a staged upload.
    ReadUpload,
    /// The rename that publishes (may fail after the file was published).
    Publish,
    Abort,
    ListUploads,
    PutRecord,
    GetRecord,
    DeleteRecord,
    ListRecords,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 20] = [
        Op::Head,
        Op::Read,
        Op::ReadFrame,
        Op::OpenUpload,
        Op::FindUpload,
        Op::Writer,
        Op::Write,
        Op::Flush,
        Op::Commit,
        Op::Received,
        Op::Claim,
        Op::Unclaim,
        Op::ReadUpload,
        Op::Publish,
        Op::Abort,
        Op::ListUploads,
        Op::PutRecord,
        Op::GetRecord,
        Op::DeleteRecord,
        Op::ListRecords,
    ];

    /// Whether a fault may strike after the wrapped call succeeded (a lost acknowledgement).
    fn can_fail_after(self) -> bool {
        matches!(self, Op::Commit | Op::Publish)
    }
}

/// Which error an injected fault returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `StorageError::Io` (a 500 to the client).
    Io,
    /// `StorageError::StorageFull` (ENOSPC: a 507 to the client).
    Full,
}

#[derive(Default)]
struct Plan {
    /// Per operation: the 1-based call numbers that fail.
    at: BTreeMap<Op, BTreeSet<u64>>,
    /// Per operation: the probability that a call fails.
    rate: BTreeMap<Op, f64>,
    calls: BTreeMap<Op, u64>,
    injected: BTreeMap<Op, u64>,
    injected_after: u64,
}

struct State {
    plan: Mutex<Plan>,
    rng: Mutex<StdRng>,
    fault: Mutex<Fault>,
    armed: AtomicBool,
}

/// Wraps a storage and injects faults (see the module docs). Clones share the plan and the
/// counters.
#[derive(Clone)]
pub struct FaultyStorage<S> {
    inner: Arc<S>,
    state: Arc<State>,
}

/// When an injected fault strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Strike {
    Before,
    After,
}

impl<S: Storage> FaultyStorage<S> {
    /// Wraps `inner`, with no fault planned yet.
    pub fn new(inner: S) -> Self {
        FaultyStorage {
            inner: Arc::new(inner),
            state: Arc::new(State {
                plan: Mutex::new(Plan::default()),
                rng: Mutex::new(StdRng::seed_from_u64(0)),
                fault: Mutex::new(Fault::Io),
                armed: AtomicBool::new(true),
            }),
        }
    }

    /// The wrapped storage.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The `nth` call (1-based, counted from now on) of `op` fails.
    pub fn fail_at(self, op: Op, nth: u64) -> Self {
        {
            let mut plan = self.state.plan.lock().unwrap();
            let done = plan.calls.get(&op).copied().unwrap_or(0);
            plan.at.entry(op).or_default().insert(done + nth);
        }
        self
    }

    /// Every call of each of `ops` fails with probability `rate`, drawn from a generator
    /// seeded with `seed` (the same seed gives the same draws in the same call order).
    pub fn fail_rate(self, ops: &[Op], rate: f64, seed: u64) -> Self {
        {
            let mut plan = self.state.plan.lock().unwrap();
            for &op in ops {
                plan.rate.insert(op, rate);
            }
        }
        *self.state.rng.lock().unwrap() = StdRng::seed_from_u64(seed);
        self
    }

    /// The error faults return (default [`Fault::Io`]).
    pub fn fault(self, fault: Fault) -> Self {
        *self.state.fault.lock().unwrap() = fault;
        self
    }

    /// Stops (`false`) or resumes (`true`) injecting; counting goes on.
    pub fn arm(&self, on: bool) {
        self.state.armed.store(on, Ordering::SeqCst);
    }

    /// Faults injected so far, per operation.
    pub fn injected(&self) -> BTreeMap<Op, u64> {
        self.state.plan.lock().unwrap().injected.clone()
    }

    /// Faults injected so far, in all.
    pub fn injected_total(&self) -> u64 {
        self.injected().values().sum()
    }

    /// Of those, how many struck after the wrapped call had succeeded.
    pub fn injected_after(&self) -> u64 {
        self.state.plan.lock().unwrap().injected_after
    }

    /// Calls made so far, per operation.
    pub fn calls(&self) -> BTreeMap<Op, u64> {
        self.state.plan.lock().unwrap().calls.clone()
    }

    fn decide(&self, op: Op) -> Option<Strike> {
        decide(&self.state, op)
    }

    /// Runs `call` under the plan for `op`.
    async fn run<T, F>(&self, op: Op, call: F) -> StorageResult<T>
    where
        F: std::future::Future<Output = StorageResult<T>>,
    {
        match self.decide(op) {
            Some(Strike::Before) => Err(error(&self.state)),
            Some(Strike::After) => {
                let _ = call.await?;
                Err(error(&self.state))
            }
            None => call.await,
        }
    }

    fn stream(&self, stream: ByteStream) -> ByteStream {
        let state = self.state.clone();
        stream
            .map(move |frame| match decide(&state, Op::ReadFrame) {
                Some(_) => Err(error(&state)),
                None => frame,
            })
            .boxed()
    }
}

fn decide(state: &State, op: Op) -> Option<Strike> {
    let mut plan = state.plan.lock().unwrap();
    let n = {
        let calls = plan.calls.entry(op).or_insert(0);
        *calls += 1;
        *calls
    };
    if !state.armed.load(Ordering::SeqCst) {
        return None;
    }
    let mut rng = state.rng.lock().unwrap();
    let scheduled = plan.at.get(&op).is_some_and(|at| at.contains(&n));
    let random = plan.rate.get(&op).is_some_and(|&r| rng.random_bool(r));
    if !(scheduled || random) {
        return None;
    }
    *plan.injected.entry(op).or_insert(0) += 1;
    if op.can_fail_after() && rng.random_bool(0.5) {
        plan.injected_after += 1;
        Some(Strike::After)
    } else {
        Some(Strike::Before)
    }
}

fn error(state: &State) -> StorageError {
    match *state.fault.lock().unwrap() {
        Fault::Io => StorageError::Io(std::io::Error::other("injected fault")),
        Fault::Full => StorageError::StorageFull,
    }
}

struct FaultyWriter {
    inner: Box<dyn ChunkWriter>,
    state: Arc<State>,
}

#[async_trait]
impl ChunkWriter for FaultyWriter {
    async fn write(&mut self, data: Bytes) -> StorageResult<()> {
        if decide(&self.state, Op::Write).is_some() {
            return Err(error(&self.state));
        }
        self.inner.write(data).await
    }

    async fn flush(&mut self) -> StorageResult<()> {
        if decide(&self.state, Op::Flush).is_some() {
            return Err(error(&self.state));
        }
        self.inner.flush().await
    }

    async fn commit(self: Box<Self>) -> StorageResult<Vec<Range<u64>>> {
        match decide(&self.state, Op::Commit) {
            Some(Strike::Before) => Err(error(&self.state)),
            Some(Strike::After) => {
                self.inner.commit().await?;
                Err(error(&self.state))
            }
            None => self.inner.commit().await,
        }
    }
}

impl<S: Storage> FaultyStorage<S> {
    /// The wrapped storage's own coordination (only called when it has one: `coordinator`).
    fn native(&self) -> &dyn Coordinate {
        self.inner
            .coordinator()
            .expect("FaultyStorage wraps a storage with its own coordination")
    }
}

/// The storage's nine methods, with faults (its own coordination, below, is what the
/// service uses).
#[async_trait]
impl<S: Storage> Storage for FaultyStorage<S> {
    async fn head(&self, path: &FilePath) -> StorageResult<Option<ObjectMeta>> {
        self.run(Op::Head, self.inner.head(path)).await
    }

    async fn read(
        &self,
        path: &FilePath,
        range: Option<Range<u64>>,
    ) -> StorageResult<Option<(ObjectMeta, ByteStream)>> {
        let read = self.run(Op::Read, self.inner.read(path, range)).await?;
        Ok(read.map(|(meta, stream)| (meta, self.stream(stream))))
    }

    async fn write_upload(
        &self,
        upload: &UploadId,
        offset: u64,
    ) -> StorageResult<Box<dyn UploadWriter>> {
        self.inner.write_upload(upload, offset).await
    }

    async fn read_upload(&self, upload: &UploadId, range: Range<u64>) -> StorageResult<ByteStream> {
        let stream = self
            .run(Op::ReadUpload, self.inner.read_upload(upload, range))
            .await?;
        Ok(self.stream(stream))
    }

    async fn publish_upload(
        &self,
        upload: &UploadId,
        path: &FilePath,
        size: u64,
        options: PublishOptions,
    ) -> StorageResult<ObjectMeta> {
        self.inner.publish_upload(upload, path, size, options).await
    }

    async fn delete_upload(&self, upload: &UploadId) -> StorageResult<()> {
        self.inner.delete_upload(upload).await
    }

    /// With faults where the wrapped storage brings its own coordination (FsStorage); over
    /// one that has none (MemoryStorage), the crate's coordination runs on the faulty records.
    fn coordinator(&self) -> Option<&dyn Coordinate> {
        self.inner.coordinator().map(|_| self as &dyn Coordinate)
    }

    async fn put_record(
        &self,
        key: &RecordKey,
        value: Bytes,
        mode: RecordMode,
    ) -> StorageResult<String> {
        self.run(Op::PutRecord, self.inner.put_record(key, value, mode))
            .await
    }

    async fn get_record(&self, key: &RecordKey) -> StorageResult<Option<Record>> {
        self.run(Op::GetRecord, self.inner.get_record(key)).await
    }

    async fn delete_record(&self, key: &RecordKey) -> StorageResult<bool> {
        self.run(Op::DeleteRecord, self.inner.delete_record(key))
            .await
    }

    async fn list_records(&self, prefix: &RecordKey) -> StorageResult<Vec<RecordKey>> {
        self.run(Op::ListRecords, self.inner.list_records(prefix))
            .await
    }
}

#[async_trait]
impl<S: Storage> Coordinate for FaultyStorage<S> {
    async fn open_upload(&self, path: &FilePath, spec: UploadSpec) -> StorageResult<UploadInfo> {
        self.run(Op::OpenUpload, self.native().open_upload(path, spec))
            .await
    }

    async fn find_upload(&self, path: &FilePath) -> StorageResult<Option<UploadInfo>> {
        self.run(Op::FindUpload, self.native().find_upload(path))
            .await
    }

    async fn writer(&self, upload: &UploadId, offset: u64) -> StorageResult<Box<dyn ChunkWriter>> {
        let inner = self
            .run(Op::Writer, self.native().writer(upload, offset))
            .await?;
        Ok(Box::new(FaultyWriter {
            inner,
            state: self.state.clone(),
        }))
    }

    async fn received(&self, upload: &UploadId) -> StorageResult<Vec<Range<u64>>> {
        self.run(Op::Received, self.native().received(upload)).await
    }

    async fn claim(&self, upload: &UploadId) -> StorageResult<Claim> {
        self.run(Op::Claim, self.native().claim(upload)).await
    }

    async fn unclaim(&self, upload: &UploadId) -> StorageResult<()> {
        self.run(Op::Unclaim, self.native().unclaim(upload)).await
    }

    async fn publish(
        &self,
        upload: &UploadId,
        path: &FilePath,
        size: u64,
        options: PublishOptions,
    ) -> StorageResult<ObjectMeta> {
        self.run(
            Op::Publish,
            self.native().publish(upload, path, size, options),
        )
        .await
    }

    async fn abort(&self, upload: &UploadId) -> StorageResult<()> {
        self.run(Op::Abort, self.native().abort(upload)).await
    }

    async fn list_uploads(&self) -> StorageResult<Vec<UploadInfo>> {
        self.run(Op::ListUploads, self.native().list_uploads())
            .await
    }
}
