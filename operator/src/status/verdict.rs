//! Localising a failure: which layer, and where, from a small failure matrix of recent
//! evidence (design notes §7).
//!
//! Each cell of the matrix holds one (source, destination) pair's probes of the last
//! [`EVIDENCE_INTERVALS`] probe intervals, not its newest bucket: a partial fault (a lossy
//! port, a flaky node) shows as a failure fraction, and one noisy window does not move the
//! verdict. A place *fails* when at least [`FAIL_PERCENT`] of its probes (and [`MIN_BAD`] or
//! more) were bad, and *answers* when at most [`HEALTHY_PERCENT`] were. An answering place
//! or source tells against a failing one only on enough probes: when all of them passing
//! would be unlikely ([`BY_CHANCE`]) at the failing one's fraction.
//!
//! The decision table, most specific first (an expected-deny violation comes before all of
//! them: a hole in a policy is a security finding, whatever else fails):
//!
//! | Pattern | Scope |
//! |---|---|
//! | a Deny target connected | PolicyViolation |
//! | a Service's DNS name fails while its ClusterIP or endpoints answer | DNS |
//! | a Service's VIP fails from every source while its endpoints answer | ServiceRouting |
//! | a node's traffic fails both ways, the other nodes reach each other | Node |
//! | one endpoint fails from every source, other endpoints answer | Endpoint |
//! | every target fails from one source node, other nodes reach them | SourceNode |
//! | what crosses nodes fails, what stays on a node answers | CrossNode |
//! | zone a → zone b (a ≠ b) fails, zone b answers from elsewhere | ZonePair |
//! | a target fails from every source | Target |
//!
//! Once named, a verdict is held while its place has bad probes within the hold span
//! ([`HOLD_FACTOR`] times the evidence span), unless a policy violation comes first: a
//! fault's verdict settles once and stays while the fault holds, however noisy its
//! windows, and gives way (to no verdict or another place) only once the fault clearly
//! stopped. Scattered failures
//! that fit no pattern give no verdict; the per-target summaries show them.

use std::collections::{BTreeMap, BTreeSet};

use netslo_crds::v1alpha1::{
    FailureScope, FailureSummary, LatencySummary, Layer, Locality, MAX_TARGET_SUMMARIES, Protocol,
    ServicePath, TargetSummary, Verdict,
};
use netslo_protocol::histogram::Histogram;
use netslo_protocol::verdict::{FailureReason, Layer as AgentLayer};

use super::conditions::{condition_time, truncate};
use super::quantise;
use crate::slo::evaluate::Fraction;
use crate::slo::{MINUTE_MS, UnixMs};
use crate::store::EvidenceSpans;

/// Longest verdict summary (the schema's bound).
pub const MAX_SUMMARY: usize = 256;
/// Most sources or destinations a verdict lists.
pub const MAX_PLACES: usize = 8;
/// Longest name kept for a node, zone or endpoint in status; longer ones are cut.
pub const MAX_PLACE_NAME: usize = 63;

/// A place's or target's name in a [`Cell`]: shared, as a mesh has hundreds of thousands of
/// cells naming a few thousand nodes, and one pointer wide (an `Arc<str>` is two), as a cell
/// names seven places: at 5,000 nodes a mesh reconcile holds 800,000 cells.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(std::sync::Arc<Box<str>>);

impl std::ops::Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self
    }
}

impl From<&str> for Name {
    fn from(name: &str) -> Self {
        Name(std::sync::Arc::new(name.into()))
    }
}

impl From<String> for Name {
    fn from(name: String) -> Self {
        Name(std::sync::Arc::new(name.into_boxed_str()))
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

/// Results of one (source, destination) pair over the evidence span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub source_node: Name,
    pub source_zone: Option<Name>,
    /// Target name from the spec.
    pub target: Name,
    pub protocol: Protocol,
    /// For Service targets: the path probed.
    pub path: Option<ServicePath>,
    /// The address probed ("10.0.1.7:8080"), for endpoints, pods and mesh peers.
    pub endpoint: Option<Name>,
    /// Zone of the endpoint, when known (pods, mesh peers).
    pub dest_zone: Option<Name>,
    /// Node of the endpoint, when known (pods, mesh peers).
    pub dest_node: Option<Name>,
    /// The DNS server the probe asks, for probes that resolve (DNS targets, Service names):
    /// named when it is the resolver that fails.
    pub resolver: Option<Name>,
    pub expect_deny: bool,
    /// Probes within the evidence span.
    pub good: u64,
    pub bad: u64,
    /// Bad probes within the hold span: a verdict naming this cell's place is held while any.
    pub held_bad: u64,
    /// The series stopped reporting while the check's others report (see
    /// [`crate::store::SeriesView::silent`]).
    pub silent: bool,
    /// The most frequent reason among the bad probes.
    pub reason: Option<FailureReason>,
    /// Good probes within the evidence span, and those of them later than the latency
    /// objective's threshold.
    pub answered: u64,
    pub slow: u64,
    /// p99 latency of the good probes over the last hour, where measured.
    pub p99_us: Option<u64>,
}

/// A verdict rests on the probes of this many probe intervals.
pub const EVIDENCE_INTERVALS: i64 = 10;
/// The shortest evidence span, for checks probing more often than every second.
pub const MIN_EVIDENCE_MS: i64 = 10_000;
/// A named verdict is held over this many evidence spans.
pub const HOLD_FACTOR: i64 = 3;
/// A place fails when at least this percentage of its probes were bad...
pub const FAIL_PERCENT: u64 = 5;
/// ...and at least this many.
pub const MIN_BAD: u64 = 2;
/// A place answers when no more than this percentage of its probes were bad.
pub const HEALTHY_PERCENT: u64 = 1;
/// A place that answers tells against another one failing only on enough probes: all of
/// them passing at the other's failure fraction would be this unlikely.
pub const BY_CHANCE: f64 = 0.2;

/// The spans the verdict of a check probing every `interval_ms` reads.
pub fn evidence_spans(interval_ms: u64) -> EvidenceSpans {
    let interval = i64::try_from(interval_ms).unwrap_or(i64::MAX);
    let evidence_ms = interval
        .saturating_mul(EVIDENCE_INTERVALS)
        .max(MIN_EVIDENCE_MS);
    EvidenceSpans {
        evidence_ms,
        hold_ms: evidence_ms.saturating_mul(HOLD_FACTOR),
    }
}

/// Probes of some cells together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    good: u64,
    bad: u64,
}

impl Tally {
    fn of<'a>(cells: impl IntoIterator<Item = &'a Cell>) -> Self {
        cells.into_iter().fold(Tally::default(), |t, c| Tally {
            good: t.good + c.good,
            bad: t.bad + c.bad,
        })
    }

    fn total(self) -> u64 {
        self.good + self.bad
    }

    /// The probes of `self` that are not in `part` (a subset of them).
    fn without(self, part: Tally) -> Tally {
        Tally {
            good: self.good.saturating_sub(part.good),
            bad: self.bad.saturating_sub(part.bad),
        }
    }

    fn fails(self) -> bool {
        self.bad >= MIN_BAD && self.bad * 100 >= FAIL_PERCENT * self.total()
    }

    fn answers(self) -> bool {
        self.good > 0 && self.bad * 100 <= HEALTHY_PERCENT * self.total()
    }

    /// Answers, on enough probes to tell it from `failing`: at `failing`'s failure fraction,
    /// this many probes would all have passed by chance less often than [`BY_CHANCE`].
    fn answers_unlike(self, failing: Tally) -> bool {
        self.answers() && (1.0 - failing.fraction()).powf(self.total() as f64) < BY_CHANCE
    }

    fn fraction(self) -> f64 {
        match self.total() {
            0 => 0.0,
            total => self.bad as f64 / total as f64,
        }
    }

    /// Bad probes as a whole percentage, at least 1 when any failed.
    fn percent(self) -> u64 {
        match self.total() {
            0 => 0,
            total => ((self.bad * 100 + total / 2) / total).max(u64::from(self.bad > 0)),
        }
    }

    /// "fails " for a place whose every probe failed, "fails 31% of probes " otherwise.
    fn fails_phrase(self) -> String {
        match self.percent() {
            100 => "fails ".to_owned(),
            p => format!("fails {p}% of probes "),
        }
    }
}

/// Whether `cells` (of one place) fail from every source that probes it: together they fail,
/// and no source is clearly clean.
fn fails_from_every_source(cells: &[&Cell]) -> bool {
    let all = Tally::of(cells.iter().copied());
    all.fails()
        && group_by(cells.iter().copied(), |c| Some(&*c.source_node))
            .values()
            .all(|cs| !Tally::of(cs.iter().copied()).answers_unlike(all))
}

