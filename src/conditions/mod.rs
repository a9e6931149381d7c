//! Upload conditions (PROTOCOL.md §5): rules that an uploaded file must meet, in ittybit's
//! JSON form, checked as early as the facts are known.
//!
//! - [`Conditions`]: the document ([below](#the-document)), its [parser](Conditions::parse)
//!   (400 `conditions_invalid` through [`ConditionsError`]) and serde support.
//! - [`Conditions::evaluate`] with [`Facts`] at a [`Phase`]: every rule [holds, fails or is
//!   still unknown](Outcome); the [`Evaluation`] decides (pass, fail, undecided) and names the
//!   failing rules (422 `conditions_failed` through [`Evaluation::to_api_error`]).
//! - [`UploadConditions`]: the app's conditions and the upload session's, which must all
//!   hold, carried in the request's extensions; [`UploadConditions::evaluate`] gives a
//!   [`Verdict`].
//! - [`ConditionsLayer`] / [`ConditionsMiddleware`]: app-wide conditions as a tower
//!   middleware. It puts them in the request's [`UploadConditions`] and refuses a `PUT`
//!   whose declared size already fails them, before its body is read.
//!
//! # Example
//!
//! The seed's example, against an image and a video:
//!
//! ```
//! use tower_uploads::conditions::{Conditions, Decision, Facts};
//! use tower_uploads::media::{Kind, MediaFacts, sniff};
//!
//! // ittybit's "Upload Conditions" example (100 MB, 1920 px, 5 minutes).
//! let conditions = Conditions::parse(br#"{
//!     "operator": "&&",
//!     "rules": [
//!         { "key": "kind", "operator": "==", "value": "video" },
//!         { "key": "filesize", "operator": "<=", "value": 104857600 },
//!         { "key": "width", "operator": "<=", "value": 1920 },
//!         { "key": "height", "operator": "<=", "value": 1920 },
//!         { "key": "duration", "operator": "<=", "value": 300 }
//!     ]
//! }"#).unwrap();
//!
//! // Before the body: a 50 MB upload is not refused yet…
//! let declared = conditions.evaluate(&Facts::declared(Some(50_000_000)));
//! assert_eq!(declared.decision(), Decision::Undecided);
//! // …a 200 MB one is.
//! let declared = conditions.evaluate(&Facts::declared(Some(200_000_000)));
//! assert_eq!(declared.decision(), Decision::Fail);
//!
//! // A PNG image: refused as soon as its first bytes show it.
//! let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
//! png.extend_from_slice(&640u32.to_be_bytes());
//! png.extend_from_slice(&480u32.to_be_bytes());
//! png.extend_from_slice(b"\x08\x02\0\0\0");
//! let image = sniff(&png, None, "cat.png");
//! let head = conditions.evaluate(&Facts::head(Some(1_000), &image));
//! assert_eq!(head.decision(), Decision::Fail);
//! assert_eq!(
//!     head.message(),
//!     r#"conditions failed: rules[0] (kind == "video": the file is image)"#
//! );
//! // (Complete, it would also fail the duration rule: an image has none.)
//! let complete = conditions.evaluate(&Facts::complete(1_000, &image));
//! assert_eq!(complete.failing_indices(), [0, 4]);
//!
//! // A 1280×720 video of two minutes: pending until complete, then accepted.
//! let mut video = MediaFacts {
//!     kind: Kind::Video,
//!     mime_type: "video/mp4".to_owned(),
//!     width: None,
//!     height: None,
//!     duration: None,
//!     fps: None,
//!     frames: None,
//!     bitrate: None,
//!     codec: None,
//!     container: None,
//!     recognised: true,
//! };
//! let head = conditions.evaluate(&Facts::head(Some(30_000_000), &video));
//! assert_eq!((head.decision(), head.pending()), (Decision::Undecided, &[2, 3, 4][..]));
//! (video.width, video.height, video.duration) = (Some(1280), Some(720), Some(120.0));
//! let complete = conditions.evaluate(&Facts::complete(30_000_000, &video));
//! assert_eq!(complete.decision(), Decision::Pass);
//!
//! // Seven minutes is too long: 422 `conditions_failed`, naming the rule.
//! video.duration = Some(420.0);
//! let complete = conditions.evaluate(&Facts::complete(30_000_000, &video));
//! let err = complete.to_api_error();
//! assert_eq!(err.status(), 422);
//! assert_eq!(err.kind().as_str(), "conditions_failed");
//! assert_eq!(
//!     err.message(),
//!     "conditions failed: rules[4] (duration <= 300: the file lasts 420 s)"
//! );
//! ```
//!
//! # The document
//!
//! `{"operator": "&&" | "||", "rules": [{"key": K, "operator": OP, "value": V}, …]}`.
//! Every [`Conditions`] and every [`Rule`] is valid by construction: [`Conditions::parse`]
//! (and serde's `Deserialize`), [`Conditions::new`] and [`Rule::new`] check the same things.
//!
//! | key | value | operators |
//! |---|---|---|
//! | `kind` | `"image"`, `"video"`, `"audio"` or `"other"` (any case) | `==`, `!=` |
//! | `mimetype` (alias `type`) | a MIME type `type/subtype` without parameters; `type/*` matches any subtype | `==`, `!=` |
//! | `filesize`, `width`, `height`, `bitrate` | a JSON number `>= 0` (integer or not) | all six |
//! | `duration`, `fps` | any JSON number | all six |
//!
//! - The top-level `operator` may be left out: it then means `&&`. The seed's example always
//!   gives it; ittybit's reference does not call it required, and `&&` is the stricter
//!   reading ("conditions that the media must meet"), so leaving it out can never let more
//!   files through than the app meant. It is always written out when serialized.
//! - `rules` is required (a document without it is most likely a typo, e.g. `"rule"`); an
//!   empty list always holds.
//! - Anything else is refused with a message that says where and what: an unknown or
//!   duplicate field (at either level), an unknown key or operator, an ordering operator on
//!   a string key, a string for a numeric key or a number for a string key, a negative size,
//!   an unknown kind, a malformed MIME type, `null`, booleans, arrays, objects as values.
//! - Bounds: the JSON text at most [`MAX_JSON`] bytes (checked by [`Conditions::parse`]; with
//!   serde, the enclosing document's size is the caller's limit), at most [`MAX_RULES`] rules,
//!   string values at most [`MAX_STRING`] bytes.
//!
//! Numbers keep their JSON form: integers from `0` to `u64::MAX` are [`Number::Int`],
//! anything else (fractions, exponents, negative integers) is [`Number::Float`].
//!
//! # Evaluation
//!
//! ## Phases and unknown facts
//!
//! An upload learns its facts in three steps, the [`Phase`]s:
//!
//! | phase | known | from |
//! |---|---|---|
//! | [`Phase::Declared`] | `filesize` | `Content-Length` of a simple `PUT`, the total of a `Content-Range` |
//! | [`Phase::Head`] | + `kind`, `mimetype`, `width`, `height` | the first bytes ([`sniff`](crate::media::sniff)) |
//! | [`Phase::Complete`] | everything | the whole file |
//!
//! [`Facts`] carry the phase with what is known. A rule on a fact that is present is decided
//! ([`Outcome::Holds`] or [`Outcome::Fails`]) whatever the phase. A rule on a fact that is
//! absent is [`Outcome::Unknown`] (pending) before [`Phase::Complete`], and
//! [`Outcome::Fails`] at [`Phase::Complete`]: the file does not have that property ("a rule
//! on a property that the file does not have does not hold"), and this is so for `!=` too
//! (`duration != 5` does not hold for an image). At [`Phase::Complete`] nothing is pending,
//! so an evaluation there is always decided.
//!
//! ## Comparisons
//!
//! - `kind` compares with [`Kind::as_str`](crate::media::Kind::as_str), ASCII
//!   case-insensitively.
//! - `mimetype` compares with [`mime_for_conditions`](crate::media::mime_for_conditions) (so an unrecognised file is
//!   `application/octet-stream`, whatever its `Content-Type` or extension said), ASCII
//!   case-insensitively; a value `type/*` matches every subtype of `type`.
//! - Numbers compare exactly: an integer fact (`filesize`, `width`, `height`, `bitrate`)
//!   with an integer value as `u64`, with a fractional value exactly too (`width < 1920.5`
//!   holds for 1920, `filesize == 1e3` holds for 1000), and `f64` facts (`duration`, `fps`)
//!   as `f64`. A NaN fact counts as absent.
//!
//! ## Combining
//!
//! | | fails | passes | otherwise |
//! |---|---|---|---|
//! | `&&` | as soon as one rule fails | when every rule holds | undecided |
//! | `\|\|` | when every rule fails | as soon as one rule holds | undecided |
//!
//! An empty `rules` list passes, with either operator.

mod eval;
mod extension;
mod layer;
mod model;
#[cfg(test)]
mod tests;

pub use crate::response::ResponseFuture;
pub use eval::{Decision, Evaluation, Facts, Failure, Found, Outcome, Phase, Verdict};
pub use extension::UploadConditions;
pub use layer::{ConditionsLayer, ConditionsMiddleware};
pub use model::{
    Combine, Conditions, ConditionsError, Key, MAX_JSON, MAX_RULES, MAX_STRING, Number, Op, Rule,
    Value,
};
