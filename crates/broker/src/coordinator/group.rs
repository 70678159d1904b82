//! The classic group membership protocol on a coordinator: JoinGroup, SyncGroup,
//! Heartbeat and LeaveGroup, with Kafka's states and timeouts.
//!
//! States: Empty → PreparingRebalance (members (re)join; completes when every known
//! member has joined, or at the rebalance timeout, dropping the others) →
//! CompletingRebalance (the leader sends assignments with SyncGroup) → Stable.
//! A member that misses its session timeout is removed and the group rebalances.
//!
//! Invariants:
//! - The generation id grows by one each time a join round completes.
//! - Only members of the current generation get an assignment, commit offsets or
//!   heartbeat successfully; everyone else gets UNKNOWN_MEMBER_ID or
//!   ILLEGAL_GENERATION and rejoins.
//! - A static member (`group.instance.id`) that rejoins with unchanged protocols
//!   while the group is stable takes over its old member id's place and assignment
//!   without a rebalance.
//!
//! Membership is held in memory on the coordinator. Each completed generation, and
//! each move to Empty, marks the group dirty and [`super::persist`] writes it to the
//! metadata store; SyncGroup answers only once the generation it hands out is
//! written ([`super::persist::write_synced`]), so a coordinator cut off from the
//! store, or deposed, gives no member an assignment. A broker that takes the group's shard over loads it: members
//! keep their ids, generation and assignments, so their next heartbeat succeeds and
//! no rebalance happens merely because the coordinator moved.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};
use sluice_engine::keyspace::Stored;
use sluice_engine::Clock;
use tokio::sync::oneshot;

use super::b64;
use super::registry::{Kept, Registry};

/// Kafka's `group.min.session.timeout.ms` and `group.max.session.timeout.ms`.
const MIN_SESSION: Duration = Duration::from_millis(6_000);
const MAX_SESSION: Duration = Duration::from_millis(1_800_000);

