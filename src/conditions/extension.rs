//! [`UploadConditions`]: the conditions that apply to one request, carried in its extensions.

use super::eval::{Facts, Verdict};
use super::model::Conditions;
use std::sync::Arc;

/// The conditions an upload must meet: the app's (one set per
/// [`ConditionsLayer`](super::ConditionsLayer) the request went through) and the upload
/// session's own (PROTOCOL.md §5: "both must hold").
///
/// [`ConditionsLayer`](super::ConditionsLayer) puts one in the request's extensions (adding
/// its conditions to one an outer layer put there, so stacked layers all apply); the upload
/// service takes it from there, adds the session's conditions with
/// [`set_session`](Self::set_session), and calls [`evaluate`](Self::evaluate) at each
/// [`Phase`](super::Phase). Cloning is cheap: the conditions are shared.
///
/// ```
/// use std::sync::Arc;
/// use tower_uploads::conditions::{Conditions, Decision, Facts, UploadConditions};
///
/// let app = Conditions::parse(br#"{"rules": [{"key": "filesize", "operator": "<", "value": 100}]}"#).unwrap();
/// let session = Conditions::parse(br#"{"rules": [{"key": "filesize", "operator": ">", "value": 10}]}"#).unwrap();
/// let mut c = UploadConditions::new().with_app(Arc::new(app));
/// c.set_session(Some(Arc::new(session)));
/// assert_eq!(c.evaluate(&Facts::declared(Some(50))).decision(), Decision::Pass);
/// let verdict = c.evaluate(&Facts::declared(Some(5)));
/// assert_eq!(verdict.decision(), Decision::Fail);
/// assert_eq!(
///     verdict.message(),
///     "conditions failed: the upload's rules[0] (filesize > 10: the file has 5 bytes)"
/// );
/// ```
#[derive(Clone, Debug, Default)]
pub struct UploadConditions {
    app: Vec<Arc<Conditions>>,
    session: Option<Arc<Conditions>>,
}

impl UploadConditions {
    /// No conditions: everything passes.
    pub fn new() -> Self {
        UploadConditions::default()
    }

    /// Adds a set of app-wide conditions.
    #[must_use]
    pub fn with_app(mut self, conditions: Arc<Conditions>) -> Self {
        self.push_app(conditions);
        self
    }

    /// Adds a set of app-wide conditions.
    pub fn push_app(&mut self, conditions: Arc<Conditions>) {
        self.app.push(conditions);
    }

    /// Sets (or clears) the upload session's own conditions.
    pub fn set_session(&mut self, conditions: Option<Arc<Conditions>>) {
        self.session = conditions;
    }

    /// The app-wide conditions, outermost layer first.
    pub fn app(&self) -> &[Arc<Conditions>] {
        &self.app
    }

    /// The upload session's conditions.
    pub fn session(&self) -> Option<&Arc<Conditions>> {
        self.session.as_ref()
    }

    /// True when there is nothing to check (no conditions, or only empty rule lists).
    pub fn is_empty(&self) -> bool {
        self.app
            .iter()
            .chain(&self.session)
            .all(|c| c.rules().is_empty())
    }

    /// Evaluates every set of conditions against `facts`; they combine with `&&`.
    pub fn evaluate(&self, facts: &Facts<'_>) -> Verdict {
        Verdict {
            app: self.app.iter().map(|c| c.evaluate(facts)).collect(),
            session: self.session.as_ref().map(|c| c.evaluate(facts)),
        }
    }
}
