//! The queue's rules, pure: who stands in the way of a newcomer, and what one acquisition does to
//! the endpoint lock (see [`super::lock`]): versions line up by event time; a newer waiting
//! version of a model supersedes that model's older waiting versions, other models keep their
//! place; a holder or queue head found finished loses its place.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ledger::record_model_version;

/// The endpoint lock blob: one rollout at a time per endpoint, and the queue behind it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointLock {
    /// The record rolling out now.
    #[serde(default)]
    pub active: Option<String>,
    /// Records waiting, oldest first.
    #[serde(default)]
    pub queued: Vec<QueuedVersion>,
    /// The last promoted record (for `rollback`).
    #[serde(default)]
    pub last_promoted: Option<String>,
}

/// A waiting version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedVersion {
    /// Its record.
    pub key: String,
    /// Its event time (newest wins).
    #[serde(default)]
    pub event_time: Option<String>,
}

/// What acquiring the endpoint gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Acquired {
    /// The rollout may start.
    Granted,
    /// The rollout may start; these older waiting versions are now `superseded`.
    GrantedSuperseding {
        /// Their record keys.
        superseded: Vec<String>,
    },
    /// Another rollout holds the endpoint; this one waits. Older waiting versions it replaced.
    Queued {
        /// Record keys that are now `superseded`.
        superseded: Vec<String>,
    },
    /// A newer version of the same model already waits: this one is `superseded` itself.
    Superseded {
        /// The record of the newer version.
        by: String,
    },
}

impl EndpointLock {
    /// The waiting record that may start now: the queue's head while nobody holds the endpoint.
    pub fn next_to_wake(&self) -> Option<String> {
        match self.active {
            None => self.queued.first().map(|q| q.key.clone()),
            Some(_) => None,
        }
    }
}

