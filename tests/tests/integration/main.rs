//! netslo's integration suite, one test binary: the API as the real kube-apiserver serves it,
//! the agent channel, the operator against a real control plane, OpenTelemetry and alert
//! rules against the real Collector and promtool, tenancy attacks in network namespaces, and
//! `just demo` itself.
//!
//! One binary lets libtest run the modules' tests side by side. Tests that only talk to the
//! API share one control plane; so do the tests whose operators each watch one namespace of
//! their own (`--watch-namespace`). A test whose operator watches every namespace, registers
//! Nodes or restarts the API server has a plane of its own (see
//! `netslo_tests::control_plane::shared`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step is a failed test

mod channel_common;
mod netns_common;
mod operator_common;

mod agent_workloads;
mod alert_rules;
mod api_crd;
mod api_kubectl;
mod api_validation;
mod channel_auth;
mod channel_frames;
mod channel_protocol;
mod channel_restart;
mod cluster_fixture;
mod control_plane_cli;
mod demo;
mod gitops_health;
mod helm_chart;
mod kubectl_plugin;
mod kubectl_probe;
mod operator_apiserver_restart;
mod operator_cross_namespace;
mod operator_e2e;
mod operator_faults;
mod operator_leader;
mod operator_mesh_agents;
mod operator_netns;
mod operator_restart;
mod operator_scoped;
mod operator_start;
mod otel_export;
mod prometheus_monitors;
mod prometheus_scrape;
mod rbac;
mod tenancy;
