//! Field operations compiled once, when a processor is built, so that each
//! event pays for as few walks down its document as the operation needs: a
//! move walks the parents its two paths share once, a list of paths walks a
//! parent that consecutive paths share once.
//!
//! Every walk compares keys in the document's maps, and that comparison is
//! most of what a processor costs (docs/performance.md): walking less is
//! what makes these faster than the same steps through [`Event::get`],
//! [`Event::set`] and [`Event::remove`], which they otherwise behave as.

use std::ops::Range;

use serde_json::{Map, Value};

use crate::event::{Event, METADATA_NAMESPACE};
use crate::path::{FieldPath, SetError, Write};

/// A move of one field to another path (`rename`), compiled once.
#[derive(Debug, Clone)]
pub struct FieldMove {
    from: FieldPath,
    to: FieldPath,
    /// Leading segments of both paths' parents that are the same: the
    /// object they lead to is found once per move.
    shared: usize,
    /// Whether the move goes through [`Event::rename`]: one path lies
    /// inside the other (moving the source changes what the target walk
    /// finds) or one addresses `@metadata` (a separate map).
    through_event: bool,
}

impl FieldMove {
    /// Compiles the move of `from` to `to`.
    pub fn new(from: FieldPath, to: FieldPath) -> Self {
        let (source, target) = (from.segments(), to.segments());
        let nested = source.starts_with(target) || target.starts_with(source);
        let metadata = from.first() == METADATA_NAMESPACE || to.first() == METADATA_NAMESPACE;
        let shared = source[..source.len() - 1]
            .iter()
            .zip(&target[..target.len() - 1])
            .take_while(|(a, b)| a == b)
            .count();
        FieldMove {
            from,
            to,
            shared,
            through_event: nested || metadata,
        }
    }

    /// The source path.
    pub fn from(&self) -> &FieldPath {
        &self.from
    }

    /// The target path.
    pub fn to(&self) -> &FieldPath {
        &self.to
    }

    /// Moves the value at `from` to `to`; `Ok(false)` when `from` is
    /// missing. Unless `overwrite`, fails with [`SetError::Occupied`] when
    /// `to` exists, whether or not `from` does, as Beats' `rename` does. A
    /// failed move leaves the event as it was.
    pub fn apply(&self, event: &mut Event, overwrite: bool) -> Result<bool, SetError> {
        if self.through_event {
            if !overwrite && event.get(&self.to).is_some() {
                return Err(SetError::Occupied {
                    path: self.to.as_str().to_owned(),
                });
            }
            return event.rename(&self.from, &self.to);
        }
        let Some(parent) = self.from.object_below(&mut event.fields, 0, self.shared) else {
            // The shared parent is missing or not an object: neither path exists.
            return Ok(false);
        };
        let write = if overwrite { Write::Replace } else { Write::Vacant };
        let Some(value) = self.from.remove_below(parent, self.shared) else {
            let last = self.to.segments().len() - 1;
            let target_exists = self
                .to
                .object_below(parent, self.shared, last)
                .is_some_and(|map| map.contains_key(&self.to.segments()[last]));
            if write == Write::Vacant && target_exists {
                return Err(SetError::Occupied {
                    path: self.to.as_str().to_owned(),
                });
            }
            return Ok(false);
        };
        match self.to.set_below(parent, self.shared, value, write) {
            Ok(_) => Ok(true),
            Err((error, value)) => {
                // The source held this value a moment ago, so its parents exist.
                let _ = self.from.set_below(parent, self.shared, value, Write::Replace);
                Err(error)
            }
        }
    }
}

/// A list of paths compiled to be visited in order, consecutive paths with
/// the same parent object sharing one walk to it (`add_fields`,
/// `drop_fields`).
#[derive(Debug, Clone)]
pub struct FieldGroups {
    paths: Vec<FieldPath>,
    /// Ranges of `paths`, in order, each of paths with the same parent.
    groups: Vec<Range<usize>>,
}

