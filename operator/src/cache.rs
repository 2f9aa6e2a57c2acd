//! The operator's view of the cluster: one set of watches for the whole cluster (agents watch
//! nothing), kept in reflector stores that the planner reads as snapshots.
//!
//! Objects are trimmed before they are stored (managed fields, annotations, and for pods
//! everything but what target resolution reads) so memory follows what netslo uses, not what
//! the cluster holds. Watches resume from their last resourceVersion, re-list on 410 and back
//! off on errors, so they survive API server restarts.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, ServiceCIDR};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use netslo_crds::v1alpha1::ConnectivityPolicy;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};

use crate::resolve::ClusterSnapshot;

/// Reflector stores of everything target resolution reads.
#[derive(Clone)]
pub struct ClusterCache {
    pub pods: Store<Pod>,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    pub nodes: Store<Node>,
    pub ingresses: Store<Ingress>,
    /// The Service ranges: part of the cluster's own address space ([`crate::cluster_space`]).
    pub service_cidrs: Store<ServiceCIDR>,
    /// Namespaces (labels only) and the admins' policies: what checks may target.
    pub namespaces: Store<Namespace>,
    pub policies: Store<ConnectivityPolicy>,
    /// Signalled on every change, so the planner can re-plan promptly.
    pub changed: Arc<Notify>,
    /// Bumped after every watch event has reached its store: a snapshot taken at one
    /// generation holds for as long as the generation stays.
    generation: Arc<AtomicU64>,
    /// The last snapshot and the generation it was taken at: every reconcile reads the
    /// cluster, and copying every store's objects for each would cost each reconcile the
    /// whole cluster (thousands of pods and nodes).
    last: Arc<Mutex<Option<TakenAt>>>,
}

/// A snapshot and the generation it was taken at.
type TakenAt = (u64, Arc<OwnedSnapshot>);

impl Debug for ClusterCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCache")
            .field("pods", &self.pods.len())
            .field("services", &self.services.len())
            .field("endpoint_slices", &self.endpoint_slices.len())
            .field("nodes", &self.nodes.len())
            .field("ingresses", &self.ingresses.len())
            .finish()
    }
}

/// Owned copies of the stores' contents (cheap: `Arc`s), borrowed as a [`ClusterSnapshot`].
#[derive(Debug, Clone, Default)]
pub struct OwnedSnapshot {
    pub pods: Vec<Arc<Pod>>,
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    pub nodes: Vec<Arc<Node>>,
    pub ingresses: Vec<Arc<Ingress>>,
    pub service_cidrs: Vec<Arc<ServiceCIDR>>,
    pub namespaces: Vec<Arc<Namespace>>,
    pub policies: Vec<Arc<ConnectivityPolicy>>,
}

impl OwnedSnapshot {
    pub fn view<'a>(
        &'a self,
        cluster_domain: &'a str,
        cluster_ca_pem: Option<&'a str>,
    ) -> ClusterSnapshot<'a> {
        ClusterSnapshot {
            pods: &self.pods,
            services: &self.services,
            endpoint_slices: &self.endpoint_slices,
            nodes: &self.nodes,
            ingresses: &self.ingresses,
            cluster_domain,
            cluster_ca_pem,
        }
    }
}

impl ClusterCache {
    /// Starts every watch on the runtime; they run until `shutdown` turns true.
    pub fn start(client: &Client, shutdown: watch::Receiver<bool>) -> Self {
        let changed = Changes {
            notify: Arc::new(Notify::new()),
            generation: Arc::new(AtomicU64::new(0)),
        };
        Self {
            pods: spawn_reflector(
                Api::all(client.clone()),
                trim_pod,
                changed.clone(),
                shutdown.clone(),
            ),
            services: spawn_reflector(
                Api::all(client.clone()),
                trim_meta,
                changed.clone(),
                shutdown.clone(),
            ),
            endpoint_slices: spawn_reflector(
                Api::all(client.clone()),
                trim_meta,
                changed.clone(),
                shutdown.clone(),
            ),
            nodes: spawn_reflector(
                Api::all(client.clone()),
                trim_node,
                changed.clone(),
                shutdown.clone(),
            ),
            ingresses: spawn_reflector(
                Api::all(client.clone()),
                trim_meta,
                changed.clone(),
                shutdown.clone(),
            ),
            service_cidrs: spawn_reflector(
                Api::all(client.clone()),
                trim_meta,
                changed.clone(),
                shutdown.clone(),
            ),
            namespaces: spawn_reflector(
                Api::all(client.clone()),
                trim_namespace,
                changed.clone(),
                shutdown.clone(),
            ),
            policies: spawn_reflector(
                Api::all(client.clone()),
                trim_meta,
                changed.clone(),
                shutdown,
            ),
            changed: changed.notify,
            generation: changed.generation,
            last: Arc::default(),
        }
    }

