//! Durations as users write them in specs: Go's `time.ParseDuration` format ("10s", "1m30s",
//! "250ms"), the same format the API server's CEL `duration()` function reads, so the CRD's
//! cross-field rules and the operator agree on what a string means.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest duration string the schema accepts: bounded so that CEL cost estimation passes.
const MAX_LENGTH: u32 = 32;

/// A non-negative duration in Go's format. Keeps the text it was read from, so a spec read and
/// written back by netslo stays exactly as the user wrote it ("1m" does not become "60s");
/// comparisons use the duration.
#[derive(Clone, Debug)]
pub struct GoDuration {
    duration: StdDuration,
    text: Box<str>,
}

impl GoDuration {
    /// Wraps a standard duration.
    pub fn new(duration: StdDuration) -> Self {
        let text = kube::core::Duration::from(duration)
            .to_string()
            .into_boxed_str();
        Self { duration, text }
    }

    /// Whole seconds.
    pub fn from_secs(secs: u64) -> Self {
        Self::new(StdDuration::from_secs(secs))
    }

    /// Milliseconds.
    pub fn from_millis(millis: u64) -> Self {
        Self::new(StdDuration::from_millis(millis))
    }

    /// The duration as a standard duration.
    pub fn get(&self) -> StdDuration {
        self.duration
    }
}

impl PartialEq for GoDuration {
    fn eq(&self, other: &Self) -> bool {
        self.duration == other.duration
    }
}

impl Eq for GoDuration {}

impl PartialOrd for GoDuration {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for GoDuration {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.duration.cmp(&other.duration)
    }
}

impl std::hash::Hash for GoDuration {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.duration.hash(state);
    }
}

impl From<GoDuration> for StdDuration {
    fn from(d: GoDuration) -> Self {
        d.duration
    }
}

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {problem} (expected e.g. \"10s\", \"1m30s\", \"250ms\")")]
pub struct ParseDurationError {
    input: String,
    problem: &'static str,
}

impl FromStr for GoDuration {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |problem| ParseDurationError {
            input: s.chars().take(64).collect(),
            problem,
        };
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.starts_with('-') {
            return Err(err("must not be negative"));
        }
        let parsed = kube::core::Duration::from_str(s).map_err(|_| err("not a Go duration"))?;
        Ok(Self {
            duration: parsed.into(),
            text: s.into(),
        })
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for GoDuration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": MAX_LENGTH,
            "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases = [
            ("10s", StdDuration::from_secs(10)),
            ("1m30s", StdDuration::from_secs(90)),
            ("250ms", StdDuration::from_millis(250)),
            ("50us", StdDuration::from_micros(50)),
            ("1.5h", StdDuration::from_secs(5400)),
        ];
        for (input, want) in cases {
            assert_eq!(
                input.parse::<GoDuration>().map(|d| d.get()),
                Ok(want),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_what_go_rejects_and_negatives() {
        for input in ["", "10", "ten seconds", "-5s", "5 s", "1d"] {
            assert!(
                input.parse::<GoDuration>().is_err(),
                "{input:?} should not parse"
            );
        }
    }

    #[test]
    fn round_trips_through_json_as_written() {
        for text in ["1m30s", "1m", "90s", "0.5s"] {
            let json = format!("\"{text}\"");
            let d: GoDuration = serde_json::from_str(&json).unwrap();
            assert_eq!(serde_json::to_string(&d).unwrap(), json);
        }
        assert_eq!("1m".parse::<GoDuration>(), "60s".parse::<GoDuration>());
    }
}
