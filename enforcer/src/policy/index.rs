//! The kernel's policy index: which cgroup depths hold policies, and the order of writes that
//! changes it while programs read it.
use std::collections::BTreeMap;

use enforcer_common::{LEVEL_UNUSED, LevelFilter, MAX_POLICY_LEVELS, PolicyIndex};

use super::PolicyError;

/// The writes, in order, that take the kernel's policy index from `current` to one covering
/// `policies` (cgroup id, depth). Each intermediate value is safe for a program to read torn
/// against its predecessor; the rules are on [`PolicyIndex`].
pub fn index_updates(
    current: &PolicyIndex,
    policies: &[(u64, u32)],
) -> Result<Vec<PolicyIndex>, PolicyError> {
    let mut wanted: BTreeMap<u32, LevelFilter> = BTreeMap::new();
    for &(id, level) in policies {
        wanted
            .entry(level)
            .or_insert_with(|| LevelFilter {
                level,
                ..LevelFilter::default()
            })
            .insert(id);
    }
    let depths = wanted.len();
    let count = (current.count as usize).min(MAX_POLICY_LEVELS);
    let mut next = *current;
    // Slots already free may be reused now; slots freed by this update only in a later one.
    let mut reusable = (0..count).filter(|&i| current.slots[i].level == LEVEL_UNUSED);
    for slot in &mut next.slots[..count] {
        if slot.level != LEVEL_UNUSED {
            *slot = wanted.remove(&slot.level).unwrap_or_default();
        }
    }
    let mut grown = count;
    for filter in wanted.into_values() {
        let i = match reusable.next() {
            Some(i) => i,
            None if grown < MAX_POLICY_LEVELS => {
                grown += 1;
                grown - 1
            }
            None => return Err(PolicyError::TooManyLevels(depths)),
        };
        next.slots[i] = filter;
    }
    if grown == count {
        return Ok(vec![next]);
    }
    // Fill the new slots while `count` still hides them, then reveal them.
    let filled = next;
    next.count = grown as u32;
    Ok(vec![filled, next])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot_of(index: &PolicyIndex, level: u32) -> Option<&LevelFilter> {
        index.slots[..index.count as usize]
            .iter()
            .find(|slot| slot.level == level)
    }

    #[test]
    fn a_first_policy_fills_its_slot_before_revealing_it() {
        let steps = index_updates(&PolicyIndex::default(), &[(27, 1)]).unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].count, 0, "the filled slot is still hidden");
        assert_eq!(steps[0].slots[0].level, 1);
        assert_eq!(steps[1].count, 1);
        assert!(slot_of(&steps[1], 1).unwrap().may_hold(27));
    }

    #[test]
    fn policies_at_one_depth_share_a_slot() {
        let first = index_updates(&PolicyIndex::default(), &[(27, 1)]).unwrap();
        let steps = index_updates(&first[1], &[(27, 1), (31, 1)]).unwrap();
        assert_eq!(steps.len(), 1);
        let slot = slot_of(&steps[0], 1).unwrap();
        assert!(slot.may_hold(27) && slot.may_hold(31));
    }

    #[test]
    fn slots_never_move_and_are_reused_only_later() {
        let one = index_updates(&PolicyIndex::default(), &[(10, 1), (20, 3)]).unwrap();
        let one = *one.last().unwrap();
        let slot_of_3 = one.slots.iter().position(|s| s.level == 3).unwrap();
        // Depth 1 goes away and depth 5 arrives in the same update: 5 may not take 1's slot.
        let two = index_updates(&one, &[(20, 3), (30, 5)]).unwrap();
        let two = *two.last().unwrap();
        assert_eq!(two.slots[slot_of_3].level, 3, "depth 3 kept its slot");
        let freed = one.slots.iter().position(|s| s.level == 1).unwrap();
        assert_eq!(two.slots[freed].level, LEVEL_UNUSED);
        assert_eq!(two.count, 3);
        // A later update reuses the freed slot instead of growing.
        let three = index_updates(&two, &[(20, 3), (30, 5), (40, 2)]).unwrap();
        assert_eq!(three.len(), 1);
        assert_eq!(three[0].slots[freed].level, 2);
    }

    #[test]
    fn too_many_depths_are_refused() {
        let policies: Vec<(u64, u32)> = (0..=MAX_POLICY_LEVELS as u32)
            .map(|level| (100 + u64::from(level), level))
            .collect();
        assert_eq!(
            index_updates(&PolicyIndex::default(), &policies),
            Err(PolicyError::TooManyLevels(MAX_POLICY_LEVELS + 1))
        );
    }

    #[test]
    fn the_filter_has_no_false_negatives() {
        let mut filter = LevelFilter::default();
        for id in 1..200 {
            filter.insert(id * 7);
        }
        assert!((1..200).all(|id| filter.may_hold(id * 7)));
    }
}