impl FieldGroups {
    /// Compiles `paths`, keeping their order.
    pub fn new(paths: Vec<FieldPath>) -> Self {
        let mut groups: Vec<Range<usize>> = Vec::new();
        for (index, path) in paths.iter().enumerate() {
            match groups.last_mut() {
                Some(group) if same_parent(&paths[group.start], path) => group.end = index + 1,
                _ => groups.push(index..index + 1),
            }
        }
        FieldGroups { paths, groups }
    }

    /// The paths, in order.
    pub fn paths(&self) -> &[FieldPath] {
        &self.paths
    }

    /// Removes the value at each path in order, handing `removed` the
    /// path's index and what was there, as [`Event::remove`] would.
    pub fn remove(&self, event: &mut Event, mut removed: impl FnMut(usize, Option<Value>)) {
        for group in &self.groups {
            let first = &self.paths[group.start];
            if group.len() == 1 {
                removed(group.start, event.remove(first));
                continue;
            }
            let (root, depth) = root_of(event, first);
            let last = first.segments().len() - 1;
            match first.object_below(root, depth, last) {
                Some(parent) => {
                    for index in group.clone() {
                        removed(index, parent.remove(&self.paths[index].segments()[last]));
                    }
                }
                None => group.clone().for_each(|index| removed(index, None)),
            }
        }
    }

    /// Writes `value(index)` at each path in order, as [`Event::set`]
    /// would, creating parents; stops at the first path that cannot be
    /// written.
    pub fn set(&self, event: &mut Event, mut value: impl FnMut(usize) -> Value) -> Result<(), SetError> {
        for group in &self.groups {
            let first = &self.paths[group.start];
            if group.len() == 1 {
                event.set(first, value(group.start))?;
                continue;
            }
            let (root, depth) = root_of(event, first);
            let last = first.segments().len() - 1;
            first
                .with_object_below(root, depth, last, (), |parent, ()| {
                    for index in group.clone() {
                        self.paths[index]
                            .set_last(parent, value(index), Write::Replace)
                            .map_err(|(error, _)| (error, ()))?;
                    }
                    Ok(())
                })
                .map_err(|(error, ())| error)?;
        }
        Ok(())
    }
}

/// Whether `a` and `b` are fields of the same object, below the top level
/// (a top-level `@metadata` is the event's metadata, not a field).
fn same_parent(a: &FieldPath, b: &FieldPath) -> bool {
    let (a, b) = (a.segments(), b.segments());
    a.len() >= 2 && a.len() == b.len() && a[..a.len() - 1] == b[..b.len() - 1]
}