/// How long a member id handed out with MEMBER_ID_REQUIRED waits for its join.
const PENDING_MEMBER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    /// The name Kafka's ListGroups and DescribeGroups use.
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// What a JoinGroup is answered with.
#[derive(Debug, Clone, Default)]
pub struct JoinOutcome {
    /// None: joined.
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, group instance id, metadata) for the leader; empty for others.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinOutcome {
    fn error(e: ResponseError, member_id: &str) -> Self {
        Self {
            error: Some(e),
            generation: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

/// What a SyncGroup is answered with.
#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    /// None: synced.
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

impl SyncOutcome {
    fn error(e: ResponseError) -> Self {
        Self {
            error: Some(e),
            ..Default::default()
        }
    }
}

/// A JoinGroup as the coordinator needs it.
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets its id with MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    last_seen: Instant,
    join: Option<oneshot::Sender<JoinOutcome>>,
    sync: Option<oneshot::Sender<SyncOutcome>>,
}

impl Member {
    /// The metadata of the group's chosen protocol.
    pub fn metadata(&self, protocol: Option<&str>) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| Some(n.as_str()) == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: State,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// In join order: the first member to join a round leads it.
    pub members: IndexMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with when.
    pending: HashMap<String, Instant>,
    /// When the current join round or sync phase gives up on missing members.
    deadline: Option<Instant>,
    /// A new group waits this long for more members before its first round ends.
    not_before: Option<Instant>,
    /// When the group last became empty (wall clock, ms), for offset retention.
    pub empty_since_ms: Option<i64>,
    /// Changed since it was last written to the metadata store.
    dirty: bool,
    clock: Clock,
}

/// A classic group as the metadata store keeps it: its last completed generation.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredGroup {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<StoredMember>,
    pub empty_since_ms: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StoredMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub protocols: Vec<StoredProtocol>,
    #[serde(with = "b64")]
    pub assignment: Bytes,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StoredProtocol {
    pub name: String,
    #[serde(with = "b64")]
    pub metadata: Bytes,
}

impl Group {
    fn new(id: &str, clock: Clock) -> Self {
        Self {
            clock,
            id: id.to_string(),
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: IndexMap::new(),
            pending: HashMap::new(),
            deadline: None,
            not_before: None,
            empty_since_ms: None,
            dirty: false,
        }
    }

    /// What the metadata store keeps of the group.
    fn stored(&self) -> StoredGroup {
        let millis = |d: Duration| d.as_millis() as u64;
        StoredGroup {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .values()
                .map(|m| StoredMember {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: millis(m.session_timeout),
                    rebalance_timeout_ms: millis(m.rebalance_timeout),
                    protocols: m
                        .protocols
                        .iter()
                        .map(|(name, metadata)| StoredProtocol {
                            name: name.clone(),
                            metadata: metadata.clone(),
                        })
                        .collect(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
            empty_since_ms: self.empty_since_ms,
        }
    }

    /// A group read back from the metadata store: Stable with its members, who get
    /// a full session timeout to reach this coordinator, or Empty.
    fn from_stored(id: &str, s: StoredGroup, clock: Clock) -> Self {
        let now = Instant::now();
        let mut g = Self::new(id, clock);
        g.generation = s.generation;
        g.protocol_type = s.protocol_type;
        g.protocol = s.protocol;
        g.leader = s.leader;
        g.empty_since_ms = s.empty_since_ms;
        for m in s.members {
            g.members.insert(
                m.id.clone(),
                Member {
                    id: m.id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout: Duration::from_millis(m.session_timeout_ms),
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms),
                    protocols: m
                        .protocols
                        .into_iter()
                        .map(|p| (p.name, p.metadata))
                        .collect(),
                    assignment: m.assignment,
                    last_seen: now,
                    join: None,
                    sync: None,
                },
            );
        }
        g.state = if g.members.is_empty() {
            State::Empty
        } else {
            State::Stable
        };
        g
    }

    /// Moves to PreparingRebalance: every member must join again.
    fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        if self.state == State::PreparingRebalance {
            return;
        }
        // Members waiting for an assignment of the abandoned generation rejoin.
        for m in self.members.values_mut() {
            if let Some(tx) = m.sync.take() {
                let _ = tx.send(SyncOutcome::error(ResponseError::RebalanceInProgress));
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        self.not_before = (self.state == State::Empty).then(|| now + initial_delay);
        self.state = State::PreparingRebalance;
        self.deadline = Some(now + timeout);
    }

    /// Ends a join round if every member has joined (or the deadline passed).
    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join.is_some());
        let timed_out = self.deadline.is_some_and(|d| now >= d);
        let waiting = self.not_before.is_some_and(|t| now < t);
        if !(timed_out || (all_joined && !waiting)) {
            return;
        }
        // Members that did not rejoin in time are out.
        self.members.retain(|_, m| m.join.is_some());
        self.not_before = None;
        if self.members.is_empty() {
            self.become_empty();
            return;
        }
        self.generation += 1;
        self.protocol = self.choose_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        let leader = self.leader.clone().unwrap_or_default();
        let all: Vec<(String, Option<String>, Bytes)> = self
            .members
            .values()
            .map(|m| {
                (
                    m.id.clone(),
                    m.instance_id.clone(),
                    m.metadata(self.protocol.as_deref()),
                )
            })
            .collect();
        for m in self.members.values_mut() {
            m.last_seen = now;
            m.assignment = Bytes::new();
            if let Some(tx) = m.join.take() {
                let _ = tx.send(JoinOutcome {
                    error: None,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol: self.protocol.clone(),
                    leader: leader.clone(),
                    member_id: m.id.clone(),
                    members: if m.id == leader {
                        all.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
        self.state = State::CompletingRebalance;
        let timeout = self
            .members
            .values()
            .map(|m| m.session_timeout)
            .max()
            .unwrap_or(MIN_SESSION);
        self.deadline = Some(now + timeout);
    }

    /// The protocol every member supports that most members prefer.
    fn choose_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .collect();
        // Each member votes for its most preferred candidate.
        let mut votes: HashMap<&String, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(&p)) {
                *votes.entry(n).or_default() += 1;
            }
        }
        // Ties go to the first member's preference.
        let mut best: Option<(&String, usize)> = None;
        for c in candidates {
            let v = votes.get(c).copied().unwrap_or(0);
            if best.is_none_or(|(_, bv)| v > bv) {
                best = Some((c, v));
            }
        }
        best.map(|(c, _)| c.clone())
    }

    fn become_empty(&mut self) {
        self.empty_since_ms = Some(self.clock.now_ms());
        self.dirty = true;
        self.state = State::Empty;
        self.generation += 1;
        self.leader = None;
        self.protocol = None;
        self.deadline = None;
    }

    fn remove_member(&mut self, id: &str, now: Instant, initial_delay: Duration) {
        let Some(m) = self.members.shift_remove(id) else {
            return;
        };
        if let Some(tx) = m.join {
            let _ = tx.send(JoinOutcome::error(ResponseError::UnknownMemberId, id));
        }
        if let Some(tx) = m.sync {
            let _ = tx.send(SyncOutcome::error(ResponseError::UnknownMemberId));
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        match self.state {
            State::Empty => {}
            _ if self.members.is_empty() => self.become_empty(),
            State::PreparingRebalance => self.maybe_complete_join(now),
            State::CompletingRebalance | State::Stable => {
                self.prepare_rebalance(now, initial_delay)
            }
        }
    }

    /// Checks a member of the current generation, as Heartbeat, SyncGroup and
    /// OffsetCommit need it. A static member (`instance`) replaced by a newer
    /// process with its instance id is FENCED_INSTANCE_ID, as in Kafka.
    fn check_member(
        &self,
        member: &str,
        generation: i32,
        instance: Option<&str>,
    ) -> Result<(), ResponseError> {
        if let Some(instance) = instance {
            match self
                .members
                .values()
                .find(|m| m.instance_id.as_deref() == Some(instance))
            {
                Some(m) if m.id != member => return Err(ResponseError::FencedInstanceId),
                Some(_) => {}
                None => return Err(ResponseError::UnknownMemberId),
            }
        }
        if !self.members.contains_key(member) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }
}

/// Every group this broker coordinates.
pub struct Groups {
    groups: Registry<Group>,
    initial_delay: Duration,
    clock: Clock,
}

/// The registry's methods (lookup, delete, persistence marks) apply as they are.
impl std::ops::Deref for Groups {
    type Target = Registry<Group>;
    fn deref(&self) -> &Self::Target {
        &self.groups
    }
}

impl Kept for Group {
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
        super::persist::GroupRecord::Classic(self.stored())
    }
}

/// A JoinGroup or SyncGroup is answered now or once the round completes.
pub enum Pending<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

impl Groups {
    pub fn new(initial_delay: Duration, clock: Clock) -> Self {
        Self {
            groups: Registry::default(),
            initial_delay,
            clock,
        }
    }

    /// What the metadata store would keep of the group now, with its generation
    /// and leader.
    pub fn snapshot(&self, group_id: &str) -> Option<(Vec<u8>, i32, Option<String>)> {
        self.with_group(group_id, |g| {
            let bytes = super::persist::GroupRecord::Classic(g.stored())
                .encode()
                .to_vec();
            Some((bytes, g.generation, g.leader.clone()))
        })
        .flatten()
    }

    pub fn join(&self, group_id: &str, req: JoinRequest) -> Pending<JoinOutcome> {
        let now = Instant::now();
        let fail = |e: ResponseError| Pending::Now(JoinOutcome::error(e, &req.member_id));
        if req.session_timeout < MIN_SESSION || req.session_timeout > MAX_SESSION {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        let mut groups = self.lock();
        let group = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, self.clock.clone()));
        if group.state != State::Empty {
            let same_type = group.protocol_type.as_deref() == Some(req.protocol_type.as_str());
            let shares = group.members.values().all(|m| {
                m.protocols
                    .iter()
                    .any(|(p, _)| req.protocols.iter().any(|(q, _)| q == p))
            });
            if !same_type || !shares {
                return fail(ResponseError::InconsistentGroupProtocol);
            }
        }

        let mut member_id = req.member_id.clone();
        if let Some(instance) = &req.instance_id {
            // A static member: its instance id names it across restarts.
            let old = group
                .members
                .values()
                .find(|m| m.instance_id.as_ref() == Some(instance))
                .map(|m| m.id.clone());
            match old {
                // A member id of an earlier incarnation: that process was replaced.
                Some(old) if !member_id.is_empty() && member_id != old => {
                    return fail(ResponseError::FencedInstanceId);
                }
                Some(old) if member_id.is_empty() => {
                    let new_id = format!("{}-{}", instance, uuid::Uuid::new_v4());
                    let unchanged = group.members[&old].protocols == req.protocols;
                    if let Some(mut m) = group.members.shift_remove(&old) {
                        if let Some(tx) = m.join.take() {
                            let _ =
                                tx.send(JoinOutcome::error(ResponseError::FencedInstanceId, &old));
                        }
                        if let Some(tx) = m.sync.take() {
                            let _ = tx.send(SyncOutcome::error(ResponseError::FencedInstanceId));
                        }
                        m.id = new_id.clone();
                        m.last_seen = now;
                        m.client_id = req.client_id.clone();
                        m.client_host = req.client_host.clone();
                        m.session_timeout = req.session_timeout;
                        m.rebalance_timeout = req.rebalance_timeout;
                        m.protocols = req.protocols.clone();
                        group.members.insert(new_id.clone(), m);
                    }
                    if group.leader.as_deref() == Some(old.as_str()) {
                        group.leader = Some(new_id.clone());
                    }
                    group.dirty = true;
                    if group.state == State::Stable && unchanged {
                        // Replace without a rebalance: same generation, same assignment.
                        let leader = group.leader.clone().unwrap_or_default();
                        return Pending::Now(JoinOutcome {
                            error: None,
                            generation: group.generation,
                            protocol_type: group.protocol_type.clone(),
                            protocol: group.protocol.clone(),
                            leader,
                            member_id: new_id,
                            members: Vec::new(),
                        });
                    }
                    member_id = new_id;
                }
                Some(_) => {}
                None if !member_id.is_empty() => {
                    return fail(ResponseError::UnknownMemberId);
                }
                None => member_id = format!("{}-{}", instance, uuid::Uuid::new_v4()),
            }
        } else if member_id.is_empty() {
            let id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
            if req.require_known_member_id {
                group.pending.insert(id.clone(), now);
                return Pending::Now(JoinOutcome::error(ResponseError::MemberIdRequired, &id));
            }
            member_id = id;
        } else if !group.members.contains_key(&member_id)
            && group.pending.remove(&member_id).is_none()
        {
            return fail(ResponseError::UnknownMemberId);
        }

        let (tx, rx) = oneshot::channel();
        let unchanged = group
            .members
            .get(&member_id)
            .is_some_and(|m| m.protocols == req.protocols);
        match group.members.get_mut(&member_id) {
            Some(m) => {
                m.protocols = req.protocols.clone();
                m.session_timeout = req.session_timeout;
                m.rebalance_timeout = req.rebalance_timeout;
                m.last_seen = now;
                if let Some(old) = m.join.replace(tx) {
                    let _ = old.send(JoinOutcome::error(
                        ResponseError::RebalanceInProgress,
                        &member_id,
                    ));
                }
            }
            None => {
                group.members.insert(
                    member_id.clone(),
                    Member {
                        id: member_id.clone(),
                        instance_id: req.instance_id.clone(),
                        client_id: req.client_id.clone(),
                        client_host: req.client_host.clone(),
                        session_timeout: req.session_timeout,
                        rebalance_timeout: req.rebalance_timeout,
                        protocols: req.protocols.clone(),
                        assignment: Bytes::new(),
                        last_seen: now,
                        join: Some(tx),
                        sync: None,
                    },
                );
            }
        }
        if group.state == State::Empty {
            group.protocol_type = Some(req.protocol_type.clone());
        }
        match group.state {
            // A known member rejoining a stable group with the same protocols (e.g.
            // after a lost response) gets the current generation back at once.
            State::Stable if unchanged && group.leader.as_deref() != Some(&member_id) => {
                if let Some(m) = group.members.get_mut(&member_id) {
                    m.join = None;
                }
                return Pending::Now(JoinOutcome {
                    error: None,
                    generation: group.generation,
                    protocol_type: group.protocol_type.clone(),
                    protocol: group.protocol.clone(),
                    leader: group.leader.clone().unwrap_or_default(),
                    member_id,
                    members: Vec::new(),
                });
            }
            State::PreparingRebalance => {}
            _ => group.prepare_rebalance(now, self.initial_delay),
        }
        group.maybe_complete_join(now);
        Pending::Later(rx)
    }

    pub fn sync(
        &self,
        group_id: &str,
        member: &str,
        generation: i32,
        instance: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Pending<SyncOutcome> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Pending::Now(SyncOutcome::error(ResponseError::UnknownMemberId));
        };
        if let Err(e) = group.check_member(member, generation, instance) {
            return Pending::Now(SyncOutcome::error(e));
        }
        let ok = |g: &Group, assignment: Bytes| SyncOutcome {
            error: None,
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone(),
            assignment,
        };
        match group.state {
            State::Empty => Pending::Now(SyncOutcome::error(ResponseError::UnknownMemberId)),
            State::PreparingRebalance => {
                Pending::Now(SyncOutcome::error(ResponseError::RebalanceInProgress))
            }
            State::Stable => {
                let a = group.members[member].assignment.clone();
                Pending::Now(ok(group, a))
            }
            State::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = group.members.get_mut(member) {
                    m.last_seen = Instant::now();
                    m.sync = Some(tx);
                }
                if group.leader.as_deref() == Some(member) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    let (pt, p) = (group.protocol_type.clone(), group.protocol.clone());
                    for m in group.members.values_mut() {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                        if let Some(tx) = m.sync.take() {
                            let _ = tx.send(SyncOutcome {
                                error: None,
                                protocol_type: pt.clone(),
                                protocol: p.clone(),
                                assignment: m.assignment.clone(),
                            });
                        }
                    }
                    group.state = State::Stable;
                    group.deadline = None;
                    group.empty_since_ms = None;
                    group.dirty = true;
                }
                Pending::Later(rx)
            }
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member: &str,
        generation: i32,
        instance: Option<&str>,
    ) -> Result<(), ResponseError> {
        let mut groups = self.lock();
        let group = groups
            .get_mut(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        group.check_member(member, generation, instance)?;
        if let Some(m) = group.members.get_mut(member) {
            m.last_seen = Instant::now();
        }
        match group.state {
            State::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// Removes members (by member id, or by instance id for static members): each
    /// one's outcome, in order.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<Result<(), ResponseError>> {
        let now = Instant::now();
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return vec![Err(ResponseError::UnknownMemberId); members.len()];
        };
        members
            .iter()
            .map(|(id, instance)| {
                let found = match instance {
                    Some(i) => group
                        .members
                        .values()
                        .find(|m| m.instance_id.as_ref() == Some(i))
                        .map(|m| m.id.clone())
                        .filter(|m| id.is_empty() || m == id),
                    None => group.members.contains_key(id).then(|| id.clone()),
                };
                match found {
                    Some(id) => {
                        group.remove_member(&id, now, self.initial_delay);
                        Ok(())
                    }
                    None => Err(ResponseError::UnknownMemberId),
                }
            })
            .collect()
    }

    /// Whether an OffsetCommit from this member and generation may proceed.
    pub fn check_commit(
        &self,
        group_id: &str,
        member: &str,
        generation: i32,
        instance: Option<&str>,
    ) -> Result<(), ResponseError> {
        let groups = self.lock();
        let Some(group) = groups.get(group_id) else {
            return Err(ResponseError::IllegalGeneration);
        };
        group.check_member(member, generation, instance)?;
        // As in Kafka: members may commit while a rebalance is being prepared (they
        // commit before giving partitions up), not while assignments are pending.
        match group.state {
            State::CompletingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// Advances timeouts: completes join rounds, expires silent members and
    /// abandons sync phases whose leader never answered.
    pub fn tick(&self) {
        let now = Instant::now();
        let mut groups = self.lock();
        for group in groups.values_mut() {
            group
                .pending
                .retain(|_, at| now.duration_since(*at) < PENDING_MEMBER_TIMEOUT);
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| m.join.is_none() && now.duration_since(m.last_seen) > m.session_timeout)
                .map(|m| m.id.clone())
                .collect();
            for id in expired {
                tracing::info!(group = %group.id, member = %id, "member session expired");
                group.remove_member(&id, now, self.initial_delay);
            }
            if group.state == State::CompletingRebalance && group.deadline.is_some_and(|d| now >= d)
            {
                group.prepare_rebalance(now, self.initial_delay);
            }
            group.maybe_complete_join(now);
        }
        // Forget groups that never formed (no members, no member ids handed out).
        groups.retain(|_, g| {
            g.state != State::Empty
                || !g.members.is_empty()
                || !g.pending.is_empty()
                || g.generation > 0
        });
    }

    /// Forgets the groups of shards this broker no longer coordinates; their members
    /// get NOT_COORDINATOR from now on and find the new coordinator.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut groups = self.lock();
        groups.retain(|id, g| {
            let kept = keep(id);
            if !kept {
                for m in g.members.values_mut() {
                    if let Some(tx) = m.join.take() {
                        let _ = tx.send(JoinOutcome::error(ResponseError::NotCoordinator, &m.id));
                    }
                    if let Some(tx) = m.sync.take() {
                        let _ = tx.send(SyncOutcome::error(ResponseError::NotCoordinator));
                    }
                }
            }
            kept
        });
    }

    /// Installs a group read from the metadata store, unless one is already here.
    pub fn load_stored(&self, group_id: &str, stored: StoredGroup) {
        self.load(group_id, || {
            Group::from_stored(group_id, stored, self.clock.clone())
        });
    }

    /// (group id, protocol type, state) of every group.
    pub fn list(&self) -> Vec<(String, String, State)> {
        self.lock()
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect()
    }

    /// The topics a group's members subscribe to (empty without members), for
    /// OffsetDelete; NON_EMPTY_GROUP for a group with members of another protocol
    /// type than `consumer`, whose subscriptions cannot be read.
    pub fn subscribed_topics(
        &self,
        group_id: &str,
    ) -> Result<std::collections::BTreeSet<String>, ResponseError> {
        use bytes::Buf;
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        let groups = self.lock();
        let Some(g) = groups.get(group_id).filter(|g| !g.members.is_empty()) else {
            return Ok(Default::default());
        };
        if g.protocol_type.as_deref() != Some("consumer") {
            return Err(ResponseError::NonEmptyGroup);
        }
        let mut topics = std::collections::BTreeSet::new();
        for m in g.members.values() {
            let mut buf = m.metadata(g.protocol.as_deref());
            if buf.remaining() < 2 {
                continue;
            }
            let version = buf.get_i16().clamp(0, 3);
            if let Ok(sub) = ConsumerProtocolSubscription::decode(&mut buf, version) {
                topics.extend(sub.topics.iter().map(|t| t.to_string()));
            }
        }
        Ok(topics)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test: panicking is how it fails

    use super::*;

    fn join(member_id: &str, require_known_member_id: bool) -> JoinRequest {
        JoinRequest {
            member_id: member_id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
            require_known_member_id,
        }
    }

    fn now<T>(p: Pending<T>) -> T {
        match p {
            Pending::Now(t) => t,
            Pending::Later(mut rx) => rx.try_recv().expect("answered at once"),
        }
    }

    /// A lone member: MEMBER_ID_REQUIRED first (v4+), then it joins, leads, syncs
    /// its assignment and is Stable; when it leaves, the group is Empty since the
    /// clock's time, and a second leave of it is UNKNOWN_MEMBER_ID.
    #[test]
    fn a_lone_member_joins_syncs_and_leaves() {
        let clock = Clock::manual(1_000_000);
        let groups = Groups::new(Duration::ZERO, clock.clone());
        let first = now(groups.join("g", join("", true)));
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        assert!(!first.member_id.is_empty());

        let joined = now(groups.join("g", join(&first.member_id, true)));
        assert_eq!(joined.error, None);
        assert_eq!(joined.generation, 1);
        assert_eq!(joined.leader, first.member_id);
        assert_eq!(joined.protocol.as_deref(), Some("range"));
        assert_eq!(joined.members.len(), 1, "the leader gets the members");

        let assignment = Bytes::from_static(b"assigned");
        let synced = now(groups.sync(
            "g",
            &joined.member_id,
            joined.generation,
            None,
            vec![(joined.member_id.clone(), assignment.clone())],
        ));
        assert_eq!(synced.error, None);
        assert_eq!(synced.assignment, assignment);
        assert_eq!(groups.list()[0].2, State::Stable);
        assert_eq!(groups.empty_since("g"), Some(None));

        clock.advance(Duration::from_secs(5));
        let left = groups.leave("g", &[(joined.member_id.clone(), None)]);
        assert_eq!(left, vec![Ok(())]);
        assert_eq!(groups.list()[0].2, State::Empty);
        assert_eq!(groups.empty_since("g"), Some(Some(1_005_000)));
        let again = groups.leave("g", &[(joined.member_id.clone(), None)]);
        assert_eq!(again, vec![Err(ResponseError::UnknownMemberId)]);
    }

    /// A sync or heartbeat from an older generation is ILLEGAL_GENERATION; from an
    /// unknown member, UNKNOWN_MEMBER_ID; a group of another protocol type refuses
    /// the join with INCONSISTENT_GROUP_PROTOCOL.
    #[test]
    fn stale_and_unknown_members_are_refused_with_kafkas_codes() {
        let groups = Groups::new(Duration::ZERO, Clock::manual(0));
        let joined = now(groups.join("g", join("", false)));
        assert_eq!(joined.error, None);
        let stale = now(groups.sync("g", &joined.member_id, joined.generation - 1, None, vec![]));
        assert_eq!(stale.error, Some(ResponseError::IllegalGeneration));
        let stranger = now(groups.sync("g", "nobody", joined.generation, None, vec![]));
        assert_eq!(stranger.error, Some(ResponseError::UnknownMemberId));
        assert_eq!(
            groups.heartbeat("g", "nobody", joined.generation, None),
            Err(ResponseError::UnknownMemberId)
        );
        let mut other = join("", false);
        other.protocol_type = "connect".into();
        assert_eq!(
            now(groups.join("g", other)).error,
            Some(ResponseError::InconsistentGroupProtocol)
        );
    }
}
