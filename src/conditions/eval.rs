//! Evaluating conditions against what is known of a file ([`crate::conditions`] documents
//! phases, comparisons and how rules combine).

use super::model::{Combine, Conditions, Key, Number, Op, Rule, Value};
use crate::error::{ApiError, ErrorKind};
use crate::media::{MediaFacts, mime_for_conditions};
use std::cmp::Ordering;
use std::fmt::Write as _;

/// How far an upload has got, i.e. which facts can still become known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Before the body: only the declared size is known (`Content-Length` of a simple `PUT`,
    /// the total of a `Content-Range`).
    Declared,
    /// The first bytes have arrived: `kind`, `mimetype`, and an image's `width`/`height`.
    Head,
    /// The whole file is there: a fact still unknown is one the file does not have.
    Complete,
}

impl Phase {
    /// True at [`Phase::Complete`]: absent facts will never arrive.
    pub fn is_final(self) -> bool {
        self == Phase::Complete
    }
}

/// What is known of a file at some [`Phase`].
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// How far the upload has got.
    pub phase: Phase,
    /// The file's size in bytes, if known.
    pub filesize: Option<u64>,
    /// What the bytes show, if they were looked at.
    pub media: Option<&'a MediaFacts>,
}

impl<'a> Facts<'a> {
    /// Before the body: the declared size, if any.
    pub fn declared(filesize: Option<u64>) -> Self {
        Facts {
            phase: Phase::Declared,
            filesize,
            media: None,
        }
    }

    /// After the first bytes: the declared size (if any) and what they show.
    pub fn head(filesize: Option<u64>, media: &'a MediaFacts) -> Self {
        Facts {
            phase: Phase::Head,
            filesize,
            media: Some(media),
        }
    }

    /// The complete file: its size and its facts.
    pub fn complete(filesize: u64, media: &'a MediaFacts) -> Self {
        Facts {
            phase: Phase::Complete,
            filesize: Some(filesize),
            media: Some(media),
        }
    }

    /// The value of the property `key`, if known.
    fn get(&self, key: Key) -> Option<Fact<'a>> {
        let media = self.media;
        match key {
            Key::Filesize => self.filesize.map(Fact::Int),
            Key::Kind => media.map(|m| Fact::Text(m.kind.as_str())),
            Key::Mimetype => media.map(|m| Fact::Text(mime_for_conditions(m))),
            Key::Width => media?.width.map(|w| Fact::Int(u64::from(w))),
            Key::Height => media?.height.map(|h| Fact::Int(u64::from(h))),
            Key::Duration => media?.duration.filter(|d| !d.is_nan()).map(Fact::Float),
            Key::Fps => media?.fps.filter(|f| !f.is_nan()).map(Fact::Float),
            Key::Bitrate => media?.bitrate.map(Fact::Int),
        }
    }
}

/// A known property, borrowed.
#[derive(Clone, Copy)]
enum Fact<'a> {
    Text(&'a str),
    Int(u64),
    Float(f64),
}

impl Fact<'_> {
    fn to_found(self) -> Found {
        match self {
            Fact::Text(s) => Found::Text(s.to_owned()),
            Fact::Int(n) => Found::Number(Number::Int(n)),
            Fact::Float(f) => Found::Number(Number::Float(f)),
        }
    }
}

/// What the file had for a failing rule's key.
#[derive(Clone, Debug, PartialEq)]
pub enum Found {
    /// The file does not have this property (only at [`Phase::Complete`]).
    Missing,
    /// A string property (`kind`, `mimetype`).
    Text(String),
    /// A numeric property.
    Number(Number),
}

/// A single rule's result.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The rule holds.
    Holds,
    /// The rule does not hold; what the file has instead.
    Fails(Found),
    /// The fact is not known yet (only before [`Phase::Complete`]).
    Unknown,
}