/// Whether event time `a` is newer than `b` (unknown times never win).
fn newer(a: Option<&str>, b: Option<&str>) -> bool {
    let parse = |t: Option<&str>| {
        t.and_then(|t| {
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
    };
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

/// How many versions may wait for one endpoint (at most one per model). Past it a newcomer is not
/// written into the queue: its record stays `queued` and asks again on its own.
pub const MAX_QUEUED: usize = 100;

/// Whether two record keys are versions of one model.
fn same_model(a: &str, b: &str) -> bool {
    match (record_model_version(a), record_model_version(b)) {
        (Some((a, _)), Some((b, _))) => a == b,
        _ => false,
    }
}

/// Who stands in the way of `key`: the holder, or, while nobody holds the endpoint, the first
/// waiting version of another model (the ones of `key`'s model give way to it anyway). Manual
/// rollbacks are never taken over.
pub(super) fn blocker<'a>(lock: &'a EndpointLock, key: &str) -> Option<&'a str> {
    match lock.active.as_deref() {
        Some(holder) if holder == key || holder.starts_with("rollback:") => None,
        Some(holder) => Some(holder),
        None => lock
            .queued
            .iter()
            .map(|q| q.key.as_str())
            .find(|q| *q != key && !same_model(q, key)),
    }
}

/// One acquisition, on the lock as read: `finished` is the record found finished or gone (the
/// [`blocker`] of that same read), which loses its place. Pure; see the module docs.
pub(super) fn decide(
    lock: &mut EndpointLock,
    key: &str,
    event_time: Option<&str>,
    finished: Option<&str>,
) -> Acquired {
    if let Some(gone) = finished {
        if lock.active.as_deref() == Some(gone) {
            lock.active = None;
        }
        lock.queued.retain(|q| q.key != gone);
    }
    if lock.active.as_deref() == Some(key) {
        lock.queued.retain(|q| q.key != key);
        return Acquired::Granted;
    }
    let of_model = |q: &QueuedVersion| q.key != key && same_model(&q.key, key);
    // Waiting behind a newer version of its model: this one will never be deployed.
    if let Some(by) = lock
        .queued
        .iter()
        .find(|q| of_model(q) && newer(q.event_time.as_deref(), event_time))
        .map(|q| q.key.clone())
    {
        lock.queued.retain(|q| q.key != key);
        return Acquired::Superseded { by };
    }
    // Older waiting versions of its model give way to this one; other models keep their place.
    let superseded: Vec<String> = lock
        .queued
        .iter()
        .filter(|q| of_model(q))
        .map(|q| q.key.clone())
        .collect();
    lock.queued.retain(|q| !of_model(q));
    if !lock.queued.iter().any(|q| q.key == key) && lock.queued.len() < MAX_QUEUED {
        let at = lock
            .queued
            .iter()
            .position(|q| newer(q.event_time.as_deref(), event_time))
            .unwrap_or(lock.queued.len());
        lock.queued.insert(
            at,
            QueuedVersion {
                key: key.to_string(),
                event_time: event_time.map(str::to_string),
            },
        );
    }
    if lock.active.is_none() && lock.queued.first().is_some_and(|q| q.key == key) {
        lock.queued.remove(0);
        lock.active = Some(key.to_string());
        return if superseded.is_empty() {
            Acquired::Granted
        } else {
            Acquired::GrantedSuperseding { superseded }
        };
    }
    Acquired::Queued { superseded }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(model: &str, version: &str) -> String {
        crate::ledger::record_key("/ws", model, version)
    }

    fn at(second: u32) -> String {
        format!("2026-11-26T10:00:{second:02}Z")
    }

    fn waiting(entries: &[(&str, &str, u32)]) -> Vec<QueuedVersion> {
        entries
            .iter()
            .map(|(m, v, t)| QueuedVersion {
                key: key(m, v),
                event_time: Some(at(*t)),
            })
            .collect()
    }

    fn lock(active: Option<(&str, &str)>, queued: &[(&str, &str, u32)]) -> EndpointLock {
        EndpointLock {
            active: active.map(|(m, v)| key(m, v)),
            queued: waiting(queued),
            last_promoted: None,
        }
    }

    #[test]
    fn versions_line_up_by_event_time_and_supersede_only_their_own_model() {
        struct Case {
            name: &'static str,
            before: EndpointLock,
            newcomer: (&'static str, &'static str, u32),
            finished: Option<(&'static str, &'static str)>,
            outcome: Acquired,
            after: EndpointLock,
        }
        let cases = [
            Case {
                name: "a free endpoint is granted",
                before: lock(None, &[]),
                newcomer: ("fraud", "2", 2),
                finished: None,
                outcome: Acquired::Granted,
                after: lock(Some(("fraud", "2")), &[]),
            },
            Case {
                name: "a busy endpoint queues",
                before: lock(Some(("fraud", "2")), &[]),
                newcomer: ("churn", "1", 5),
                finished: None,
                outcome: Acquired::Queued { superseded: vec![] },
                after: lock(Some(("fraud", "2")), &[("churn", "1", 5)]),
            },
            Case {
                name: "another model's waiting version keeps its place",
                before: lock(Some(("fraud", "2")), &[("churn", "1", 5)]),
                newcomer: ("fraud", "3", 7),
                finished: None,
                outcome: Acquired::Queued { superseded: vec![] },
                after: lock(
                    Some(("fraud", "2")),
                    &[("churn", "1", 5), ("fraud", "3", 7)],
                ),
            },
            Case {
                name: "an older waiting version of the model gives way",
                before: lock(
                    Some(("fraud", "2")),
                    &[("fraud", "3", 7), ("churn", "1", 8)],
                ),
                newcomer: ("fraud", "4", 9),
                finished: None,
                outcome: Acquired::Queued {
                    superseded: vec![key("fraud", "3")],
                },
                after: lock(
                    Some(("fraud", "2")),
                    &[("churn", "1", 8), ("fraud", "4", 9)],
                ),
            },
            Case {
                name: "a newcomer older than a waiting version of its model is superseded",
                before: lock(Some(("fraud", "2")), &[("fraud", "4", 9)]),
                newcomer: ("fraud", "3", 7),
                finished: None,
                outcome: Acquired::Superseded {
                    by: key("fraud", "4"),
                },
                after: lock(Some(("fraud", "2")), &[("fraud", "4", 9)]),
            },
            Case {
                name: "the queue is in event time order, not arrival order",
                before: lock(Some(("fraud", "2")), &[("churn", "1", 8)]),
                newcomer: ("iris", "1", 6),
                finished: None,
                outcome: Acquired::Queued { superseded: vec![] },
                after: lock(Some(("fraud", "2")), &[("iris", "1", 6), ("churn", "1", 8)]),
            },
            Case {
                name: "a free endpoint goes to the oldest waiting version first",
                before: lock(None, &[("churn", "1", 5)]),
                newcomer: ("fraud", "3", 7),
                finished: None,
                outcome: Acquired::Queued { superseded: vec![] },
                after: lock(None, &[("churn", "1", 5), ("fraud", "3", 7)]),
            },
            Case {
                name: "the head of the queue takes a free endpoint",
                before: lock(None, &[("churn", "1", 5), ("fraud", "3", 7)]),
                newcomer: ("churn", "1", 5),
                finished: None,
                outcome: Acquired::Granted,
                after: lock(Some(("churn", "1")), &[("fraud", "3", 7)]),
            },
            Case {
                name: "a newer version takes a free endpoint from its model's older one",
                before: lock(None, &[("credit", "21", 21)]),
                newcomer: ("credit", "22", 22),
                finished: None,
                outcome: Acquired::GrantedSuperseding {
                    superseded: vec![key("credit", "21")],
                },
                after: lock(Some(("credit", "22")), &[]),
            },
            Case {
                name: "a finished holder checked on this very state is taken over",
                before: lock(Some(("fraud", "2")), &[]),
                newcomer: ("churn", "1", 5),
                finished: Some(("fraud", "2")),
                outcome: Acquired::Granted,
                after: lock(Some(("churn", "1")), &[]),
            },
            Case {
                name: "a finished queue head loses its place",
                before: lock(None, &[("churn", "1", 5)]),
                newcomer: ("fraud", "3", 7),
                finished: Some(("churn", "1")),
                outcome: Acquired::Granted,
                after: lock(Some(("fraud", "3")), &[]),
            },
            Case {
                name: "the holder asking again is granted",
                before: lock(Some(("fraud", "2")), &[("churn", "1", 5)]),
                newcomer: ("fraud", "2", 2),
                finished: None,
                outcome: Acquired::Granted,
                after: lock(Some(("fraud", "2")), &[("churn", "1", 5)]),
            },
        ];
        for case in cases {
            let mut edited = case.before.clone();
            let (model, version, time) = case.newcomer;
            let finished = case.finished.map(|(m, v)| key(m, v));
            let outcome = decide(
                &mut edited,
                &key(model, version),
                Some(&at(time)),
                finished.as_deref(),
            );
            assert_eq!(outcome, case.outcome, "{}", case.name);
            assert_eq!(edited, case.after, "{}", case.name);
        }
    }

    #[test]
    fn only_the_holder_or_another_models_head_stands_in_the_way() {
        let busy = lock(Some(("fraud", "2")), &[("churn", "1", 5)]);
        assert_eq!(
            blocker(&busy, &key("iris", "1")),
            Some(key("fraud", "2").as_str())
        );
        assert_eq!(blocker(&busy, &key("fraud", "2")), None);
        let free = lock(None, &[("fraud", "3", 4), ("churn", "1", 5)]);
        assert_eq!(
            blocker(&free, &key("fraud", "4")),
            Some(key("churn", "1").as_str())
        );
        let mut manual = lock(None, &[]);
        manual.active = Some(format!("rollback:{}", key("fraud", "2")));
        assert_eq!(blocker(&manual, &key("fraud", "3")), None);
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut full = lock(Some(("fraud", "2")), &[]);
        for i in 0..MAX_QUEUED {
            full.queued.push(QueuedVersion {
                key: key(&format!("m{i}"), "1"),
                event_time: None,
            });
        }
        let outcome = decide(&mut full, &key("late", "1"), None, None);
        assert_eq!(outcome, Acquired::Queued { superseded: vec![] });
        assert_eq!(full.queued.len(), MAX_QUEUED);
    }
}
