//! What API keys authenticated to, kept for a few seconds so that a client's requests do not each
//! cost a database lookup.
//!
//! Correctness comes from Postgres, not from the time to live: every change that could make a
//! kept answer wrong (a key revoked or rescoped, its user deactivated or given another role)
//! fires `NOTIFY nimbus_auth_changed` when it commits (migration `…130100`), and this process
//! listens on a connection of its own and forgets everything it kept. While that connection is
//! down, nothing is kept or served from the cache: every request goes to the database, so a
//! revocation never waits for a reconnect. A lookup that started before a change cannot store its
//! answer after it (a generation counter).
//!
//! Only successful authentications are kept, keyed by the token's SHA-256 (the token itself is
//! never stored); an unknown or wrong token always reaches the database.

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
/// The most answers kept; past it the cache starts over.
const CAPACITY: usize = 10_000;

#[derive(Default)]
struct Shared {
    entries: Mutex<HashMap<[u8; 32], (Authenticated, Instant)>>,
    /// Bumped by every invalidation.
    generation: AtomicU64,
    /// Whether the listener is subscribed (the cache is used only then).
    listening: AtomicBool,
}

impl Shared {
    fn forget_all(&self) {
        let mut entries = self.entries.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.clear();
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
        KeyCache { db, ttl, shared: Arc::default(), stop: std::sync::OnceLock::new() }
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
        if self.shared.listening.load(Ordering::SeqCst) {
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

    /// Forgets every kept answer (after this process changed a key or a user: other processes
    /// hear of it through `NOTIFY`, this one must not answer from the cache before they do).
    pub fn forget_all(&self) {
        self.shared.forget_all();
    }

    /// Keeps the database's answer to `lookup`, unless something changed since it started.
    pub fn store(&self, lookup: Lookup, auth: &Authenticated) {
        if !self.shared.listening.load(Ordering::SeqCst) {
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
/// fails; the cache is off from a failure until the subscription is back.
async fn listen(db: PgPool, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    loop {
        let session = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&db).await?;
            listener.listen(CHANNEL).await?;
            // Changes made while not subscribed were missed: start from nothing.
            shared.forget_all();
            shared.listening.store(true, Ordering::SeqCst);
            loop {
                match listener.try_recv().await? {
                    Some(_) => shared.forget_all(),
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
