//! Where agents' assignments come from: the reconciler's plan, per agent, with a version.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use netslo_protocol::channel::node_addresses_digest;
use netslo_protocol::spec::{Assignment, SpecError};
use tokio::sync::watch;

use super::auth::AgentIdentity;

/// Who may act as an agent: tokens of this service account, and when `node_name` is set only
/// pod-bound tokens of a pod on that node (the API server adds the node to tokens it binds to
/// a pod), so an agent cannot claim another node's assignment or report its results. When
/// `pod_name` is set, only tokens bound to that pod: a probe sidecar speaks for its own pod
/// and no other, even one of the same service account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentBinding {
    pub namespace: String,
    pub service_account: String,
    pub node_name: Option<String>,
    pub pod_name: Option<String>,
}

impl AgentBinding {
    pub fn service_account(namespace: &str, name: &str) -> Self {
        AgentBinding {
            namespace: namespace.to_owned(),
            service_account: name.to_owned(),
            node_name: None,
            pod_name: None,
        }
    }

    pub fn on_node(mut self, node: &str) -> Self {
        self.node_name = Some(node.to_owned());
        self
    }

    /// Only tokens bound to this pod (in the binding's namespace).
    pub fn in_pod(mut self, pod: &str) -> Self {
        self.pod_name = Some(pod.to_owned());
        self
    }

    pub fn permits(&self, id: &AgentIdentity) -> bool {
        let bound_to = |wanted: &Option<String>, got: &Option<String>| match wanted {
            None => true,
            Some(wanted) => got.as_deref() == Some(wanted.as_str()),
        };
        id.namespace == self.namespace
            && id.service_account == self.service_account
            && bound_to(&self.node_name, &id.node_name)
            && bound_to(&self.pod_name, &id.pod_name)
    }
}

/// The node addresses every assignment carries, with their digest: one per cluster state,
/// shared by every agent's entry.
#[derive(Debug, PartialEq, Eq)]
pub struct NodeAddresses {
    pub list: Arc<[IpAddr]>,
    pub digest: String,
}

impl Default for NodeAddresses {
    fn default() -> Self {
        NodeAddresses::new(Arc::default())
    }
}

impl NodeAddresses {
    fn new(list: Arc<[IpAddr]>) -> Self {
        let digest = node_addresses_digest(&list);
        NodeAddresses { list, digest }
    }
}

/// One agent's assignment as served.
#[derive(Debug)]
pub struct AgentEntry {
    pub binding: AgentBinding,
    pub version: String,
    /// The assignment without its node addresses, which are kept once beside it.
    pub assignment: Arc<Assignment>,
    pub node_addresses: Arc<NodeAddresses>,
    /// `(check, source)` → `None` while assigned, or when it stopped being assigned.
    pairs: HashMap<(String, String), Option<Instant>>,
    grace: Duration,
}

/// A [`netslo_protocol::channel::AssignmentEnvelope`] as served, borrowing its parts (serialized the same).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ServedEnvelope<'a> {
    version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    node_addresses_digest: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    node_addresses_held: bool,
    assignment: &'a Assignment,
}

/// What an agent said about node addresses on its request ([`netslo_protocol::channel::NODE_ADDRESSES_HEADER`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldAddresses<'a> {
    /// No header: an agent that does not know the digest; it is sent the addresses every time.
    Unspoken,
    /// The digest of the list it holds (or the no-list marker, which matches no digest).
    Digest(&'a str),
}

impl AgentEntry {
    /// The serialized envelope, made when served rather than kept: a body kept per agent
    /// would hold every node's address once per agent (N² addresses for N nodes). The
    /// addresses are left out when the agent already holds them: mesh rounds change every
    /// agent's checks every round, the addresses only when nodes come and go.
    pub fn body(&self, held: HeldAddresses<'_>) -> Result<Bytes, serde_json::Error> {
        self.body_for(held, true)
    }

