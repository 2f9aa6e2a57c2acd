//! netslo's protocol between the operator and its agents, shared by both and by nothing
//! heavier than serde: what an agent is asked to probe and what it reports back.
//!
//! * [`spec`]: the assignment an agent runs (camelCase JSON, validated, every size bounded);
//! * [`target`]: each target read as its probe needs it (one parser for both sides);
//! * [`guard`]: which destinations a check may contact, and IP spellings normalised;
//! * [`verdict`]: outcomes, failure reasons and the layers they belong to;
//! * [`bucket`] and [`histogram`]: one series' counters and latencies over one window;
//! * [`channel`]: the operator channel's wire (paths, bounds, envelopes, batches, acks);
//! * [`frame`]: the channel as one upgraded connection of length-prefixed frames;
//! * [`names`]: the assigned checks' names and the series' labels agents report under;
//! * [`hash`]: the stable hashes both sides agree on;
//! * [`time`]: the one clock both sides stamp with;
//! * [`trace`]: a path trace's hops, as an agent reports them.

pub mod bucket;
pub mod channel;
pub mod frame;
pub mod guard;
pub mod hash;
pub mod histogram;
pub mod names;
pub mod spec;
pub mod target;
pub mod time;
pub mod trace;
pub mod verdict;
