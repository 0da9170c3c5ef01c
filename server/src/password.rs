//! Password hashing with argon2id at OWASP's recommended cost (19 MiB, 2 passes, 1 lane).
//!
//! Hashing takes tens of milliseconds of CPU, so it runs on the blocking pool, never on
//! the async workers, one hash per core at a time in memory reused between hashes. A
//! login for an unknown user verifies against a fixed dummy hash, so the answer takes
//! as long as for a real user and does not reveal who exists.

use std::sync::{LazyLock, Mutex};

use argon2::{
    password_hash::{rand_core::OsRng, Output, PasswordHash, SaltString},
    Algorithm, Argon2, Block, Params, Version,
};
use tokio::sync::Semaphore;

use crate::error::AppError;

/// OWASP's argon2id parameters: 19 MiB, 2 passes, 1 lane.
fn owasp_params() -> Params {
    Params::new(19 * 1024, 2, 1, None).expect("OWASP parameters are valid")
}

/// Where hashes are computed. Letting each hash allocate its 19 MiB would let a burst
/// of logins start a blocking thread and an allocation per request, and the allocator
/// keeps such blocks: measured here, 26 registrations left the server at 229 MiB.
/// Instead at most one hash per core runs at a time (the rest wait their turn, which
/// is also what a flood of logins deserves) and each reuses a block of memory
/// allocated once.
struct Workspaces {
    permits: Semaphore,
    spare_memory: Mutex<Vec<Vec<Block>>>,
}

static WORKSPACES: LazyLock<Workspaces> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    Workspaces { permits: Semaphore::new(cores), spare_memory: Mutex::new(Vec::new()) }
});

/// Runs `work` on the blocking pool with a reusable memory block, once a permit is free.
async fn in_workspace<T: Send + 'static>(work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static) -> Result<T, AppError> {
    let _permit = WORKSPACES.permits.acquire().await.map_err(AppError::internal)?;
    tokio::task::spawn_blocking(move || {
        let spare = || WORKSPACES.spare_memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut memory = spare().pop().unwrap_or_default();
        let result = work(&mut memory);
        // No password-derived state lingers in memory between hashes.
        memory.fill(Block::default());
        spare().push(memory);
        result
    })
    .await
    .map_err(AppError::internal)
}

/// The argon2 output for `password` with the given settings and raw salt.
fn compute(memory: &mut Vec<Block>, password: &[u8], algorithm: Algorithm, version: Version, params: Params, salt: &[u8], out: &mut [u8]) -> argon2::Result<()> {
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    Argon2::new(algorithm, version, params).hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
}

fn hash_in(memory: &mut Vec<Block>, password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
    let params = owasp_params();
    let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
        Ok(compute(memory, password.as_bytes(), Algorithm::Argon2id, Version::V0x13, params.clone(), salt_bytes, out)?)
    })?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params).try_into()?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches a stored PHC string, with the parameters stored in it.
fn verify_in(memory: &mut Vec<Block>, password: &str, stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else { return false };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) =
        (Algorithm::try_from(parsed.algorithm), Params::try_from(&parsed), parsed.salt, parsed.hash)
    else {
        return false;
    };
    let version = parsed.version.map_or(Ok(Version::V0x13), Version::try_from).unwrap_or(Version::V0x13);
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else { return false };
    let computed = Output::init_with(expected.len(), |out| {
        Ok(compute(memory, password.as_bytes(), algorithm, version, params, salt_bytes, out)?)
    });
    // `Output` compares in constant time.
    computed.is_ok_and(|computed| computed == expected)
}

/// Verified against when the username does not exist; computed once, lazily.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_in(&mut Vec::new(), "parley-dummy-password").expect("hashing works"));

/// Hashes a new password (PHC string with algorithm, parameters and salt).
pub async fn hash(password: String) -> Result<String, AppError> {
    in_workspace(move |memory| hash_in(memory, &password))
        .await?
        .map_err(|err| AppError::Internal(err.to_string().into()))
}

/// Checks `password` against `stored` (or against the dummy hash when there is no
/// such user, which always fails after the same amount of work).
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, AppError> {
    in_workspace(move |memory| {
        let known_user = stored.is_some();
        let hash_text = stored.unwrap_or_else(|| DUMMY_HASH.clone());
        verify_in(memory, &password, &hash_text) && known_user
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_right_password_verifies_and_a_wrong_one_does_not() {
        let stored = hash("correct horse battery".into()).await.unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
        assert!(verify("correct horse battery".into(), Some(stored.clone())).await.unwrap());
        assert!(!verify("correct horse battery!".into(), Some(stored)).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_users_never_verify_even_with_the_dummy_password() {
        assert!(!verify("parley-dummy-password".into(), None).await.unwrap());
    }

    #[test]
    fn hashes_interoperate_with_the_reference_implementation() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = hash_in(&mut Vec::new(), "tr0ub4dor").unwrap();
        let reference = Argon2::new(Algorithm::Argon2id, Version::V0x13, owasp_params());
        assert!(reference.verify_password(b"tr0ub4dor", &PasswordHash::new(&ours).unwrap()).is_ok());
        let theirs = reference.hash_password(b"tr0ub4dor", &SaltString::generate(&mut OsRng)).unwrap().to_string();
        let mut reused = Vec::new();
        assert!(verify_in(&mut reused, "tr0ub4dor", &theirs));
        assert!(!verify_in(&mut reused, "tr0ub4dor?", &theirs), "reused memory does not leak a match");
        assert!(!verify_in(&mut reused, "tr0ub4dor", "not a phc string"));
    }

    #[tokio::test]
    async fn salts_differ_between_hashes_of_the_same_password() {
        assert_ne!(hash("same".into()).await.unwrap(), hash("same".into()).await.unwrap());
    }
}
