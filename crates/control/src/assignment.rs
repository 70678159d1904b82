//! Partition leadership assignment: a pure function from (partitions, live brokers,
//! current leaders) to new leaders.
//!
//! Invariants of the result:
//! - every partition is led by a live broker;
//! - broker loads differ by at most one partition;
//! - a partition whose leader is alive moves only to even out load, and then the
//!   fewest partitions move (a joining broker takes about its fair share, nothing
//!   else changes);
//! - with racks declared, each topic's partitions are spread over racks as evenly as
//!   the brokers allow, so losing a zone affects a fraction of every topic.

use std::collections::{BTreeMap, HashMap};

/// A partition: topic id (any stable key) and index.
pub type PartitionKey = (String, i32);

/// A live broker and its rack (zone), if declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveBroker {
    pub id: i32,
    pub rack: Option<String>,
}

/// Computes leaders. `current` may name dead brokers; their partitions are reassigned.
/// A partition in `pinned` goes to its pinned broker when that broker is in
/// `brokers`, and is never moved to even out load (the others balance around it).
/// Deterministic for the same input.
pub fn assign(
    partitions: &[PartitionKey],
    brokers: &[LiveBroker],
    current: &HashMap<PartitionKey, i32>,
    pinned: &HashMap<PartitionKey, i32>,
) -> BTreeMap<PartitionKey, i32> {
    let mut out = BTreeMap::new();
    if brokers.is_empty() {
        return out;
    }
    let mut ids: Vec<i32> = brokers.iter().map(|b| b.id).collect();
    ids.sort_unstable();
    ids.dedup();
    let rack_of: HashMap<i32, Option<&str>> =
        brokers.iter().map(|b| (b.id, b.rack.as_deref())).collect();
    let mut state = Loads::new(&ids);

    let mut sorted: Vec<&PartitionKey> = partitions.iter().collect();
    sorted.sort();
    sorted.dedup();

    // 1. Pinned partitions go to their live broker; other live leaders stay.
    let mut orphans = Vec::new();
    let mut fixed = std::collections::HashSet::new();
    for p in sorted {
        if let Some(&b) = pinned.get(p).filter(|b| state.by_broker.contains_key(*b)) {
            state.place(p, b, rack_of[&b]);
            fixed.insert(p.clone());
            continue;
        }
        match current.get(p).filter(|b| state.by_broker.contains_key(*b)) {
            Some(&b) => state.place(p, b, rack_of[&b]),
            None => orphans.push(p),
        }
    }

    // 2. Orphans go where their topic's rack and broker counts are lowest, then to the
    //    least-loaded broker.
    for p in orphans {
        let best = ids
            .iter()
            .copied()
            .min_by_key(|b| {
                (
                    state.topic_on_rack(&p.0, rack_of[b]),
                    state.load(*b),
                    state.topic_on_broker(&p.0, *b),
                    *b,
                )
            })
            .unwrap_or(ids[0]);
        state.place(p, best, rack_of[&best]);
    }

    // 3. Even out load: move one partition at a time from the most- to the
    //    least-loaded broker, choosing the partition whose topic is most crowded on
    //    the source relative to the target. Each move narrows the spread, so this ends.
    loop {
        let max_b = ids
            .iter()
            .copied()
            .max_by_key(|b| (state.load(*b), -*b))
            .unwrap_or(ids[0]);
        let min_b = ids
            .iter()
            .copied()
            .min_by_key(|b| (state.load(*b), *b))
            .unwrap_or(ids[0]);
        if state.load(max_b) <= state.load(min_b) + 1 {
            break;
        }
        let Some(victim) = state.by_broker[&max_b]
            .iter()
            .filter(|p| !fixed.contains(*p))
            .max_by_key(|p| {
                let here = state.topic_on_broker(&p.0, max_b) as i64;
                let there = state.topic_on_broker(&p.0, min_b) as i64;
                (here - there, std::cmp::Reverse((*p).clone()))
            })
            .cloned()
        else {
            break;
        };
        state.remove(&victim, max_b, rack_of[&max_b]);
        state.place(&victim, min_b, rack_of[&min_b]);
    }

    for (b, ps) in state.by_broker {
        for p in ps {
            out.insert(p, b);
        }
    }
    out
}

