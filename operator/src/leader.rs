//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics, so that
//! more than one replica may run and only one acts.
//!
//! - A candidate takes the Lease when it is absent, released (no holder), or expired. Expiry is
//!   measured on the candidate's own monotonic clock from the moment it *observed* the record
//!   change (not from the `renewTime` written with the holder's clock), so clock skew between
//!   replicas cannot make two of them leader.
//! - Every write carries the resourceVersion last read: of two candidates, the API server lets
//!   one win and answers the other `409 Conflict`.
//! - The leader renews every retry period. If no renewal has succeeded for the renew deadline
//!   (shorter than the lease duration, so it gives up before anyone else may take over), or a
//!   read shows someone else holding the Lease, leadership is lost and the process must stop.
//! - On graceful shutdown the leader releases the Lease (no holder, duration 1 s), so a
//!   successor takes over at its next retry instead of after expiry.
//!
//! The decisions are plain functions of what was observed and `now` ([`observe`], [`decide`],
//! [`is_expired`], [`renewal_lost`]); [`LeaderElector`] is the I/O around them.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use netslo_protocol::hash::random_u64;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;

/// client-go's jitter factor: candidates wait a retry period plus up to 1.2 of it between
/// attempts, so that they do not retry in lockstep.
const JITTER: f64 = 1.2;

/// How long a release may take at shutdown: a dead API server must not hold up the exit (the
/// Lease then simply expires).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why leader election failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "leader-election timing must satisfy lease duration ({lease:?}) > renew deadline ({renew:?}) > {JITTER} × retry period ({retry:?}) > 0"
    )]
    Timing {
        lease: Duration,
        renew: Duration,
        retry: Duration,
    },
    #[error("Lease {lease}: {source}")]
    Api {
        lease: String,
        #[source]
        source: kube::Error,
    },
    #[error("Lease {lease} was written by someone else first (409 Conflict)")]
    Conflict { lease: String },
    #[error("Lease {lease}: no answer within {timeout:?}")]
    Timeout { lease: String, timeout: Duration },
    #[error("lost leadership of Lease {lease}: {why}")]
    Lost { lease: String, why: String },
}

impl Error {
    /// Short PascalCase reason for logs, Events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Timing { .. } => "LeaderElectionTiming",
            Self::Api { .. } => "LeaseApiError",
            Self::Conflict { .. } => "LeaseConflict",
            Self::Timeout { .. } => "LeaseTimeout",
            Self::Lost { .. } => "LeadershipLost",
        }
    }
}

/// Lease duration, renew deadline and retry period (client-go's names and meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a candidate waits, from observing a record change, before it may take over.
    pub lease_duration: Duration,
    /// How long the leader keeps failing to renew before it gives up leadership.
    pub renew_deadline: Duration,
    /// Interval between attempts (renewals, and acquisitions plus jitter).
    pub retry_period: Duration,
}

impl Timing {
    /// Checks client-go's invariants: the leader must give up before anyone else may take over,
    /// and must get more than one attempt before it gives up.
    pub fn new(
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Result<Self, Error> {
        let valid = lease_duration > renew_deadline
            && renew_deadline.as_secs_f64() > JITTER * retry_period.as_secs_f64()
            && !retry_period.is_zero();
        if !valid {
            return Err(Error::Timing {
                lease: lease_duration,
                renew: renew_deadline,
                retry: retry_period,
            });
        }
        Ok(Self {
            lease_duration,
            renew_deadline,
            retry_period,
        })
    }
}

/// What a Lease says, as leader election reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseRecord {
    /// Empty when nobody holds it (released).
    pub holder: String,
    pub lease_duration: Duration,
    pub acquire_time: Option<Timestamp>,
    pub renew_time: Option<Timestamp>,
    pub transitions: i32,
}

impl LeaseRecord {
    pub fn from_lease(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.unwrap_or_default(),
            lease_duration: Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
            ),
            acquire_time: spec.acquire_time.map(|t| t.0),
            renew_time: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }

    /// Writes the record into a Lease's spec, keeping the fields election does not own
    /// (`preferredHolder`, `strategy`).
    fn write_to(&self, lease: &mut Lease) {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(self.holder.clone());
        spec.lease_duration_seconds =
            Some(i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX));
        spec.acquire_time = self.acquire_time.map(MicroTime);
        spec.renew_time = self.renew_time.map(MicroTime);
        spec.lease_transitions = Some(self.transitions);
    }
}

