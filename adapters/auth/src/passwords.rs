//! Password identities: `[auth.identity.<name>]` (argon2 PHC hashes) and an htpasswd file
//! (bcrypt entries, the format CNCF Distribution and zot read), reloaded when it changes.
//!
//! A password check is deliberately slow (tens of milliseconds), and clients send Basic
//! credentials on every request. So a successful check is remembered for [`REMEMBER`]
//! after its last use, keyed by a salted SHA-256 of the username and password (never the
//! password itself), and concurrent requests with the same credentials share one check.
//! The checks themselves run on a blocking thread, so they never stall a connection worker.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use lru::LruCache;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::AuthError;

/// How long a successful check is remembered.
const REMEMBER: Duration = Duration::from_secs(60);
/// Credentials remembered at once.
const REMEMBERED: usize = 10_000;
/// How often the htpasswd file's modification time is looked at.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

pub struct Passwords {
    configured: HashMap<String, String>,
    htpasswd: Option<Htpasswd>,
    remembered: Mutex<LruCache<[u8; 32], Instant>>,
    /// Checks in progress, one gate per credentials.
    checking: Mutex<HashMap<[u8; 32], Arc<async_lock::Mutex<()>>>>,
    salt: [u8; 32],
    /// Checked for unknown users, so their answer takes as long as a known user's.
    decoy: String,
}

/// Argon2id with the crate's defaults (the OWASP-recommended parameters), as a PHC string.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| AuthError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

