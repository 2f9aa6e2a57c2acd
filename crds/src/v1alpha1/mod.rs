//! `netslo.io/v1alpha1`.

pub mod conditions;
mod connectivity_check;
mod connectivity_matrix;
mod connectivity_policy;
mod connectivity_probe;
mod status;
mod validation;

pub use connectivity_check::*;
pub use connectivity_matrix::*;
pub use connectivity_policy::*;
pub use connectivity_probe::*;
pub use status::*;
