//! Parsers of the upload request headers that more than one piece reads: `Content-Range`
//! (the upload handler, and the conditions layer for a chunk's declared total). Pure: no I/O,
//! table tests, a fuzz target.

pub mod content_range;
