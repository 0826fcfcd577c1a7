//! The app's document and edit history, apart from any widget: what is open, what
//! is selected, undo/redo, dirty tracking. Tests drive it directly or through the
//! screens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::model::{Destination, EventSet, WORKSPACE_VERSION, Workspace};

/// The open workspace as the app edits it. Event sets sit behind `Arc`s so an undo
/// snapshot of a workspace with 10 000 events costs a few pointer copies.
#[derive(Debug, Clone, Default)]
pub struct Doc {
    pub name: String,
    pub destinations: Vec<Destination>,
    pub sets: Vec<Arc<EventSet>>,
}

impl PartialEq for Doc {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.destinations == other.destinations
            && self.sets.len() == other.sets.len()
            && self
                .sets
                .iter()
                .zip(&other.sets)
                .all(|(a, b)| Arc::ptr_eq(a, b) || a == b)
    }
}

impl Doc {
    pub fn from_workspace(ws: Workspace) -> Self {
        Self {
            name: ws.name,
            destinations: ws.destinations,
            sets: ws.event_sets.into_iter().map(Arc::new).collect(),
        }
    }

    pub fn to_workspace(&self) -> Workspace {
        Workspace {
            version: WORKSPACE_VERSION,
            name: self.name.clone(),
            destinations: self.destinations.clone(),
            event_sets: self.sets.iter().map(|s| (**s).clone()).collect(),
        }
    }

    /// A name not used by any destination: `base`, `base 2`, `base 3`…
    pub fn unique_destination_name(&self, base: &str) -> String {
        unique(base, |n| self.destinations.iter().any(|d| d.name == n))
    }

    pub fn unique_set_name(&self, base: &str) -> String {
        unique(base, |n| self.sets.iter().any(|s| s.name == n))
    }
}

fn unique(base: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_owned();
    }
    // Bounded: a workspace has fewer than a million names.
    (2..1_000_000)
        .map(|i| format!("{base} {i}"))
        .find(|n| !taken(n))
        .unwrap_or_else(|| base.to_owned())
}

/// Undo/redo over whole-document snapshots. Keystrokes in one field within a short
/// pause become one step, as in a text editor.
#[derive(Debug, Default)]
pub struct Edits {
    undo: Vec<Doc>,
    redo: Vec<Doc>,
    /// The document as of the last recorded step.
    base: Doc,
    last: Option<(String, Instant)>,
}

/// How many steps are kept.
const UNDO_DEPTH: usize = 200;
/// Edits of one field closer together than this are one step.
const COALESCE: Duration = Duration::from_millis(1200);

impl Edits {
    pub fn new(doc: &Doc) -> Self {
        Self {
            base: doc.clone(),
            ..Self::default()
        }
    }

    /// Record that `doc` changed (by the control `key`). Call after the change.
    pub fn record(&mut self, doc: &Doc, key: &str) {
        if *doc == self.base {
            return;
        }
        let now = Instant::now();
        let merge = self
            .last
            .as_ref()
            .is_some_and(|(k, t)| k == key && !key.is_empty() && now.duration_since(*t) < COALESCE);
        if merge {
            self.base = doc.clone();
        } else {
            self.undo
                .push(std::mem::replace(&mut self.base, doc.clone()));
            if self.undo.len() > UNDO_DEPTH {
                self.undo.remove(0);
            }
        }
        self.redo.clear();
        self.last = Some((key.to_owned(), now));
    }

    /// Step back: the document to show, if there is a step.
    pub fn undo(&mut self, doc: &Doc) -> Option<Doc> {
        let prev = self.undo.pop()?;
        self.redo.push(doc.clone());
        self.base = prev.clone();
        self.last = None;
        Some(prev)
    }

    pub fn redo(&mut self, doc: &Doc) -> Option<Doc> {
        let next = self.redo.pop()?;
        self.undo.push(doc.clone());
        self.base = next.clone();
        self.last = None;
        Some(next)
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    /// Start over (a workspace was opened).
    pub fn reset(&mut self, doc: &Doc) {
        *self = Self::new(doc);
    }
}

/// Which tab of the main area is showing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tab {
    #[default]
    Destination,
    Mapping,
    Preview,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(url: &str) -> Doc {
        Doc {
            name: "w".into(),
            destinations: vec![Destination::new("d", url)],
            sets: Vec::new(),
        }
    }

    #[test]
    fn keystrokes_in_one_field_are_one_step_and_other_fields_are_not() {
        let mut d = doc("http://a");
        let mut e = Edits::new(&d);
        d.destinations[0].url.push('b');
        e.record(&d, "url");
        d.destinations[0].url.push('c');
        e.record(&d, "url");
        d.destinations[0].name.push('x');
        e.record(&d, "name");
        let back = e.undo(&d).expect("a step");
        assert_eq!(back.destinations[0].name, "d");
        assert_eq!(back.destinations[0].url, "http://abc");
        let back2 = e.undo(&back).expect("a step");
        assert_eq!(back2.destinations[0].url, "http://a");
        assert!(e.undo(&back2).is_none());
        let fwd = e.redo(&back2).expect("redo");
        assert_eq!(fwd.destinations[0].url, "http://abc");
    }

    #[test]
    fn unique_names_count_up() {
        let d = doc("http://a");
        assert_eq!(d.unique_destination_name("d"), "d 2");
        assert_eq!(d.unique_destination_name("new"), "new");
    }
}
