//! Prints every netslo CRD as multi-document YAML: `cargo run -p netslo-crds --bin crdgen >
//! config/crd/netslo.io.yaml` (or `just generate`).

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match netslo_crds::crds_yaml() {
        Ok(yaml) => yaml,
        Err(err) => {
            eprintln!("crdgen: cannot render the CRDs: {err}");
            return ExitCode::FAILURE;
        }
    };
    match std::io::stdout().lock().write_all(yaml.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("crdgen: cannot write: {err}");
            ExitCode::FAILURE
        }
    }
}