impl Rule {
    /// This rule's result for `facts` (see the [module docs](crate::conditions) for unknown facts and
    /// comparisons).
    pub fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        let Some(fact) = facts.get(self.key()) else {
            return if facts.phase.is_final() {
                Outcome::Fails(Found::Missing)
            } else {
                Outcome::Unknown
            };
        };
        if self.holds(fact) {
            Outcome::Holds
        } else {
            Outcome::Fails(fact.to_found())
        }
    }

    fn holds(&self, fact: Fact<'_>) -> bool {
        let op = self.operator();
        match (fact, self.value()) {
            (Fact::Text(have), Value::Text(want)) => {
                let equal = if self.key() == Key::Mimetype {
                    mime_matches(have, want)
                } else {
                    have.eq_ignore_ascii_case(want)
                };
                match op {
                    Op::Eq => equal,
                    Op::Ne => !equal,
                    // Refused at construction; never holds.
                    _ => false,
                }
            }
            (Fact::Int(have), Value::Number(want)) => op.holds_for(match *want {
                Number::Int(want) => have.cmp(&want),
                Number::Float(want) => cmp_u64_f64(have, want),
            }),
            (Fact::Float(have), Value::Number(want)) => {
                let ord = match *want {
                    Number::Int(want) => Some(cmp_u64_f64(want, have).reverse()),
                    Number::Float(want) => have.partial_cmp(&want),
                };
                ord.is_some_and(|ord| op.holds_for(ord))
            }
            // A string fact against a number or the reverse: refused at construction.
            _ => false,
        }
    }
}

/// `have` against a pattern `type/subtype` or `type/*`, ASCII case-insensitively.
fn mime_matches(have: &str, want: &str) -> bool {
    match want.strip_suffix("/*") {
        Some(ty) => have
            .split_once('/')
            .is_some_and(|(have_ty, _)| have_ty.eq_ignore_ascii_case(ty)),
        None => have.eq_ignore_ascii_case(want),
    }
}

/// Exact comparison of an integer with a float (`b` not NaN).
fn cmp_u64_f64(a: u64, b: f64) -> Ordering {
    // 2^64, exactly representable.
    const TWO_64: f64 = 18_446_744_073_709_551_616.0;
    if b < 0.0 {
        return Ordering::Greater;
    }
    if b >= TWO_64 {
        return Ordering::Less;
    }
    if b.is_nan() {
        // Unreachable for validated values and filtered facts; an answer all the same.
        return Ordering::Less;
    }
    let floor = b.floor();
    // 0 <= floor < 2^64 and integral: the conversion is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let floor_int = floor as u64;
    match a.cmp(&floor_int) {
        Ordering::Equal if b > floor => Ordering::Less,
        ord => ord,
    }
}

/// The combined decision of an evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// The conditions hold.
    Pass,
    /// The conditions do not hold: the upload is refused (422 `conditions_failed`).
    Fail,
    /// Not yet known: some facts are still to come.
    Undecided,
}

/// A rule that does not hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// The rule's index in `rules`.
    pub index: usize,
    /// The rule.
    pub rule: Rule,
    /// What the file has instead.
    pub found: Found,
}

impl std::fmt::Display for Failure {
    /// `rules[1] (filesize <= 1048576: the file has 2000000 bytes)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rules[{}] ({}: {})",
            self.index,
            self.rule,
            found_text(self.rule.key(), &self.found)
        )
    }
}

fn found_text(key: Key, found: &Found) -> String {
    match (key, found) {
        (Key::Kind, Found::Missing) => "the file's kind is not known".to_owned(),
        (Key::Mimetype, Found::Missing) => "the file's type is not known".to_owned(),
        (Key::Filesize, Found::Missing) => "the file's size is not known".to_owned(),
        (Key::Fps, Found::Missing) => "the file has no frame rate".to_owned(),
        (key, Found::Missing) => format!("the file has no {key}"),
        (Key::Kind, Found::Text(kind)) => format!("the file is {kind}"),
        (_, Found::Text(text)) => format!("the file's type is {text}"),
        (Key::Filesize, Found::Number(n)) => format!("the file has {n} bytes"),
        (Key::Width, Found::Number(n)) => format!("the file is {n} px wide"),
        (Key::Height, Found::Number(n)) => format!("the file is {n} px high"),
        (Key::Duration, Found::Number(n)) => format!("the file lasts {n} s"),
        (Key::Fps, Found::Number(n)) => format!("the file has {n} fps"),
        (key, Found::Number(n)) => format!("the file's {key} is {n}"),
    }
}

