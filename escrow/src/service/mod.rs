//! The rules of the escrow service: who may do what, validation, rotation and audit decisions. Every
//! write runs in one store transaction that also appends its audit record, so an operation and its audit
//! trail commit (or vanish) together. No SQL here: the store (`crate::store`) holds it.

mod agent;
pub mod backup;
mod clock;
mod committer;
mod console;
mod device_cache;
mod devices;
mod disclose_target;
mod escrow_batch;
mod helpdesk;
mod keys;
mod lookup_limit;
pub mod membership;
mod operators;
mod reports;
mod sessions;
mod sign_in;
mod tpm;
mod unlock;

use std::sync::Arc;

use arc_swap::ArcSwap;
use time::OffsetDateTime;

use crate::audit::to_micros;
use crate::error::EscrowError;
use crate::model::{Actor, ActorKind, Page, PageRequest, ResolvedPage, Role};
use crate::sealing::{Dek, Kek, Sealer};
use crate::store::{self, Backend, Db};

pub use clock::{Clock, ManualClock, SystemClock};
pub use sessions::{SESSION_PREFIX, SessionEnd, SessionPolicy};
pub use sign_in::SignedIn;
pub use tpm::TpmOwnerAuth;

/// The escrow service: storage, sealing and clock. Cheap to clone (shared state behind an `Arc`).
#[derive(Clone)]
pub struct EscrowService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EscrowService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EscrowService")
            .field("backend", &self.inner.db.backend())
            .finish_non_exhaustive()
    }
}

struct Inner {
    db: Db,
    /// Swapped by `rewrap_kek` (DEK rotation) and `restore`.
    sealer: ArcSwap<Sealer>,
    /// Writers that seal hold it shared; DEK rotation holds it exclusively so no row is sealed under a
    /// key that is being replaced.
    seal_lock: tokio::sync::RwLock<()>,
    clock: Arc<dyn Clock>,
    kek: std::sync::Mutex<Kek>,
    /// Queue of escrow calls for the group-commit writer task.
    committer: tokio::sync::mpsc::Sender<committer::Queued>,
    /// Devices by client certificate (see `device_cache.rs`).
    devices: device_cache::DeviceCache,
    /// Lifetime of a new API token created without one (`escrow.api_token_lifetime_days`).
    default_token_ttl: std::sync::Mutex<Option<std::time::Duration>>,
    /// The last fleet snapshot (see `reports.rs`), refreshed with the gauges.
    fleet: arc_swap::ArcSwapOption<crate::model::FleetSnapshot>,
}

impl EscrowService {
    /// Open (creating if needed) the database at `database_url`, run migrations, and unlock its data key
    /// with `kek` (creating and wrapping a fresh data key for a new database).
    pub async fn open(database_url: &str, kek: Kek) -> Result<Self, EscrowError> {
        Self::open_with_clock(database_url, kek, Arc::new(SystemClock)).await
    }

    /// As [`EscrowService::open`], with an injected clock (tests).
    pub async fn open_with_clock(
        database_url: &str,
        kek: Kek,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, EscrowError> {
        let db = Db::open(database_url).await?;
        let sealer = load_or_create_keyring(&db, &kek, clock.now()).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(committer::QUEUE);
        let inner = Arc::new(Inner {
            db,
            sealer: ArcSwap::from_pointee(sealer),
            seal_lock: tokio::sync::RwLock::new(()),
            clock,
            kek: std::sync::Mutex::new(kek),
            committer: tx,
            devices: device_cache::DeviceCache::default(),
            default_token_ttl: std::sync::Mutex::new(None),
            fleet: arc_swap::ArcSwapOption::empty(),
        });
        committer::spawn(Arc::downgrade(&inner), rx);
        Ok(Self { inner })
    }

    pub fn backend(&self) -> Backend {
        self.inner.db.backend()
    }

    /// The underlying pool (tests and tools that inspect the raw database).
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// New API tokens created without a lifetime get this one (None: they do not expire).
    pub fn set_default_api_token_lifetime(&self, ttl: Option<std::time::Duration>) {
        if let Ok(mut g) = self.inner.default_token_ttl.lock() {
            *g = ttl;
        }
    }

    pub(crate) fn default_api_token_lifetime(&self) -> Option<std::time::Duration> {
        self.inner.default_token_ttl.lock().ok().and_then(|g| *g)
    }

    /// Id of the KEK currently wrapping the data key.
    pub fn kek_id(&self) -> String {
        self.inner.kek.lock().map(|k| k.id()).unwrap_or_default()
    }

    pub(crate) fn now(&self) -> OffsetDateTime {
        self.inner.clock.now()
    }

    pub(crate) fn now_us(&self) -> i64 {
        to_micros(self.now())
    }

    pub(crate) fn sealer(&self) -> arc_swap::Guard<Arc<Sealer>> {
        self.inner.sealer.load()
    }

    pub(crate) fn current_kek(&self) -> Result<Kek, EscrowError> {
        self.inner
            .kek
            .lock()
            .map(|k| k.clone())
            .map_err(|_| EscrowError::Crypto("the KEK lock is poisoned".into()))
    }

    pub(crate) async fn seal_lock_write(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.inner.seal_lock.write().await
    }

    pub(crate) async fn seal_lock_read(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.inner.seal_lock.read().await
    }

    pub(crate) fn set_kek(&self, kek: &Kek) {
        if let Ok(mut k) = self.inner.kek.lock() {
            *k = kek.clone();
        }
    }

    /// Forget cached certificate → device answers; call after committing any change of a device's binding.
    pub(crate) fn devices_changed(&self) {
        self.inner.devices.invalidate();
    }

    pub(crate) fn replace_sealer(&self, s: Sealer) {
        self.inner.sealer.store(Arc::new(s));
    }

    /// A round trip to the database (a trivial query), for health checks: cheap enough to run every
    /// few seconds, unlike the fleet queries.
    pub async fn ping(&self) -> Result<(), EscrowError> {
        self.inner.db.ping().await
    }

    /// Close the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.inner.db.close().await;
    }
}

