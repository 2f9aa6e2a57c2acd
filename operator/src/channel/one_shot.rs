//! One-shot reports as they arrive from agents, until the probe controller takes them.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use netslo_protocol::channel::OneShotReport;
use tokio::sync::Notify;

/// Most reports held at once; more are refused (the agent retries, the probe times out).
const MAX_HELD: usize = 1_024;

/// Reports by one-shot id, each kept until taken.
#[derive(Debug, Default)]
pub struct OneShotInbox {
    reports: Mutex<HashMap<String, OneShotReport>>,
    arrived: Notify,
}

impl OneShotInbox {
    fn reports(&self) -> MutexGuard<'_, HashMap<String, OneShotReport>> {
        self.reports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a report (the first for its id: a resent one changes nothing). `false` when the
    /// inbox is full.
    pub fn put(&self, report: OneShotReport) -> bool {
        let mut reports = self.reports();
        if reports.len() >= MAX_HELD && !reports.contains_key(&report.id) {
            return false;
        }
        reports.entry(report.id.clone()).or_insert(report);
        drop(reports);
        self.arrived.notify_waiters();
        true
    }

    /// The report for `id`, if it came; it is no longer held.
    pub fn take(&self, id: &str) -> Option<OneShotReport> {
        self.reports().remove(id)
    }

    /// Forgets every report whose id `keep` refuses (probes that are gone).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.reports().retain(|id, _| keep(id));
    }

    /// Resolves at the next report.
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, agent: &str) -> OneShotReport {
        OneShotReport {
            agent_name: agent.into(),
            id: id.into(),
            attempts: Vec::new(),
            trace: None,
            trace_error: None,
        }
    }

    #[test]
    fn the_first_report_is_kept_until_taken_and_the_inbox_is_bounded() {
        let inbox = OneShotInbox::default();
        assert!(inbox.put(report("a", "first")));
        assert!(inbox.put(report("a", "resent")));
        assert_eq!(inbox.take("a").unwrap().agent_name, "first");
        assert!(inbox.take("a").is_none());
        for i in 0..MAX_HELD {
            assert!(inbox.put(report(&format!("p{i}"), "x")));
        }
        assert!(!inbox.put(report("overflow", "x")));
        inbox.retain(|id| id != "p0");
        assert!(inbox.take("p0").is_none());
        assert!(inbox.put(report("overflow", "x")));
    }
}