/// The verdict for `cells`, holding `previous` while its place still fails (see the module
/// notes) and keeping its `since` while the place stays the same. `slow_over_us` is the
/// latency objective's threshold, if the check has one: with nothing unreachable, the
/// verdict then says where the slow paths are.
pub fn localise(
    cells: &[Cell],
    previous: Option<&Verdict>,
    slow_over_us: Option<u64>,
    now: UnixMs,
) -> Option<Verdict> {
    let violation = policy_violation(cells);
    let held = previous.filter(|p| {
        violation.is_none()
            && place_cells(p, cells).any(|c| {
                c.held_bad > 0 || (p.reason == SLOW && slow_over_us.is_some() && c.slow > 0)
            })
    });
    let found = violation
        .or_else(|| fault(cells))
        .or_else(|| slow_over_us.and_then(|threshold| slow(cells, threshold)));
    let chosen = match held {
        // The same place found again brings its summary up to date; a node cut off both
        // ways takes over from the half of it that showed first (its outbound probes as
        // SourceNode, or probes to it as Endpoint).
        Some(held) => found
            .filter(|found| {
                same_place(found, held) || refines(found, held, cells) || outgrown(held, cells)
            })
            .unwrap_or_else(|| held.clone()),
        None => found?,
    };
    let since = previous
        .filter(|p| same_place(p, &chosen))
        .and_then(|p| p.since.clone())
        .unwrap_or_else(|| condition_time(now));
    Some(Verdict {
        since: Some(since),
        ..chosen
    })
}

/// The first pattern of the table (after policy violations) that the cells show.
fn fault(cells: &[Cell]) -> Option<Verdict> {
    dns(cells)
        .or_else(|| service_routing(cells))
        .or_else(|| isolated_node(cells))
        .or_else(|| endpoint(cells))
        .or_else(|| source_node(cells))
        .or_else(|| cross_node(cells))
        .or_else(|| zone_pair(cells))
        .or_else(|| target(cells))
}

/// Two verdicts name the same place: the same scope, destinations and, where the sources are
/// the place (nodes, zones), sources.
pub fn same_place(a: &Verdict, b: &Verdict) -> bool {
    let by_source = matches!(
        a.scope,
        FailureScope::Node | FailureScope::SourceNode | FailureScope::ZonePair
    );
    a.scope == b.scope && a.destinations == b.destinations && (!by_source || a.sources == b.sources)
}

/// Whether `found` is a node cut off both ways and `held` one half of that node's traffic.
fn refines(found: &Verdict, held: &Verdict, cells: &[Cell]) -> bool {
    let mut held_cells = place_cells(held, cells).peekable();
    found.scope == FailureScope::Node
        && held_cells.peek().is_some()
        && held_cells.all(|c| {
            let node = found.sources.first().map(String::as_str);
            Some(&*c.source_node) == node || c.dest_node.as_deref() == node
        })
}

/// Whether `held`, an endpoint failing from every source, is contradicted by what came
/// since: a source of it now clearly answers. Named on the first seconds of a fault, before
/// each source had probed it enough to tell (a zone cut off from one pod reads as that pod
/// failing until the pod's own zone has answered a few times), it gives way to the verdict
/// the fuller evidence finds.
fn outgrown(held: &Verdict, cells: &[Cell]) -> bool {
    if held.scope != FailureScope::Endpoint {
        return false;
    }
    let place: Vec<&Cell> = place_cells(held, cells).collect();
    let all = Tally::of(place.iter().copied());
    group_by(place.iter().copied(), |c| Some(&*c.source_node))
        .values()
        .any(|cs| Tally::of(cs.iter().copied()).answers_unlike(all))
}

/// The cells of a verdict's place.
fn place_cells<'a>(verdict: &'a Verdict, cells: &'a [Cell]) -> impl Iterator<Item = &'a Cell> {
    // Names in status are shortened; most need no shortening (and no copy) to compare.
    let named = |names: &[String], name: &str| {
        if name.len() <= MAX_PLACE_NAME {
            names.iter().any(|n| n == name)
        } else {
            names.contains(&shorten(name.to_owned()))
        }
    };
    cells.iter().filter(move |c| {
        let target = || named(&verdict.destinations, &c.target);
        match verdict.scope {
            FailureScope::PolicyViolation => c.expect_deny && target(),
            _ if c.expect_deny => false,
            FailureScope::DNS => c.path == Some(ServicePath::DNSName) && target(),
            FailureScope::ServiceRouting => c.path == Some(ServicePath::ClusterIP) && target(),
            FailureScope::Endpoint => c
                .endpoint
                .as_deref()
                .is_some_and(|e| named(&verdict.destinations, e)),
            FailureScope::Node => {
                named(&verdict.sources, &c.source_node)
                    || c.dest_node
                        .as_deref()
                        .is_some_and(|n| named(&verdict.sources, n))
            }
            FailureScope::SourceNode => named(&verdict.sources, &c.source_node),
            FailureScope::CrossNode => c
                .dest_node
                .as_deref()
                .is_some_and(|n| n != &*c.source_node && named(&verdict.sources, &c.source_node)),
            FailureScope::ZonePair => match (&c.source_zone, &c.dest_zone) {
                (Some(from), Some(to)) => {
                    from != to && named(&verdict.sources, from) && named(&verdict.destinations, to)
                }
                _ => false,
            },
            FailureScope::Target => target(),
        }
    })
}

/// Bad-probe-weighted most frequent reason of some cells.
fn dominant<'a>(cells: impl IntoIterator<Item = &'a Cell>) -> Option<(FailureReason, Protocol)> {
    let mut weights: BTreeMap<FailureReason, (u64, Protocol)> = BTreeMap::new();
    for c in cells {
        if let Some(r) = c.reason.filter(|_| c.bad > 0) {
            let entry = weights.entry(r).or_insert((0, c.protocol));
            entry.0 += c.bad;
        }
    }
    weights
        .into_iter()
        .max_by_key(|(r, (w, _))| (*w, std::cmp::Reverse(*r)))
        .map(|(r, (_, p))| (r, p))
}

/// The status layer of a reason; the agent's IP layer (unreachable routes) is reported at the
/// transport the probe used, which the status API names.
pub fn layer_of(reason: FailureReason, protocol: Protocol) -> Layer {
    match reason.layer() {
        AgentLayer::Dns => Layer::DNS,
        AgentLayer::Tcp => Layer::TCP,
        AgentLayer::Tls => Layer::TLS,
        AgentLayer::Http => Layer::HTTP,
        AgentLayer::Icmp => Layer::ICMP,
        AgentLayer::Udp => Layer::UDP,
        AgentLayer::Policy => Layer::Policy,
        AgentLayer::Prober => Layer::Prober,
        AgentLayer::Ip => match protocol {
            Protocol::UDP => Layer::UDP,
            Protocol::ICMP => Layer::ICMP,
            Protocol::DNS => Layer::DNS,
            Protocol::TCP | Protocol::HTTP | Protocol::HTTPS => Layer::TCP,
        },
    }
}

/// Cuts a name to [`MAX_PLACE_NAME`] bytes keeping both ends ("ip-10-0-1-7...compute.internal"):
/// generated node names differ at the end, so a plain cut would merge them.
pub fn shorten(name: String) -> String {
    if name.len() <= MAX_PLACE_NAME {
        return name;
    }
    let keep = (MAX_PLACE_NAME - 3) / 2;
    let mut head = keep;
    while !name.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = name.len() - keep;
    while !name.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}...{}", &name[..head], &name[tail..])
}

fn verdict<S: AsRef<str> + Ord, D: AsRef<str> + Ord>(
    scope: FailureScope,
    (reason, protocol): (FailureReason, Protocol),
    summary: String,
    sources: impl IntoIterator<Item = S>,
    destinations: impl IntoIterator<Item = D>,
) -> Verdict {
    verdict_at(
        layer_of(reason, protocol),
        scope,
        reason.as_str(),
        summary,
        sources,
        destinations,
    )
}

/// A verdict at `layer`, its summary and place lists cut to what status holds.
fn verdict_at<S: AsRef<str> + Ord, D: AsRef<str> + Ord>(
    layer: Layer,
    scope: FailureScope,
    reason: &str,
    summary: String,
    sources: impl IntoIterator<Item = S>,
    destinations: impl IntoIterator<Item = D>,
) -> Verdict {
    Verdict {
        layer,
        scope,
        reason: reason.to_owned(),
        summary: truncate(summary, MAX_SUMMARY),
        sources: places(sources),
        destinations: places(destinations),
        since: None,
    }
}

/// The first [`MAX_PLACES`] of some names, once each, shortened for status. Copied only once
/// told apart: a place may be named by every cell of a mesh.
fn places<T: AsRef<str> + Ord>(names: impl IntoIterator<Item = T>) -> Vec<String> {
    let distinct: BTreeSet<T> = names.into_iter().collect();
    let shortened: BTreeSet<String> = distinct
        .iter()
        .map(|name| shorten(name.as_ref().to_owned()))
        .collect();
    shortened.into_iter().take(MAX_PLACES).collect()
}

/// The reason of a latency verdict: the paths answer, later than the objective allows.
pub const SLOW: &str = "SlowerThanObjective";