/// The result of [`Conditions::evaluate`]: which rules fail, which are pending, and the
/// [`Decision`].
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    operator: Combine,
    rules: usize,
    failing: Vec<Failure>,
    pending: Vec<usize>,
}

impl Conditions {
    /// Evaluates every rule against `facts` (see the [module docs](crate::conditions)).
    ///
    /// ```
    /// use tower_uploads::conditions::{Conditions, Decision, Facts};
    ///
    /// let c = Conditions::parse(br#"{"operator": "&&", "rules": [
    ///     {"key": "filesize", "operator": "<=", "value": 1048576},
    ///     {"key": "duration", "operator": "<=", "value": 300}
    /// ]}"#).unwrap();
    /// let e = c.evaluate(&Facts::declared(Some(2_000_000)));
    /// assert_eq!(e.decision(), Decision::Fail);
    /// assert_eq!(
    ///     e.message(),
    ///     "conditions failed: rules[0] (filesize <= 1048576: the file has 2000000 bytes)"
    /// );
    /// let e = c.evaluate(&Facts::declared(Some(1000)));
    /// assert_eq!((e.decision(), e.pending()), (Decision::Undecided, &[1][..]));
    /// ```
    pub fn evaluate(&self, facts: &Facts<'_>) -> Evaluation {
        let mut failing = Vec::new();
        let mut pending = Vec::new();
        for (index, rule) in self.rules().iter().enumerate() {
            match rule.evaluate(facts) {
                Outcome::Holds => {}
                Outcome::Fails(found) => failing.push(Failure {
                    index,
                    rule: rule.clone(),
                    found,
                }),
                Outcome::Unknown => pending.push(index),
            }
        }
        Evaluation {
            operator: self.operator(),
            rules: self.rules().len(),
            failing,
            pending,
        }
    }
}

impl Evaluation {
    /// Pass, fail or undecided, per the table in the [module docs](crate::conditions).
    pub fn decision(&self) -> Decision {
        let holding = self.rules - self.failing.len() - self.pending.len();
        if self.rules == 0 {
            return Decision::Pass;
        }
        match self.operator {
            Combine::And if !self.failing.is_empty() => Decision::Fail,
            Combine::And if self.pending.is_empty() => Decision::Pass,
            Combine::Or if holding > 0 => Decision::Pass,
            Combine::Or if self.pending.is_empty() => Decision::Fail,
            _ => Decision::Undecided,
        }
    }

    /// The rules that do not hold, in document order.
    pub fn failing(&self) -> &[Failure] {
        &self.failing
    }

    /// The indices of the rules that do not hold.
    pub fn failing_indices(&self) -> Vec<usize> {
        self.failing.iter().map(|f| f.index).collect()
    }

    /// The indices of the rules whose facts are not known yet.
    pub fn pending(&self) -> &[usize] {
        &self.pending
    }

    /// How the rules combine.
    pub fn operator(&self) -> Combine {
        self.operator
    }

    /// A sentence naming the failing rules, e.g. `conditions failed: rules[1] (filesize <=
    /// 1048576: the file has 2000000 bytes), rules[3] (kind == "video": the file is image)`.
    /// For an evaluation that did not fail: `conditions hold`, or `conditions pending: facts
    /// not known yet for rules[2], rules[4]`.
    pub fn message(&self) -> String {
        match self.decision() {
            Decision::Fail => format!("conditions failed: {}", self.failures_text()),
            Decision::Pass => "conditions hold".to_owned(),
            Decision::Undecided => format!(
                "conditions pending: facts not known yet for {}",
                self.pending_text(None)
            ),
        }
    }