    /// As [`AgentEntry::body`], without one-shots for an agent that does not say it runs
    /// them ([`netslo_protocol::channel::FEATURES_HEADER`]): an older agent refuses an
    /// assignment with fields it does not know, and would stop probing its checks.
    pub fn body_for(
        &self,
        held: HeldAddresses<'_>,
        runs_one_shots: bool,
    ) -> Result<Bytes, serde_json::Error> {
        let addresses = &self.node_addresses;
        let (digest, held) = match held {
            HeldAddresses::Unspoken => ("", false),
            HeldAddresses::Digest(d) => (addresses.digest.as_str(), d == addresses.digest),
        };
        let strip_one_shots = !runs_one_shots && !self.assignment.one_shots.is_empty();
        let adapted;
        let assignment = if (held || addresses.list.is_empty()) && !strip_one_shots {
            &*self.assignment
        } else {
            let mut copy = (*self.assignment).clone();
            if !held {
                copy.node_addresses = addresses.list.clone();
            }
            if strip_one_shots {
                copy.one_shots.clear();
            }
            adapted = copy;
            &adapted
        };
        let envelope = ServedEnvelope {
            version: &self.version,
            node_addresses_digest: digest,
            node_addresses_held: held,
            assignment,
        };
        serde_json::to_vec(&envelope).map(Bytes::from)
    }

    /// Whether results for `(check, source)` are accepted from this agent: assigned now, or
    /// until `grace` after it stopped being assigned (results buffered before the change).
    pub fn assigned(&self, check: &str, source: &str, now: Instant) -> bool {
        match self.pairs.get(&(check.to_owned(), source.to_owned())) {
            Some(None) => true,
            Some(Some(retired)) => now.saturating_duration_since(*retired) <= self.grace,
            None => false,
        }
    }
}

/// Per-agent assignments (object safe, so the reconciler's store can sit behind `Arc<dyn _>`).
pub trait AssignmentSource: Send + Sync + std::fmt::Debug {
    /// False until the first full plan is in: until then agents are told to retry, so an
    /// operator restart refuses nothing for lack of a plan.
    fn ready(&self) -> bool;
    fn agent(&self, name: &str) -> Option<Arc<AgentEntry>>;
    /// Ticks when `agent`'s entry changes or goes, and when the source becomes ready: a
    /// long-poll wakes for its own agent only, so that a change to one agent of thousands
    /// wakes one poll, not thousands.
    fn changes(&self, agent: &str) -> watch::Receiver<u64>;
}

/// Every agent's entry, and a change signal per agent that someone waits on.
#[derive(Debug, Default)]
struct Agents {
    entries: HashMap<String, Arc<AgentEntry>>,
    watchers: HashMap<String, watch::Sender<u64>>,
}

