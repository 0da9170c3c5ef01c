//! Password hashing with argon2id at OWASP's recommended cost (19 MiB, 2 passes, 1 lane).
//!
//! Hashing takes tens of milliseconds of CPU, so it runs on the blocking pool, never on
//! the async workers. A login for an unknown user verifies against a fixed dummy hash,
//! so the answer takes as long as for a real user and does not reveal who exists.

use std::sync::LazyLock;

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Algorithm, Argon2, Params, Version,
};

use crate::error::AppError;

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Verified against when the username does not exist; computed once, lazily.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| hash_blocking("parley-dummy-password").expect("hashing works"));

fn hash_blocking(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon2().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Hashes a new password (PHC string with algorithm, parameters and salt).
pub async fn hash(password: String) -> Result<String, AppError> {
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(AppError::internal)?
        .map_err(|err| AppError::Internal(err.to_string().into()))
}

/// Checks `password` against `stored` (or against the dummy hash when there is no
/// such user, which always fails after the same amount of work).
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, AppError> {
    tokio::task::spawn_blocking(move || {
        let known_user = stored.is_some();
        let hash_text = stored.unwrap_or_else(|| DUMMY_HASH.clone());
        let Ok(parsed) = PasswordHash::new(&hash_text) else {
            return false;
        };
        argon2().verify_password(password.as_bytes(), &parsed).is_ok() && known_user
    })
    .await
    .map_err(AppError::internal)
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

    #[tokio::test]
    async fn salts_differ_between_hashes_of_the_same_password() {
        assert_ne!(hash("same".into()).await.unwrap(), hash("same".into()).await.unwrap());
    }
}
