//! The JSON API endpoints beside uploads and delivery: `POST <base>/signatures`
//! (PROTOCOL.md §6).

pub(crate) mod signatures;