    /// Waits until every store has its first full list.
    pub async fn wait_ready(&self) {
        let _ = self.pods.wait_until_ready().await;
        let _ = self.services.wait_until_ready().await;
        let _ = self.endpoint_slices.wait_until_ready().await;
        let _ = self.nodes.wait_until_ready().await;
        let _ = self.ingresses.wait_until_ready().await;
        let _ = self.service_cidrs.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
        let _ = self.policies.wait_until_ready().await;
    }

    /// The watch events seen so far (any kind, all stores).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Every store's objects, shared while nothing changed.
    pub fn snapshot(&self) -> Arc<OwnedSnapshot> {
        // Read before the stores: a snapshot holds at least what this generation saw.
        let generation = self.generation();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((taken_at, snapshot)) = &*last
            && *taken_at == generation
        {
            return snapshot.clone();
        }
        let snapshot = Arc::new(self.copy_stores());
        *last = Some((generation, snapshot.clone()));
        snapshot
    }

    fn copy_stores(&self) -> OwnedSnapshot {
        OwnedSnapshot {
            pods: self.pods.state(),
            services: self.services.state(),
            endpoint_slices: self.endpoint_slices.state(),
            nodes: self.nodes.state(),
            ingresses: self.ingresses.state(),
            service_cidrs: self.service_cidrs.state(),
            namespaces: self.namespaces.state(),
            policies: self.policies.state(),
        }
    }
}

/// How reflectors tell that their store changed.
#[derive(Clone)]
struct Changes {
    notify: Arc<Notify>,
    generation: Arc<AtomicU64>,
}

impl Changes {
    /// A store took an event.
    fn record(&self) {
        self.generation.fetch_add(1, Ordering::Release);
        self.notify.notify_one();
    }
}

fn spawn_reflector<K>(
    api: Api<K>,
    trim: fn(&mut K),
    changed: Changes,
    mut shutdown: watch::Receiver<bool>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    // `any_semantic` lets the API server answer re-lists from its watch cache.
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(trim)
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                // Every event, the end of a re-list included (when the store takes the new
                // list whole), after the store has it.
                item = stream.next() => match item {
                    Some(Ok(_)) => changed.record(),
                    // The backoff retries; an error is logged, never fatal.
                    Some(Err(err)) => tracing::warn!(kind = %K::kind(&K::DynamicType::default()), "watch error: {err}"),
                    None => return,
                },
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    });
    store
}

fn trim_meta<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    meta.annotations = None;
}

/// Pods are the bulk of a cluster: keep what resolution reads (labels, node, readiness, IP)
/// and, for agent pods, the service account their tokens must name.
fn trim_pod(pod: &mut Pod) {
    trim_meta(pod);
    pod.metadata.owner_references = None;
    if let Some(spec) = pod.spec.as_mut() {
        let node_name = spec.node_name.take();
        let service_account = spec.service_account_name.take();
        *spec = Default::default();
        spec.node_name = node_name;
        spec.service_account_name = service_account;
    }
    if let Some(status) = pod.status.as_mut() {
        status.container_statuses = None;
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
    }
}

/// Namespaces matter only for their names and labels (policy selectors).
fn trim_namespace(namespace: &mut Namespace) {
    trim_meta(namespace);
    namespace.spec = None;
    namespace.status = None;
}

fn trim_node(node: &mut Node) {
    trim_meta(node);
    if let Some(status) = node.status.as_mut() {
        status.images = None;
        status.volumes_attached = None;
        status.volumes_in_use = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;

    #[test]
    fn a_snapshot_is_shared_until_a_watch_event_reaches_a_store() {
        let (pods, mut writer) = reflector::store::<Pod>();
        let changes = Changes {
            notify: Arc::new(Notify::new()),
            generation: Arc::new(AtomicU64::new(0)),
        };
        let cache = ClusterCache {
            pods,
            services: reflector::store().0,
            endpoint_slices: reflector::store().0,
            nodes: reflector::store().0,
            ingresses: reflector::store().0,
            service_cidrs: reflector::store().0,
            namespaces: reflector::store().0,
            policies: reflector::store().0,
            changed: changes.notify.clone(),
            generation: changes.generation.clone(),
            last: Arc::default(),
        };
        let first = cache.snapshot();
        assert!(first.pods.is_empty());
        assert!(
            Arc::ptr_eq(&first, &cache.snapshot()),
            "nothing changed: shared"
        );

        let mut pod = Pod::default();
        pod.metadata.name = Some("web-1".into());
        pod.metadata.namespace = Some("shop".into());
        writer.apply_watcher_event(&Event::Apply(pod));
        changes.record();
        let after = cache.snapshot();
        assert!(!Arc::ptr_eq(&first, &after));
        assert_eq!(after.pods.len(), 1);
        assert!(Arc::ptr_eq(&after, &cache.snapshot()));
    }
}