/// A record and when this process first saw it in that state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub record: LeaseRecord,
    pub at: Instant,
}

/// Folds a record just read into the last observation: the observation time moves only when
/// the record changed, so a holder that stopped renewing expires `lease_duration` after we
/// first saw its last renewal, whatever the clocks say.
pub fn observe(previous: Option<Observed>, record: LeaseRecord, now: Instant) -> Observed {
    match previous {
        Some(previous) if previous.record == record => previous,
        _ => Observed { record, at: now },
    }
}

/// Whether the observed holder's term is over.
pub fn is_expired(observed: &Observed, now: Instant) -> bool {
    observed.at + observed.record.lease_duration <= now
}

/// What to do with the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is none: create it, naming us.
    Create,
    /// Ours: renew it (same acquireTime and transitions).
    Renew,
    /// Absent holder, released or expired: take it (new acquireTime, one more transition).
    TakeOver,
    /// Someone else holds it and their term runs.
    Wait { holder: String },
}

/// client-go's `tryAcquireOrRenew` decision.
pub fn decide(identity: &str, observed: Option<&Observed>, now: Instant) -> Decision {
    match observed {
        None => Decision::Create,
        Some(o) if o.record.holder == identity => Decision::Renew,
        Some(o) if !o.record.holder.is_empty() && !is_expired(o, now) => Decision::Wait {
            holder: o.record.holder.clone(),
        },
        Some(_) => Decision::TakeOver,
    }
}

/// The record to write for a decision to create, renew or take over.
pub fn next_record(
    identity: &str,
    lease_duration: Duration,
    current: Option<&LeaseRecord>,
    decision: &Decision,
    wall: Timestamp,
) -> LeaseRecord {
    let (acquire_time, transitions) = match (decision, current) {
        (Decision::Renew, Some(c)) => (c.acquire_time.or(Some(wall)), c.transitions),
        (Decision::TakeOver, Some(c)) => (Some(wall), c.transitions.saturating_add(1)),
        _ => (Some(wall), 0),
    };
    LeaseRecord {
        holder: identity.to_string(),
        lease_duration,
        acquire_time,
        renew_time: Some(wall),
        transitions,
    }
}

/// The record a leader writes when it steps down (client-go's ReleaseOnCancel): no holder and
/// a one-second term, so candidates take over at their next attempt.
pub fn released(current: &LeaseRecord, wall: Timestamp) -> LeaseRecord {
    LeaseRecord {
        holder: String::new(),
        lease_duration: Duration::from_secs(1),
        acquire_time: Some(wall),
        renew_time: Some(wall),
        transitions: current.transitions,
    }
}

/// Whether the leader must give up: its last successful renewal started a renew deadline ago.
pub fn renewal_lost(last_renewed: Instant, now: Instant, renew_deadline: Duration) -> bool {
    now.saturating_duration_since(last_renewed) >= renew_deadline
}

/// `<pod name>_<16 hex digits>`: unique per process, so two processes with the same pod name
/// (a restarted container, a local run beside the pod) never both believe they hold the Lease.
pub fn identity(pod_name: &str) -> String {
    format!("{pod_name}_{:016x}", random_u64())
}

