//! `netslo.io/v1alpha1`.

mod connectivity_check;
mod connectivity_policy;
pub mod conditions;
mod status;

pub use connectivity_check::*;
pub use connectivity_policy::*;
pub use status::*;
