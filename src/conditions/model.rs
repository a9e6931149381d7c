//! The conditions document in ittybit's JSON form (PROTOCOL.md §5), and its parser.
//! ([`crate::conditions`] documents what is accepted.)

use crate::error::{ApiError, ErrorKind};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::fmt;

/// The largest conditions document [`Conditions::parse`] reads, in bytes (16 KiB).
pub const MAX_JSON: usize = 16 * 1024;

/// The most rules a document may have.
pub const MAX_RULES: usize = 64;

/// The longest string value of a rule, in bytes.
pub const MAX_STRING: usize = 255;

/// How the rules combine: the top-level `operator`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum Combine {
    /// `&&`: every rule must hold (the default when `operator` is left out).
    #[default]
    #[serde(rename = "&&")]
    And,
    /// `||`: at least one rule must hold (an empty list holds all the same).
    #[serde(rename = "||")]
    Or,
}

impl Combine {
    /// `&&` or `||`.
    pub fn as_str(self) -> &'static str {
        match self {
            Combine::And => "&&",
            Combine::Or => "||",
        }
    }

    /// The combinator written `symbol`, exactly.
    pub fn from_symbol(symbol: &str) -> Option<Combine> {
        match symbol {
            "&&" => Some(Combine::And),
            "||" => Some(Combine::Or),
            _ => None,
        }
    }
}

impl fmt::Display for Combine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The property of the file a rule is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Key {
    /// `kind`: `image`, `video`, `audio` or `other` ([`Kind`](crate::media::Kind)).
    Kind,
    /// `mimetype` (also spelled `type`): the MIME type the bytes show
    /// ([`mime_for_conditions`](crate::media::mime_for_conditions)).
    Mimetype,
    /// `filesize`: the size in bytes.
    Filesize,
    /// `width` in pixels.
    Width,
    /// `height` in pixels.
    Height,
    /// `duration` in seconds.
    Duration,
    /// `fps`: frames per second.
    Fps,
    /// `bitrate`, in the unit of the File object's `bitrate`
    /// ([`MediaFacts::bitrate`](crate::media::MediaFacts::bitrate)).
    Bitrate,
}

impl Key {
    /// Every key, in the order of the protocol.
    pub const ALL: [Key; 8] = [
        Key::Kind,
        Key::Mimetype,
        Key::Filesize,
        Key::Width,
        Key::Height,
        Key::Duration,
        Key::Fps,
        Key::Bitrate,
    ];

    /// The key's name as written by this crate (`mimetype` for [`Key::Mimetype`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Key::Kind => "kind",
            Key::Mimetype => "mimetype",
            Key::Filesize => "filesize",
            Key::Width => "width",
            Key::Height => "height",
            Key::Duration => "duration",
            Key::Fps => "fps",
            Key::Bitrate => "bitrate",
        }
    }

    /// The key named `name`, exactly (lower case); `type` is [`Key::Mimetype`].
    pub fn from_name(name: &str) -> Option<Key> {
        match name {
            "type" => Some(Key::Mimetype),
            _ => Key::ALL.into_iter().find(|k| k.as_str() == name),
        }
    }

    /// True for the keys whose values are strings (`kind`, `mimetype`): they compare with
    /// `==` and `!=` only.
    pub fn is_text(self) -> bool {
        matches!(self, Key::Kind | Key::Mimetype)
    }

    /// True for the numeric keys whose values cannot be negative (`filesize`, `width`,
    /// `height`, `bitrate`).
    pub fn is_non_negative(self) -> bool {
        matches!(
            self,
            Key::Filesize | Key::Width | Key::Height | Key::Bitrate
        )
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule's comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Op {
    /// `==`
    #[serde(rename = "==")]
    Eq,
    /// `!=`
    #[serde(rename = "!=")]
    Ne,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
}

impl Op {
    /// Every operator.
    pub const ALL: [Op; 6] = [Op::Eq, Op::Ne, Op::Gt, Op::Lt, Op::Ge, Op::Le];