/// Where the latency objective is lost: the places (endpoints, or whole targets) whose
/// probes answer later than `threshold_us` more often than chance, while other places of
/// the same target answer in time.
fn slow(cells: &[Cell], threshold_us: u64) -> Option<Verdict> {
    let lateness = |cs: &[&Cell]| {
        cs.iter().fold(Tally::default(), |t, c| Tally {
            good: t.good + c.answered.saturating_sub(c.slow),
            bad: t.bad + c.slow.min(c.answered),
        })
    };
    let ms = |us: u64| format!("{} ms", (us + 500) / 1_000);
    let p99_note = |cs: &[&Cell]| {
        cs.iter()
            .filter_map(|c| c.p99_us)
            .max()
            .filter(|p| *p > threshold_us)
            .map(|p| format!(", p99 {} over the last hour", ms(p)))
            .unwrap_or_default()
    };
    let by_target = group_by(cells.iter().filter(|c| !c.expect_deny), |c| {
        Some(&*c.target)
    });
    for (target, cs) in by_target {
        let by_place = group_by(cs.iter().copied(), |c| Some(c.endpoint.as_deref()));
        let slow_places: Vec<(&Option<&str>, &Vec<&Cell>)> = by_place
            .iter()
            .filter(|(_, cs)| lateness(cs).fails())
            .collect();
        let Some((place, place_cells)) = slow_places.first() else {
            continue;
        };
        let late = lateness(place_cells);
        let in_time_elsewhere = by_place
            .iter()
            .any(|(p, cs)| p != *place && lateness(cs).answers_unlike(late));
        let (scope, summary, sources, destinations) = match place {
            Some(endpoint) if in_time_elsewhere => {
                let sources = sources_of(place_cells.iter().copied());
                (
                    FailureScope::Endpoint,
                    format!(
                        "endpoint {endpoint} of {target} answers slowly: {}% of probes over {} from {n}/{n} sources{}{}",
                        late.percent(),
                        ms(threshold_us),
                        and_more(slow_places.len(), "endpoints"),
                        p99_note(place_cells),
                        n = sources.len(),
                    ),
                    sources,
                    slow_places
                        .iter()
                        .filter_map(|(p, _)| p.map(str::to_owned))
                        .collect::<Vec<_>>(),
                )
            }
            _ => {
                let late = lateness(&cs);
                if !late.fails() || in_time_elsewhere {
                    continue;
                }
                let sources = sources_of(cs.iter().copied());
                (
                    FailureScope::Target,
                    format!(
                        "{target} answers slowly from {n}/{n} sources: {}% of probes over {}{}",
                        late.percent(),
                        ms(threshold_us),
                        p99_note(&cs),
                        n = sources.len(),
                    ),
                    sources,
                    vec![target.to_owned()],
                )
            }
        };
        // Answered late: the layer is the protocol's own (an HTTP answer, a DNS answer).
        let layer = match place_cells[0].protocol {
            Protocol::HTTP | Protocol::HTTPS => Layer::HTTP,
            Protocol::DNS => Layer::DNS,
            Protocol::ICMP => Layer::ICMP,
            Protocol::UDP => Layer::UDP,
            Protocol::TCP => Layer::TCP,
        };
        return Some(verdict_at(
            layer,
            scope,
            SLOW,
            summary,
            sources.iter().map(|s| (*s).to_owned()),
            destinations,
        ));
    }
    None
}

/// Cells grouped by a key, in key order (deterministic verdicts).
fn group_by<'a, K: Ord>(
    cells: impl IntoIterator<Item = &'a Cell>,
    key: impl Fn(&'a Cell) -> Option<K>,
) -> BTreeMap<K, Vec<&'a Cell>> {
    let mut groups: BTreeMap<K, Vec<&Cell>> = BTreeMap::new();
    for c in cells {
        if let Some(k) = key(c) {
            groups.entry(k).or_default().push(c);
        }
    }
    groups
}

fn sources_of<'a>(cells: impl IntoIterator<Item = &'a Cell>) -> BTreeSet<&'a str> {
    cells.into_iter().map(|c| &*c.source_node).collect()
}

fn reason_name<'a>(cells: impl IntoIterator<Item = &'a Cell>) -> &'static str {
    dominant(cells).map_or("unknown", |(r, _)| r.as_str())
}

fn and_more(n: usize, what: &str) -> String {
    match n {
        0 | 1 => String::new(),
        n => format!(" (and {} more {what})", n - 1),
    }
}

fn policy_violation(cells: &[Cell]) -> Option<Verdict> {
    let violating = |c: &Cell| {
        c.expect_deny && c.bad > 0 && c.reason == Some(FailureReason::UnexpectedlyReachable)
    };
    let by_target = group_by(cells.iter().filter(|c| c.expect_deny), |c| Some(&*c.target));
    let open_targets: Vec<(&str, &Vec<&Cell>)> = by_target
        .iter()
        .filter(|(_, cs)| cs.iter().any(|c| violating(c)))
        .map(|(t, cs)| (*t, cs))
        .collect();
    let (target, probed) = *open_targets
        .iter()
        .max_by_key(|(_, cs)| cs.iter().filter(|c| violating(c)).count())?;
    let open: Vec<&Cell> = probed.iter().copied().filter(|c| violating(c)).collect();
    let summary = format!(
        "Deny target {target} is reachable from {}/{} sources{} (UnexpectedlyReachable)",
        sources_of(open.iter().copied()).len(),
        sources_of(probed.iter().copied()).len(),
        and_more(open_targets.len(), "Deny targets"),
    );
    Some(verdict(
        FailureScope::PolicyViolation,
        (FailureReason::UnexpectedlyReachable, open[0].protocol),
        summary,
        open.iter().map(|c| c.source_node.clone()),
        open_targets.iter().map(|(t, _)| (*t).to_owned()),
    ))
}

fn dns(cells: &[Cell]) -> Option<Verdict> {
    let by_target = group_by(cells.iter().filter(|c| c.path.is_some()), |c| {
        Some(&*c.target)
    });
    for (target, cs) in by_target {
        let name_cells = cs
            .iter()
            .copied()
            .filter(|c| c.path == Some(ServicePath::DNSName));
        let by_source = group_by(name_cells, |c| Some(&*c.source_node));
        // Sources where resolving fails, at the DNS layer.
        let failing: BTreeMap<&str, &Vec<&Cell>> = by_source
            .iter()
            .filter(|(_, cs)| Tally::of(cs.iter().copied()).fails())
            .filter(|(_, cs)| {
                dominant(cs.iter().copied()).is_some_and(|(r, _)| r.layer() == AgentLayer::Dns)
            })
            .map(|(s, cs)| (*s, cs))
            .collect();
        if failing.is_empty() {
            continue;
        }
        // The addresses answer from the same sources that cannot resolve the name.
        let direct: Vec<&Cell> = cs
            .iter()
            .copied()
            .filter(|c| {
                matches!(
                    c.path,
                    Some(ServicePath::ClusterIP | ServicePath::Endpoints)
                )
            })
            .filter(|c| failing.contains_key(&*c.source_node))
            .collect();
        let failing_cells: Vec<&Cell> =
            failing.values().flat_map(|cs| cs.iter().copied()).collect();
        let name_fails = Tally::of(failing_cells.iter().copied());
        if direct.is_empty() || !Tally::of(direct.iter().copied()).answers_unlike(name_fails) {
            continue;
        }
        let summary = format!(
            "DNS name of {target} {}from {}/{} sources while its addresses answer ({}{})",
            Tally::of(failing_cells.iter().copied()).fails_phrase(),
            failing.len(),
            by_source.len(),
            reason_name(failing_cells.iter().copied()),
            failing_cells
                .iter()
                .find_map(|c| c.resolver.as_deref())
                .map(|r| format!(" from {r}"))
                .unwrap_or_default(),
        );
        return Some(verdict(
            FailureScope::DNS,
            dominant(failing_cells.iter().copied())?,
            summary,
            failing.keys().map(|s| (*s).to_owned()),
            [target.to_owned()],
        ));
    }
    None
}

fn service_routing(cells: &[Cell]) -> Option<Verdict> {
    let by_target = group_by(cells.iter().filter(|c| c.path.is_some()), |c| {
        Some(&*c.target)
    });
    for (target, cs) in by_target {
        let vip: Vec<&Cell> = cs
            .iter()
            .copied()
            .filter(|c| c.path == Some(ServicePath::ClusterIP))
            .collect();
        let by_endpoint = group_by(
            cs.iter()
                .copied()
                .filter(|c| c.path == Some(ServicePath::Endpoints)),
            |c| c.endpoint.as_deref(),
        );
        let vip_fails = Tally::of(vip.iter().copied());
        let every_endpoint_answers = !by_endpoint.is_empty()
            && by_endpoint
                .values()
                .all(|cs| Tally::of(cs.iter().copied()).answers_unlike(vip_fails));
        // A VIP failing a fraction of its probes is one of its endpoints failing, seen
        // through the balancing; only a VIP failing most of its probes is the routing.
        let mostly = vip_fails.bad * 2 >= vip_fails.total();
        if !mostly || !fails_from_every_source(&vip) || !every_endpoint_answers {
            continue;
        }
        let vip_sources = sources_of(vip.iter().copied());
        let summary = format!(
            "Service VIP of {target} {}from {n}/{n} sources while {m}/{m} endpoints answer ({})",
            Tally::of(vip.iter().copied()).fails_phrase(),
            reason_name(vip.iter().copied()),
            n = vip_sources.len(),
            m = by_endpoint.len(),
        );
        return Some(verdict(
            FailureScope::ServiceRouting,
            dominant(vip.iter().copied())?,
            summary,
            vip_sources.iter().map(|s| (*s).to_owned()),
            [target.to_owned()],
        ));
    }
    None
}

