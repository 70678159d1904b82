//! The consumer group protocol of KIP-848 on a coordinator: ConsumerGroupHeartbeat
//! with server-side assignment and incremental reconciliation.
//!
//! A group has an epoch that grows whenever its membership, a member's subscription
//! or a subscribed topic's partitions change. The coordinator then computes a target
//! assignment for that epoch (see [`super::assignor`]), and every member converges on
//! its target heartbeat by heartbeat:
//! - partitions it has but should not are revoked first: the member keeps its epoch
//!   and gets its assignment minus those (UNREVOKED_PARTITIONS);
//! - once its heartbeat no longer reports them, it moves to the target epoch and gets
//!   its new partitions, each as soon as no other member still holds it
//!   (UNRELEASED_PARTITIONS until all are free).
//!
//! Invariants:
//! - A partition is held by at most one member at a time: it is given only once no
//!   other member has it assigned or pending revocation.
//! - A member's epoch only grows; a heartbeat with a newer epoch than the member's,
//!   or an older one that is not a retry of its previous epoch, is fenced
//!   (FENCED_MEMBER_EPOCH) and the member rejoins with epoch 0 owning nothing.
//! - A member that misses its session timeout, or does not revoke within its
//!   rebalance timeout, is removed and the group epoch bumped.
//!
//! Each change of an epoch or an assignment marks the group dirty, and
//! [`super::persist`] writes it to the metadata store; a broker taking the shard
//! over loads it, so members keep their epochs and partitions across the move.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};
use sluice_engine::Clock;
use uuid::Uuid;

use super::assignor::{self, Assignment, MemberSpec, ASSIGNORS};
use super::registry::{Kept, Registry};

/// Epoch a member sends to leave for good, and to leave as a static member that
/// will come back.
const LEAVE_EPOCH: i32 = -1;
const LEAVE_STATIC_EPOCH: i32 = -2;

/// A topic as the group sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub id: Uuid,
    pub partitions: i32,
}

/// Every topic a group may subscribe to, by name.
pub type Topics = BTreeMap<String, TopicMeta>;

/// Group-wide settings (Kafka's `group.consumer.*`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub heartbeat_interval: Duration,
    pub session_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            session_timeout: Duration::from_secs(45),
        }
    }
}

/// A ConsumerGroupHeartbeat as the coordinator needs it; `None` fields did not change
/// since the member's last heartbeat.
#[derive(Debug, Default, Clone)]
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    pub topics: Option<Vec<String>>,
    pub regex: Option<String>,
    pub server_assignor: Option<String>,
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

/// What a heartbeat is answered with.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub member_id: String,
    pub member_epoch: i32,
    /// Sent when it changed, or when the member sent a full request.
    pub assignment: Option<Assignment>,
}

/// A member's progress toward its target assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    Stable,
    UnrevokedPartitions,
    UnreleasedPartitions,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub topics: Vec<String>,
    pub regex: Option<String>,
    pub server_assignor: Option<String>,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    pub assigned: Assignment,
    pub revoking: Assignment,
    pub target: Assignment,
    #[serde(skip, default = "Instant::now")]
    last_seen: Instant,
    #[serde(skip)]
    revoke_deadline: Option<Instant>,
    #[serde(skip)]
    pattern: Option<regex_lite::Regex>,
}

impl Member {
    fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            instance_id: None,
            rack: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: 300_000,
            topics: Vec::new(),
            regex: None,
            server_assignor: None,
            epoch: 0,
            previous_epoch: -1,
            state: MemberState::Stable,
            assigned: Assignment::new(),
            revoking: Assignment::new(),
            target: Assignment::new(),
            last_seen: Instant::now(),
            revoke_deadline: None,
            pattern: None,
        }
    }

    /// The names of the topics this member subscribes to, among `topics`.
    pub fn subscribed<'t>(&self, topics: &'t Topics) -> BTreeSet<&'t str> {
        topics
            .keys()
            .filter(|name| {
                self.topics.iter().any(|t| t == *name)
                    || self.pattern.as_ref().is_some_and(|re| re.is_match(name))
            })
            .map(String::as_str)
            .collect()
    }

    fn set_epoch(&mut self, epoch: i32) {
        if epoch != self.epoch {
            self.previous_epoch = self.epoch;
            self.epoch = epoch;
        }
    }

    fn holds(&self, topic: &Uuid, p: i32) -> bool {
        let has = |a: &Assignment| a.get(topic).is_some_and(|ps| ps.contains(&p));
        has(&self.assigned) || has(&self.revoking)
    }

    /// Recompiles the subscription pattern (after a change or a load).
    fn compile(&mut self) -> Result<(), ResponseError> {
        self.pattern = match &self.regex {
            None => None,
            Some(re) => Some(
                regex_lite::Regex::new(&format!("^(?:{re})$"))
                    .map_err(|_| ResponseError::InvalidRegularExpression)?,
            ),
        };
        Ok(())
    }
}