    /// The operator's symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Lt => "<",
            Op::Ge => ">=",
            Op::Le => "<=",
        }
    }

    /// The operator written `symbol`, exactly.
    pub fn from_symbol(symbol: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == symbol)
    }

    /// True for `==` and `!=`, the only operators on strings.
    pub fn is_equality(self) -> bool {
        matches!(self, Op::Eq | Op::Ne)
    }

    /// Whether `fact <op> value` holds, given how `fact` compares to `value`.
    pub fn holds_for(self, fact_vs_value: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match self {
            Op::Eq => fact_vs_value == Equal,
            Op::Ne => fact_vs_value != Equal,
            Op::Gt => fact_vs_value == Greater,
            Op::Lt => fact_vs_value == Less,
            Op::Ge => fact_vs_value != Less,
            Op::Le => fact_vs_value != Greater,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A number as written in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Number {
    /// An integer from `0` to `u64::MAX`, compared exactly with integer facts.
    Int(u64),
    /// Any other number (a fraction, an exponent, a negative integer); always finite.
    Float(f64),
}

impl Number {
    /// The number as an `f64` (rounded for integers above 2⁵³).
    pub fn as_f64(self) -> f64 {
        match self {
            // Rounding is the documented behaviour for huge integers.
            #[allow(clippy::cast_precision_loss)]
            Number::Int(n) => n as f64,
            Number::Float(f) => f,
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Int(n) => write!(f, "{n}"),
            Number::Float(x) => write!(f, "{x}"),
        }
    }
}

/// A rule's `value`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// A string, for `kind` and `mimetype`.
    Text(String),
    /// A number, for every other key.
    Number(Number),
}

impl fmt::Display for Value {
    /// Strings in JSON quotes, numbers as they are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => f.write_str(&json_string(s)),
            Value::Number(n) => n.fmt(f),
        }
    }
}

/// One rule: `{"key": K, "operator": OP, "value": V}`. Valid by construction ([`Rule::new`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rule {
    key: Key,
    operator: Op,
    value: Value,
}

impl Rule {
    /// The rule `key operator value`, if it is well typed (see the [module docs](crate::conditions)):
    /// string keys take a string and `==`/`!=` only, numeric keys take a (finite) number,
    /// non-negative for sizes.
    ///
    /// ```
    /// use tower_uploads::conditions::{Key, Number, Op, Rule, Value};
    ///
    /// let rule = Rule::new(Key::Width, Op::Le, Value::Number(Number::Int(1920))).unwrap();
    /// assert_eq!(rule.to_string(), "width <= 1920");
    /// assert!(Rule::new(Key::Kind, Op::Gt, Value::Text("video".into())).is_err());
    /// ```
    pub fn new(key: Key, operator: Op, value: Value) -> Result<Rule, ConditionsError> {
        check_value(key, operator, &value).map_err(|reason| ConditionsError::Rule {
            index: None,
            reason,
        })?;
        Ok(Rule {
            key,
            operator,
            value,
        })
    }

    /// The property compared.
    pub fn key(&self) -> Key {
        self.key
    }

    /// The comparison.
    pub fn operator(&self) -> Op {
        self.operator
    }

    /// The value compared with.
    pub fn value(&self) -> &Value {
        &self.value
    }
}

impl fmt::Display for Rule {
    /// `filesize <= 1048576`, `kind == "video"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.key, self.operator, self.value)
    }
}

/// A conditions document: rules and how they combine. Valid by construction.
///
/// The default is `{"operator": "&&", "rules": []}`, which always holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Conditions {
    operator: Combine,
    rules: Vec<Rule>,
}

impl Conditions {
    /// Conditions combining `rules` with `operator`; at most [`MAX_RULES`] rules.
    pub fn new(operator: Combine, rules: Vec<Rule>) -> Result<Conditions, ConditionsError> {
        if rules.len() > MAX_RULES {
            return Err(too_many_rules(rules.len()));
        }
        Ok(Conditions { operator, rules })
    }

    /// Parses ittybit's JSON form (at most [`MAX_JSON`] bytes); see the [module docs](crate::conditions)
    /// for what is accepted. The error says which rule is wrong and how.
    ///
    /// ```
    /// use tower_uploads::conditions::{Combine, Conditions};
    ///
    /// let c = Conditions::parse(br#"{"operator": "||", "rules": [
    ///     {"key": "type", "operator": "==", "value": "image/png"},
    ///     {"key": "filesize", "operator": "<", "value": 1e6}
    /// ]}"#).unwrap();
    /// assert_eq!(c.operator(), Combine::Or);
    /// assert_eq!(c.rules()[0].to_string(), r#"mimetype == "image/png""#);
    ///
    /// let err = Conditions::parse(br#"{"rules": [{"key": "kind", "operator": ">", "value": "video"}]}"#)
    ///     .unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "rules[0]: `kind` compares with `==` or `!=` only, not `>`"
    /// );
    /// ```
    pub fn parse(json: &[u8]) -> Result<Conditions, ConditionsError> {
        if json.len() > MAX_JSON {
            return Err(ConditionsError::TooLarge { len: json.len() });
        }
        let Strict(doc) =
            serde_json::from_slice(json).map_err(|e| ConditionsError::Json(e.to_string()))?;
        Conditions::from_json(&doc)
    }