fn endpoint(cells: &[Cell]) -> Option<Verdict> {
    let by_target = group_by(
        cells
            .iter()
            .filter(|c| c.endpoint.is_some() && !c.expect_deny),
        |c| Some(&*c.target),
    );
    for (target, cs) in by_target {
        let by_endpoint = group_by(cs.iter().copied(), |c| c.endpoint.as_deref());
        let (failing, others): (Vec<_>, Vec<_>) = by_endpoint
            .iter()
            .partition(|(_, cs)| fails_from_every_source(cs));
        let Some((first, first_cells)) = failing.first() else {
            continue;
        };
        let first_fails = Tally::of(first_cells.iter().copied());
        let another_answers = others
            .iter()
            .any(|(_, cs)| Tally::of(cs.iter().copied()).answers_unlike(first_fails));
        if !another_answers {
            continue;
        }
        let n = sources_of(first_cells.iter().copied()).len();
        let summary = format!(
            "endpoint {first} of {target} {}from {n}/{n} sources{} ({})",
            Tally::of(first_cells.iter().copied()).fails_phrase(),
            and_more(failing.len(), "endpoints"),
            reason_name(first_cells.iter().copied()),
        );
        let all_cells: Vec<&Cell> = failing
            .iter()
            .flat_map(|(_, cs)| cs.iter().copied())
            .collect();
        return Some(verdict(
            FailureScope::Endpoint,
            dominant(all_cells.iter().copied())?,
            summary,
            all_cells.iter().map(|c| c.source_node.clone()),
            failing.iter().map(|(e, _)| (**e).to_owned()),
        ));
    }
    None
}

/// A node cut off both ways (its links, its firewall, a partition of one): everything it
/// probes fails, everything probing it fails, and the other nodes reach each other. Without
/// this, the two halves read as "every target fails from node N" or "endpoint N fails from
/// every source", whichever the newest results happen to show.
fn isolated_node(cells: &[Cell]) -> Option<Verdict> {
    let cells: Vec<&Cell> = cells.iter().filter(|c| !c.expect_deny).collect();
    // Each node's traffic found once, not by a scan of every cell per node: a mesh of N
    // nodes has N·k cells per round, so scans per node would be N²·k.
    let outbound_of = group_by(cells.iter().copied(), |c| Some(&*c.source_node));
    // Needs at least two other nodes to tell the node from the rest.
    if outbound_of.len() < 3 {
        return None;
    }
    let inbound_of = group_by(cells.iter().copied(), |c| {
        c.dest_node.as_deref().filter(|d| *d != &*c.source_node)
    });
    let all = Tally::of(cells.iter().copied());
    for (node, outbound) in &outbound_of {
        let inbound: &[&Cell] = inbound_of.get(node).map_or(&[], Vec::as_slice);
        let cut = |cs: &[&Cell]| {
            !cs.is_empty()
                && group_by(cs.iter().copied(), |c| {
                    Some((&*c.target, c.endpoint.as_deref()))
                })
                .values()
                .all(|cs| Tally::of(cs.iter().copied()).fails())
        };
        // Cut off, its agent's own results cannot reach the operator either: silent counts
        // as failing (a dead agent would be refused, not silent, and shows as AgentsMissing).
        // Its results from before the cut stay in the evidence span for a while; its silence
        // shows sooner.
        let silent = !outbound.is_empty()
            && (outbound.iter().all(|c| c.silent)
                || Tally::of(outbound.iter().copied()).total() == 0);
        if !(cut(outbound) || silent) || !cut(inbound) {
            continue;
        }
        let isolated = Tally::of(outbound.iter().chain(inbound).copied());
        // Every cell that involves the node is in exactly one of its two directions.
        let others = all.without(isolated);
        if !others.answers_unlike(isolated) {
            continue;
        }
        let both: Vec<&Cell> = outbound.iter().chain(inbound).copied().collect();
        let what = if silent {
            "what is sent to it fails and its agent's results stopped"
        } else {
            "what it sends and what is sent to it fails"
        };
        let summary = format!(
            "node {node} is cut off: {what} ({}) while the other {} nodes reach each other",
            reason_name(both.iter().copied()),
            outbound_of.len() - 1,
        );
        return Some(verdict(
            FailureScope::Node,
            dominant(both.iter().copied())?,
            summary,
            [(*node).to_owned()],
            [(*node).to_owned()],
        ));
    }
    None
}

fn source_node(cells: &[Cell]) -> Option<Verdict> {
    let by_source = group_by(cells.iter().filter(|c| !c.expect_deny), |c| {
        Some(&*c.source_node)
    });
    // A node fails when every destination (each endpoint of each target) fails from it.
    let failing: Vec<(&str, &Vec<&Cell>)> = by_source
        .iter()
        .filter(|(_, cs)| {
            group_by(cs.iter().copied(), |c| {
                Some((&*c.target, c.endpoint.as_deref()))
            })
            .values()
            .all(|cs| Tally::of(cs.iter().copied()).fails())
        })
        .map(|(s, cs)| (*s, cs))
        .collect();
    // Only a minority of nodes may fail, and the others must reach the same targets.
    if failing.is_empty() || failing.len() * 2 >= by_source.len() {
        return None;
    }
    let failing_nodes: BTreeSet<&str> = failing.iter().map(|(s, _)| *s).collect();
    let from_others = group_by(
        by_source
            .iter()
            .filter(|(s, _)| !failing_nodes.contains(*s))
            .flat_map(|(_, cs)| cs.iter().copied()),
        |c| Some(&*c.target),
    );
    let all_cells: Vec<&Cell> = failing
        .iter()
        .flat_map(|(_, cs)| cs.iter().copied())
        .collect();
    let node_fails = Tally::of(all_cells.iter().copied());
    let reached = |target: &str| {
        from_others
            .get(target)
            .is_some_and(|cs| Tally::of(cs.iter().copied()).answers_unlike(node_fails))
    };
    if !all_cells.iter().all(|c| reached(&c.target)) {
        return None;
    }
    let (node, node_cells) = failing[0];
    let targets: BTreeSet<&str> = node_cells.iter().map(|c| &*c.target).collect();
    let summary = format!(
        "every target {}from node {node}{} ({t}/{t} targets, {}) while other nodes reach them",
        Tally::of(node_cells.iter().copied()).fails_phrase(),
        and_more(failing.len(), "nodes"),
        reason_name(node_cells.iter().copied()),
        t = targets.len(),
    );
    Some(verdict(
        FailureScope::SourceNode,
        dominant(all_cells.iter().copied())?,
        summary,
        failing_nodes.iter().map(|s| (*s).to_owned()),
        targets.iter().map(|t| (*t).to_owned()),
    ))
}

/// Pod traffic between nodes fails while pod traffic within each node answers: the overlay,
/// the routes or the MTU between nodes, not any one endpoint, node or zone.
fn cross_node(cells: &[Cell]) -> Option<Verdict> {
    let placed: Vec<&Cell> = cells
        .iter()
        .filter(|c| !c.expect_deny && c.dest_node.is_some())
        .collect();
    let (within, across): (Vec<&Cell>, Vec<&Cell>) = placed
        .iter()
        .copied()
        .partition(|c| c.dest_node.as_deref() == Some(&*c.source_node));
    let across_tally = Tally::of(across.iter().copied());
    // From every node that sends across, and answered within more than one node.
    let within_nodes = group_by(within.iter().copied(), |c| Some(&*c.source_node));
    let within_answers = within_nodes.len() > 1
        && within_nodes
            .values()
            .all(|cs| Tally::of(cs.iter().copied()).answers_unlike(across_tally));
    // Every pair of nodes: one answering pair across nodes makes it a narrower fault (a zone
    // pair, a node).
    let pair_answers = group_by(across.iter().copied(), |c| {
        Some((&*c.source_node, c.dest_node.as_deref()))
    })
    .values()
    .any(|cs| Tally::of(cs.iter().copied()).answers());
    if !within_answers || pair_answers || !fails_from_every_source(&across) {
        return None;
    }
    let sources = sources_of(across.iter().copied());
    let summary = format!(
        "traffic between nodes {}from {n}/{n} nodes ({}) while traffic within each node answers",
        across_tally.fails_phrase(),
        reason_name(across.iter().copied()),
        n = sources.len(),
    );
    Some(verdict(
        FailureScope::CrossNode,
        dominant(across.iter().copied())?,
        summary,
        sources.iter().map(|s| (*s).to_owned()),
        across.iter().map(|c| c.target.clone()),
    ))
}

fn zone_pair(cells: &[Cell]) -> Option<Verdict> {
    let by_pair = group_by(cells.iter().filter(|c| !c.expect_deny), |c| {
        Some((c.source_zone.as_deref()?, c.dest_zone.as_deref()?))
    });
    let answers = |cs: &Vec<&Cell>| Tally::of(cs.iter().copied()).answers();
    // Traffic across zones that fails while its destination zone answers from elsewhere
    // (its own zone included): within one zone there is no pair to blame.
    let bad_pairs: Vec<(&(&str, &str), &Vec<&Cell>)> = by_pair
        .iter()
        .filter(|((from, to), cs)| {
            let pair = Tally::of(cs.iter().copied());
            from != to
                && pair.fails()
                && by_pair.iter().any(|((f, t), others)| {
                    t == to && f != from && Tally::of(others.iter().copied()).answers_unlike(pair)
                })
        })
        .collect();
    let ((from, to), pair_cells) = *bad_pairs.first()?;
    let good_pairs = by_pair.values().filter(|cs| answers(cs)).count();
    let all_cells: Vec<&Cell> = bad_pairs
        .iter()
        .flat_map(|(_, cs)| cs.iter().copied())
        .collect();
    // Both directions between two zones, and nothing else: a partition.
    let partition = bad_pairs.len() == 2 && bad_pairs[1].0 == &(*to, *from);
    // No path counts: mesh peers rotate every round, so they would move without a change.
    let summary = if partition {
        format!(
            "zones {from} and {to} cannot reach each other: {}in both directions ({}) while {good_pairs} other zone pairs answer",
            Tally::of(all_cells.iter().copied()).fails_phrase(),
            reason_name(all_cells.iter().copied()),
        )
    } else {
        format!(
            "zone {from} to zone {to} {}{} ({}) while {good_pairs} other zone pairs answer",
            Tally::of(pair_cells.iter().copied())
                .fails_phrase()
                .trim_end(),
            and_more(bad_pairs.len(), "zone pairs"),
            reason_name(pair_cells.iter().copied()),
        )
    };
    Some(verdict(
        FailureScope::ZonePair,
        dominant(all_cells.iter().copied())?,
        summary,
        bad_pairs.iter().map(|((f, _), _)| (*f).to_owned()),
        bad_pairs.iter().map(|((_, t), _)| (*t).to_owned()),
    ))
}