fn fingerprint(topics: &Topics) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (name, t) in topics {
        (name, t.id, t.partitions).hash(&mut h);
    }
    h.finish()
}

/// A consumer group's state as KIP-848's ListGroups and describe calls name it.
pub fn state_name(g: &ConsumerGroup) -> &'static str {
    if g.members.is_empty() {
        "Empty"
    } else if g.assignment_epoch < g.epoch {
        "Assigning"
    } else if g
        .members
        .values()
        .any(|m| m.epoch != g.assignment_epoch || m.state != MemberState::Stable)
    {
        "Reconciling"
    } else {
        "Stable"
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsumerGroup {
    pub id: String,
    pub epoch: i32,
    pub assignment_epoch: i32,
    /// The assignor the last target assignment was computed with.
    pub assignor: String,
    pub members: BTreeMap<String, Member>,
    /// The subscribed topics as of the last epoch bump; a change bumps the epoch.
    subscribed: Topics,
    /// Fingerprint of the topics `subscribed` was computed from.
    #[serde(skip)]
    topics_seen: u64,
    /// When the group last became empty (wall clock, ms), for offset retention.
    #[serde(default)]
    pub empty_since_ms: Option<i64>,
    /// Changed since it was last written to the metadata store.
    #[serde(skip)]
    dirty: bool,
    #[serde(skip)]
    clock: Clock,
}

impl ConsumerGroup {
    pub fn new(id: &str, clock: Clock) -> Self {
        Self {
            clock,
            id: id.to_string(),
            epoch: 0,
            assignment_epoch: 0,
            assignor: ASSIGNORS[0].to_string(),
            members: BTreeMap::new(),
            subscribed: Topics::new(),
            topics_seen: 0,
            empty_since_ms: None,
            dirty: false,
        }
    }

    /// What a heartbeat of `member` may change of the stored state: the group's
    /// epochs (a new target changes every member's), its size, and the member's own
    /// epoch and partitions. A heartbeat that changes none of it writes nothing.
    fn persisted_state(&self, member: &str) -> impl PartialEq {
        (
            self.epoch,
            self.assignment_epoch,
            self.members.len(),
            self.members
                .get(member)
                .map(|m| (m.epoch, m.state, m.assigned.clone(), m.revoking.clone())),
        )
    }

    /// Readies a group read back from the metadata store: members get a full session
    /// timeout to find this coordinator.
    pub fn loaded(mut self) -> Self {
        let now = Instant::now();
        for m in self.members.values_mut() {
            m.last_seen = now;
            if m.state == MemberState::UnrevokedPartitions {
                m.revoke_deadline =
                    Some(now + Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64));
            }
            let _ = m.compile();
        }
        self
    }

    fn remove(&mut self, member: &str) {
        if self.members.remove(member).is_some() {
            self.epoch += 1;
            self.dirty = true;
            // Its subscription no longer counts.
            self.topics_seen = 0;
            if self.members.is_empty() {
                self.empty_since_ms = Some(self.clock.now_ms());
            }
        }
    }

    /// Bumps the epoch if the subscribed topics changed (a topic was created,
    /// deleted or grew partitions), then recomputes the target if it is behind.
    /// `bump` says a member joined or changed its subscription.
    fn refresh(&mut self, topics: &Topics, mut bump: bool) {
        // Recomputed only when subscriptions or topics changed: a heartbeat of a
        // stable group costs a hash of the topic list, not a pass over every member.
        let seen = fingerprint(topics);
        if bump || seen != self.topics_seen {
            self.topics_seen = seen;
            let subscribed: Topics = self
                .members
                .values()
                .flat_map(|m| m.subscribed(topics))
                .map(|name| (name.to_string(), topics[name]))
                .collect();
            if subscribed != self.subscribed {
                self.subscribed = subscribed;
                bump = true;
            }
        }
        if bump {
            self.epoch += 1;
        }
        if self.assignment_epoch >= self.epoch {
            return;
        }
        // The assignor most members ask for; ties and no preference go to `uniform`.
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.server_assignor.as_deref() {
                *votes.entry(a).or_default() += 1;
            }
        }
        let assignor = ASSIGNORS
            .iter()
            .copied()
            .max_by_key(|a| (votes.get(a).copied().unwrap_or(0), *a == ASSIGNORS[0]))
            .unwrap_or(ASSIGNORS[0]);
        let partitions: BTreeMap<Uuid, i32> = self
            .subscribed
            .values()
            .map(|t| (t.id, t.partitions))
            .collect();
        let targets = {
            let specs: Vec<MemberSpec<'_>> = self
                .members
                .values()
                .map(|m| MemberSpec {
                    id: &m.id,
                    topics: m.subscribed(topics).iter().map(|n| topics[*n].id).collect(),
                    previous: &m.target,
                })
                .collect();
            assignor::assign(assignor, &specs, &partitions)
        };
        for (id, target) in targets {
            if let Some(m) = self.members.get_mut(&id) {
                m.target = target;
            }
        }
        self.assignor = assignor.to_string();
        self.assignment_epoch = self.epoch;
    }

    /// Whether a member other than `except` holds the partition.
    fn held_by_other(&self, except: &str, topic: &Uuid, p: i32) -> bool {
        self.members
            .values()
            .any(|m| m.id != except && m.holds(topic, p))
    }

    /// Moves a member one step toward its target (KIP-848's reconciliation).
    fn reconcile(&mut self, id: &str, owned: Option<&Assignment>, now: Instant) {
        let Some(m) = self.members.get(id) else {
            return;
        };
        let step = match m.state {
            MemberState::Stable => m.epoch != self.assignment_epoch,
            // Revoked partitions count as revoked once the member no longer reports
            // them; without a report it cannot progress.
            MemberState::UnrevokedPartitions => owned.is_some_and(|owned| {
                !m.revoking
                    .iter()
                    .any(|(t, ps)| owned.get(t).is_some_and(|o| !o.is_disjoint(ps)))
            }),
            MemberState::UnreleasedPartitions => true,
        };
        if !step {
            return;
        }
        let mut keep = Assignment::new();
        let mut revoke = Assignment::new();
        let mut gain = Assignment::new();
        let mut unreleased = false;
        let topics: BTreeSet<Uuid> = m.target.keys().chain(m.assigned.keys()).copied().collect();
        for t in topics {
            let target = m.target.get(&t).cloned().unwrap_or_default();
            let current = m.assigned.get(&t).cloned().unwrap_or_default();
            for &p in &current {
                let to = if target.contains(&p) {
                    &mut keep
                } else {
                    &mut revoke
                };
                to.entry(t).or_default().insert(p);
            }
            for &p in target.difference(&current) {
                if self.held_by_other(id, &t, p) {
                    unreleased = true;
                } else {
                    gain.entry(t).or_default().insert(p);
                }
            }
        }
        let assignment_epoch = self.assignment_epoch;
        let Some(m) = self.members.get_mut(id) else {
            return;
        };
        if !revoke.is_empty() {
            m.state = MemberState::UnrevokedPartitions;
            m.assigned = keep;
            m.revoking = revoke;
            m.revoke_deadline =
                Some(now + Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64));
            return;
        }
        for (t, ps) in gain {
            keep.entry(t).or_default().extend(ps);
        }
        m.assigned = keep;
        m.revoking.clear();
        m.revoke_deadline = None;
        m.set_epoch(assignment_epoch);
        m.state = if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
    }

    /// Handles one heartbeat. `settings` gives the session timeout; `topics` every
    /// topic a member may subscribe to.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        topics: &Topics,
        now: Instant,
    ) -> Result<Answer, ResponseError> {
        if hb.member_epoch == LEAVE_EPOCH || hb.member_epoch == LEAVE_STATIC_EPOCH {
            return Ok(self.leave(&hb));
        }
        if let Some(re) = hb.regex.as_deref().filter(|r| !r.is_empty()) {
            regex_lite::Regex::new(re).map_err(|_| ResponseError::InvalidRegularExpression)?;
        }
        let full = hb.member_epoch == 0
            || (hb.rebalance_timeout_ms != -1 && hb.topics.is_some() && hb.owned.is_some());
        let before = self.members.get(&hb.member_id).map(|m| m.assigned.clone());
        let mut changed = false;
        if hb.member_epoch == 0 {
            changed = self.join(&hb)?;
        } else {
            let m = self
                .members
                .get(&hb.member_id)
                .ok_or(ResponseError::UnknownMemberId)?;
            let retry_of_previous = hb.member_epoch == m.previous_epoch
                && hb.owned.as_ref().is_some_and(|owned| {
                    owned
                        .iter()
                        .all(|(t, ps)| m.assigned.get(t).is_some_and(|a| ps.is_subset(a)))
                });
            if hb.member_epoch != m.epoch && !retry_of_previous {
                return Err(ResponseError::FencedMemberEpoch);
            }
        }
        let m = self
            .members
            .get_mut(&hb.member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        m.last_seen = now;
        if hb.instance_id.is_some() {
            m.instance_id = hb.instance_id.clone();
        }
        if hb.rack.is_some() {
            m.rack = hb.rack.clone();
        }
        if hb.rebalance_timeout_ms != -1 {
            m.rebalance_timeout_ms = hb.rebalance_timeout_ms;
        }
        if !hb.client_id.is_empty() {
            m.client_id = hb.client_id.clone();
            m.client_host = hb.client_host.clone();
        }
        if let Some(t) = &hb.topics {
            if *t != m.topics {
                m.topics = t.clone();
                changed = true;
            }
        }
        if hb.regex.is_some() && hb.regex != m.regex {
            m.regex = hb.regex.clone().filter(|r| !r.is_empty());
            m.compile()?;
            changed = true;
        }
        if hb.server_assignor.is_some() && hb.server_assignor != m.server_assignor {
            m.server_assignor = hb.server_assignor.clone();
            changed = true;
        }
        self.refresh(topics, changed);
        self.reconcile(&hb.member_id, hb.owned.as_ref(), now);
        let m = &self.members[&hb.member_id];
        let assignment = (full || before.as_ref() != Some(&m.assigned)).then(|| m.assigned.clone());
        Ok(Answer {
            member_id: m.id.clone(),
            member_epoch: m.epoch,
            assignment,
        })
    }

    /// A join (epoch 0): a new member, a member rejoining after being fenced (it owns
    /// nothing now), or a static member replacing its previous incarnation. True if
    /// the group has a new member.
    fn join(&mut self, hb: &Heartbeat) -> Result<bool, ResponseError> {
        if hb.topics.is_none() && hb.regex.is_none() {
            return Err(ResponseError::InvalidRequest);
        }
        if let Some(a) = &hb.server_assignor {
            if !ASSIGNORS.contains(&a.as_str()) {
                return Err(ResponseError::UnsupportedAssignor);
            }
        }
        if let Some(instance) = &hb.instance_id {
            let previous = self
                .members
                .values()
                .find(|m| m.instance_id.as_ref() == Some(instance) && m.id != hb.member_id)
                .map(|m| (m.id.clone(), m.epoch));
            if let Some((old, epoch)) = previous {
                if epoch != LEAVE_STATIC_EPOCH {
                    return Err(ResponseError::UnreleasedInstanceId);
                }
                // The new incarnation takes the old one's place and partitions; the
                // group epoch does not move.
                if let Some(mut m) = self.members.remove(&old) {
                    m.id = hb.member_id.clone();
                    m.epoch = m.previous_epoch.max(0);
                    self.members.insert(m.id.clone(), m);
                }
                self.dirty = true;
                return Ok(false);
            }
        }
        match self.members.get_mut(&hb.member_id) {
            Some(m) => {
                // Rejoining after a fence: it gave up everything it had.
                m.assigned.clear();
                m.revoking.clear();
                m.state = MemberState::Stable;
                m.set_epoch(0);
                Ok(false)
            }
            None => {
                self.members
                    .insert(hb.member_id.clone(), Member::new(&hb.member_id));
                self.empty_since_ms = None;
                Ok(true)
            }
        }
    }

    fn leave(&mut self, hb: &Heartbeat) -> Answer {
        match self.members.get_mut(&hb.member_id) {
            Some(m) if hb.member_epoch == LEAVE_STATIC_EPOCH && m.instance_id.is_some() => {
                // A static member that will be back: its partitions wait for it
                // until its session times out.
                m.set_epoch(LEAVE_STATIC_EPOCH);
            }
            _ => self.remove(&hb.member_id),
        }
        Answer {
            member_id: hb.member_id.clone(),
            member_epoch: hb.member_epoch,
            assignment: None,
        }
    }

    /// Removes members whose session expired or who did not revoke in time.
    pub fn expire(&mut self, session_timeout: Duration, now: Instant) {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                now.duration_since(m.last_seen) > session_timeout
                    || m.revoke_deadline.is_some_and(|d| now >= d)
            })
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            tracing::info!(group = %self.id, member = %id, "consumer group member expired");
            self.remove(&id);
        }
    }

    /// Whether an OffsetCommit from this member at this epoch may proceed: the
    /// member's current epoch, or its previous one (a commit sent just before a
    /// reconciliation step landed).
    pub fn check_commit(&self, member: &str, epoch: i32) -> Result<(), ResponseError> {
        let m = self
            .members
            .get(member)
            .ok_or(ResponseError::UnknownMemberId)?;
        if epoch == m.epoch || epoch == m.previous_epoch {
            Ok(())
        } else {
            Err(ResponseError::StaleMemberEpoch)
        }
    }

    /// The topic names any member subscribes to, among `topics`.
    pub fn subscribed_names(&self) -> BTreeSet<String> {
        self.subscribed.keys().cloned().collect()
    }
}