fn jittered(period: Duration) -> Duration {
    // 53 bits make an exact f64 fraction in [0, 1).
    let fraction = (random_u64() >> 11) as f64 / (1u64 << 53) as f64;
    period.mul_f64(1.0 + JITTER * fraction)
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

/// Contends for, holds and releases one Lease.
#[derive(Debug)]
pub struct LeaderElector {
    leases: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    /// The Lease as last read or written: its resourceVersion guards the next write.
    lease: Option<Lease>,
    observed: Option<Observed>,
    /// When the last successful write of ours started.
    renewed_at: Option<Instant>,
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: String,
        timing: Timing,
    ) -> Self {
        Self {
            leases: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity,
            timing,
            lease: None,
            observed: None,
            renewed_at: None,
        }
    }

    /// From the operator's flags: the Lease in its namespace, named by `--leader-elect-lease-name`.
    pub fn from_config(client: Client, config: &Config) -> Result<Self, Error> {
        let timing = Timing::new(
            Duration::from_secs(config.leader_elect_lease_duration_seconds),
            Duration::from_secs(config.leader_elect_renew_deadline_seconds),
            Duration::from_secs(config.leader_elect_retry_period_seconds),
        )?;
        Ok(Self::new(
            client,
            &config.namespace,
            &config.leader_elect_lease_name,
            identity(&config.pod_name),
            timing,
        ))
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn is_leader(&self) -> bool {
        self.observed
            .as_ref()
            .is_some_and(|o| o.record.holder == self.identity)
    }

    fn api_error(&self, source: kube::Error) -> Error {
        if is_conflict(&source) {
            Error::Conflict {
                lease: self.name.clone(),
            }
        } else {
            Error::Api {
                lease: self.name.clone(),
                source,
            }
        }
    }

    /// Remembers a write of ours that the API server accepted.
    fn wrote(&mut self, lease: Lease, record: LeaseRecord, started: Instant) {
        self.lease = Some(lease);
        self.observed = Some(Observed {
            record,
            at: Instant::now(),
        });
        self.renewed_at = Some(started);
    }

    /// One attempt (client-go's `tryAcquireOrRenew`): `Ok(true)` when we hold the Lease now.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, Error> {
        let started = Instant::now();
        let wall = Timestamp::now();
        let post = PostParams::default();

        // Fast path: a valid leader writes over the Lease it last wrote, without a read. A
        // conflict or any error falls back to reading it.
        if self.is_leader()
            && let (Some(observed), Some(lease)) = (&self.observed, &self.lease)
            && !is_expired(observed, started)
        {
            let record = next_record(
                &self.identity,
                self.timing.lease_duration,
                Some(&observed.record),
                &Decision::Renew,
                wall,
            );
            let mut next = lease.clone();
            record.write_to(&mut next);
            match self.leases.replace(&self.name, &post, &next).await {
                Ok(written) => {
                    self.wrote(written, record, started);
                    return Ok(true);
                }
                Err(err) => {
                    tracing::debug!(lease = %self.name, "optimistic renewal failed, reading the Lease: {err}")
                }
            }
        }

        let current = self
            .leases
            .get_opt(&self.name)
            .await
            .map_err(|e| self.api_error(e))?;
        let now = Instant::now();
        self.observed = current
            .as_ref()
            .map(|lease| observe(self.observed.take(), LeaseRecord::from_lease(lease), now));
        self.lease = current;
        let decision = decide(&self.identity, self.observed.as_ref(), now);
        if let Decision::Wait { .. } = decision {
            return Ok(false);
        }
        let record = next_record(
            &self.identity,
            self.timing.lease_duration,
            self.observed.as_ref().map(|o| &o.record),
            &decision,
            wall,
        );
        let written = match &self.lease {
            Some(lease) => {
                let mut next = lease.clone();
                record.write_to(&mut next);
                self.leases.replace(&self.name, &post, &next).await
            }
            None => {
                let mut lease = Lease::default();
                lease.metadata.name = Some(self.name.clone());
                record.write_to(&mut lease);
                self.leases.create(&post, &lease).await
            }
        }
        .map_err(|e| self.api_error(e))?;
        if decision == Decision::TakeOver {
            tracing::info!(lease = %self.name, previous = ?self.observed.as_ref().map(|o| &o.record.holder), transitions = record.transitions, "took over the Lease");
        }
        self.wrote(written, record, started);
        Ok(true)
    }

    /// One attempt bounded in time, so that a hung request cannot outlast a deadline.
    async fn attempt(&mut self, timeout: Duration) -> Result<bool, Error> {
        match tokio::time::timeout(timeout, self.try_acquire_or_renew()).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                lease: self.name.clone(),
                timeout,
            }),
        }
    }

    /// Returns once this process holds the Lease; retries (with jitter) forever, logging why
    /// it is not leader yet.
    pub async fn acquire(&mut self) {
        tracing::info!(lease = %self.name, identity = %self.identity, "waiting to become leader");
        let mut last_holder = None;
        loop {
            match self.attempt(self.timing.renew_deadline).await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(false) => {
                    let holder = self.observed.as_ref().map(|o| o.record.holder.clone());
                    if holder != last_holder {
                        tracing::info!(lease = %self.name, holder = ?holder, "the Lease is held by another replica");
                        last_holder = holder;
                    }
                }
                Err(err) => {
                    tracing::warn!(
                        reason = err.reason(),
                        "leader election attempt failed: {err}"
                    );
                }
            }
            tokio::time::sleep(jittered(self.timing.retry_period)).await;
        }
    }

    /// Renews every retry period until `stop` resolves (then releases the Lease and returns
    /// `Ok`) or leadership is lost (`Err(Error::Lost)`).
    pub async fn hold(&mut self, stop: impl Future<Output = ()>) -> Result<(), Error> {
        let mut stop = std::pin::pin!(stop);
        let deadline = self.timing.renew_deadline;
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.timing.retry_period) => {}
                () = &mut stop => {
                    self.release().await;
                    return Ok(());
                }
            }
            let last = self.renewed_at.unwrap_or_else(Instant::now);
            let remaining = deadline.saturating_sub(last.elapsed());
            match self.attempt(remaining.max(Duration::from_millis(1))).await {
                Ok(true) => {}
                // A read showed another holder in its term: someone took over.
                Ok(false) => {
                    let holder = self
                        .observed
                        .as_ref()
                        .map(|o| o.record.holder.clone())
                        .unwrap_or_default();
                    return Err(Error::Lost {
                        lease: self.name.clone(),
                        why: format!("it is held by {holder}"),
                    });
                }
                Err(err) => {
                    tracing::warn!(reason = err.reason(), "renewing the Lease failed: {err}");
                }
            }
            if renewal_lost(
                self.renewed_at.unwrap_or(last),
                Instant::now(),
                self.timing.renew_deadline,
            ) {
                return Err(Error::Lost {
                    lease: self.name.clone(),
                    why: format!("not renewed within the renew deadline of {deadline:?}"),
                });
            }
        }
    }

    /// Steps down if leader: a successor need not wait for expiry. Best effort and bounded;
    /// on failure the Lease expires on its own.
    pub async fn release(&mut self) {
        if !self.is_leader() {
            return;
        }
        let (Some(lease), Some(observed)) = (&self.lease, &self.observed) else {
            return;
        };
        let record = released(&observed.record, Timestamp::now());
        let mut next = lease.clone();
        record.write_to(&mut next);
        let post = PostParams::default();
        let replace = self.leases.replace(&self.name, &post, &next);
        match tokio::time::timeout(RELEASE_TIMEOUT, replace).await {
            Ok(Ok(written)) => {
                self.lease = Some(written);
                self.observed = Some(Observed {
                    record,
                    at: Instant::now(),
                });
                tracing::info!(lease = %self.name, "released the Lease");
            }
            Ok(Err(err)) => {
                tracing::warn!(lease = %self.name, "cannot release the Lease, it will expire: {err}");
            }
            Err(_) => {
                tracing::warn!(lease = %self.name, "releasing the Lease timed out, it will expire");
            }
        }
    }
}

