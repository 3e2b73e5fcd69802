//! Resources (Dask's worker `resources`): the units a worker declared
//! (`--resources gpu=2`), which of them the tasks in hand hold, and the resource queues the
//! worker consumes.
//!
//! A task needing resources waits in a queue of its own per set of resource names
//! (`default[gpu]`, see [`lovage_core::resource_queue`]), so a worker without them never
//! reserves it and no broker needs a filter. A worker with resources reserves from those
//! queues only as many tasks as its free units allow, takes the units when it reserves a task
//! (before it is even handed to the pool) and gives them back once the task's outcome is
//! settled, so at most its units' worth run at once. A reserved task needing more units than
//! are free now is handed back (snoozed: not an attempt).

use std::collections::HashMap;
use std::sync::Mutex;

use lovage_core::{ResourceUnits, Resources, TaskId, TaskOptions};

/// The worker's units: free ones, and those each task in hand holds.
pub(crate) struct Units {
    declared: Resources,
    state: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    free: Resources,
    by_task: HashMap<TaskId, Vec<(String, ResourceUnits)>>,
}

/// Whether a reserved task may run here, as far as resources go.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// It needs none, or its units are now taken for it.
    Yes,
    /// Not enough units are free now; this worker has enough once some are given back.
    NotNow,
    /// This worker has fewer units (or none) of some resource than the task needs.
    Never(String),
}