/// Every consumer group this broker coordinates.
pub struct ConsumerGroups {
    groups: Registry<ConsumerGroup>,
    pub settings: Settings,
    clock: Clock,
}

/// The registry's methods (lookup, delete, persistence marks) apply as they are.
impl std::ops::Deref for ConsumerGroups {
    type Target = Registry<ConsumerGroup>;
    fn deref(&self) -> &Self::Target {
        &self.groups
    }
}

impl Kept for ConsumerGroup {
    fn has_members(&self) -> bool {
        !self.members.is_empty()
    }
    fn empty_since_ms(&self) -> Option<i64> {
        self.empty_since_ms
    }
    fn dirty(&mut self) -> &mut bool {
        &mut self.dirty
    }
    fn stored(&self) -> super::persist::GroupRecord {
        super::persist::GroupRecord::Consumer(self.clone())
    }
}

impl ConsumerGroups {
    pub fn new(settings: Settings, clock: Clock) -> Self {
        Self {
            groups: Registry::default(),
            settings,
            clock,
        }
    }

    /// Handles a heartbeat; a join (epoch 0) creates the group.
    pub fn heartbeat(
        &self,
        group_id: &str,
        hb: Heartbeat,
        topics: &Topics,
    ) -> Result<Answer, ResponseError> {
        let mut groups = self.lock();
        if hb.member_epoch == 0 && !groups.contains_key(group_id) {
            groups.insert(
                group_id.to_string(),
                ConsumerGroup::new(group_id, self.clock.clone()),
            );
        }
        match groups.get_mut(group_id) {
            Some(g) => {
                let member = hb.member_id.clone();
                let before = g.persisted_state(&member);
                let answer = g.heartbeat(hb, topics, Instant::now());
                if g.persisted_state(&member) != before {
                    g.dirty = true;
                }
                answer
            }
            None if hb.member_epoch < 0 => Ok(Answer {
                member_id: hb.member_id,
                member_epoch: hb.member_epoch,
                assignment: None,
            }),
            None => Err(ResponseError::UnknownMemberId),
        }
    }

