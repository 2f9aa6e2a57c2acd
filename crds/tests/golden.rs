//! The committed CRD YAML must be exactly what the Rust types generate: a stale file would
//! install an API that differs from the one the operator reads.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step is a failed test

use std::path::PathBuf;

#[test]
fn committed_crd_yaml_is_up_to_date() {
    // Cargo's runtime directory first: a test built in another clone sharing the target
    // directory would read that clone's file.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let path = manifest_dir.join("../config/crd/netslo.io.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = netslo_crds::crds_yaml().expect("CRDs render as YAML");
    assert!(
        committed == generated,
        "{} is stale: run `just generate` and commit the result",
        path.display()
    );
}

#[test]
fn generated_yaml_parses_back_into_the_same_crds() {
    let yaml = netslo_crds::crds_yaml().unwrap();
    let parsed: Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        serde_saphyr::from_multiple(&yaml).unwrap();
    assert_eq!(parsed, netslo_crds::crds());
}
