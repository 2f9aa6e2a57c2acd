//! Who is calling: bearer tokens verified with TokenReview, verdicts cached.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use kube::api::{Api, PostParams};
use tokio::sync::Semaphore;

use super::BoxFuture;

/// The audience agents' projected tokens must be minted for.
pub const AUDIENCE: &str = "netslo";
/// Largest bearer token looked at.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
const SA_PREFIX: &str = "system:serviceaccount:";
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// Why a caller is not (yet) authenticated.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token expired")]
    Expired,
    #[error("token rejected: {0}")]
    Rejected(String),
    #[error("token not valid for audience {AUDIENCE}")]
    WrongAudience,
    #[error("{0} is not a service account")]
    NotServiceAccount(String),
    /// The verifier could not decide (API server unreachable): retry later, not a refusal.
    #[error("cannot verify the token now: {0}")]
    Unavailable(String),
}

impl AuthError {
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "TokenMissing",
            AuthError::Malformed(_) => "TokenMalformed",
            AuthError::Expired => "TokenExpired",
            AuthError::Rejected(_) => "TokenRejected",
            AuthError::WrongAudience => "TokenWrongAudience",
            AuthError::NotServiceAccount(_) => "NotServiceAccount",
            AuthError::Unavailable(_) => "TokenReviewUnavailable",
        }
    }

    /// A definite refusal (as opposed to "cannot tell now").
    pub fn is_refusal(&self) -> bool {
        !matches!(self, AuthError::Unavailable(_))
    }
}

/// An authenticated caller: a service account, and for pod-bound tokens the pod and node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentIdentity {
    /// `system:serviceaccount:<namespace>:<name>`.
    pub username: String,
    pub uid: String,
    pub namespace: String,
    pub service_account: String,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub node_name: Option<String>,
}

impl AgentIdentity {
    /// A service-account identity without pod binding (tests, external agents).
    pub fn service_account(namespace: &str, name: &str) -> Self {
        AgentIdentity {
            username: format!("{SA_PREFIX}{namespace}:{name}"),
            uid: String::new(),
            namespace: namespace.to_owned(),
            service_account: name.to_owned(),
            pod_name: None,
            pod_uid: None,
            node_name: None,
        }
    }

    /// Maps TokenReview's user to an identity; only service accounts qualify.
    pub fn from_user_info(user: &UserInfo) -> Result<Self, AuthError> {
        let username = user.username.clone().unwrap_or_default();
        let Some((namespace, name)) = username
            .strip_prefix(SA_PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains(':'))
        else {
            return Err(AuthError::NotServiceAccount(username));
        };
        let extra = |key: &str| {
            user.extra
                .as_ref()
                .and_then(|e| e.get(key))
                .and_then(|v| v.first())
                .filter(|v| !v.is_empty())
                .cloned()
        };
        Ok(AgentIdentity {
            namespace: namespace.to_owned(),
            service_account: name.to_owned(),
            uid: user.uid.clone().unwrap_or_default(),
            pod_name: extra(POD_NAME_EXTRA),
            pod_uid: extra(POD_UID_EXTRA),
            node_name: extra(NODE_NAME_EXTRA),
            username,
        })
    }
}

/// A positive verdict.
#[derive(Debug, Clone)]
pub struct Verified {
    pub identity: Arc<AgentIdentity>,
    /// The token's own expiry, when known.
    pub expires: Option<SystemTime>,
}

/// Turns a bearer token into an identity.
pub trait TokenVerifier: Send + Sync + std::fmt::Debug {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Verified, AuthError>>;
}

/// The shape checks every token passes before anything else: a JWT (three non-empty base64url
/// parts), its payload a JSON object whose `exp`, if present, is an integer. Returns the
/// expiry **without verifying the signature**: use it only to refuse early or to bound a cache
/// entry of a token already verified.
pub fn unverified_jwt_expiry(token: &str) -> Result<Option<SystemTime>, AuthError> {
    #[derive(serde::Deserialize)]
    struct Claims {
        #[serde(default)]
        exp: Option<serde_json::Value>,
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed("longer than 16 KiB"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("not a JWT"));
    };
    let b64url = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !(b64url(header) && b64url(payload) && b64url(signature)) {
        return Err(AuthError::Malformed("not a JWT"));
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| AuthError::Malformed("payload is not base64url"))?;
    let claims: Claims =
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed("payload is not JSON"))?;
    match claims.exp {
        None => Ok(None),
        Some(v) => {
            let secs = v
                .as_u64()
                .ok_or(AuthError::Malformed("exp is not a non-negative integer"))?;
            // Clamp absurd values instead of overflowing SystemTime.
            let secs = secs.min(u64::from(u32::MAX) * 4);
            Ok(Some(UNIX_EPOCH + Duration::from_secs(secs)))
        }
    }
}