fn target(cells: &[Cell]) -> Option<Verdict> {
    let by_target = group_by(cells.iter().filter(|c| !c.expect_deny), |c| {
        Some(&*c.target)
    });
    // The target as a whole: not when one of its paths or endpoints answers.
    let whole = |cs: &Vec<&Cell>| {
        fails_from_every_source(cs)
            && !group_by(cs.iter().copied(), |c| {
                Some((c.path, c.endpoint.as_deref()))
            })
            .values()
            .any(|cs| Tally::of(cs.iter().copied()).answers())
    };
    let failing: Vec<(&str, &Vec<&Cell>)> = by_target
        .iter()
        .filter(|(_, cs)| whole(cs))
        .map(|(t, cs)| (*t, cs))
        .collect();
    let (name, target_cells) = *failing.first()?;
    let reason = dominant(target_cells.iter().copied())?;
    let resolver = target_cells
        .iter()
        .find_map(|c| c.resolver.as_deref())
        .unwrap_or("the resolver");
    let hint = match reason.0 {
        FailureReason::DnsTimeout => format!(": {resolver} does not answer"),
        FailureReason::DnsServFail | FailureReason::DnsRefused => {
            format!(": {resolver} answers with an error")
        }
        FailureReason::DnsWrongAnswer => {
            format!(": {resolver} answers, not what the check expects")
        }
        FailureReason::TcpTimeout
        | FailureReason::UdpTimeout
        | FailureReason::IcmpTimeout
        | FailureReason::TlsTimeout
        | FailureReason::HttpTimeout => {
            ": timeouts suggest packets are dropped (policy or firewall)".to_owned()
        }
        FailureReason::TcpRefused | FailureReason::UdpRefused => {
            ": refused suggests nothing listens on the port".to_owned()
        }
        _ => String::new(),
    };
    let summary = format!(
        "{name} {}from all {} sources{} ({}{hint})",
        Tally::of(target_cells.iter().copied()).fails_phrase(),
        sources_of(target_cells.iter().copied()).len(),
        and_more(failing.len(), "targets"),
        reason.0.as_str()
    );
    Some(verdict(
        FailureScope::Target,
        reason,
        summary,
        target_cells.iter().map(|c| c.source_node.clone()),
        failing.iter().map(|(t, _)| (*t).to_owned()),
    ))
}

// ---------------------------------------------------------------------------------------------
// Per-target summaries
// ---------------------------------------------------------------------------------------------

/// The latest failure of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastFailure {
    pub reason: FailureReason,
    pub protocol: Protocol,
    pub source: String,
    pub at_ms: UnixMs,
}

/// Results of one target (or one path or endpoint of it) over the last hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetStats {
    pub name: String,
    pub via: Option<ServicePath>,
    pub endpoint: Option<String>,
    /// Sources on the endpoint's node or on others, where the endpoint's node is known.
    pub locality: Option<Locality>,
    pub protocol: Protocol,
    pub good: u64,
    /// Good plus bad (invalid probes excluded).
    pub valid: u64,
    /// Latencies of good probes.
    pub latency: Histogram,
    pub last_failure: Option<LastFailure>,
}