    /// Expires silent members.
    pub fn tick(&self) {
        let now = Instant::now();
        let timeout = self.settings.session_timeout;
        for g in self.lock().values_mut() {
            g.expire(timeout, now);
        }
    }

    /// Installs a group read from the metadata store, unless one is already here.
    pub fn load_stored(&self, mut group: ConsumerGroup) {
        group.clock = self.clock.clone();
        let id = group.id.clone();
        self.load(&id, || group.loaded());
    }

    /// Forgets the groups of shards this broker no longer coordinates.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|id, _| keep(id));
    }

    /// (group id, state) of every group.
    pub fn list(&self) -> Vec<(String, &'static str)> {
        self.lock()
            .values()
            .map(|g| (g.id.clone(), state_name(g)))
            .collect()
    }

    /// The topics the members of a consumer group subscribe to (empty without
    /// members or group).
    pub fn subscribed_topics(&self, group_id: &str) -> BTreeSet<String> {
        self.lock()
            .get(group_id)
            .filter(|g| !g.members.is_empty())
            .map(ConsumerGroup::subscribed_names)
            .unwrap_or_default()
    }

    /// See [`ConsumerGroup::check_commit`]; `None` if the group is not a consumer
    /// group here.
    pub fn check_commit(
        &self,
        group_id: &str,
        member: &str,
        epoch: i32,
    ) -> Option<Result<(), ResponseError>> {
        self.lock()
            .get(group_id)
            .filter(|g| !g.members.is_empty())
            .map(|g| g.check_commit(member, epoch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(n: i32) -> (Topics, Uuid) {
        let id = Uuid::new_v4();
        (
            Topics::from([("t".to_string(), TopicMeta { id, partitions: n })]),
            id,
        )
    }

    fn join(id: &str) -> Heartbeat {
        Heartbeat {
            member_id: id.to_string(),
            member_epoch: 0,
            rebalance_timeout_ms: 30_000,
            topics: Some(vec!["t".to_string()]),
            owned: Some(Assignment::new()),
            ..Default::default()
        }
    }

    fn beat(id: &str, epoch: i32, owned: &Assignment) -> Heartbeat {
        Heartbeat {
            member_id: id.to_string(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            owned: Some(owned.clone()),
            ..Default::default()
        }
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    #[test]
    fn a_partition_moves_only_after_its_holder_revoked_it() {
        let (topics, t) = topics(4);
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g", Clock::system());
        let a = g.heartbeat(join("a"), &topics, now).unwrap();
        assert_eq!(a.member_epoch, 1);
        let a_owns = a.assignment.unwrap();
        assert_eq!(count(&a_owns), 4);

        // b joins: the epoch moves to 2, but b gets nothing a still holds.
        let b = g.heartbeat(join("b"), &topics, now).unwrap();
        assert_eq!(b.member_epoch, 2);
        assert_eq!(count(b.assignment.as_ref().unwrap()), 0);
        assert_eq!(state_name(&g), "Reconciling");

        // a is told to give two up and keeps its epoch until it has.
        let a = g.heartbeat(beat("a", 1, &a_owns), &topics, now).unwrap();
        assert_eq!(a.member_epoch, 1);
        let a_keeps = a.assignment.unwrap();
        assert_eq!(count(&a_keeps), 2);
        // Still reporting the old partitions: no progress, nothing resent.
        let again = g.heartbeat(beat("a", 1, &a_owns), &topics, now).unwrap();
        assert_eq!((again.member_epoch, again.assignment), (1, None));
        // b still gets nothing while a holds them.
        let b = g
            .heartbeat(beat("b", 2, &Assignment::new()), &topics, now)
            .unwrap();
        assert_eq!(b.assignment, None);

        // a reports the revocation and moves to epoch 2; then b gets the two.
        let a = g.heartbeat(beat("a", 1, &a_keeps), &topics, now).unwrap();
        assert_eq!(a.member_epoch, 2);
        let b = g
            .heartbeat(beat("b", 2, &Assignment::new()), &topics, now)
            .unwrap();
        let b_owns = b.assignment.unwrap();
        assert_eq!(count(&b_owns), 2);
        assert!(a_keeps[&t].is_disjoint(&b_owns[&t]));
        assert_eq!(state_name(&g), "Stable");
    }

    #[test]
    fn stale_and_future_epochs_are_fenced_and_a_rejoin_starts_over() {
        let (topics, _) = topics(2);
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g", Clock::system());
        let a = g.heartbeat(join("a"), &topics, now).unwrap();
        let owned = a.assignment.unwrap();
        assert_eq!(
            g.heartbeat(beat("a", 7, &owned), &topics, now),
            Err(ResponseError::FencedMemberEpoch)
        );
        assert_eq!(
            g.heartbeat(beat("zz", 1, &owned), &topics, now),
            Err(ResponseError::UnknownMemberId)
        );
        let again = g.heartbeat(join("a"), &topics, now).unwrap();
        assert_eq!(again.member_epoch, 1);
        assert_eq!(again.assignment, Some(owned));
    }

    #[test]
    fn leaving_and_expiry_free_partitions_for_the_others() {
        let (topics, _) = topics(4);
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g", Clock::system());
        g.heartbeat(join("a"), &topics, now).unwrap();
        let b = g.heartbeat(join("b"), &topics, now).unwrap();
        let mut leave = beat("a", 0, &Assignment::new());
        leave.member_epoch = LEAVE_EPOCH;
        assert_eq!(g.heartbeat(leave, &topics, now).unwrap().member_epoch, -1);
        let b = g
            .heartbeat(beat("b", b.member_epoch, &Assignment::new()), &topics, now)
            .unwrap();
        assert_eq!(count(b.assignment.as_ref().unwrap()), 4);

        g.heartbeat(join("c"), &topics, now).unwrap();
        g.expire(Duration::from_secs(45), now + Duration::from_secs(46));
        assert!(g.members.is_empty());
        assert_eq!(state_name(&g), "Empty");
    }

    #[test]
    fn a_static_member_comes_back_to_its_partitions_without_an_epoch_bump() {
        let (topics, _) = topics(4);
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g", Clock::system());
        let static_join = |id: &str| Heartbeat {
            instance_id: Some("i1".to_string()),
            ..join(id)
        };
        let a = g.heartbeat(static_join("a"), &topics, now).unwrap();
        let owned = a.assignment.clone().unwrap();
        let epoch = g.epoch;
        // While it is active, another process with its instance id is refused.
        assert_eq!(
            g.heartbeat(static_join("a2"), &topics, now),
            Err(ResponseError::UnreleasedInstanceId)
        );
        let mut leave = beat("a", a.member_epoch, &owned);
        leave.member_epoch = LEAVE_STATIC_EPOCH;
        g.heartbeat(leave, &topics, now).unwrap();
        let back = g.heartbeat(static_join("a2"), &topics, now).unwrap();
        assert_eq!(back.member_epoch, a.member_epoch);
        assert_eq!(back.assignment, Some(owned));
        assert_eq!(g.epoch, epoch, "no new epoch, so no rebalance");
        assert!(!g.members.contains_key("a"));
    }

    #[test]
    fn a_new_topic_matching_a_regex_bumps_the_epoch() {
        let (mut topics, _) = topics(2);
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g", Clock::system());
        let mut hb = join("a");
        hb.topics = None;
        hb.regex = Some("t.*".to_string());
        let a = g.heartbeat(hb, &topics, now).unwrap();
        assert_eq!(count(a.assignment.as_ref().unwrap()), 2);
        topics.insert(
            "t2".to_string(),
            TopicMeta {
                id: Uuid::new_v4(),
                partitions: 3,
            },
        );
        topics.insert(
            "other".to_string(),
            TopicMeta {
                id: Uuid::new_v4(),
                partitions: 3,
            },
        );
        let a = g
            .heartbeat(
                beat("a", a.member_epoch, &a.assignment.unwrap()),
                &topics,
                now,
            )
            .unwrap();
        assert_eq!(a.member_epoch, 2);
        assert_eq!(count(a.assignment.as_ref().unwrap()), 5);
        let mut bad = join("b");
        bad.regex = Some("(".to_string());
        assert_eq!(
            g.heartbeat(bad, &topics, now),
            Err(ResponseError::InvalidRegularExpression)
        );
    }
}