impl Passwords {
    /// `configured` maps usernames to argon2 PHC strings; every one must parse.
    pub fn new(
        configured: HashMap<String, String>,
        htpasswd: Option<PathBuf>,
    ) -> Result<Self, AuthError> {
        for (username, hash) in &configured {
            if username.contains(':') {
                return Err(AuthError::Identity(format!(
                    "username {username:?} contains ':'"
                )));
            }
            PasswordHash::new(hash).map_err(|e| {
                AuthError::Identity(format!("{username}: not an argon2 PHC hash: {e}"))
            })?;
        }
        let htpasswd = htpasswd.map(Htpasswd::open).transpose()?;
        let mut salt = [0u8; 32];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| AuthError::Random)?;
        let mut decoy_password = [0u8; 16];
        SystemRandom::new()
            .fill(&mut decoy_password)
            .map_err(|_| AuthError::Random)?;
        Ok(Passwords {
            configured,
            htpasswd,
            remembered: Mutex::new(LruCache::new(
                NonZeroUsize::new(REMEMBERED).unwrap_or(NonZeroUsize::MIN),
            )),
            checking: Mutex::new(HashMap::new()),
            salt,
            decoy: hash_password(&hex::encode(decoy_password))?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.configured.is_empty() && self.htpasswd.is_none()
    }

    /// Whether `password` is `username`'s.
    pub async fn verify(self: &Arc<Self>, username: &str, password: &str) -> bool {
        let (stored, reloaded) = self.stored_hash(username, Instant::now());
        if reloaded {
            // Someone may have been removed or given a new password.
            self.remembered().clear();
        }
        let key = self.key(username, password);
        if stored.is_some() && self.recall(&key) {
            return true;
        }
        // One check per credentials at a time: the clients that sent them meanwhile wait for
        // its answer instead of each paying for argon2 at once.
        let gate = self
            .checking()
            .entry(key)
            .or_insert_with(|| Arc::new(async_lock::Mutex::new(())))
            .clone();
        let _turn = gate.lock().await;
        let verified = if stored.is_some() && self.recall(&key) {
            true
        } else {
            let hash = stored.clone().unwrap_or_else(|| self.decoy.clone());
            let password = password.to_owned();
            let matched = blocking::unblock(move || check(&hash, &password)).await;
            let verified = matched && stored.is_some();
            if verified {
                self.remembered().put(key, Instant::now() + REMEMBER);
            }
            verified
        };
        let mut checking = self.checking();
        if checking.get(&key).is_some_and(|g| Arc::ptr_eq(g, &gate)) {
            checking.remove(&key);
        }
        verified
    }

    /// Whether these credentials checked out lately. Each use extends the memory, so a
    /// client sending them steadily never pays for a check again: safe, because what could
    /// make them wrong (an htpasswd change) clears it, and configured identities change
    /// only with a restart.
    fn recall(&self, key: &[u8; 32]) -> bool {
        let now = Instant::now();
        match self.remembered().get_mut(key) {
            Some(until) if *until > now => {
                *until = now + REMEMBER;
                true
            }
            _ => false,
        }
    }

    fn checking(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<async_lock::Mutex<()>>>> {
        self.checking.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, LruCache<[u8; 32], Instant>> {
        self.remembered.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self, username: &str, password: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update((username.len() as u64).to_le_bytes());
        hasher.update(username.as_bytes());
        hasher.update(password.as_bytes());
        hasher.finalize().into()
    }

    /// The stored hash for `username`, and whether the htpasswd file was reloaded.
    fn stored_hash(&self, username: &str, now: Instant) -> (Option<String>, bool) {
        if let Some(hash) = self.configured.get(username) {
            return (Some(hash.clone()), false);
        }
        match &self.htpasswd {
            Some(file) => file.lookup(username, now),
            None => (None, false),
        }
    }
}

/// Checks `password` against an argon2 PHC string or a bcrypt hash, in constant time (both
/// crates compare the derived hashes so).
fn check(hash: &str, password: &str) -> bool {
    if hash.starts_with("$2") {
        return bcrypt::verify(password, hash).unwrap_or(false);
    }
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// An htpasswd file, reread when its modification time or size changes.
struct Htpasswd {
    path: PathBuf,
    state: Mutex<HtpasswdState>,
}

struct HtpasswdState {
    entries: HashMap<String, String>,
    stamp: Option<(SystemTime, u64)>,
    checked: Instant,
}

impl Htpasswd {
    fn open(path: PathBuf) -> Result<Self, AuthError> {
        let stamp = stamp(&path);
        let entries = read_htpasswd(&path)?;
        Ok(Htpasswd {
            path,
            state: Mutex::new(HtpasswdState {
                entries,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    fn lookup(&self, username: &str, now: Instant) -> (Option<String>, bool) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut reloaded = false;
        if now.saturating_duration_since(state.checked) >= RELOAD_CHECK {
            state.checked = now;
            let current = stamp(&self.path);
            if current != state.stamp {
                match read_htpasswd(&self.path) {
                    Ok(entries) => {
                        tracing::info!(path = %self.path.display(), users = entries.len(), "htpasswd reloaded");
                        state.entries = entries;
                        state.stamp = current;
                        reloaded = true;
                    }
                    Err(e) => tracing::error!("{e}; keeping the entries read before"),
                }
            }
        }
        (state.entries.get(username).cloned(), reloaded)
    }
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// `user:hash` lines; blank lines and `#` comments skipped. Only bcrypt entries are used
/// (as Distribution does); others are skipped with a warning.
fn read_htpasswd(path: &std::path::Path) -> Result<HashMap<String, String>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Htpasswd {
        path: path.to_owned(),
        source,
    })?;
    let mut entries = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((user, hash)) if !user.is_empty() && hash.starts_with("$2") => {
                entries.insert(user.to_owned(), hash.to_owned());
            }
            _ => tracing::warn!(
                path = %path.display(),
                line = number + 1,
                "htpasswd entry skipped: only user:bcrypt-hash entries are read"
            ),
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        futures_lite::future::block_on(future)
    }

    #[test]
    fn configured_argon2_identities() {
        let hash = hash_password("s3cret").unwrap();
        let passwords =
            Arc::new(Passwords::new(HashMap::from([("alice".to_owned(), hash)]), None).unwrap());
        assert!(run(passwords.verify("alice", "s3cret")));
        assert!(run(passwords.verify("alice", "s3cret")), "remembered");
        assert!(!run(passwords.verify("alice", "wrong")));
        assert!(!run(passwords.verify("bob", "s3cret")));
        assert!(
            Passwords::new(HashMap::from([("x".to_owned(), "plain".to_owned())]), None).is_err()
        );
    }

    #[test]
    fn htpasswd_reload_revokes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let bcrypt_hash = bcrypt::hash("pw", 4).unwrap();
        std::fs::write(
            &path,
            format!("# users\nbob:{bcrypt_hash}\nold:{{SHA}}xyz\n"),
        )
        .unwrap();
        let passwords = Arc::new(Passwords::new(HashMap::new(), Some(path.clone())).unwrap());
        assert!(run(passwords.verify("bob", "pw")));
        assert!(!run(passwords.verify("old", "x")));
        std::fs::write(
            &path,
            "carol:$2y$04$invalidinvalidinvalidinvalidinvalidinvalidinvali\n",
        )
        .unwrap();
        std::thread::sleep(RELOAD_CHECK + Duration::from_millis(50));
        assert!(!run(passwords.verify("bob", "pw")), "bob was removed");
    }
}
