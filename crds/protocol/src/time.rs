//! The one clock both sides stamp with: Unix milliseconds as `i64` (bucket starts on the wire,
//! the operator's windows and `now`, the agent's assignment age).

/// Milliseconds since the Unix epoch.
pub type UnixMs = i64;

/// The wall clock as [`UnixMs`] (0 before 1970). Read at the edges only: pure code takes
/// `now` as an argument.
pub fn now_unix_ms() -> UnixMs {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