/// Verifies tokens with `authentication.k8s.io/v1` TokenReview (RBAC: `create` on
/// `tokenreviews`), requiring the [`AUDIENCE`] audience.
#[derive(Debug, Clone)]
pub struct TokenReviewVerifier {
    api: Api<TokenReview>,
    audience: String,
}

impl TokenReviewVerifier {
    pub fn new(client: kube::Client) -> Self {
        Self::with_audience(client, AUDIENCE)
    }

    pub fn with_audience(client: kube::Client, audience: &str) -> Self {
        TokenReviewVerifier {
            api: Api::all(client),
            audience: audience.to_owned(),
        }
    }

    async fn review(&self, token: &str) -> Result<Verified, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            self.api.create(&PostParams::default(), &review),
        )
        .await
        .map_err(|_| AuthError::Unavailable("TokenReview timed out".into()))?
        .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let status = out
            .status
            .ok_or_else(|| AuthError::Unavailable("TokenReview without status".into()))?;
        if status.authenticated != Some(true) {
            let msg = status.error.unwrap_or_else(|| "not authenticated".into());
            // The API server names audience mismatches in its error text.
            return Err(if msg.contains("audience") {
                AuthError::WrongAudience
            } else {
                AuthError::Rejected(msg.chars().take(256).collect())
            });
        }
        if !status
            .audiences
            .unwrap_or_default()
            .contains(&self.audience)
        {
            return Err(AuthError::WrongAudience);
        }
        let user = status
            .user
            .ok_or_else(|| AuthError::Rejected("no user in TokenReview".into()))?;
        Ok(Verified {
            identity: Arc::new(AgentIdentity::from_user_info(&user)?),
            expires: unverified_jwt_expiry(token).ok().flatten(),
        })
    }
}

impl TokenVerifier for TokenReviewVerifier {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Verified, AuthError>> {
        Box::pin(self.review(token))
    }
}

/// Fixed tokens, for tests and development only.
#[derive(Debug, Default)]
pub struct StaticTokens {
    tokens: HashMap<String, Arc<AgentIdentity>>,
}

impl StaticTokens {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, token: &str, identity: AgentIdentity) -> Self {
        self.tokens.insert(token.to_owned(), Arc::new(identity));
        self
    }
}

impl TokenVerifier for StaticTokens {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Verified, AuthError>> {
        let out = self
            .tokens
            .get(token)
            .map(|identity| Verified {
                identity: identity.clone(),
                expires: None,
            })
            .ok_or_else(|| AuthError::Rejected("unknown token".into()));
        Box::pin(std::future::ready(out))
    }
}

/// SHA-256 of a token: the cache keeps digests, not tokens.
fn digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    out
}

#[derive(Debug, Clone)]
enum Verdict {
    Good(Verified),
    Bad(AuthError),
}

#[derive(Debug)]
struct Entry {
    verdict: Verdict,
    until: std::time::Instant,
    /// The token's expiry, when known: a verdict on a pod-bound token also holds until then
    /// while its pod is live.
    expires: Option<std::time::Instant>,
}

impl Entry {
    fn holds(&self, now: std::time::Instant, live: Option<&LivePods>) -> bool {
        let pod_live = || match (&self.verdict, live) {
            (Verdict::Good(v), Some(live)) => v
                .identity
                .pod_uid
                .as_deref()
                .is_some_and(|uid| live.contains(uid)),
            _ => false,
        };
        self.until > now || (self.expires.is_some_and(|e| e > now) && pod_live())
    }
}

/// The agent pods (by UID) the operator knows, as its planner last saw them. The API server
/// stops honouring a pod-bound token once its pod is deleted: a verdict on such a token can be
/// kept for the token's life while its pod is here, and asked again once the pod is gone.
#[derive(Debug, Default)]
pub struct LivePods(RwLock<HashSet<String>>);

