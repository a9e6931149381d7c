//! placeholder
/// The in-memory backend.
#[derive(Debug)]
pub struct MemoryStorage;