    /// 422 `conditions_failed` with [`message`](Self::message). Meant for an evaluation
    /// whose [`decision`](Self::decision) is [`Decision::Fail`].
    pub fn to_api_error(&self) -> ApiError {
        ApiError::new(ErrorKind::ConditionsFailed, self.message())
    }

    /// The failing rules, without the `conditions failed: ` prefix.
    fn failures_text(&self) -> String {
        let mut out = String::new();
        if self.operator == Combine::Or {
            out.push_str("none of the rules holds: ");
        }
        for (i, failure) in self.failing.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{failure}");
        }
        out
    }

    /// `rules[0], rules[2]` (each prefixed with `label` and a space, if any).
    fn pending_text(&self, label: Option<&str>) -> String {
        let mut out = String::new();
        for (i, index) in self.pending.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            if let Some(label) = label {
                out.push_str(label);
                out.push(' ');
            }
            let _ = write!(out, "rules[{index}]");
        }
        out
    }
}

/// The evaluation of [`UploadConditions`](super::UploadConditions): the app's conditions and
/// the upload's, which must all hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub(super) app: Vec<Evaluation>,
    pub(super) session: Option<Evaluation>,
}

impl Verdict {
    /// [`Decision::Fail`] if any of the conditions fails, [`Decision::Pass`] if all pass
    /// (or there are none), else [`Decision::Undecided`].
    pub fn decision(&self) -> Decision {
        let mut decision = Decision::Pass;
        for e in self.app.iter().chain(&self.session) {
            match e.decision() {
                Decision::Fail => return Decision::Fail,
                Decision::Undecided => decision = Decision::Undecided,
                Decision::Pass => {}
            }
        }
        decision
    }

    /// The evaluations of the app's conditions (one per
    /// [`ConditionsLayer`](super::ConditionsLayer), outermost first).
    pub fn app(&self) -> &[Evaluation] {
        &self.app
    }

    /// The evaluation of the upload's own conditions, if it has some.
    pub fn session(&self) -> Option<&Evaluation> {
        self.session.as_ref()
    }

    /// A sentence naming the failing rules and whose they are, e.g. `conditions failed: the
    /// app's rules[0] (filesize <= 10: the file has 20 bytes); the upload's rules[1] (kind ==
    /// "video": the file is image)`.
    pub fn message(&self) -> String {
        match self.decision() {
            Decision::Pass => "conditions hold".to_owned(),
            Decision::Undecided => {
                let pending: Vec<String> = self
                    .labelled()
                    .filter(|(_, e)| e.decision() == Decision::Undecided)
                    .map(|(label, e)| e.pending_text(Some(label)))
                    .collect();
                format!(
                    "conditions pending: facts not known yet for {}",
                    pending.join("; ")
                )
            }
            Decision::Fail => {
                let mut out = String::from("conditions failed: ");
                let mut first = true;
                for (label, e) in self.labelled() {
                    if e.decision() != Decision::Fail {
                        continue;
                    }
                    if !first {
                        out.push_str("; ");
                    }
                    first = false;
                    if e.operator == Combine::Or {
                        let _ = write!(out, "none of {label} rules holds: ");
                    }
                    for (i, failure) in e.failing.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        let _ = write!(out, "{label} {failure}");
                    }
                }
                out
            }
        }
    }

    /// 422 `conditions_failed` with [`message`](Self::message). Meant for a verdict whose
    /// [`decision`](Self::decision) is [`Decision::Fail`].
    pub fn to_api_error(&self) -> ApiError {
        ApiError::new(ErrorKind::ConditionsFailed, self.message())
    }

    fn labelled(&self) -> impl Iterator<Item = (&'static str, &Evaluation)> {
        self.app
            .iter()
            .map(|e| ("the app's", e))
            .chain(self.session.iter().map(|e| ("the upload's", e)))
    }
}