impl LivePods {
    /// Replaces the set, if it changed.
    pub fn set(&self, uids: HashSet<String>) {
        let unchanged = *self.0.read().unwrap_or_else(|p| p.into_inner()) == uids;
        if !unchanged {
            *self.0.write().unwrap_or_else(|p| p.into_inner()) = uids;
        }
    }

    fn contains(&self, uid: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(uid)
    }
}

/// Wraps a verifier: refuses malformed or expired JWTs without asking it, caches positive
/// verdicts until the token's expiry (at most `max_ttl`, or while its pod is live, see
/// [`LivePods`]) and refusals for `negative_ttl`, bounds the cache, and bounds concurrent
/// verifications. With thousands of agents, reviewing each token every `max_ttl` would be a
/// stream of TokenReviews growing with the node count; with live pods, each token is reviewed
/// about once per token (kubelets renew projected tokens hourly).
#[derive(Debug)]
pub struct CachingVerifier<V> {
    inner: V,
    cache: Mutex<HashMap<[u8; 32], Entry>>,
    max_entries: usize,
    max_ttl: Duration,
    negative_ttl: Duration,
    in_flight: Semaphore,
    reviews: std::sync::atomic::AtomicU64,
    live_pods: Option<Arc<LivePods>>,
}

impl<V: TokenVerifier> CachingVerifier<V> {
    /// Positive verdicts at most 5 minutes, refusals 10 s, 20,000 entries, 16 concurrent
    /// verifications.
    pub fn new(inner: V) -> Self {
        Self::with_limits(
            inner,
            Duration::from_secs(300),
            Duration::from_secs(10),
            20_000,
        )
    }

    pub fn with_limits(
        inner: V,
        max_ttl: Duration,
        negative_ttl: Duration,
        max_entries: usize,
    ) -> Self {
        CachingVerifier {
            inner,
            cache: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(1),
            max_ttl,
            negative_ttl,
            in_flight: Semaphore::new(16),
            reviews: std::sync::atomic::AtomicU64::new(0),
            live_pods: None,
        }
    }

    /// Keeps verdicts on pod-bound tokens while their pod is among `live`.
    pub fn keeping_live_pods(mut self, live: Arc<LivePods>) -> Self {
        self.live_pods = Some(live);
        self
    }

