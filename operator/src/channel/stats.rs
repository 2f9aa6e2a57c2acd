//! Counters of the channel, for the metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$m:meta])* $name:ident, )*) => {
        /// Live counters (cumulative since start); read them with [`ChannelStats::snapshot`].
        #[derive(Debug, Default)]
        pub struct ChannelStats {
            $( $(#[$m])* pub $name: AtomicU64, )*
        }

        /// A copy of the counters at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct ChannelCounters {
            $( $(#[$m])* pub $name: u64, )*
        }

        impl ChannelStats {
            pub fn snapshot(&self) -> ChannelCounters {
                ChannelCounters { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }
    };
}

counters! {
    /// Connections accepted (TLS or not).
    connections,
    /// Requests received (any endpoint).
    requests,
    /// Channels upgraded to frames, and those since closed.
    channels_opened,
    channels_closed,
    /// Result batches acknowledged.
    batches_acked,
    /// Buckets accepted and stored.
    accepted,
    /// Buckets already stored (resent), counted once.
    duplicates,
    /// Requests refused for lack of a valid token (missing, malformed, expired, rejected,
    /// wrong audience, not a service account).
    refused_unauthenticated,
    /// Requests from a valid identity for an agent it is not bound to, or an unknown agent.
    refused_forbidden,
    /// Buckets for a (check, source) the agent was not assigned.
    refused_unassigned,
    /// Requests refused as malformed (body, JSON, bounds, headers).
    refused_malformed,
    /// Requests answered "retry later": not ready, token verification or result store
    /// unavailable.
    unavailable,
    /// Result store failures.
    sink_errors,
    /// Buckets agents report having dropped (outbox full), summed over agents.
    agent_dropped,
    /// Assignments served (200) and long-polls ended unchanged (304).
    assignments_served,
    assignments_unchanged,
}

impl ChannelStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