/// How [`elect`] ended.
#[derive(Debug)]
pub enum Elected<S> {
    /// This process leads; renewals run in the background.
    Leader(Leadership),
    /// `stop` resolved first (with this output); nothing is held.
    Stopped(S),
}

/// Waits until `elector` holds the Lease or `stop` resolves, whichever comes first.
pub async fn elect<S: Future>(mut elector: LeaderElector, stop: S) -> Elected<S::Output> {
    let stopped = tokio::select! {
        () = elector.acquire() => None,
        output = stop => Some(output),
    };
    match stopped {
        None => Elected::Leader(Leadership::start(elector)),
        Some(output) => {
            // An attempt cancelled mid-flight may have won the Lease: give it back.
            elector.release().await;
            Elected::Stopped(output)
        }
    }
}

/// Held leadership: a task renewing the Lease.
#[derive(Debug)]
pub struct Leadership {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl Leadership {
    /// Starts renewing in the background.
    pub fn start(mut elector: LeaderElector) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            elector
                .hold(async {
                    // A dropped sender stops (and releases) too.
                    let _ = stopped.await;
                })
                .await
        });
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Resolves when leadership is lost; never if it is still held or was released.
    /// Cancel-safe.
    pub async fn lost(&mut self) -> Error {
        let Some(task) = self.task.as_mut() else {
            return std::future::pending().await;
        };
        let result = task.await;
        self.task = None;
        match result {
            Ok(Err(err)) => err,
            Ok(Ok(())) => std::future::pending().await,
            Err(join) => Error::Lost {
                lease: String::new(),
                why: format!("the renewal task ended: {join}"),
            },
        }
    }

    /// Stops renewing and releases the Lease (bounded in time).
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(RELEASE_TIMEOUT + Duration::from_secs(1), task).await;
        }
    }
}

