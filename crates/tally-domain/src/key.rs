//! API key material: random secrets shown once, stored only as a SHA-256 digest.

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

const PREFIX: &str = "tly_";
const SECRET_LEN: usize = 40;

/// A freshly generated key: the secret the caller sees once, and the digest the store keeps.
pub struct NewKey {
    pub secret: String,
    pub digest: String,
}

pub fn generate() -> NewKey {
    let body: String = rand::rng().sample_iter(&Alphanumeric).take(SECRET_LEN).map(char::from).collect();
    let secret = format!("{PREFIX}{body}");
    let digest = digest(&secret);
    NewKey { secret, digest }
}

/// Keys are high-entropy, so one unsalted SHA-256 is enough: nothing to brute-force, and the
/// digest can be looked up by an index instead of compared against every stored key.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hashed() {
        let a = generate();
        let b = generate();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(PREFIX) && a.secret.len() == PREFIX.len() + SECRET_LEN);
        assert_eq!(a.digest, digest(&a.secret));
        assert_eq!(a.digest.len(), 64);
        assert!(!a.digest.contains(&a.secret));
    }
}