async fn load_or_create_keyring(
    db: &Db,
    kek: &Kek,
    now: OffsetDateTime,
) -> Result<Sealer, EscrowError> {
    let mut tx = db.begin_write().await?;
    let sealer = match store::keyring::get(&mut tx).await? {
        Some(stored) => {
            let dek = kek.unwrap_dek(&stored.wrapped_dek).map_err(|_| {
                EscrowError::Crypto(format!(
                    "the KEK in use (id {}) does not unwrap this database's data key (wrapped by KEK id {}); \
                     restore the right KEK file or systemd credential (every appliance sharing this database needs the same one), or restore a backup into a new database",
                    kek.id(),
                    stored.kek_id
                ))
            })?;
            Sealer::new(&dek)?
        }
        None => {
            let dek = Dek::generate()?;
            let sealer = Sealer::new(&dek)?;
            let keyring = store::keyring::Keyring {
                kek_id: kek.id(),
                dek_id: sealer.dek_id().to_owned(),
                wrapped_dek: kek.wrap(&dek)?,
                created_at: to_micros(now),
                rewrapped_at: None,
            };
            store::keyring::insert(&mut tx, &keyring).await?;
            sealer
        }
    };
    tx.commit().await?;
    Ok(sealer)
}

/// Every item of a paged list, following `next` (for callers that want the whole list: the CLI,
/// tests; the API answers one page at a time).
pub(crate) async fn all_pages<T, F, Fut>(mut page: F) -> Result<Vec<T>, EscrowError>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = Result<Page<T>, EscrowError>>,
{
    let mut req = PageRequest::first(crate::model::limits::MAX_PAGE_SIZE);
    let mut out = Vec::new();
    loop {
        let p = page(req.clone()).await?;
        let next = req.after(&p);
        out.extend(p.items);
        match next {
            Some(n) => req = n,
            None => return Ok(out),
        }
    }
}

/// The validated page, or a validation error naming the problem.
pub(crate) fn resolve_page(page: &PageRequest) -> Result<ResolvedPage, EscrowError> {
    page.resolve().map_err(EscrowError::Validation)
}

/// Refuse unless the actor is an operator (or local admin) holding one of `roles`. Returns the role.
pub(crate) fn require_role(actor: &Actor, roles: &[Role], what: &str) -> Result<Role, EscrowError> {
    match (&actor.kind, actor.role()) {
        (ActorKind::Device { .. }, _) | (_, None) => Err(EscrowError::Forbidden(format!(
            "devices cannot {what}; use an operator API token"
        ))),
        (_, Some(r)) if roles.contains(&r) => Ok(r),
        (_, Some(r)) => Err(EscrowError::Forbidden(format!(
            "the {r} role cannot {what}; it needs one of: {}",
            roles
                .iter()
                .map(Role::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Validate an optional free-text field: bounded length, no control characters.
pub(crate) fn clean_text(field: &str, v: &str, max: usize) -> Result<String, EscrowError> {
    let t = v.trim();
    if t.chars().count() > max {
        return Err(EscrowError::Validation(format!(
            "{field} is longer than {max} characters"
        )));
    }
    if t.chars().any(char::is_control) {
        return Err(EscrowError::Validation(format!(
            "{field} contains control characters"
        )));
    }
    Ok(t.to_owned())
}