/// [`Leadership::lost`] for an optional leadership: without leader election, never.
pub async fn lost(leadership: &mut Option<Leadership>) -> Error {
    match leadership {
        Some(leadership) => leadership.lost().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "op_a";
    const OTHER: &str = "op_b";

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn record(holder: &str, duration: u64, transitions: i32) -> LeaseRecord {
        LeaseRecord {
            holder: holder.into(),
            lease_duration: secs(duration),
            acquire_time: Some(Timestamp::from_second(1_000).unwrap()),
            renew_time: Some(Timestamp::from_second(1_010).unwrap()),
            transitions,
        }
    }

    #[test]
    fn decisions() {
        let t0 = Instant::now() + secs(60);
        let seen = |holder: &str, duration: u64, ago: u64| {
            Some(Observed {
                record: record(holder, duration, 3),
                at: t0 - secs(ago),
            })
        };
        let other_holder = Decision::Wait {
            holder: OTHER.into(),
        };
        let cases: &[(&str, Option<Observed>, Decision)] = &[
            ("no Lease", None, Decision::Create),
            ("ours, fresh", seen(ME, 15, 1), Decision::Renew),
            // Ours even if our own term ran out: nobody else wrote in between.
            ("ours, expired", seen(ME, 15, 20), Decision::Renew),
            ("other's, fresh", seen(OTHER, 15, 0), other_holder.clone()),
            ("other's, 14 s", seen(OTHER, 15, 14), other_holder),
            (
                "other's, exactly expired",
                seen(OTHER, 15, 15),
                Decision::TakeOver,
            ),
            ("other's, expired", seen(OTHER, 15, 16), Decision::TakeOver),
            ("released", seen("", 1, 0), Decision::TakeOver),
            (
                "empty holder, long term",
                seen("", 15, 0),
                Decision::TakeOver,
            ),
            ("zero duration", seen(OTHER, 0, 0), Decision::TakeOver),
        ];
        for (name, observed, want) in cases {
            assert_eq!(&decide(ME, observed.as_ref(), t0), want, "{name}");
        }
    }

    #[test]
    fn expiry_follows_the_observation_not_the_remote_clock() {
        let t0 = Instant::now() + secs(60);
        // The holder's renewTime says "long ago" (its clock is behind): irrelevant.
        let stale_clock = LeaseRecord {
            renew_time: Some(Timestamp::from_second(0).unwrap()),
            ..record(OTHER, 15, 0)
        };
        let first = observe(None, stale_clock.clone(), t0);
        assert_eq!(first.at, t0);
        assert!(!is_expired(&first, t0 + secs(14)));
        // The same record read again later: still counted from the first sight.
        let again = observe(Some(first.clone()), stale_clock.clone(), t0 + secs(10));
        assert_eq!(again.at, t0);
        assert!(is_expired(&again, t0 + secs(15)));
        // A renewal (any change) restarts the count.
        let renewed = LeaseRecord {
            renew_time: Some(Timestamp::from_second(5).unwrap()),
            ..stale_clock
        };
        let after = observe(Some(again), renewed, t0 + secs(12));
        assert_eq!(after.at, t0 + secs(12));
        assert!(!is_expired(&after, t0 + secs(26)));
        assert!(is_expired(&after, t0 + secs(27)));
    }

    #[test]
    fn records_written() {
        let wall = Timestamp::from_second(2_000).unwrap();
        let current = record(OTHER, 15, 4);
        // (case, current, decision, acquireTime seconds, transitions)
        type Case<'a> = (&'a str, Option<&'a LeaseRecord>, Decision, Option<i64>, i32);
        let cases: &[Case<'_>] = &[
            ("create", None, Decision::Create, Some(2_000), 0),
            (
                "renew keeps acquireTime",
                Some(&current),
                Decision::Renew,
                Some(1_000),
                4,
            ),
            (
                "takeover counts",
                Some(&current),
                Decision::TakeOver,
                Some(2_000),
                5,
            ),
        ];
        for (name, current, decision, acquire, transitions) in cases {
            let next = next_record(ME, secs(15), *current, decision, wall);
            assert_eq!(next.holder, ME, "{name}");
            assert_eq!(next.lease_duration, secs(15), "{name}");
            assert_eq!(next.renew_time, Some(wall), "{name}");
            assert_eq!(next.acquire_time.map(|t| t.as_second()), *acquire, "{name}");
            assert_eq!(next.transitions, *transitions, "{name}");
        }
        let gone = released(&record(ME, 15, 7), wall);
        assert_eq!(gone.holder, "");
        assert_eq!(gone.lease_duration, secs(1));
        assert_eq!(gone.transitions, 7, "a release is no transition");
    }

    #[test]
    fn lease_round_trip() {
        let mut lease = Lease {
            spec: Some(LeaseSpec {
                strategy: Some("OldestEmulationVersion".into()),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        let written = record(ME, 15, 2);
        written.write_to(&mut lease);
        assert_eq!(LeaseRecord::from_lease(&lease), written);
        let spec = lease.spec.unwrap();
        assert_eq!(spec.strategy.as_deref(), Some("OldestEmulationVersion"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(
            LeaseRecord::from_lease(&Lease::default()),
            LeaseRecord::default()
        );
    }

    #[test]
    fn renewal_deadline() {
        let t0 = Instant::now() + secs(60);
        let cases = [(0, false), (9, false), (10, true), (30, true)];
        for (after, lost) in cases {
            assert_eq!(
                renewal_lost(t0, t0 + secs(after), secs(10)),
                lost,
                "{after} s"
            );
        }
        // A clock read before the renewal it is compared with never counts as late.
        assert!(!renewal_lost(t0 + secs(1), t0, secs(10)));
    }

    #[test]
    fn timing_invariants() {
        let cases = [
            ((15, 10, 2), true),
            ((15, 15, 2), false), // the leader would give up only as others take over
            ((10, 15, 2), false),
            ((15, 10, 9), false), // no second attempt within the deadline (with jitter)
            ((15, 10, 0), false),
            ((60, 40, 5), true),
        ];
        for ((lease, renew, retry), ok) in cases {
            assert_eq!(
                Timing::new(secs(lease), secs(renew), secs(retry)).is_ok(),
                ok,
                "{lease}/{renew}/{retry}"
            );
        }
    }

    #[test]
    fn identities_are_unique_per_process_and_call() {
        let a = identity("netslo-operator-0");
        let b = identity("netslo-operator-0");
        assert!(a.starts_with("netslo-operator-0_"), "{a}");
        assert_eq!(a.len(), "netslo-operator-0_".len() + 16);
        assert_ne!(a, b);
    }

    #[test]
    fn jitter_stays_in_client_go_bounds() {
        for _ in 0..100 {
            let wait = jittered(secs(2));
            assert!(
                wait >= secs(2) && wait < secs(2).mul_f64(1.0 + JITTER),
                "{wait:?}"
            );
        }
    }

    #[test]
    fn error_reasons() {
        let lost = Error::Lost {
            lease: "l".into(),
            why: "x".into(),
        };
        assert_eq!(lost.reason(), "LeadershipLost");
        assert_eq!(
            Timing::new(secs(1), secs(2), secs(1)).unwrap_err().reason(),
            "LeaderElectionTiming"
        );
        assert_eq!(
            Error::Conflict { lease: "l".into() }.reason(),
            "LeaseConflict"
        );
    }
}
