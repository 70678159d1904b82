//! Server-side assignors of the consumer group protocol (KIP-848): `uniform` (the
//! default) and `range`. Both are pure functions from the members' subscriptions and
//! the topics' partition counts to a target assignment.
//!
//! Invariants:
//! - Every partition of a topic someone subscribes to goes to exactly one member
//!   subscribed to that topic; no member gets a topic it does not subscribe to.
//! - `uniform` keeps a member's previous partitions where it can, then balances so
//!   that no partition could move to a member with two or more fewer partitions.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Partitions by topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// One member as an assignor sees it.
pub struct MemberSpec<'a> {
    pub id: &'a str,
    pub topics: BTreeSet<Uuid>,
    /// The member's previous target, for stickiness.
    pub previous: &'a Assignment,
}

/// The assignors a group may name in `group.remote.assignor`.
pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

/// Computes a target assignment with the named assignor (`uniform` for anything
/// else; callers validate names against [`ASSIGNORS`]).
pub fn assign(
    assignor: &str,
    members: &[MemberSpec<'_>],
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    match assignor {
        "range" => range(members, partitions),
        _ => uniform(members, partitions),
    }
}

fn uniform(
    members: &[MemberSpec<'_>],
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let mut owner: BTreeMap<(Uuid, i32), usize> = BTreeMap::new();
    let mut load = vec![0usize; members.len()];
    // Keep what each member had, where it still subscribes and the partition exists.
    for (i, m) in members.iter().enumerate() {
        for (topic, ps) in m.previous {
            let Some(&count) = partitions.get(topic) else {
                continue;
            };
            if !m.topics.contains(topic) {
                continue;
            }
            for &p in ps.iter().filter(|&&p| p < count) {
                if let std::collections::btree_map::Entry::Vacant(e) = owner.entry((*topic, p)) {
                    e.insert(i);
                    load[i] += 1;
                }
            }
        }
    }
    // Each topic's subscribers, once.
    let candidates: BTreeMap<Uuid, Vec<usize>> = partitions
        .keys()
        .map(|t| {
            let subs = (0..members.len())
                .filter(|&i| members[i].topics.contains(t))
                .collect();
            (*t, subs)
        })
        .collect();
    let least_loaded = |topic: &Uuid, load: &[usize]| -> Option<usize> {
        candidates
            .get(topic)?
            .iter()
            .copied()
            .min_by_key(|&i| (load[i], members[i].id))
    };
    // Give every free partition to its least loaded candidate.
    for (topic, &count) in partitions {
        for p in 0..count {
            if owner.contains_key(&(*topic, p)) {
                continue;
            }
            if let Some(i) = least_loaded(topic, &load) {
                owner.insert((*topic, p), i);
                load[i] += 1;
            }
        }
    }
    // Balance: move a partition from the most loaded member that has one a member
    // with at least two fewer could take. Every move lowers the sum of squared
    // loads, so this ends; taking from the most loaded first keeps moves few.
    let mut held: Vec<BTreeSet<(Uuid, i32)>> = vec![BTreeSet::new(); members.len()];
    for (key, &i) in &owner {
        held[i].insert(*key);
    }
    loop {
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(load[i]));
        let step = order.iter().find_map(|&from| {
            held[from].iter().find_map(|key| {
                least_loaded(&key.0, &load)
                    .filter(|&to| load[from] >= load[to] + 2)
                    .map(|to| (*key, from, to))
            })
        });
        let Some((key, from, to)) = step else {
            break;
        };
        owner.insert(key, to);
        held[from].remove(&key);
        held[to].insert(key);
        load[from] -= 1;
        load[to] += 1;
    }
    collect(members, owner)
}

fn range(
    members: &[MemberSpec<'_>],
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let mut owner: BTreeMap<(Uuid, i32), usize> = BTreeMap::new();
    for (topic, &count) in partitions {
        let mut subs: Vec<usize> = (0..members.len())
            .filter(|&i| members[i].topics.contains(topic))
            .collect();
        if subs.is_empty() {
            continue;
        }
        subs.sort_by_key(|&i| members[i].id);
        let n = subs.len() as i32;
        let (per, extra) = (count / n, count % n);
        let mut start = 0;
        for (k, &i) in subs.iter().enumerate() {
            let len = per + i32::from((k as i32) < extra);
            for p in start..start + len {
                owner.insert((*topic, p), i);
            }
            start += len;
        }
    }
    collect(members, owner)
}

fn collect(
    members: &[MemberSpec<'_>],
    owner: BTreeMap<(Uuid, i32), usize>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .iter()
        .map(|m| (m.id.to_string(), Assignment::new()))
        .collect();
    for ((topic, p), i) in owner {
        if let Some(a) = out.get_mut(members[i].id) {
            a.entry(topic).or_default().insert(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    fn spec<'a>(id: &'a str, topics: &[Uuid], previous: &'a Assignment) -> MemberSpec<'a> {
        MemberSpec {
            id,
            topics: topics.iter().copied().collect(),
            previous,
        }
    }

    #[test]
    fn uniform_balances_and_keeps_previous_partitions() {
        let t = Uuid::new_v4();
        let parts = BTreeMap::from([(t, 12)]);
        let empty = Assignment::new();
        let first = assign("uniform", &[spec("a", &[t], &empty)], &parts);
        assert_eq!(count(&first["a"]), 12);
        // A second member joins: a keeps six of its twelve, b gets the other six.
        let second = assign(
            "uniform",
            &[spec("a", &[t], &first["a"]), spec("b", &[t], &empty)],
            &parts,
        );
        assert_eq!(count(&second["a"]), 6);
        assert_eq!(count(&second["b"]), 6);
        assert!(second["a"][&t].is_subset(&first["a"][&t]));
        // A third joins: each keeps what it can, loads are 4/4/4.
        let third = assign(
            "uniform",
            &[
                spec("a", &[t], &second["a"]),
                spec("b", &[t], &second["b"]),
                spec("c", &[t], &empty),
            ],
            &parts,
        );
        for m in ["a", "b", "c"] {
            assert_eq!(count(&third[m]), 4, "{m}: {third:?}");
        }
        assert!(third["a"][&t].is_subset(&second["a"][&t]));
        assert!(third["b"][&t].is_subset(&second["b"][&t]));
        let all: BTreeSet<i32> = third.values().flat_map(|a| a[&t].clone()).collect();
        assert_eq!(all, (0..12).collect());
    }

    #[test]
    fn uniform_gives_topics_only_to_their_subscribers() {
        let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
        let parts = BTreeMap::from([(x, 4), (y, 2)]);
        let empty = Assignment::new();
        let out = assign(
            "uniform",
            &[spec("a", &[x], &empty), spec("b", &[x, y], &empty)],
            &parts,
        );
        assert!(!out["a"].contains_key(&y));
        assert_eq!(out["b"][&y].len(), 2);
        assert_eq!(count(&out["a"]) + count(&out["b"]), 6);
        assert_eq!(count(&out["a"]), 3, "balanced: {out:?}");
    }

    #[test]
    fn uniform_stays_balanced_and_sticky_at_scale() {
        let topics: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
        let parts: BTreeMap<Uuid, i32> = topics.iter().map(|t| (*t, 100)).collect();
        let empty = Assignment::new();
        let ids: Vec<String> = (0..7).map(|i| format!("m{i}")).collect();
        let specs: Vec<MemberSpec<'_>> = ids.iter().map(|id| spec(id, &topics, &empty)).collect();
        let first = assign("uniform", &specs, &parts);
        let loads: Vec<usize> = first.values().map(count).collect();
        assert_eq!(loads.iter().sum::<usize>(), 1000);
        assert!(
            loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1,
            "{loads:?}"
        );
        // An eighth member joins: only about 1000/8 partitions move, all to it.
        let newcomer = "m7".to_string();
        let mut specs: Vec<MemberSpec<'_>> = ids
            .iter()
            .map(|id| spec(id, &topics, &first[id.as_str()]))
            .collect();
        specs.push(spec(&newcomer, &topics, &empty));
        let second = assign("uniform", &specs, &parts);
        for id in &ids {
            for (t, ps) in &second[id.as_str()] {
                assert!(
                    ps.is_subset(&first[id.as_str()][t]),
                    "{id} only gives partitions up"
                );
            }
        }
        assert_eq!(count(&second["m7"]), 125);
    }

    #[test]
    fn range_gives_contiguous_ranges_in_member_order() {
        let t = Uuid::new_v4();
        let parts = BTreeMap::from([(t, 7)]);
        let empty = Assignment::new();
        let out = assign(
            "range",
            &[
                spec("c", &[t], &empty),
                spec("a", &[t], &empty),
                spec("b", &[t], &empty),
            ],
            &parts,
        );
        assert_eq!(out["a"][&t], BTreeSet::from([0, 1, 2]));
        assert_eq!(out["b"][&t], BTreeSet::from([3, 4]));
        assert_eq!(out["c"][&t], BTreeSet::from([5, 6]));
    }

    #[test]
    fn partitions_of_a_shrunk_or_unsubscribed_topic_are_dropped() {
        let t = Uuid::new_v4();
        let previous = Assignment::from([(t, BTreeSet::from([0, 1, 5]))]);
        let parts = BTreeMap::from([(t, 3)]);
        let out = assign("uniform", &[spec("a", &[t], &previous)], &parts);
        assert_eq!(out["a"][&t], BTreeSet::from([0, 1, 2]));
        let out = assign("uniform", &[spec("a", &[], &previous)], &parts);
        assert!(out["a"].is_empty());
    }
}