    /// Validates an already parsed JSON value (same rules as [`parse`](Self::parse), without
    /// the byte bound). Duplicate fields cannot be seen here: [`parse`](Self::parse) and the
    /// [`Deserialize`] implementation refuse them.
    pub fn from_json(doc: &Json) -> Result<Conditions, ConditionsError> {
        let Json::Object(map) = doc else {
            return Err(ConditionsError::Document(format!(
                "expected an object {{\"operator\", \"rules\"}}, found {}",
                describe(doc)
            )));
        };
        if let Some(field) = unknown_field(map, &["operator", "rules"]) {
            return Err(ConditionsError::Document(format!(
                "unknown field {}; expected \"operator\" and \"rules\"",
                json_string(field)
            )));
        }
        let operator = match map.get("operator") {
            None => Combine::And,
            Some(Json::String(s)) => Combine::from_symbol(s).ok_or_else(|| {
                ConditionsError::Document(format!(
                    "unknown operator {}; expected \"&&\" or \"||\"",
                    json_string(s)
                ))
            })?,
            Some(other) => {
                return Err(ConditionsError::Document(format!(
                    "\"operator\" must be \"&&\" or \"||\", found {}",
                    describe(other)
                )));
            }
        };
        let rules = match map.get("rules") {
            Some(Json::Array(rules)) => rules,
            Some(other) => {
                return Err(ConditionsError::Document(format!(
                    "\"rules\" must be an array, found {}",
                    describe(other)
                )));
            }
            None => {
                return Err(ConditionsError::Document(
                    "missing field \"rules\"".to_owned(),
                ));
            }
        };
        if rules.len() > MAX_RULES {
            return Err(too_many_rules(rules.len()));
        }
        let rules = rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                parse_rule(rule).map_err(|reason| ConditionsError::Rule {
                    index: Some(index),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Conditions { operator, rules })
    }

    /// How the rules combine.
    pub fn operator(&self) -> Combine {
        self.operator
    }

    /// The rules, in document order (a rule's index is its position here).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// True when some rule is about `key`.
    pub fn has_key(&self, key: Key) -> bool {
        self.rules.iter().any(|r| r.key == key)
    }
}

impl std::str::FromStr for Conditions {
    type Err = ConditionsError;

    /// [`Conditions::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Conditions::parse(s.as_bytes())
    }
}

impl<'de> Deserialize<'de> for Conditions {
    /// The same checks as [`Conditions::parse`] (duplicate fields included), except the byte
    /// bound, which is the enclosing document's business.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Strict(doc) = Strict::deserialize(deserializer)?;
        Conditions::from_json(&doc).map_err(de::Error::custom)
    }
}

/// Why a conditions document is invalid. Answered as 400 `conditions_invalid`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConditionsError {
    /// The JSON text is longer than [`MAX_JSON`] bytes.
    #[error("the document is {len} bytes long; at most {MAX_JSON} are accepted")]
    TooLarge {
        /// The document's length.
        len: usize,
    },
    /// Not JSON (or a duplicate field, or nesting deeper than the JSON parser allows).
    #[error("not valid JSON: {0}")]
    Json(String),
    /// The top level is wrong: not an object, an unknown field, a bad `operator`, `rules`
    /// missing or not an array, too many rules.
    #[error("{0}")]
    Document(String),
    /// A rule is wrong.
    #[error("{}{reason}", match index { Some(i) => format!("rules[{i}]: "), None => String::new() })]
    Rule {
        /// The rule's position in `rules` (`None` for a rule made with [`Rule::new`]).
        index: Option<usize>,
        /// What is wrong with it.
        reason: String,
    },
}

impl From<ConditionsError> for ApiError {
    /// 400 `conditions_invalid`.
    fn from(e: ConditionsError) -> Self {
        ApiError::new(
            ErrorKind::ConditionsInvalid,
            format!("invalid conditions: {e}"),
        )
    }
}

fn too_many_rules(n: usize) -> ConditionsError {
    ConditionsError::Document(format!("{n} rules; at most {MAX_RULES} are accepted"))
}

