//! What API keys authenticated to, kept for a few seconds so that a client's requests do not each
//! cost a database lookup.
//!
//! Correctness comes from Postgres, not from the time to live: every change that could make a
//! kept answer wrong (a key revoked or rescoped, its user deactivated or given another role)
//! fires `NOTIFY nimbus_auth_changed` when it commits (migration `…130100`), and this process
//! listens on a connection of its own and forgets everything it kept. The listening connection
//! proves itself alive: the process notifies a heartbeat channel every second through its pool
//! and must hear it back; when nothing was heard for [`SILENCE`] (the connection dropped, or hangs
//! half-open), nothing is kept or served from the cache and every request goes to the database
//! until a new subscription is up. A missed revocation is therefore served from the cache for at
//! most [`SILENCE`]. A lookup that started before a change cannot store its answer after it (a
//! generation counter). The listener holds one database connection of its own.
//!
//! Successful authentications are kept, keyed by the token's SHA-256 (the token itself is never
//! stored). So are tokens the database refused, for [`NEGATIVE_TTL`]: a token that failed once
//! (unknown, wrong, revoked, expired, its user deactivated) is answered 401 from memory, so
//! repeating it costs the database nothing. The same invalidation applies: a reactivated user's
//! keys authenticate again as soon as the change is heard.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use nimbus_db::PgPool;
use nimbus_db::api_keys::Authenticated;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

/// The channel the database notifies.
pub const CHANNEL: &str = "nimbus_auth_changed";
/// The channel each process's heartbeat goes round through.
const HEARTBEAT: &str = "nimbus_auth_heartbeat";
/// How often the heartbeat is sent.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long the listener may hear nothing before the cache is off.
pub const SILENCE: Duration = Duration::from_secs(3);
/// The most answers kept; past it the cache starts over.
const CAPACITY: usize = 10_000;
/// How long a refused token is answered from memory.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(60);

struct Shared {
    entries: Mutex<HashMap<[u8; 32], (Authenticated, Instant)>>,
    /// Digests of refused tokens, and when they were refused.
    refused: Mutex<HashMap<[u8; 32], Instant>>,
    /// Bumped by every invalidation.
    generation: AtomicU64,
    /// Whether the listener is subscribed.
    listening: AtomicBool,
    /// When the listener last heard anything, in ms since `epoch`.
    heard_ms: AtomicU64,
    epoch: Instant,
}

