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

use lovage_core::{Resources, TaskId, TaskOptions};

/// The worker's units: free ones, and those each task in hand holds.
pub(crate) struct Units {
    declared: Resources,
    state: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    free: Resources,
    by_task: HashMap<TaskId, Vec<(String, u32)>>,
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
            .filter(|(_, u)| **u > 0)
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

    /// The resource queues to reserve from now and how many tasks they may give at most: for
    /// each of `queues`, one per non-empty subset of the resource names that have a free unit
    /// (every task there needs at least one unit of each name in it), bounded by the fewest
    /// free units among those names. Empty while no unit is free.
    pub fn queues_with_room(&self, queues: &[String]) -> (Vec<String>, usize) {
        let held = self.state();
        let names: Vec<&str> = held
            .free
            .iter()
            .filter(|(_, u)| **u > 0)
            .map(|(n, _)| n.as_str())
            .collect();
        let room = held
            .free
            .values()
            .filter(|u| **u > 0)
            .min()
            .map_or(0, |u| *u as usize);
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
        let need: Vec<(&str, u32)> = options.resources_needed().collect();
        if need.is_empty() {
            return Admit::Yes;
        }
        for (name, units) in &need {
            let have = self.declared.get(*name).copied().unwrap_or(0);
            if have < *units {
                return Admit::Never(format!("it needs {units} {name}, this worker has {have}"));
            }
        }
        let mut held = self.state();
        if need
            .iter()
            .any(|(name, units)| held.free.get(*name).copied().unwrap_or(0) < *units)
        {
            return Admit::NotNow;
        }
        for (name, units) in &need {
            if let Some(free) = held.free.get_mut(*name) {
                *free -= units;
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
                        *free += units;
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
            resources: Some(pairs.iter().map(|(n, u)| ((*n).to_owned(), *u)).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn units_are_taken_at_admission_and_given_back_on_release() {
        let u = Units::new(&Resources::from([("gpu".into(), 2)])).unwrap();
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
        let u = Units::new(&Resources::from([("gpu".into(), 1), ("mem".into(), 4)])).unwrap();
        let (qs, room) = u.queues_with_room(&["a".into()]);
        assert_eq!(qs, vec!["a[gpu]", "a[mem]", "a[gpu,mem]"]);
        assert_eq!(room, 1, "bounded by the scarcest name");
        assert_eq!(u.admit(TaskId::new(), &needs(&[("gpu", 1)])), Admit::Yes);
        let (qs, room) = u.queues_with_room(&["a".into(), "b".into()]);
        assert_eq!(qs, vec!["a[mem]", "b[mem]"]);
        assert_eq!(room, 4);
        assert!(Units::new(&Resources::new()).is_none());
    }
}