fn parse_rule(rule: &Json) -> Result<Rule, String> {
    let Json::Object(map) = rule else {
        return Err(format!(
            "expected an object {{\"key\", \"operator\", \"value\"}}, found {}",
            describe(rule)
        ));
    };
    if let Some(field) = unknown_field(map, &["key", "operator", "value"]) {
        return Err(format!(
            "unknown field {}; expected \"key\", \"operator\" and \"value\"",
            json_string(field)
        ));
    }
    let key = match map.get("key") {
        Some(Json::String(name)) => Key::from_name(name).ok_or_else(|| {
            format!(
                "unknown key {}; expected one of kind, mimetype (or type), filesize, width, \
                 height, duration, fps, bitrate",
                json_string(name)
            )
        })?,
        Some(other) => {
            return Err(format!(
                "\"key\" must be a string, found {}",
                describe(other)
            ));
        }
        None => return Err("missing field \"key\"".to_owned()),
    };
    let operator = match map.get("operator") {
        Some(Json::String(symbol)) => Op::from_symbol(symbol).ok_or_else(|| {
            format!(
                "unknown operator {}; expected one of ==, !=, >, <, >=, <=",
                json_string(symbol)
            )
        })?,
        Some(other) => {
            return Err(format!(
                "\"operator\" must be a string, found {}",
                describe(other)
            ));
        }
        None => return Err("missing field \"operator\"".to_owned()),
    };
    let value = match map.get("value") {
        Some(Json::String(s)) => Value::Text(s.clone()),
        Some(Json::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(i), _) => Value::Number(Number::Int(i)),
            (None, Some(f)) if f.is_finite() => Value::Number(Number::Float(f)),
            _ => return Err(format!("{key} takes a finite number, found {n}")),
        },
        Some(other) => {
            let wanted = if key.is_text() {
                "a string"
            } else {
                "a number"
            };
            return Err(format!("`{key}` takes {wanted}, found {}", describe(other)));
        }
        None => return Err("missing field \"value\"".to_owned()),
    };
    check_value(key, operator, &value)?;
    Ok(Rule {
        key,
        operator,
        value,
    })
}

/// The typing rules shared by the parser and [`Rule::new`].
fn check_value(key: Key, op: Op, value: &Value) -> Result<(), String> {
    match (key.is_text(), value) {
        (true, Value::Text(s)) => {
            if !op.is_equality() {
                return Err(format!(
                    "`{key}` compares with `==` or `!=` only, not `{op}`"
                ));
            }
            if s.len() > MAX_STRING {
                return Err(format!(
                    "the value is {} bytes long; at most {MAX_STRING} are accepted",
                    s.len()
                ));
            }
            if key == Key::Kind {
                if !["image", "video", "audio", "other"]
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(s))
                {
                    return Err(format!(
                        "unknown kind {}; expected \"image\", \"video\", \"audio\" or \"other\"",
                        json_string(s)
                    ));
                }
            } else if !is_mime_pattern(s) {
                return Err(format!(
                    "{} is not a MIME type `type/subtype` (without parameters; `type/*` \
                     matches any subtype)",
                    json_string(s)
                ));
            }
            Ok(())
        }
        (true, Value::Number(n)) => Err(format!("`{key}` takes a string, found the number {n}")),
        (false, Value::Text(s)) => Err(format!(
            "`{key}` takes a number, found the string {}",
            json_string(s)
        )),
        (false, Value::Number(n)) => {
            let f = n.as_f64();
            if !f.is_finite() {
                return Err(format!("`{key}` takes a finite number, found {n}"));
            }
            if key.is_non_negative() && f < 0.0 {
                return Err(format!("`{key}` cannot be negative, found {n}"));
            }
            Ok(())
        }
    }
}

/// `type/subtype` of RFC 6838 restricted-name characters, or `type/*`.
fn is_mime_pattern(s: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && t.len() <= 127
            && t.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'!' | b'#' | b'$' | b'&' | b'-' | b'^' | b'_' | b'.' | b'+'
                    )
            })
    };
    match s.split_once('/') {
        Some((ty, sub)) => token(ty) && (sub == "*" || token(sub)),
        None => false,
    }
}

fn unknown_field<'m>(map: &'m Map<String, Json>, known: &[&str]) -> Option<&'m str> {
    map.keys().map(String::as_str).find(|k| !known.contains(k))
}

/// A JSON value's type, with a short excerpt for scalars, for messages.
fn describe(v: &Json) -> String {
    match v {
        Json::Null => "null".to_owned(),
        Json::Bool(b) => format!("the boolean {b}"),
        Json::Number(n) => format!("the number {n}"),
        Json::String(s) => format!("the string {}", json_string(s)),
        Json::Array(_) => "an array".to_owned(),
        Json::Object(_) => "an object".to_owned(),
    }
}

/// `s` as a JSON string, cut to its first 40 characters (messages must stay short whatever
/// the input).
fn json_string(s: &str) -> String {
    const MAX_CHARS: usize = 40;
    let cut = match s.char_indices().nth(MAX_CHARS) {
        Some((at, _)) => &s[..at],
        None => s,
    };
    let quoted = serde_json::to_string(cut).unwrap_or_else(|_| "\"?\"".to_owned());
    if cut.len() < s.len() {
        format!("{quoted}…")
    } else {
        quoted
    }
}

/// A JSON value that refuses duplicate object fields (serde_json's own `Value` keeps the
/// last one silently: `{"operator": "&&", "operator": "||"}` must not be half-read).
struct Strict(Json);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        Strict::deserialize(deserializer).map(|Strict(v)| v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        // Not `size_hint`: a hint is the input's claim, not an allocation to trust.
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Json::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "duplicate field {}",
                    json_string(&key)
                )));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Json::Object(out))
    }
}