impl Shared {
    fn new() -> Self {
        Shared {
            entries: Mutex::default(),
            refused: Mutex::default(),
            generation: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            heard_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn forget_all(&self) {
        let mut entries = self.entries.lock();
        let mut refused = self.refused.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.clear();
        refused.clear();
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn heard(&self) {
        self.heard_ms.store(self.now_ms(), Ordering::SeqCst);
    }

    /// Subscribed and heard from recently: kept answers may be used and stored.
    fn trusted(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
            && self.now_ms().saturating_sub(self.heard_ms.load(Ordering::SeqCst)) < SILENCE.as_millis() as u64
    }
}

/// The cache; its listener runs from the first lookup until the cache is dropped.
pub struct KeyCache {
    db: PgPool,
    ttl: Duration,
    shared: Arc<Shared>,
    /// Dropping it stops the listener.
    stop: std::sync::OnceLock<oneshot::Sender<()>>,
}

/// A lookup in progress: the generation it started in.
pub struct Lookup {
    digest: [u8; 32],
    generation: u64,
}

impl KeyCache {
    /// A cache over `db` keeping answers for `ttl` (zero: never keep).
    pub fn new(db: PgPool, ttl: Duration) -> Self {
        KeyCache { db, ttl, shared: Arc::new(Shared::new()), stop: std::sync::OnceLock::new() }
    }

    fn start_listener(&self) {
        if self.ttl.is_zero() {
            return;
        }
        self.stop.get_or_init(|| {
            let (tx, rx) = oneshot::channel();
            tokio::spawn(listen(self.db.clone(), self.shared.clone(), rx));
            tx
        });
    }

    /// The kept answer for `token`, if any and still valid, or the lookup to complete with
    /// [`KeyCache::store`] after asking the database.
    pub fn get(&self, token: &str) -> Result<Authenticated, Lookup> {
        self.start_listener();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let generation = self.shared.generation.load(Ordering::SeqCst);
        if self.shared.trusted() {
            let entries = self.shared.entries.lock();
            if let Some((auth, at)) = entries.get(&digest)
                && at.elapsed() < self.ttl
                && auth.key.expires_at.is_none_or(|e| e > Utc::now())
            {
                return Ok(auth.clone());
            }
        }
        Err(Lookup { digest, generation })
    }

    /// Whether the token of `lookup` was refused by the database within [`NEGATIVE_TTL`].
    pub fn was_refused(&self, lookup: &Lookup) -> bool {
        self.shared.trusted()
            && self.shared.refused.lock().get(&lookup.digest).is_some_and(|at| at.elapsed() < NEGATIVE_TTL)
    }

    /// Remembers that the database refused the token of `lookup`, unless something changed since
    /// the lookup started.
    pub fn store_refused(&self, lookup: Lookup) {
        if !self.shared.trusted() {
            return;
        }
        let mut refused = self.shared.refused.lock();
        if self.shared.generation.load(Ordering::SeqCst) != lookup.generation {
            return;
        }
        if refused.len() >= CAPACITY {
            refused.retain(|_, at| at.elapsed() < NEGATIVE_TTL);
            if refused.len() >= CAPACITY {
                refused.clear();
            }
        }
        refused.insert(lookup.digest, Instant::now());
    }

    /// A token that changes whenever a key or user may have changed: the count of
    /// invalidations heard, or `None` while the listener is not trusted (then anything may have
    /// changed unheard). Long-lived holders of a credential (event streams) compare it to decide
    /// whether to look again.
    pub fn change_marker(&self) -> Option<u64> {
        self.start_listener();
        self.shared.trusted().then(|| self.shared.generation.load(Ordering::SeqCst))
    }

    /// Forgets every kept answer (after this process changed a key or a user: other processes
    /// hear of it through `NOTIFY`, this one must not answer from the cache before they do).
    pub fn forget_all(&self) {
        self.shared.forget_all();
    }

    /// Keeps the database's answer to `lookup`, unless something changed since it started.
    pub fn store(&self, lookup: Lookup, auth: &Authenticated) {
        if !self.shared.trusted() {
            return;
        }
        let mut entries = self.shared.entries.lock();
        if self.shared.generation.load(Ordering::SeqCst) != lookup.generation {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(lookup.digest, (auth.clone(), Instant::now()));
    }
}

/// Listens for changes until `stop` is dropped, reconnecting after a pause when the connection
/// fails or falls silent; the cache is off from then until the subscription is back.
async fn listen(db: PgPool, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    // The heartbeat goes out through the pool; the listener hears it back.
    let beat = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(HEARTBEAT_EVERY);
            loop {
                every.tick().await;
                let _ = sqlx::query("select pg_notify($1, '')").bind(HEARTBEAT).execute(&db).await;
            }
        })
    };
    let _stop_beat = AbortOnDrop(beat);
    loop {
        let session = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&db).await?;
            // A lost connection ends this session at once instead of reconnecting inside.
            listener.eager_reconnect(false);
            listener.listen_all([CHANNEL, HEARTBEAT]).await?;
            // Changes made while not subscribed were missed: start from nothing.
            shared.forget_all();
            shared.heard();
            shared.listening.store(true, Ordering::SeqCst);
            loop {
                let silent_for =
                    Duration::from_millis(shared.now_ms().saturating_sub(shared.heard_ms.load(Ordering::SeqCst)));
                let received = tokio::select! {
                    received = listener.try_recv() => received?,
                    // Dropping a pending receive is fine: this listener is given up.
                    _ = tokio::time::sleep(SILENCE.saturating_sub(silent_for)) => {
                        return Err(sqlx::Error::Protocol("the auth change listener fell silent".into()));
                    }
                };
                match received {
                    Some(n) => {
                        shared.heard();
                        if n.channel() == CHANNEL {
                            shared.forget_all();
                        }
                    }
                    // The connection was lost; notifications may have been missed.
                    None => return Ok::<(), sqlx::Error>(()),
                }
            }
        };
        let ended = tokio::select! {
            _ = &mut stop => None,
            ended = session => Some(ended),
        };
        shared.listening.store(false, Ordering::SeqCst);
        shared.forget_all();
        let Some(ended) = ended else { return };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "auth change listener lost; API keys are looked up on every request");
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