/// At most [`MAX_TARGET_SUMMARIES`] summaries, worst success ratio first (targets without data
/// count as worst: missing data is never good), ties by name.
pub fn target_summaries(stats: &[TargetStats]) -> Vec<TargetSummary> {
    let mut order: Vec<&TargetStats> = stats.iter().collect();
    // Compare good/valid exactly: a·d < c·b.
    order.sort_by(|a, b| {
        let key = |s: &TargetStats| (u128::from(s.good.min(s.valid)), u128::from(s.valid.max(1)));
        let ((ga, va), (gb, vb)) = (key(a), key(b));
        (ga * vb)
            .cmp(&(gb * va))
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.via.cmp(&b.via))
            .then_with(|| a.endpoint.cmp(&b.endpoint))
            .then_with(|| a.locality.cmp(&b.locality))
    });
    order
        .into_iter()
        .take(MAX_TARGET_SUMMARIES)
        .map(|s| TargetSummary {
            name: shorten(s.name.clone()),
            via: s.via,
            endpoint: s.endpoint.clone().map(shorten),
            locality: s.locality,
            protocol: s.protocol,
            success_ratio: (s.valid > 0).then(|| {
                quantise::ratio(
                    Fraction {
                        num: s.good.min(s.valid),
                        den: s.valid,
                    },
                    quantise::TARGET_RATIO_DIGITS,
                )
            }),
            latency: (s.latency.count > 0).then(|| LatencySummary {
                p50: quantise::duration_us(s.latency.quantile(0.5).unwrap_or(0)),
                p90: quantise::duration_us(s.latency.quantile(0.9).unwrap_or(0)),
                p99: quantise::duration_us(s.latency.quantile(0.99).unwrap_or(0)),
            }),
            last_failure: s.last_failure.as_ref().map(|f| FailureSummary {
                reason: f.reason.as_str().to_owned(),
                layer: layer_of(f.reason, f.protocol),
                source: shorten(f.source.clone()),
                // The minute it was seen in: finer would move status for no reader's benefit.
                time: Some(condition_time(f.at_ms - f.at_ms.rem_euclid(MINUTE_MS))),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UnixMs = 1_767_225_600_000;

    fn cell(source: &str, target: &str) -> Cell {
        Cell {
            source_node: source.into(),
            source_zone: None,
            target: target.into(),
            protocol: Protocol::TCP,
            path: None,
            endpoint: None,
            dest_zone: None,
            dest_node: None,
            resolver: None,
            expect_deny: false,
            good: 30,
            bad: 0,
            held_bad: 0,
            silent: false,
            reason: None,
            answered: 30,
            slow: 0,
            p99_us: None,
        }
    }

    #[test]
    fn a_cell_names_its_places_one_pointer_each_and_names_compare_by_text() {
        // A mesh reconcile at 5,000 nodes holds 800,000 cells: seven fat pointers made a cell
        // 176 bytes, thin ones 120.
        assert!(size_of::<Name>() == size_of::<usize>());
        assert!(size_of::<Option<Name>>() == size_of::<usize>());
        assert!(
            size_of::<Cell>() <= 120,
            "a cell is {} bytes",
            size_of::<Cell>()
        );
        let (a, b) = (Name::from("node-a"), Name::from("node-a".to_owned()));
        assert_eq!(a, b);
        assert!(Name::from("node-a") < Name::from("node-b"));
        assert_eq!(format!("{a} {a:?}"), "node-a \"node-a\"");
    }

    fn failing(mut c: Cell, reason: FailureReason) -> Cell {
        c.good = 0;
        c.bad = 30;
        c.held_bad = 30;
        c.answered = 0;
        c.reason = Some(reason);
        c
    }

    fn via(mut c: Cell, path: ServicePath, endpoint: Option<&str>) -> Cell {
        c.path = Some(path);
        c.endpoint = endpoint.map(Name::from);
        c
    }

    const SOURCES: [&str; 3] = ["node-a", "node-b", "node-c"];

    /// A Service probed from three nodes via its DNS name, ClusterIP and two endpoints, with
    /// `broken` deciding which cells fail and why.
    fn service(
        broken: impl Fn(&str, ServicePath, Option<&str>) -> Option<FailureReason>,
    ) -> Vec<Cell> {
        let mut cells = Vec::new();
        for s in SOURCES {
            for (path, ep) in [
                (ServicePath::DNSName, None),
                (ServicePath::ClusterIP, None),
                (ServicePath::Endpoints, Some("10.0.1.7:8080")),
                (ServicePath::Endpoints, Some("10.0.2.9:8080")),
            ] {
                let c = via(cell(s, "web"), path, ep);
                cells.push(match broken(s, path, ep) {
                    Some(r) => failing(c, r),
                    None => c,
                });
            }
        }
        cells
    }

    /// A mesh of nodes n0..n5 in zones a, b, c probing each other.
    fn mesh(broken: impl Fn(&str, &str) -> Option<FailureReason>) -> Vec<Cell> {
        let zone = |i: usize| ["a", "b", "c"][i % 3];
        mesh_of_nodes(|i, j| broken(zone(i), zone(j)))
    }

    /// [`mesh`], broken by node numbers.
    fn mesh_of_nodes(broken: impl Fn(usize, usize) -> Option<FailureReason>) -> Vec<Cell> {
        let zone = |i: usize| ["a", "b", "c"][i % 3];
        let mut cells = Vec::new();
        for i in 0..6 {
            for j in 0..6 {
                if i == j {
                    continue;
                }
                let mut c = cell(&format!("n{i}"), "mesh");
                c.protocol = Protocol::ICMP;
                c.source_zone = Some(zone(i).into());
                c.dest_zone = Some(zone(j).into());
                c.dest_node = Some(format!("n{j}").into());
                c.endpoint = Some(format!("10.0.0.{j}").into());
                cells.push(match broken(i, j) {
                    Some(r) => failing(c, r),
                    None => c,
                });
            }
        }
        cells
    }

    /// Nodes n0..n3 (zones a, a, b, b) probing a pod on each node through a Service.
    fn pods_on_every_node(broken: impl Fn(usize, usize) -> Option<FailureReason>) -> Vec<Cell> {
        let zone = |i: usize| ["a", "a", "b", "b"][i];
        let mut cells = Vec::new();
        for i in 0..4 {
            for j in 0..4 {
                let mut c = via(cell(&format!("n{i}"), "api"), ServicePath::Endpoints, None);
                c.endpoint = Some(format!("10.1.{j}.5:8080").into());
                c.source_zone = Some(zone(i).into());
                c.dest_zone = Some(zone(j).into());
                c.dest_node = Some(format!("n{j}").into());
                cells.push(match broken(i, j) {
                    Some(r) => failing(c, r),
                    None => c,
                });
            }
        }
        cells
    }

    #[test]
    fn a_slow_endpoint_is_named_when_the_latency_objective_fails() {
        let slow_at = |slow_endpoint: Option<&str>| {
            let mut cells = service(|_, _, _| None);
            for c in &mut cells {
                let slow = slow_endpoint.is_none_or(|e| c.endpoint.as_deref() == Some(e));
                if slow {
                    (c.slow, c.p99_us) = (19, Some(81_200));
                } else {
                    c.p99_us = Some(4_000);
                }
            }
            cells
        };
        let cells = slow_at(Some("10.0.1.7:8080"));
        assert_eq!(
            localise(&cells, None, None, T0),
            None,
            "no latency objective failing"
        );
        let v = localise(&cells, None, Some(50_000), T0).unwrap();
        assert_eq!(
            (v.scope, v.layer, v.reason.as_str()),
            (FailureScope::Endpoint, Layer::TCP, SLOW)
        );
        assert_eq!(v.destinations, ["10.0.1.7:8080"]);
        assert_eq!(
            v.summary,
            "endpoint 10.0.1.7:8080 of web answers slowly: 63% of probes over 50 ms from 3/3 sources, p99 81 ms over the last hour"
        );
        // Everything slow: the target.
        let v = localise(&slow_at(None), None, Some(50_000), T0).unwrap();
        assert_eq!(v.scope, FailureScope::Target);
        assert_eq!(
            v.summary,
            "web answers slowly from 3/3 sources: 63% of probes over 50 ms, p99 81 ms over the last hour"
        );
        // Unreachable comes first.
        let mut both = slow_at(Some("10.0.1.7:8080"));
        for c in both
            .iter_mut()
            .filter(|c| c.endpoint.as_deref() == Some("10.0.2.9:8080"))
        {
            *c = failing(c.clone(), FailureReason::TcpRefused);
        }
        let v = localise(&both, None, Some(50_000), T0).unwrap();
        assert_eq!(v.reason, "TCPRefused", "{v:?}");
    }

    #[test]
    fn a_failing_resolver_is_named() {
        let dns_target = |resolver: &str, reason| {
            let cells: Vec<Cell> = SOURCES
                .iter()
                .map(|s| {
                    let mut c = cell(s, "cluster-dns");
                    c.protocol = Protocol::DNS;
                    c.resolver = Some(resolver.into());
                    failing(c, reason)
                })
                .collect();
            localise(&cells, None, None, T0).unwrap().summary
        };
        assert_eq!(
            dns_target("the resolver 10.96.0.10:53", FailureReason::DnsTimeout),
            "cluster-dns fails from all 3 sources (DNSTimeout: the resolver 10.96.0.10:53 does not answer)"
        );
        assert_eq!(
            dns_target("the cluster resolver", FailureReason::DnsWrongAnswer),
            "cluster-dns fails from all 3 sources (DNSWrongAnswer: the cluster resolver answers, not what the check expects)"
        );
        // A Service's name failing while its addresses answer: the cluster resolver.
        let mut cells =
            service(|_, p, _| (p == ServicePath::DNSName).then_some(FailureReason::DnsServFail));
        for c in cells
            .iter_mut()
            .filter(|c| c.path == Some(ServicePath::DNSName))
        {
            c.resolver = Some("the cluster resolver".into());
        }
        assert_eq!(
            localise(&cells, None, None, T0).unwrap().summary,
            "DNS name of web fails from 3/3 sources while its addresses answer (DNSServFail from the cluster resolver)"
        );
    }

    #[test]
    fn traffic_across_nodes_failing_while_within_answers_is_cross_node() {
        let cells = pods_on_every_node(|i, j| (i != j).then_some(FailureReason::TcpTimeout));
        let v = localise(&cells, None, None, T0).unwrap();
        assert_eq!(v.scope, FailureScope::CrossNode, "{v:?}");
        assert_eq!(
            v.summary,
            "traffic between nodes fails from 4/4 nodes (TCPTimeout) while traffic within each node answers"
        );
        assert_eq!(v.destinations, ["api"]);
        // Only across zones: a zone pair, not every node pair.
        let zoned =
            pods_on_every_node(|i, j| (i / 2 != j / 2).then_some(FailureReason::TcpTimeout));
        assert_eq!(
            localise(&zoned, None, None, T0).unwrap().scope,
            FailureScope::ZonePair
        );
    }

    #[test]
    fn a_node_cut_off_both_ways_is_one_node_verdict() {
        use FailureReason as R;
        let cut = |i: usize, j: usize| (i == 2 || j == 2).then_some(R::IcmpTimeout);
        let v = localise(&mesh_of_nodes(cut), None, None, T0).unwrap();
        assert_eq!(v.scope, FailureScope::Node, "{v:?}");
        assert_eq!(
            (v.sources.clone(), v.destinations.clone()),
            (vec!["n2".to_string()], vec!["n2".to_string()])
        );
        assert_eq!(
            v.summary,
            "node n2 is cut off: what it sends and what is sent to it fails (ICMPTimeout) while the other 5 nodes reach each other"
        );
        // Cut off, its agent cannot report either: its own series go silent.
        let mut silent = mesh_of_nodes(cut);
        for c in silent.iter_mut().filter(|c| &*c.source_node == "n2") {
            (c.good, c.bad) = (0, 0);
        }
        let v = localise(&silent, None, None, T0).unwrap();
        assert_eq!(v.scope, FailureScope::Node, "{v:?}");
        assert!(v.summary.contains("its agent's results stopped"), "{v:?}");
        // Its results from before the cut still in the evidence span, its series silent.
        let mut stopped = mesh_of_nodes(|_, j| (j == 2).then_some(R::IcmpTimeout));
        for c in stopped.iter_mut().filter(|c| &*c.source_node == "n2") {
            c.silent = true;
        }
        let v = localise(&stopped, None, None, T0).unwrap();
        assert_eq!(
            (v.scope, v.sources.clone()),
            (FailureScope::Node, vec!["n2".to_owned()]),
            "{v:?}"
        );
        // The same with pods on every node, their node's agent silent since the cut.
        let mut pods = pods_on_every_node(|i, j| (j == 3 && i != 3).then_some(R::TcpTimeout));
        for c in pods.iter_mut() {
            c.path = None;
            c.silent = &*c.source_node == "n3";
        }
        let v = localise(&pods, None, None, T0).unwrap();
        assert_eq!(
            (v.scope, v.sources.clone()),
            (FailureScope::Node, vec!["n3".to_owned()]),
            "{v:?}"
        );
        // A silent agent alone (probes to it answer) is no verdict of its own.
        let mut quiet = mesh_of_nodes(|_, _| None);
        for c in quiet.iter_mut().filter(|c| &*c.source_node == "n2") {
            c.silent = true;
        }
        assert_eq!(localise(&quiet, None, None, T0), None);
        // One way only is not a node cut off.
        let outbound = localise(
            &mesh_of_nodes(|i, _| (i == 2).then_some(R::IcmpTimeout)),
            None,
            None,
            T0,
        );
        assert_eq!(outbound.unwrap().scope, FailureScope::SourceNode);
        let inbound = localise(
            &mesh_of_nodes(|_, j| (j == 2).then_some(R::IcmpTimeout)),
            None,
            None,
            T0,
        );
        assert_eq!(inbound.unwrap().scope, FailureScope::Endpoint);
        // Whichever half showed first, the node verdict takes over once both do.
        for first_half in [
            mesh_of_nodes(|i, _| (i == 2).then_some(R::IcmpTimeout)),
            mesh_of_nodes(|_, j| (j == 2).then_some(R::IcmpTimeout)),
        ] {
            let half = localise(&first_half, None, None, T0);
            let whole = localise(&mesh_of_nodes(cut), half.as_ref(), None, T0 + 1_000).unwrap();
            assert_eq!(whole.scope, FailureScope::Node, "after {half:?}");
        }
    }

    fn targets(broken: impl Fn(&str, &str) -> Option<FailureReason>) -> Vec<Cell> {
        let mut cells = Vec::new();
        for s in ["node-a", "node-b", "node-c", "node-d"] {
            for t in ["api", "db", "cache"] {
                let c = cell(s, t);
                cells.push(match broken(s, t) {
                    Some(r) => failing(c, r),
                    None => c,
                });
            }
        }
        cells
    }

    #[test]
    fn the_decision_table() {
        use FailureReason as R;
        let mut deny = cell("node-a", "db-blocked");
        deny.expect_deny = true;
        let mut with_violation =
            service(|_, p, _| (p == ServicePath::ClusterIP).then_some(R::TcpTimeout));
        with_violation.push(failing(deny, R::UnexpectedlyReachable));

        type Expected = Option<(FailureScope, Layer, &'static str)>;
        let cases: Vec<(&str, Vec<Cell>, Expected)> = vec![
            ("healthy", service(|_, _, _| None), None),
            (
                "dns",
                service(|_, p, _| (p == ServicePath::DNSName).then_some(R::DnsNxDomain)),
                Some((
                    FailureScope::DNS,
                    Layer::DNS,
                    "DNS name of web fails from 3/3 sources while its addresses answer (DNSNXDomain)",
                )),
            ),
            (
                "service routing",
                service(|_, p, _| (p == ServicePath::ClusterIP).then_some(R::TcpTimeout)),
                Some((
                    FailureScope::ServiceRouting,
                    Layer::TCP,
                    "Service VIP of web fails from 3/3 sources while 2/2 endpoints answer (TCPTimeout)",
                )),
            ),
            (
                "endpoint",
                service(|_, _, ep| (ep == Some("10.0.1.7:8080")).then_some(R::TcpTimeout)),
                Some((
                    FailureScope::Endpoint,
                    Layer::TCP,
                    "endpoint 10.0.1.7:8080 of web fails from 3/3 sources (TCPTimeout)",
                )),
            ),
            (
                "source node",
                targets(|s, _| (s == "node-b").then_some(R::HostUnreachable)),
                Some((
                    FailureScope::SourceNode,
                    Layer::TCP,
                    "every target fails from node node-b (3/3 targets, HostUnreachable) while other nodes reach them",
                )),
            ),
            (
                "zone pair",
                mesh(|from, to| (from == "b" && to == "a").then_some(R::IcmpTimeout)),
                Some((
                    FailureScope::ZonePair,
                    Layer::ICMP,
                    "zone b to zone a fails (ICMPTimeout) while 8 other zone pairs answer",
                )),
            ),
            (
                "target refused",
                targets(|_, t| (t == "db").then_some(R::TcpRefused)),
                Some((
                    FailureScope::Target,
                    Layer::TCP,
                    "db fails from all 4 sources (TCPRefused: refused suggests nothing listens on the port)",
                )),
            ),
            (
                "target dropped",
                targets(|_, t| (t == "api").then_some(R::TcpTimeout)),
                Some((
                    FailureScope::Target,
                    Layer::TCP,
                    "api fails from all 4 sources (TCPTimeout: timeouts suggest packets are dropped (policy or firewall))",
                )),
            ),
            (
                "policy violation first",
                with_violation,
                Some((
                    FailureScope::PolicyViolation,
                    Layer::Policy,
                    "Deny target db-blocked is reachable from 1/1 sources (UnexpectedlyReachable)",
                )),
            ),
            (
                "scattered",
                targets(|s, t| {
                    (s == "node-a" && t == "db" || s == "node-c" && t == "api")
                        .then_some(R::TcpReset)
                }),
                None,
            ),
        ];
        for (name, cells, want) in cases {
            let got = localise(&cells, None, None, T0);
            let got = got.as_ref().map(|v| (v.scope, v.layer, v.summary.as_str()));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn places_and_since() {
        let cells =
            service(|_, _, ep| (ep == Some("10.0.1.7:8080")).then_some(FailureReason::TcpTimeout));
        let first = localise(&cells, None, None, T0).unwrap();
        assert_eq!(first.sources, SOURCES.map(String::from));
        assert_eq!(first.destinations, ["10.0.1.7:8080"]);
        assert_eq!(first.reason, "TCPTimeout");
        assert_eq!(first.since, Some(condition_time(T0)));
        // The same verdict later keeps its start; a different one starts anew.
        let again = localise(&cells, Some(&first), None, T0 + 600_000).unwrap();
        assert_eq!(again.since, first.since);
        let other =
            service(|_, p, _| (p == ServicePath::ClusterIP).then_some(FailureReason::TcpTimeout));
        let changed = localise(&other, Some(&first), None, T0 + 600_000).unwrap();
        assert_eq!(changed.since, Some(condition_time(T0 + 600_000)));
    }

    /// Probes in intervals: one per interval per (source, path) of [`service`], the endpoint
    /// 10.0.1.7:8080 losing `loss_percent` of its probes while `fault` holds (the VIP and the
    /// DNS name reach it every other probe, as kube-proxy balances); cells over the spans the
    /// store reads, in intervals ([`EVIDENCE_INTERVALS`], [`HOLD_FACTOR`] times that).
    /// Returns the verdict after each interval.
    fn lossy_endpoint(
        loss_percent: u64,
        fault: std::ops::Range<usize>,
        intervals: usize,
        seed: u64,
    ) -> Vec<Option<Verdict>> {
        use netslo_protocol::hash::splitmix64;
        let evidence = EVIDENCE_INTERVALS as usize;
        let hold = evidence * HOLD_FACTOR as usize;
        let mut draws = 0u64;
        let mut chance = |percent: u64| {
            draws += 1;
            splitmix64(seed ^ draws.wrapping_mul(0x9e37_79b9_7f4a_7c15)) % 100 < percent
        };
        let template = service(|_, _, _| None);
        let mut outcomes: Vec<Vec<bool>> = vec![Vec::new(); template.len()];
        let mut previous: Option<Verdict> = None;
        let mut verdicts = Vec::new();
        for t in 0..intervals {
            let loss = if fault.contains(&t) { loss_percent } else { 0 };
            for (cell, history) in template.iter().zip(&mut outcomes) {
                let reaches_lossy = match cell.path {
                    Some(ServicePath::Endpoints) => {
                        cell.endpoint.as_deref() == Some("10.0.1.7:8080")
                    }
                    _ => chance(50),
                };
                history.push(reaches_lossy && chance(loss));
            }
            let cells: Vec<Cell> = template
                .iter()
                .zip(&outcomes)
                .map(|(cell, history)| {
                    // As the store reads it: from the first bad probe within the span on.
                    let recent = &history[history.len().saturating_sub(evidence)..];
                    let recent = &recent[recent.iter().position(|b| *b).unwrap_or(0)..];
                    let held = &history[history.len().saturating_sub(hold)..];
                    let bad = recent.iter().filter(|b| **b).count() as u64;
                    Cell {
                        good: recent.len() as u64 - bad,
                        bad,
                        held_bad: held.iter().filter(|b| **b).count() as u64,
                        reason: (bad > 0).then_some(FailureReason::TcpTimeout),
                        ..cell.clone()
                    }
                })
                .collect();
            let now = T0 + 1_000 * t as i64;
            previous = localise(&cells, previous.as_ref(), None, now);
            verdicts.push(previous.clone());
        }
        verdicts
    }

    fn place(v: &Option<Verdict>) -> Option<(FailureScope, Vec<String>)> {
        v.as_ref().map(|v| (v.scope, v.destinations.clone()))
    }

    #[test]
    fn partial_loss_settles_on_its_endpoint_once_and_clears_once() {
        const FAULT: std::ops::Range<usize> = 20..140;
        const END: usize = 220;
        let lossy = Some((FailureScope::Endpoint, vec!["10.0.1.7:8080".to_string()]));
        for loss in [10, 30, 40, 100] {
            for seed in 1..=8 {
                let verdicts = lossy_endpoint(loss, FAULT, END, seed);
                let case = format!("{loss}% loss, seed {seed}");
                assert!(
                    verdicts[..FAULT.start].iter().all(Option::is_none),
                    "{case}"
                );
                // While the fault holds: one change at most (the verdict appearing), and it
                // names the lossy endpoint with its failure fraction.
                let during = &verdicts[FAULT];
                let changes = during
                    .windows(2)
                    .filter(|w| place(&w[0]) != place(&w[1]))
                    .count()
                    + usize::from(place(&during[0]).is_some());
                assert!(changes <= 1, "{case}: {changes} changes: {during:?}");
                let settled_at = during.iter().position(|v| place(v) == lossy);
                if settled_at.is_none() {
                    eprintln!(
                        "{case}: {:?}",
                        during
                            .iter()
                            .map(|v| v.as_ref().map(|v| v.summary.clone()))
                            .collect::<Vec<_>>()
                    );
                }
                let settled_at = settled_at.unwrap_or_else(|| panic!("{case}: never named"));
                // A total fault is named at once; a partial one once the evidence shows it
                // (a 10% loss needs a few dozen probes to tell from chance).
                let bound = if loss == 100 {
                    0
                } else {
                    2 * EVIDENCE_INTERVALS as usize
                };
                assert!(
                    settled_at <= bound,
                    "{case}: named after {settled_at} intervals"
                );
                let last = during.last().unwrap().as_ref().unwrap();
                assert_eq!(
                    last.since,
                    during[settled_at].as_ref().unwrap().since,
                    "{case}"
                );
                let phrase = if loss == 100 {
                    "fails from"
                } else {
                    "% of probes from"
                };
                assert!(
                    last.summary
                        .starts_with("endpoint 10.0.1.7:8080 of web fails")
                        && last.summary.contains(phrase)
                        && last.summary.ends_with("from 3/3 sources (TCPTimeout)"),
                    "{case}: {}",
                    last.summary
                );
                // After it: held while the hold span has failures, then cleared for good.
                let after = &verdicts[FAULT.end..];
                let cleared_at = after.iter().position(Option::is_none).unwrap();
                assert!(
                    cleared_at <= (EVIDENCE_INTERVALS * HOLD_FACTOR) as usize,
                    "{case}"
                );
                assert!(
                    after[..cleared_at].iter().all(|v| place(v) == lossy),
                    "{case}"
                );
                assert!(after[cleared_at..].iter().all(Option::is_none), "{case}");
            }
        }
    }

    #[test]
    fn partial_loss_names_its_fraction() {
        // 31% of one endpoint's probes fail, from each source.
        let mut cells = service(|_, _, _| None);
        for c in &mut cells {
            if c.endpoint.as_deref() == Some("10.0.1.7:8080") {
                (c.good, c.bad, c.held_bad) = (69, 31, 31);
                c.reason = Some(FailureReason::TcpTimeout);
            }
        }
        let v = localise(&cells, None, None, T0).unwrap();
        assert_eq!(
            v.summary,
            "endpoint 10.0.1.7:8080 of web fails 31% of probes from 3/3 sources (TCPTimeout)"
        );
    }

    #[test]
    fn zone_pairs_are_across_zones_only() {
        // Within zone b everything fails: no zone pair is to blame ("zone b to zone b").
        let cells =
            mesh(|from, to| (from == "b" && to == "b").then_some(FailureReason::IcmpTimeout));
        let v = localise(&cells, None, None, T0);
        assert!(
            v.as_ref().is_none_or(|v| v.scope != FailureScope::ZonePair),
            "{v:?}"
        );
        // Zone a unreachable from everywhere else (and answering within itself) is not one
        // pair either way round: both pairs into a fail, and a answers only from a.
        let cells =
            mesh(|from, to| (from != "a" && to == "a").then_some(FailureReason::IcmpTimeout));
        let v = localise(&cells, None, None, T0).unwrap();
        assert_eq!(v.scope, FailureScope::ZonePair, "{v:?}");
        assert_eq!(v.destinations, ["a"]);
        assert_eq!(v.sources, ["b", "c"]);
    }

    #[test]
    fn an_endpoint_named_early_gives_way_once_its_own_zone_answers() {
        // Zone b's nodes cannot reach the pod on n0 (zone a). Just after the onset zone a's
        // results since then have not arrived: the pod reads as failing from every source.
        let zone = |i: usize| ["a", "a", "b", "b"][i];
        let early = |clean_probes: u64| {
            let mut cells = pods_on_every_node(|i, j| {
                (j == 0 && zone(i) == "b").then_some(FailureReason::TcpTimeout)
            });
            for c in cells.iter_mut() {
                c.path = None;
                if c.endpoint.as_deref() == Some("10.1.0.5:8080") && zone_of(c) == "a" {
                    c.good = clean_probes;
                }
            }
            cells
        };
        fn zone_of(c: &Cell) -> &str {
            c.source_zone.as_deref().unwrap_or_default()
        }
        let first = localise(&early(0), None, None, T0).unwrap();
        assert_eq!(first.scope, FailureScope::Endpoint, "{first:?}");
        // Seconds later zone a has answered it enough to tell: the zone pair takes over.
        let settled = localise(&early(10), Some(&first), None, T0 + 5_000).unwrap();
        assert_eq!(settled.scope, FailureScope::ZonePair, "{settled:?}");
        // A partial fault whose sources have not all failed yet keeps its endpoint verdict.
        let lossy = |good: u64, bad: u64| {
            let mut cells = pods_on_every_node(|_, _| None);
            for c in cells
                .iter_mut()
                .filter(|c| c.endpoint.as_deref() == Some("10.1.0.5:8080"))
            {
                c.path = None;
                (c.good, c.bad) = (good, bad);
                if bad > 0 {
                    c.reason = Some(FailureReason::TcpTimeout);
                    c.held_bad = bad;
                }
            }
            cells
        };
        let named = localise(&lossy(8, 2), None, None, T0).unwrap();
        assert_eq!(named.scope, FailureScope::Endpoint, "{named:?}");
        assert_eq!(
            localise(&lossy(9, 1), Some(&named), None, T0)
                .unwrap()
                .scope,
            FailureScope::Endpoint
        );
    }

    #[test]
    fn a_partition_between_two_zones_is_said_as_one() {
        let zone = |i: usize| ["a", "a", "b", "b"][i];
        let cells =
            pods_on_every_node(|i, j| (zone(i) != zone(j)).then_some(FailureReason::TcpTimeout));
        let v = localise(&cells, None, None, T0).unwrap();
        assert_eq!(v.scope, FailureScope::ZonePair, "{v:?}");
        assert_eq!(
            (v.sources.clone(), v.destinations.clone()),
            (
                vec!["a".to_owned(), "b".to_owned()],
                vec!["a".to_owned(), "b".to_owned()]
            )
        );
        assert_eq!(
            v.summary,
            "zones a and b cannot reach each other: fails in both directions (TCPTimeout) while 2 other zone pairs answer"
        );
        // One direction only is a pair, said as one.
        let cells = pods_on_every_node(|i, j| {
            (zone(i) == "a" && zone(j) == "b").then_some(FailureReason::TcpTimeout)
        });
        let v = localise(&cells, None, None, T0).unwrap();
        assert!(
            v.summary.starts_with("zone a to zone b fails (TCPTimeout)"),
            "{v:?}"
        );
    }

    #[test]
    fn verdicts_stay_within_bounds_at_any_scale() {
        // 5,000 nodes with 253-character names all failing one target.
        let long = "n".repeat(240);
        let cells: Vec<Cell> = (0..5_000)
            .map(|i| {
                failing(
                    cell(&format!("{long}-{i:05}"), "api"),
                    FailureReason::TcpTimeout,
                )
            })
            .collect();
        let v = localise(&cells, None, None, T0).unwrap();
        assert_eq!(v.scope, FailureScope::Target);
        assert!(v.summary.len() <= MAX_SUMMARY);
        assert_eq!(v.sources.len(), MAX_PLACES);
        assert!(v.sources.iter().all(|s| s.len() <= MAX_PLACE_NAME));
        assert!(v.sources[0].ends_with("nnn-00000"), "{}", v.sources[0]);
        assert_eq!(
            shorten("é".repeat(40))
                .chars()
                .filter(|c| *c == 'é')
                .count(),
            30
        );
    }

    #[test]
    fn ip_layer_failures_report_the_probe_transport() {
        let cases = [
            (Protocol::TCP, Layer::TCP),
            (Protocol::HTTPS, Layer::TCP),
            (Protocol::UDP, Layer::UDP),
            (Protocol::ICMP, Layer::ICMP),
            (Protocol::DNS, Layer::DNS),
        ];
        for (protocol, want) in cases {
            assert_eq!(layer_of(FailureReason::NetUnreachable, protocol), want);
        }
        assert_eq!(
            layer_of(FailureReason::TlsCertificate, Protocol::HTTPS),
            Layer::TLS
        );
    }

    fn stats(name: &str, good: u64, valid: u64) -> TargetStats {
        TargetStats {
            name: name.into(),
            via: None,
            endpoint: None,
            locality: None,
            protocol: Protocol::TCP,
            good,
            valid,
            latency: Histogram::new(),
            last_failure: None,
        }
    }

    #[test]
    fn target_summaries_worst_first() {
        let mut all: Vec<TargetStats> = (0..20)
            .map(|i| stats(&format!("t{i:02}"), 100, 100))
            .collect();
        all.push(stats("silent", 0, 0));
        let mut flaky = stats("flaky", 9_986, 10_000);
        for us in [300, 400, 412, 500, 3_100] {
            flaky.latency.record(us);
        }
        flaky.last_failure = Some(LastFailure {
            reason: FailureReason::TcpRefused,
            protocol: Protocol::TCP,
            source: "node-a".into(),
            at_ms: T0 + 61_234,
        });
        all.push(flaky);
        all.push(stats("down", 0, 360));
        let s = target_summaries(&all);
        assert_eq!(s.len(), MAX_TARGET_SUMMARIES);
        let names: Vec<&str> = s.iter().take(4).map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["down", "silent", "flaky", "t00"]);
        assert_eq!(s[0].success_ratio.as_deref(), Some("0"));
        assert_eq!(s[1].success_ratio, None);
        let flaky = &s[2];
        assert_eq!(flaky.success_ratio.as_deref(), Some("0.9986"));
        let latency = flaky.latency.as_ref().unwrap();
        assert_eq!(
            (latency.p50.as_str(), latency.p99.as_str()),
            ("410us", "3.1ms")
        );
        let failure = flaky.last_failure.as_ref().unwrap();
        assert_eq!(
            (failure.reason.as_str(), failure.layer),
            ("TCPRefused", Layer::TCP)
        );
        assert_eq!(
            failure.time,
            Some(condition_time(T0 + 60_000)),
            "the minute it was seen in"
        );
    }
}