impl Agents {
    fn notify(&self, agent: &str) {
        if let Some(tx) = self.watchers.get(agent) {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// The in-memory source the reconciler feeds.
#[derive(Debug)]
pub struct MemoryAssignments {
    agents: Mutex<Agents>,
    /// The node addresses of the latest assignments, digested once for all agents.
    node_addresses: Mutex<Arc<NodeAddresses>>,
    ready: AtomicBool,
    nonce: String,
    counter: AtomicU64,
    grace: Duration,
}

impl MemoryAssignments {
    /// `grace`: how long results for a retired `(check, source)` are still accepted; match it
    /// to the agents' outbox age (one hour by default).
    pub fn new(grace: Duration) -> Self {
        MemoryAssignments {
            agents: Mutex::new(Agents::default()),
            node_addresses: Mutex::default(),
            ready: AtomicBool::new(false),
            // Versions of different operator runs never collide.
            nonce: netslo_protocol::channel::new_boot_id()[..12].to_owned(),
            counter: AtomicU64::new(0),
            grace,
        }
    }

    fn map(&self) -> MutexGuard<'_, Agents> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `list` with its digest, computed once per list: the planner shares one list among
    /// all agents' assignments (and across passes while nodes stay), so this is one pointer
    /// compare per agent; a list equal to the last one is kept as well.
    fn shared_node_addresses(&self, list: Arc<[IpAddr]>) -> Arc<NodeAddresses> {
        let mut last = self
            .node_addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&last.list, &list) && last.list != list {
            *last = Arc::new(NodeAddresses::new(list));
        }
        last.clone()
    }

    /// Sets an agent's binding and assignment; returns the version. An unchanged binding and
    /// assignment keep their version and wake nobody.
    pub fn set(
        &self,
        agent: &str,
        binding: AgentBinding,
        assignment: Assignment,
    ) -> Result<String, SpecError> {
        netslo_protocol::channel::validate_agent_name(agent)
            .map_err(|e| SpecError::invalid("agent", e.to_string()))?;
        assignment.validate()?;
        let mut assignment = assignment;
        let node_addresses =
            self.shared_node_addresses(std::mem::take(&mut assignment.node_addresses));
        let now = Instant::now();
        let mut map = self.map();
        let previous = map.entries.get(agent).cloned();
        if let Some(p) = &previous
            && p.binding == binding
            && *p.assignment == assignment
            && p.node_addresses == node_addresses
        {
            return Ok(p.version.clone());
        }
        let source = assignment
            .source
            .clone()
            .unwrap_or_else(|| agent.to_owned());
        let mut pairs: HashMap<(String, String), Option<Instant>> = HashMap::new();
        if let Some(p) = &previous {
            for (k, retired) in &p.pairs {
                let retired = retired.unwrap_or(now);
                if now.saturating_duration_since(retired) <= self.grace {
                    pairs.insert(k.clone(), Some(retired));
                }
            }
        }
        for c in &assignment.checks {
            pairs.insert((c.name.clone(), source.clone()), None);
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let version = format!("{}-{n}", self.nonce);
        map.entries.insert(
            agent.to_owned(),
            Arc::new(AgentEntry {
                binding,
                version: version.clone(),
                assignment: Arc::new(assignment),
                node_addresses,
                pairs,
                grace: self.grace,
            }),
        );
        map.notify(agent);
        Ok(version)
    }

    /// Forgets an agent (its results are refused from now on).
    pub fn remove(&self, agent: &str) -> bool {
        let mut map = self.map();
        let removed = map.entries.remove(agent).is_some();
        if removed {
            map.notify(agent);
        }
        removed
    }

    /// Keeps only the agents for which `keep` is true (after a full replan).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut map = self.map();
        let gone: Vec<String> = map.entries.keys().filter(|k| !keep(k)).cloned().collect();
        for agent in &gone {
            map.entries.remove(agent);
            map.notify(agent);
        }
        // Nobody polls for these any more.
        map.watchers.retain(|_, tx| tx.receiver_count() > 0);
    }

    /// Declares the plan complete: agents are served from now on.
    pub fn mark_ready(&self) {
        if !self.ready.swap(true, Ordering::SeqCst) {
            for tx in self.map().watchers.values() {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl AssignmentSource for MemoryAssignments {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn agent(&self, name: &str) -> Option<Arc<AgentEntry>> {
        self.map().entries.get(name).cloned()
    }

    fn changes(&self, agent: &str) -> watch::Receiver<u64> {
        self.map()
            .watchers
            .entry(agent.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netslo_protocol::channel::{AssignmentEnvelope, NO_NODE_ADDRESSES};

    fn assignment(checks: &[&str], source: Option<&str>) -> Assignment {
        let checks: Vec<String> = checks
            .iter()
            .map(|c| {
                format!(r#"{{"name":"{c}","probe":{{"tcp":{{}}}},"targets":[{{"address":"127.0.0.1:1"}}]}}"#)
            })
            .collect();
        let src = source
            .map(|s| format!(r#""source":"{s}","#))
            .unwrap_or_default();
        Assignment::from_json(format!(r#"{{{src}"checks":[{}]}}"#, checks.join(",")).as_bytes())
            .unwrap()
    }

    #[test]
    fn versions_change_only_with_content_and_pairs_retire_with_grace() {
        let m = MemoryAssignments::new(Duration::from_millis(50));
        let b = AgentBinding::service_account("ns", "agent");
        let mut rx = m.changes("node-a");
        let other = m.changes("node-b");
        let v1 = m
            .set("node-a", b.clone(), assignment(&["ns/a", "ns/b"], None))
            .unwrap();
        assert!(rx.has_changed().unwrap());
        assert!(
            !other.has_changed().unwrap(),
            "another agent's change wakes only that agent's polls"
        );
        rx.borrow_and_update();
        assert_eq!(
            m.set("node-a", b.clone(), assignment(&["ns/a", "ns/b"], None))
                .unwrap(),
            v1
        );
        assert!(!rx.has_changed().unwrap(), "no-op set wakes nobody");
        let e = m.agent("node-a").unwrap();
        let now = Instant::now();
        assert!(
            e.assigned("ns/a", "node-a", now),
            "source defaults to the agent name"
        );
        assert!(!e.assigned("ns/a", "node-b", now));
        assert!(!e.assigned("ns/c", "node-a", now));

        let v2 = m
            .set("node-a", b.clone(), assignment(&["ns/a"], Some("zone-1")))
            .unwrap();
        assert_ne!(v1, v2);
        let e = m.agent("node-a").unwrap();
        let now = Instant::now();
        assert!(e.assigned("ns/a", "zone-1", now));
        assert!(
            e.assigned("ns/b", "node-a", now),
            "retired pair within grace"
        );
        assert!(!e.assigned("ns/b", "node-a", now + Duration::from_secs(1)));
        let body: AssignmentEnvelope =
            serde_json::from_slice(&e.body(HeldAddresses::Unspoken).unwrap()).unwrap();
        assert_eq!(body.version, v2);
        assert_eq!(*e.assignment, body.assignment);
        assert!(m.set("x\n", b, assignment(&["ns/a"], None)).is_err());
    }

    fn with_addresses(mut a: Assignment, list: &Arc<[IpAddr]>) -> Assignment {
        a.node_addresses = list.clone();
        a
    }

    #[test]
    fn one_shots_go_only_to_agents_that_say_they_run_them() {
        let m = MemoryAssignments::new(Duration::ZERO);
        let b = AgentBinding::service_account("ns", "agent");
        let mut a = assignment(&["ns/a"], None);
        a.one_shots.push(netslo_protocol::spec::OneShot {
            id: "probe-1".into(),
            count: 1,
            trace: true,
            check: a.checks[0].clone(),
        });
        m.set("a", b, a).unwrap();
        let entry = m.agent("a").unwrap();
        let served = |runs: bool| -> AssignmentEnvelope {
            let body = entry.body_for(HeldAddresses::Unspoken, runs).unwrap();
            serde_json::from_slice(&body).unwrap()
        };
        assert_eq!(served(true).assignment.one_shots.len(), 1);
        // An agent that does not say so still gets its checks, in a form it can read.
        let older = served(false);
        assert!(older.assignment.one_shots.is_empty());
        assert_eq!(older.assignment.checks.len(), 1);
        let raw = entry.body_for(HeldAddresses::Unspoken, false).unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("oneShots"));
    }

    #[test]
    fn node_addresses_are_served_only_to_agents_that_do_not_hold_them() {
        let m = MemoryAssignments::new(Duration::ZERO);
        let b = AgentBinding::service_account("ns", "agent");
        let list: Arc<[IpAddr]> = Arc::from(vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        let v1 = m
            .set(
                "a",
                b.clone(),
                with_addresses(assignment(&["ns/a"], None), &list),
            )
            .unwrap();
        let served = |held| -> AssignmentEnvelope {
            serde_json::from_slice(&m.agent("a").unwrap().body(held).unwrap()).unwrap()
        };
        let digest = node_addresses_digest(&list);

        let old_agent = served(HeldAddresses::Unspoken);
        assert_eq!(old_agent.assignment.node_addresses, list);
        assert!(
            old_agent.node_addresses_digest.is_empty(),
            "no field an old agent would refuse"
        );
        let first = served(HeldAddresses::Digest(NO_NODE_ADDRESSES));
        assert_eq!(first.assignment.node_addresses, list);
        assert_eq!(
            (
                first.node_addresses_digest.as_str(),
                first.node_addresses_held
            ),
            (digest.as_str(), false)
        );
        let stale = served(HeldAddresses::Digest("0123456789abcdef"));
        assert_eq!(
            stale.assignment.node_addresses, list,
            "another list: sent again"
        );
        let held = served(HeldAddresses::Digest(&digest));
        assert!(held.node_addresses_held && held.assignment.node_addresses.is_empty());
        assert_eq!(held.version, v1);
        assert_eq!(held.assignment.checks, first.assignment.checks);

        // The same addresses in a list of their own change nothing; other addresses do.
        let copy: Arc<[IpAddr]> = Arc::from(list.to_vec());
        let same = m
            .set(
                "a",
                b.clone(),
                with_addresses(assignment(&["ns/a"], None), &copy),
            )
            .unwrap();
        assert_eq!(same, v1);
        let moved: Arc<[IpAddr]> = Arc::from(vec!["10.0.0.2".parse::<IpAddr>().unwrap()]);
        let v2 = m
            .set("a", b, with_addresses(assignment(&["ns/a"], None), &moved))
            .unwrap();
        assert_ne!(v2, v1);
        let after = served(HeldAddresses::Digest(&digest));
        assert!(!after.node_addresses_held);
        assert_eq!(after.assignment.node_addresses, moved);
    }

    #[test]
    fn versions_differ_across_instances() {
        let b = AgentBinding::service_account("ns", "agent");
        let v1 =
            MemoryAssignments::new(Duration::ZERO).set("a", b.clone(), assignment(&["ns/a"], None));
        let v2 = MemoryAssignments::new(Duration::ZERO).set("a", b, assignment(&["ns/a"], None));
        assert_ne!(v1.unwrap(), v2.unwrap());
    }

    #[test]
    fn bindings_check_service_account_and_node() {
        let mut id = AgentIdentity::service_account("netslo", "agent");
        let b = AgentBinding::service_account("netslo", "agent");
        assert!(b.permits(&id));
        assert!(!AgentBinding::service_account("netslo", "other").permits(&id));
        assert!(!AgentBinding::service_account("other", "agent").permits(&id));
        let on_node = b.on_node("node-1");
        assert!(
            !on_node.permits(&id),
            "an unbound token cannot act for a node"
        );
        id.node_name = Some("node-2".into());
        assert!(!on_node.permits(&id));
        id.node_name = Some("node-1".into());
        assert!(on_node.permits(&id));
    }

    #[test]
    fn a_sidecar_binding_takes_only_its_own_pods_tokens() {
        let mut id = AgentIdentity::service_account("shop", "checkout");
        let b = AgentBinding::service_account("shop", "checkout").in_pod("checkout-1");
        assert!(
            !b.permits(&id),
            "a token bound to no pod cannot act for one"
        );
        id.pod_name = Some("checkout-2".into());
        assert!(!b.permits(&id), "nor one bound to a sibling pod");
        id.pod_name = Some("checkout-1".into());
        assert!(b.permits(&id));
        let mut other_namespace = id.clone();
        other_namespace.namespace = "web".into();
        assert!(!b.permits(&other_namespace));
    }

    #[test]
    fn readiness_and_removal_notify() {
        let m = MemoryAssignments::new(Duration::ZERO);
        let mut rx = m.changes("b");
        assert!(!m.ready());
        m.mark_ready();
        assert!(m.ready());
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        m.set(
            "a",
            AgentBinding::service_account("n", "s"),
            assignment(&["ns/a"], None),
        )
        .unwrap();
        m.set(
            "b",
            AgentBinding::service_account("n", "s"),
            assignment(&["ns/a"], None),
        )
        .unwrap();
        rx.borrow_and_update();
        m.retain(|a| a == "a");
        assert!(
            rx.has_changed().unwrap(),
            "a poll for a removed agent wakes"
        );
        assert!(m.agent("b").is_none());
        assert!(m.remove("a"));
        assert!(m.is_empty());
    }
}