/// Running counts while assigning.
struct Loads<'r> {
    by_broker: BTreeMap<i32, Vec<PartitionKey>>,
    topic_broker: HashMap<(String, i32), usize>,
    topic_rack: HashMap<(String, Option<&'r str>), usize>,
}

impl<'r> Loads<'r> {
    fn new(ids: &[i32]) -> Self {
        Self {
            by_broker: ids.iter().map(|b| (*b, Vec::new())).collect(),
            topic_broker: HashMap::new(),
            topic_rack: HashMap::new(),
        }
    }

    fn load(&self, b: i32) -> usize {
        self.by_broker.get(&b).map_or(0, Vec::len)
    }

    fn topic_on_broker(&self, topic: &str, b: i32) -> usize {
        self.topic_broker
            .get(&(topic.to_string(), b))
            .copied()
            .unwrap_or(0)
    }

    fn topic_on_rack(&self, topic: &str, rack: Option<&'r str>) -> usize {
        self.topic_rack
            .get(&(topic.to_string(), rack))
            .copied()
            .unwrap_or(0)
    }

    fn place(&mut self, p: &PartitionKey, b: i32, rack: Option<&'r str>) {
        self.by_broker.entry(b).or_default().push(p.clone());
        *self.topic_broker.entry((p.0.clone(), b)).or_default() += 1;
        *self.topic_rack.entry((p.0.clone(), rack)).or_default() += 1;
    }

