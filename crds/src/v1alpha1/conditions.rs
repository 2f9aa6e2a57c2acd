//! Condition types and reasons of `ConnectivityCheck`, one place for the operator, tests and docs.
//!
//! - `Ready=True` exactly when the check is set up, agents report, and every objective is met;
//!   `Ready=False` with one of the reasons below otherwise. kstatus (Flux, Argo CD) reads it.
//! - `Stalled=True` when the spec cannot be acted on (a referenced object is missing, a policy
//!   denies a target); `Reconciling=True` while agents roll out or data is still too young.
//!   These two are kstatus' abnormal-true conditions: absent or False when all is well.

/// Condition types.
pub mod types {
    pub const READY: &str = "Ready";
    pub const SLO_MET: &str = "SLOMet";
    pub const BUDGET_BURNING: &str = "BudgetBurning";
    pub const NO_DATA: &str = "NoData";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
}

/// Condition reasons (CamelCase, bounded: they are also Event reasons and metric labels).
pub mod reasons {
    // Ready
    pub const OBJECTIVES_MET: &str = "ObjectivesMet";
    pub const OBJECTIVE_NOT_MET: &str = "ObjectiveNotMet";
    pub const SUSPENDED: &str = "Suspended";
    pub const AGENTS_PENDING: &str = "AgentsPending";
    pub const AWAITING_DATA: &str = "AwaitingData";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
    pub const TARGET_NOT_PERMITTED: &str = "TargetNotPermitted";
    /// A `localhost` target's pod runs no probe sidecar.
    pub const SIDECAR_MISSING: &str = "SidecarMissing";
    pub const EXPECTED_DENY_VIOLATED: &str = "ExpectedDenyViolated";

    // SLOMet
    pub const WITHIN_OBJECTIVE: &str = "WithinObjective";
    pub const BUDGET_EXHAUSTED: &str = "BudgetExhausted";

    // BudgetBurning
    pub const PAGE_FAST_BURN: &str = "PageFastBurn";
    pub const PAGE_SLOW_BURN: &str = "PageSlowBurn";
    pub const TICKET_BURN: &str = "TicketBurn";
    pub const NOT_BURNING: &str = "NotBurning";

    // NoData
    pub const RESULTS_FRESH: &str = "ResultsFresh";
    pub const NO_RESULTS: &str = "NoResults";
    pub const AGENTS_MISSING: &str = "AgentsMissing";

    // Reconciling
    pub const ROLLING_OUT_AGENTS: &str = "RollingOutAgents";
    pub const WINDOW_TOO_YOUNG: &str = "WindowTooYoung";
}
