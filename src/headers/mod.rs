//! Parsers of the upload request headers that more than one piece reads: `Content-Range`
//! (the upload handler, and the conditions layer for a chunk's declared total). Pure: no I/O,
//! table tests, a fuzz target.
//! [`tus`] and [`sf`]: the headers of the tus 1.0.0 and IETF resumable-upload frontends.

pub mod content_range;
pub mod sf;
pub mod tus;