    fn remove(&mut self, p: &PartitionKey, b: i32, rack: Option<&'r str>) {
        if let Some(ps) = self.by_broker.get_mut(&b) {
            ps.retain(|x| x != p);
        }
        if let Some(n) = self.topic_broker.get_mut(&(p.0.clone(), b)) {
            *n -= 1;
        }
        if let Some(n) = self.topic_rack.get_mut(&(p.0.clone(), rack)) {
            *n -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(topics: &[(&str, i32)]) -> Vec<PartitionKey> {
        topics
            .iter()
            .flat_map(|(t, n)| (0..*n).map(move |i| (t.to_string(), i)))
            .collect()
    }

    fn brokers(ids: &[i32]) -> Vec<LiveBroker> {
        ids.iter()
            .map(|&id| LiveBroker { id, rack: None })
            .collect()
    }

    fn loads(a: &BTreeMap<PartitionKey, i32>) -> BTreeMap<i32, usize> {
        let mut l = BTreeMap::new();
        for b in a.values() {
            *l.entry(*b).or_default() += 1;
        }
        l
    }

    fn moves(before: &BTreeMap<PartitionKey, i32>, after: &BTreeMap<PartitionKey, i32>) -> usize {
        after
            .iter()
            .filter(|(p, b)| before.get(*p) != Some(b))
            .count()
    }

    fn to_map(a: &BTreeMap<PartitionKey, i32>) -> HashMap<PartitionKey, i32> {
        a.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    #[test]
    fn balances_a_fresh_cluster_and_spreads_each_topic() {
        let p = parts(&[("a", 12), ("b", 5)]);
        let a = assign(&p, &brokers(&[1, 2, 3]), &HashMap::new(), &HashMap::new());
        assert_eq!(a.len(), 17);
        let l = loads(&a);
        assert!(
            l.values().max().unwrap() - l.values().min().unwrap() <= 1,
            "{l:?}"
        );
        for b in [1, 2, 3] {
            let of_a = a
                .iter()
                .filter(|((t, _), lb)| t == "a" && **lb == b)
                .count();
            assert_eq!(of_a, 4, "topic a spread evenly");
        }
    }

    #[test]
    fn stable_when_nothing_changes_and_deterministic() {
        let p = parts(&[("t", 12)]);
        let b = brokers(&[1, 2, 3]);
        let first = assign(&p, &b, &HashMap::new(), &HashMap::new());
        let again = assign(&p, &b, &to_map(&first), &HashMap::new());
        assert_eq!(first, again);
        assert_eq!(first, assign(&p, &b, &HashMap::new(), &HashMap::new()));
    }

    #[test]
    fn a_joining_broker_takes_its_share_and_nothing_else_moves() {
        let p = parts(&[("t", 12)]);
        let before = assign(&p, &brokers(&[1, 2, 3]), &HashMap::new(), &HashMap::new());
        let after = assign(
            &p,
            &brokers(&[1, 2, 3, 4]),
            &to_map(&before),
            &HashMap::new(),
        );
        assert_eq!(
            moves(&before, &after),
            3,
            "12 partitions over 4 brokers: 3 move"
        );
        assert!(loads(&after).values().all(|l| *l == 3));
        assert!(
            after.iter().all(|(p, b)| *b == 4 || before[p] == *b),
            "moves go to the new broker only"
        );
    }

    #[test]
    fn a_dead_brokers_partitions_move_to_the_living_and_only_those() {
        let p = parts(&[("t", 12)]);
        let before = assign(&p, &brokers(&[1, 2, 3]), &HashMap::new(), &HashMap::new());
        let after = assign(&p, &brokers(&[1, 3]), &to_map(&before), &HashMap::new());
        assert!(after.values().all(|b| *b != 2));
        assert_eq!(
            moves(&before, &after),
            4,
            "only the dead broker's 4 partitions move"
        );
        assert!(loads(&after).values().all(|l| *l == 6));
    }

    #[test]
    fn spreads_topics_over_racks() {
        let p = parts(&[("t", 6)]);
        let b = vec![
            LiveBroker {
                id: 1,
                rack: Some("a".into()),
            },
            LiveBroker {
                id: 2,
                rack: Some("a".into()),
            },
            LiveBroker {
                id: 3,
                rack: Some("b".into()),
            },
            LiveBroker {
                id: 4,
                rack: Some("c".into()),
            },
        ];
        let a = assign(&p, &b, &HashMap::new(), &HashMap::new());
        let in_rack = |r: &str| {
            a.values()
                .filter(|id| {
                    b.iter()
                        .any(|x| x.id == **id && x.rack.as_deref() == Some(r))
                })
                .count()
        };
        assert_eq!(
            (in_rack("a"), in_rack("b"), in_rack("c")),
            (2, 2, 2),
            "{a:?}"
        );
    }

    #[test]
    fn scales_to_many_partitions() {
        let p = parts(&[("big", 10_000), ("small", 7)]);
        let ten: Vec<i32> = (0..10).collect();
        let before = assign(&p, &brokers(&ten), &HashMap::new(), &HashMap::new());
        let eleven: Vec<i32> = (0..11).collect();
        let after = assign(&p, &brokers(&eleven), &to_map(&before), &HashMap::new());
        let l = loads(&after);
        assert!(l.values().max().unwrap() - l.values().min().unwrap() <= 1);
        let moved = moves(&before, &after);
        assert!(
            (900..=920).contains(&moved),
            "about a fair share moves: {moved}"
        );
    }

    #[test]
    fn no_brokers_means_no_leaders() {
        assert!(assign(&parts(&[("t", 3)]), &[], &HashMap::new(), &HashMap::new()).is_empty());
    }

    #[test]
    fn pinned_partitions_stay_on_their_broker_and_the_rest_balance_around_them() {
        let p = parts(&[("t", 6)]);
        let b = brokers(&[1, 2, 3]);
        let before = assign(&p, &b, &HashMap::new(), &HashMap::new());
        let pins: HashMap<PartitionKey, i32> =
            [(("t".to_string(), 0), 3), (("t".to_string(), 1), 3)].into();
        let after = assign(&p, &b, &to_map(&before), &pins);
        assert_eq!(after[&("t".to_string(), 0)], 3);
        assert_eq!(after[&("t".to_string(), 1)], 3);
        let load = |id| after.values().filter(|b| **b == id).count();
        assert_eq!((load(1), load(2), load(3)), (2, 2, 2));
        // Pins to a broker that is gone are ignored.
        let gone = assign(&p, &brokers(&[1, 2]), &to_map(&after), &pins);
        assert!(gone.values().all(|b| *b != 3));
    }
}
