//! Which clips to render: the full set, or `per_class` clips per class stratified over
//! instruments (round-robin over a seeded shuffle of instruments, each with its own seeded clip
//! order), with spare candidates queued behind so that silent clips can be replaced.

use super::{Concept, DataError, DatasetConfig, Enumeration};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;

/// Per class (in the concept's class order): candidate clip indices in preference order, and how
/// many are wanted (None = all).
pub struct Selection {
    pub classes: Vec<(String, Vec<usize>)>,
    pub per_class: Option<usize>,
}

pub fn select(
    cfg: &DatasetConfig,
    concept: Concept,
    e: &Enumeration,
) -> Result<Selection, DataError> {
    let all = concept.classes();
    let wanted: Vec<String> = match &cfg.classes {
        None => all.clone(),
        Some(cs) => {
            for c in cs {
                if !all.contains(c) {
                    return Err(DataError::UnknownClass {
                        concept,
                        class: c.clone(),
                        known: all.join(", "),
                    });
                }
            }
            all.iter().filter(|c| cs.contains(c)).cloned().collect()
        }
    };
    if cfg.per_class == Some(0) {
        return Err(DataError::PerClassZero);
    }
    if let Some(programs) = &cfg.instruments {
        let used: std::collections::BTreeSet<u8> = e.clips.iter().map(|c| c.program).collect();
        if let Some(&program) = programs.iter().find(|p| !used.contains(p)) {
            return Err(DataError::UnknownInstrument {
                concept,
                program,
                known: used
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let mut by_class: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in e.clips.iter().enumerate() {
        if cfg
            .instruments
            .as_ref()
            .is_some_and(|p| !p.contains(&c.program))
        {
            continue;
        }
        by_class.entry(c.class.as_str()).or_default().push(i);
    }
    let mut classes = Vec::new();
    for class in wanted {
        let ids = by_class.get(class.as_str()).cloned().unwrap_or_default();
        let order = match cfg.per_class {
            None => ids,
            Some(n) => {
                if n > ids.len() {
                    return Err(DataError::PerClassTooLarge {
                        concept,
                        class,
                        per_class: n,
                        available: ids.len(),
                    });
                }
                stratified(e, &ids, cfg.seed, &class)
            }
        };
        classes.push((class, order));
    }
    Ok(Selection {
        classes,
        per_class: cfg.per_class,
    })
}

fn stratified(e: &Enumeration, ids: &[usize], seed: u64, class: &str) -> Vec<usize> {
    let key = blake3::hash(format!("select/{seed}/{class}").as_bytes());
    let mut rng = rand_chacha::ChaCha8Rng::from_seed(*key.as_bytes());
    let mut by_inst: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &i in ids {
        by_inst
            .entry(e.clips[i].instrument.as_str())
            .or_default()
            .push(i);
    }
    let mut groups: Vec<Vec<usize>> = by_inst.into_values().collect();
    groups.shuffle(&mut rng);
    for g in &mut groups {
        g.shuffle(&mut rng);
    }
    let mut out = Vec::with_capacity(ids.len());
    let longest = groups.iter().map(Vec::len).max().unwrap_or(0);
    for k in 0..longest {
        for g in &groups {
            if let Some(&i) = g.get(k) {
                out.push(i);
            }
        }
    }
    out
}
