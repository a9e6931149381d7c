//! placeholder
/// The filesystem backend.
#[derive(Debug)]
pub struct FsStorage;
/// Durability policy.
#[derive(Debug)]
pub enum Durability {}