    /// Calls made to the inner verifier.
    pub fn reviews(&self) -> u64 {
        self.reviews.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lookup(&self, key: &[u8; 32]) -> Option<Verdict> {
        let now = std::time::Instant::now();
        let mut cache = self.cache();
        match cache.get(key) {
            Some(e) if e.holds(now, self.live_pods.as_deref()) => Some(e.verdict.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    fn store(&self, key: [u8; 32], verdict: Verdict, ttl: Duration, lifetime: Option<Duration>) {
        if ttl.is_zero() {
            return;
        }
        let now = std::time::Instant::now();
        let mut cache = self.cache();
        if cache.len() >= self.max_entries {
            let live = self.live_pods.as_deref();
            cache.retain(|_, e| e.holds(now, live));
        }
        if cache.len() >= self.max_entries {
            // Evict the entry closest to expiry.
            if let Some(k) = cache.iter().min_by_key(|(_, e)| e.until).map(|(k, _)| *k) {
                cache.remove(&k);
            }
        }
        cache.insert(
            key,
            Entry {
                verdict,
                until: now + ttl,
                expires: lifetime.map(|lifetime| now + lifetime),
            },
        );
    }

    async fn check(&self, token: &str) -> Result<Verified, AuthError> {
        let expires = unverified_jwt_expiry(token)?;
        let now = SystemTime::now();
        if expires.is_some_and(|e| e <= now) {
            return Err(AuthError::Expired);
        }
        let key = digest(token);
        match self.lookup(&key) {
            Some(Verdict::Good(v)) => return Ok(v),
            Some(Verdict::Bad(e)) => return Err(e),
            None => {}
        }
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| AuthError::Unavailable("verifier closed".into()))?;
        // Another request may have verified the same token meanwhile.
        match self.lookup(&key) {
            Some(Verdict::Good(v)) => return Ok(v),
            Some(Verdict::Bad(e)) => return Err(e),
            None => {}
        }
        self.reviews
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.inner.verify(token).await {
            Ok(v) => {
                let lifetime = v
                    .expires
                    .or(expires)
                    .map(|e| e.duration_since(now).unwrap_or_default());
                let ttl = lifetime.unwrap_or(self.max_ttl).min(self.max_ttl);
                self.store(key, Verdict::Good(v.clone()), ttl, lifetime);
                Ok(v)
            }
            Err(e) if e.is_refusal() => {
                self.store(key, Verdict::Bad(e.clone()), self.negative_ttl, None);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

impl<V: TokenVerifier> TokenVerifier for CachingVerifier<V> {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Verified, AuthError>> {
        Box::pin(self.check(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    fn jwt(payload: &str) -> String {
        format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64(payload))
    }

    #[test]
    fn jwt_expiry_parses_and_survives_hostile_input() {
        assert_eq!(
            unverified_jwt_expiry(&jwt(r#"{"exp":1700000000,"sub":"x"}"#)).unwrap(),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(unverified_jwt_expiry(&jwt(r#"{"sub":"x"}"#)).unwrap(), None);
        // Absurd but integral: clamped, no overflow.
        assert!(
            unverified_jwt_expiry(&jwt(r#"{"exp":18446744073709551615}"#))
                .unwrap()
                .is_some()
        );
        let hostile = [
            String::new(),
            "a.b".into(),
            "a.b.c.d".into(),
            "..".into(),
            "a..c".into(),
            "a.b+/.c".into(),
            format!("x.{}.y", "A".repeat(MAX_TOKEN_BYTES)),
            "x.!!!.y".into(),
            format!("x.{}.y", b64("not json")),
            format!("x.{}.y", b64("[1,2]")),
            jwt(r#"{"exp":"tomorrow"}"#),
            jwt(r#"{"exp":-5}"#),
            jwt(r#"{"exp":1.5e300}"#),
            jwt(&format!("{}1{}", "[".repeat(3_000), "]".repeat(3_000))),
            "é.é.é".into(),
            format!("x.{}\u{0}.y", b64("{}")),
        ];
        for t in hostile {
            let e = unverified_jwt_expiry(&t).unwrap_err();
            assert_eq!(e.reason(), "TokenMalformed", "{t:.40}");
        }
    }

    #[test]
    fn identities_come_from_service_account_users_only() {
        let mut extra = BTreeMap::new();
        extra.insert(POD_NAME_EXTRA.to_string(), vec!["agent-x".to_string()]);
        extra.insert(NODE_NAME_EXTRA.to_string(), vec!["node-1".to_string()]);
        let user = UserInfo {
            username: Some("system:serviceaccount:netslo-system:netslo-agent".into()),
            uid: Some("u1".into()),
            groups: None,
            extra: Some(extra),
        };
        let id = AgentIdentity::from_user_info(&user).unwrap();
        assert_eq!(
            (id.namespace.as_str(), id.service_account.as_str()),
            ("netslo-system", "netslo-agent")
        );
        assert_eq!(id.pod_name.as_deref(), Some("agent-x"));
        assert_eq!(id.node_name.as_deref(), Some("node-1"));
        for bad in [
            "admin",
            "system:serviceaccount:",
            "system:serviceaccount:ns",
            "system:serviceaccount::name",
            "system:serviceaccount:ns:a:b",
            "system:node:n1",
        ] {
            let user = UserInfo {
                username: Some(bad.into()),
                ..UserInfo::default()
            };
            assert_eq!(
                AgentIdentity::from_user_info(&user).unwrap_err().reason(),
                "NotServiceAccount",
                "{bad}"
            );
        }
    }

    #[derive(Debug, Default)]
    struct Counting {
        calls: std::sync::atomic::AtomicU64,
        good: String,
        down: std::sync::atomic::AtomicBool,
    }

    impl TokenVerifier for Counting {
        fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Verified, AuthError>> {
            use std::sync::atomic::Ordering;
            self.calls.fetch_add(1, Ordering::SeqCst);
            let out = if self.down.load(Ordering::SeqCst) {
                Err(AuthError::Unavailable("down".into()))
            } else if token == self.good {
                Ok(Verified {
                    identity: Arc::new(AgentIdentity::service_account("ns", "sa")),
                    expires: None,
                })
            } else {
                Err(AuthError::Rejected("no".into()))
            };
            Box::pin(std::future::ready(out))
        }
    }

    #[tokio::test]
    async fn cache_spares_reviews_and_refuses_expired_early() {
        use std::sync::atomic::Ordering;
        let future = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3_600;
        let good = jwt(&format!(r#"{{"exp":{future},"sub":"a"}}"#));
        let bad = jwt(&format!(r#"{{"exp":{future},"sub":"b"}}"#));
        let expired = jwt(r#"{"exp":1000}"#);
        let v = CachingVerifier::new(Counting {
            good: good.clone(),
            ..Counting::default()
        });
        for _ in 0..100 {
            v.verify(&good).await.unwrap();
        }
        assert_eq!(v.inner.calls.load(Ordering::SeqCst), 1);
        for _ in 0..10 {
            assert_eq!(v.verify(&bad).await.unwrap_err().reason(), "TokenRejected");
        }
        assert_eq!(
            v.inner.calls.load(Ordering::SeqCst),
            2,
            "refusals cached too"
        );
        assert_eq!(
            v.verify(&expired).await.unwrap_err().reason(),
            "TokenExpired"
        );
        assert_eq!(
            v.verify("garbage").await.unwrap_err().reason(),
            "TokenMalformed"
        );
        assert_eq!(v.inner.calls.load(Ordering::SeqCst), 2, "never asked");
        assert_eq!(v.reviews(), 2);

        // "Cannot tell" is not cached.
        let other = jwt(&format!(r#"{{"exp":{future},"sub":"c"}}"#));
        v.inner.down.store(true, Ordering::SeqCst);
        assert!(!v.verify(&other).await.unwrap_err().is_refusal());
        assert!(!v.verify(&other).await.unwrap_err().is_refusal());
        assert_eq!(v.inner.calls.load(Ordering::SeqCst), 4);
    }

    /// Tokens bound to a pod, as the API server reviews them.
    #[derive(Debug, Default)]
    struct PodTokens {
        calls: std::sync::atomic::AtomicU64,
        /// Token → the UID of the pod it is bound to.
        bound: HashMap<String, String>,
    }

    impl TokenVerifier for PodTokens {
        fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Verified, AuthError>> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut identity = AgentIdentity::service_account("netslo", "agent");
            identity.pod_uid = self.bound.get(token).cloned();
            let expires = SystemTime::now() + Duration::from_secs(3_600);
            Box::pin(std::future::ready(Ok(Verified {
                identity: Arc::new(identity),
                expires: Some(expires),
            })))
        }
    }

    #[tokio::test]
    async fn a_pod_bound_token_is_reviewed_again_only_once_its_pod_is_gone() {
        use std::sync::atomic::Ordering;
        let live = Arc::new(LivePods::default());
        live.set(HashSet::from(["uid-1".to_owned()]));
        let pod_token = jwt(r#"{"sub":"pod-1"}"#);
        let plain_token = jwt(r#"{"sub":"no-pod"}"#);
        let tokens = PodTokens {
            bound: HashMap::from([(pod_token.clone(), "uid-1".to_owned())]),
            ..PodTokens::default()
        };
        let v = CachingVerifier::with_limits(
            tokens,
            Duration::from_millis(40),
            Duration::from_secs(10),
            100,
        )
        .keeping_live_pods(live.clone());
        for _ in 0..2 {
            v.verify(&pod_token).await.unwrap();
            v.verify(&plain_token).await.unwrap();
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        assert_eq!(
            v.inner.calls.load(Ordering::SeqCst),
            3,
            "the pod's token once; the other again after max_ttl"
        );
        live.set(HashSet::new());
        v.verify(&pod_token).await.unwrap();
        assert_eq!(
            v.inner.calls.load(Ordering::SeqCst),
            4,
            "its pod gone, the token is reviewed again"
        );
    }

    #[tokio::test]
    async fn cache_is_bounded_and_expires() {
        let v = CachingVerifier::with_limits(
            StaticTokens::new(),
            Duration::from_secs(60),
            Duration::from_millis(30),
            10,
        );
        for i in 0..100 {
            let _ = v.verify(&jwt(&format!(r#"{{"n":{i}}}"#))).await;
        }
        assert!(v.cache().len() <= 10);
        let t = jwt(r#"{"n":"x"}"#);
        let _ = v.verify(&t).await;
        let _ = v.verify(&t).await;
        let before = v.reviews();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = v.verify(&t).await;
        assert_eq!(v.reviews(), before + 1, "negative verdict expired");
    }
}