impl Units {
    /// The units of a worker that declared `declared` (None when it declared none).
    pub fn new(declared: &Resources) -> Option<Units> {
        let declared: Resources = declared
            .iter()
            .filter(|(_, u)| !u.is_zero())
            .map(|(n, u)| (n.clone(), *u))
            .collect();
        if declared.is_empty() {
            return None;
        }
        Some(Units {
            state: Mutex::new(Held {
                free: declared.clone(),
                by_task: HashMap::new(),
            }),
            declared,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Held> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The resource queues to reserve from now and how many tasks to take from them at most:
    /// for each of `queues`, one per non-empty subset of the resource names with anything
    /// free (every task there needs some of each name in it), bounded by the fewest whole free
    /// units among those names but at least 1 (a task may need a fraction of a unit; one that
    /// does not fit is handed back by `admit`). Empty while nothing is free.
    pub fn queues_with_room(&self, queues: &[String]) -> (Vec<String>, usize) {
        let held = self.state();
        let names: Vec<&str> = held
            .free
            .iter()
            .filter(|(_, u)| !u.is_zero())
            .map(|(n, _)| n.as_str())
            .collect();
        let room = held
            .free
            .values()
            .filter(|u| !u.is_zero())
            .min()
            .map_or(0, |u| {
                usize::try_from(u.whole_part()).unwrap_or(usize::MAX).max(1)
            });
        if names.is_empty() {
            return (Vec::new(), 0);
        }
        let mut out = Vec::with_capacity(queues.len() * ((1 << names.len()) - 1));
        for q in queues {
            for mask in 1u32..(1 << names.len()) {
                let subset = names
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, n)| *n);
                out.push(lovage_core::resource_queue(q, subset));
            }
        }
        (out, room)
    }

    /// Takes the units `options` asks for, for task `id`, if they are free.
    pub fn admit(&self, id: TaskId, options: &TaskOptions) -> Admit {
        let need: Vec<(&str, ResourceUnits)> = options.resources_needed().collect();
        if need.is_empty() {
            return Admit::Yes;
        }
        for (name, units) in &need {
            let have = self.declared.get(*name).copied().unwrap_or_default();
            if have < *units {
                return Admit::Never(format!("it needs {units} {name}, this worker has {have}"));
            }
        }
        let mut held = self.state();
        if need
            .iter()
            .any(|(name, units)| held.free.get(*name).copied().unwrap_or_default() < *units)
        {
            return Admit::NotNow;
        }
        for (name, units) in &need {
            if let Some(free) = held.free.get_mut(*name) {
                // Checked just above, under the same lock.
                *free = free.checked_sub(*units).unwrap_or_default();
            }
        }
        let taken = need.into_iter().map(|(n, u)| (n.to_owned(), u)).collect();
        held.by_task.insert(id, taken);
        Admit::Yes
    }

    /// Gives back the units these tasks held (a task that held none is skipped).
    pub fn release(&self, ids: impl IntoIterator<Item = TaskId>) {
        let mut held = self.state();
        if held.by_task.is_empty() {
            return;
        }
        for id in ids {
            if let Some(taken) = held.by_task.remove(&id) {
                for (name, units) in taken {
                    if let Some(free) = held.free.get_mut(&name) {
                        *free = free.saturating_add(units);
                    }
                }
            }
        }
    }

    /// Whether every unit is free (for tests and `inspect`).
    #[cfg(test)]
    fn all_free(&self) -> bool {
        self.state().free == self.declared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(pairs: &[(&str, u32)]) -> TaskOptions {
        TaskOptions {
            resources: Some(
                pairs
                    .iter()
                    .map(|(n, u)| ((*n).to_owned(), ResourceUnits::whole(*u)))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn units_are_taken_at_admission_and_given_back_on_release() {
        let u = Units::new(&lovage_core::parse_resources("gpu=2").unwrap()).unwrap();
        let (a, b, c) = (TaskId::new(), TaskId::new(), TaskId::new());
        assert_eq!(u.admit(a, &needs(&[("gpu", 1)])), Admit::Yes);
        assert_eq!(u.admit(b, &needs(&[("gpu", 1)])), Admit::Yes);
        assert_eq!(u.admit(c, &needs(&[("gpu", 1)])), Admit::NotNow);
        assert_eq!(u.queues_with_room(&["q".into()]), (vec![], 0));
        u.release([a]);
        assert_eq!(u.admit(c, &needs(&[("gpu", 1)])), Admit::Yes);
        // Releasing twice, or a task that held nothing, gives nothing back twice.
        u.release([b, b, TaskId::new()]);
        u.release([c]);
        assert!(u.all_free());
        assert!(matches!(
            u.admit(a, &needs(&[("gpu", 3)])),
            Admit::Never(why) if why.contains("needs 3 gpu, this worker has 2")
        ));
        assert!(matches!(u.admit(a, &needs(&[("tpu", 1)])), Admit::Never(_)));
        assert_eq!(u.admit(a, &TaskOptions::default()), Admit::Yes);
        assert!(u.all_free(), "a task needing nothing takes nothing");
    }

    #[test]
    fn the_queues_are_every_subset_of_the_names_with_a_free_unit() {
        let u = Units::new(&lovage_core::parse_resources("gpu=1,mem=4").unwrap()).unwrap();
        let (qs, room) = u.queues_with_room(&["a".into()]);
        assert_eq!(qs, vec!["a[gpu]", "a[mem]", "a[gpu,mem]"]);
        assert_eq!(room, 1, "bounded by the scarcest name");
        assert_eq!(u.admit(TaskId::new(), &needs(&[("gpu", 1)])), Admit::Yes);
        let (qs, room) = u.queues_with_room(&["a".into(), "b".into()]);
        assert_eq!(qs, vec!["a[mem]", "b[mem]"]);
        assert_eq!(room, 4);
        assert!(Units::new(&Resources::new()).is_none());
    }

    fn needs_text(text: &str) -> TaskOptions {
        TaskOptions {
            resources: Some(lovage_core::parse_resources(text).unwrap()),
            ..Default::default()
        }
    }

    /// Fractions add up exactly: two halves share one unit, a 0.75 and a 0.5 do not, and
    /// after any order of releases every unit is free again (no drift).
    #[test]
    fn fractional_units_share_a_unit_exactly() {
        let u = Units::new(&lovage_core::parse_resources("gpu=1").unwrap()).unwrap();
        let (a, b, c) = (TaskId::new(), TaskId::new(), TaskId::new());
        assert_eq!(u.admit(a, &needs_text("gpu=0.5")), Admit::Yes);
        assert_eq!(
            u.queues_with_room(&["q".into()]),
            (vec!["q[gpu]".to_owned()], 1),
            "half a unit free still takes a task"
        );
        assert_eq!(u.admit(b, &needs_text("gpu=0.5")), Admit::Yes);
        assert_eq!(u.admit(c, &needs_text("gpu=0.5")), Admit::NotNow);
        u.release([a, b]);
        assert_eq!(u.admit(a, &needs_text("gpu=0.75")), Admit::Yes);
        assert_eq!(u.admit(b, &needs_text("gpu=0.5")), Admit::NotNow);
        assert_eq!(u.admit(b, &needs_text("gpu=0.25")), Admit::Yes);
        u.release([a, b]);
        for _ in 0..10 {
            let ids: Vec<TaskId> = (0..10).map(|_| TaskId::new()).collect();
            for id in &ids {
                assert_eq!(u.admit(*id, &needs_text("gpu=0.1")), Admit::Yes);
            }
            assert_eq!(u.admit(c, &needs_text("gpu=0.001")), Admit::NotNow);
            u.release(ids);
        }
        assert!(u.all_free());
        let big = Units::new(&lovage_core::parse_resources("gpu=1.5").unwrap()).unwrap();
        assert!(matches!(
            big.admit(a, &needs_text("gpu=2")),
            Admit::Never(why) if why.contains("needs 2 gpu, this worker has 1.5")
        ));
        assert_eq!(big.admit(a, &needs_text("gpu=1.5")), Admit::Yes);
    }
}