/// The map a path of two segments or more starts in, and how many of its
/// segments lead there.
fn root_of<'a>(event: &'a mut Event, path: &FieldPath) -> (&'a mut Map<String, Value>, usize) {
    if path.first() == METADATA_NAMESPACE {
        (&mut event.metadata, 1)
    } else {
        (&mut event.fields, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(raw: &str) -> FieldPath {
        FieldPath::parse(raw).unwrap()
    }

    fn event(value: Value) -> Event {
        Event::from_value(value)
    }

    /// What the generic steps would leave, to compare the compiled ones with.
    fn moved_generically(
        mut event: Event,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> (Event, Result<bool, SetError>) {
        let (from, to) = (path(from), path(to));
        let result = if !overwrite && event.get(&to).is_some() {
            Err(SetError::Occupied {
                path: to.as_str().to_owned(),
            })
        } else {
            event.rename(&from, &to)
        };
        (event, result)
    }

    #[test]
    fn a_move_does_what_remove_then_set_does() {
        let documents = [
            json!({"misp": {"Attribute": {"uuid": "u"}, "Orgc": {"name": "o"}}}),
            json!({"misp": {"attribute": 1, "Attribute": 2}}),
            json!({"misp": "flat"}),
            json!({"misp": {"Attribute": {"first_seen": "t"}}, "threat": "blocks"}),
            json!({"Event": {"a": 1}, "@metadata": {"_id": "x"}}),
            json!({"a": {"b": {"c": 1}}}),
            json!({}),
        ];
        let moves = [
            ("misp.Attribute", "misp.attribute"),
            ("misp.Attribute.first_seen", "threat.indicator.first_seen"),
            ("Event", "misp"),
            ("a.b", "a.b.c"),
            ("a.b.c", "a"),
            ("a.b.c", "a.x.y"),
            ("@metadata._id", "misp.id"),
            ("Event.a", "@metadata.a"),
        ];
        for document in &documents {
            for (from, to) in moves {
                for overwrite in [false, true] {
                    let (expected, expected_result) =
                        moved_generically(event(document.clone()), from, to, overwrite);
                    let mut compiled = event(document.clone());
                    let result = FieldMove::new(path(from), path(to)).apply(&mut compiled, overwrite);
                    assert_eq!(
                        result, expected_result,
                        "{from} -> {to} on {document}, overwrite {overwrite}"
                    );
                    assert_eq!(
                        compiled, expected,
                        "{from} -> {to} on {document}, overwrite {overwrite}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_refused_move_names_the_full_target_and_changes_nothing() {
        let document = json!({"misp": {"attribute": {"first_seen": "t", "value": "v"}, "threat": 1}});
        let mut moved = event(document.clone());
        let error = FieldMove::new(path("misp.attribute.first_seen"), path("misp.threat.first_seen"))
            .apply(&mut moved, true)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot set `misp.threat.first_seen`: `misp.threat` holds a number, not an object"
        );
        assert_eq!(moved, event(document));
    }

    #[test]
    fn grouped_paths_are_set_and_removed_as_one_by_one() {
        let paths = [
            "event.kind",
            "event.type",
            "ecs.version",
            "event.dataset",
            "@metadata._id",
            "@metadata.index",
            "@metadata",
            "tags",
            "a.b.c",
            "a.b.d",
            "a.b",
        ];
        let groups = FieldGroups::new(paths.iter().map(|raw| path(raw)).collect());
        let documents = [
            json!({}),
            json!({"event": {"kind": "old", "original": "o"}, "a": {"b": {"c": 0, "e": 1}}}),
            json!({"event": "blocks", "a": 1}),
            json!({"a": {"b": 5}, "@metadata": {"_id": "i"}}),
        ];
        let value_of = |index: usize| {
            if paths[index] == "@metadata" {
                json!({"pipeline": "p"})
            } else {
                json!(index)
            }
        };
        for document in &documents {
            let mut expected = event(document.clone());
            let expected_result = paths
                .iter()
                .enumerate()
                .try_for_each(|(index, raw)| expected.set(&path(raw), value_of(index)).map(|_| ()));
            let mut compiled = event(document.clone());
            assert_eq!(groups.set(&mut compiled, value_of), expected_result, "{document}");
            assert_eq!(compiled, expected, "set on {document}");

            let mut expected = event(document.clone());
            let expected_removed: Vec<Option<Value>> =
                paths.iter().map(|raw| expected.remove(&path(raw))).collect();
            let mut compiled = event(document.clone());
            let mut removed = Vec::new();
            groups.remove(&mut compiled, |index, value| removed.push((index, value)));
            assert_eq!(
                removed,
                expected_removed.into_iter().enumerate().collect::<Vec<_>>(),
                "{document}"
            );
            assert_eq!(compiled, expected, "remove on {document}");
        }
    }

    #[test]
    fn only_consecutive_fields_of_one_object_share_a_walk() {
        let groups = FieldGroups::new(
            [
                "event.kind",
                "event.type",
                "ecs.version",
                "event.module",
                "tags",
                "labels",
                "a.b",
                "a.b.c",
            ]
            .iter()
            .map(|raw| path(raw))
            .collect(),
        );
        assert_eq!(groups.groups, vec![0..2, 2..3, 3..4, 4..5, 5..6, 6..7, 7..8]);
    }
}
