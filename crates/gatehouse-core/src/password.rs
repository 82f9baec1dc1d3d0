//! Password hashing: Argon2id for everything we write, bcrypt (Synapse's
//! format, with its optional pepper) accepted for imported accounts.
//!
//! These functions are CPU-bound by design and must not run on an async
//! executor thread; the server runs them on its bounded hashing pool.

use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

/// Argon2id cost parameters. The defaults are OWASP's first recommendation
/// (m=19 MiB, t=2, p=1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Cost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Cost {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// The password hashing policy of one server.
#[derive(Clone)]
pub struct PasswordPolicy {
    argon2: Argon2<'static>,
    cost: Argon2Cost,
    bcrypt_pepper: Zeroizing<String>,
    /// A well-formed hash with the current cost and no known password:
    /// verifying against it costs exactly what a real verification costs,
    /// so an unknown user is indistinguishable by timing.
    dummy_hash: String,
}

impl std::fmt::Debug for PasswordPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordPolicy")
            .field("cost", &self.cost)
            .finish_non_exhaustive()
    }
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Correct. `rehash` asks the caller to store a fresh hash (bcrypt or
    /// outdated Argon2 parameters).
    Match {
        rehash: bool,
    },
    Mismatch,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid argon2 parameters: {0}")]
pub struct CostError(String);

impl PasswordPolicy {
    pub fn new(cost: Argon2Cost, bcrypt_pepper: &str) -> Result<Self, CostError> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| CostError(e.to_string()))?;
        let dummy_hash = format!(
            "$argon2id$v=19$m={},t={},p={}$Z2F0ZWhvdXNlLWR1bW15$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            cost.memory_kib, cost.iterations, cost.parallelism
        );
        Ok(Self {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            cost,
            bcrypt_pepper: Zeroizing::new(bcrypt_pepper.to_owned()),
            dummy_hash,
        })
    }

    pub fn cost(&self) -> Argon2Cost {
        self.cost
    }

    /// Hashes a new password into a PHC string.
    pub fn hash(&self, password: &str) -> String {
        self.hash_with(password, &mut MemoryBlocks::default())
    }

    /// [`Self::hash`], reusing `memory` for Argon2's working memory.
    pub fn hash_with(&self, password: &str, memory: &mut MemoryBlocks) -> String {
        let normalised = normalise(password);
        let mut salt = [0u8; 16];
        crate::random::fill(&mut salt);
        let params = self.argon2_params();
        let blocks = params.block_count();
        if memory.0.len() != blocks {
            memory.0.resize(blocks, argon2::Block::default());
        }
        let mut out = [0u8; 32];
        self.argon2
            .hash_password_into_with_memory(
                normalised.as_bytes(),
                &salt,
                &mut out,
                &mut memory.0[..],
            )
            .expect("argon2 with validated parameters cannot fail");
        let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt length");
        let output =
            argon2::password_hash::Output::new(&out).expect("32 bytes is a valid output length");
        format!(
            "$argon2id$v=19$m={},t={},p={}${}${}",
            self.cost.memory_kib,
            self.cost.iterations,
            self.cost.parallelism,
            salt.as_str(),
            output
        )
    }

    fn argon2_params(&self) -> Params {
        Params::new(
            self.cost.memory_kib,
            self.cost.iterations,
            self.cost.parallelism,
            None,
        )
        .expect("validated in new()")
    }

    /// Checks `password` against `stored`, or against the dummy hash when the
    /// account does not exist or has no password (`None`), at the same cost.
    pub fn verify(&self, password: &str, stored: Option<&str>) -> Verdict {
        self.verify_with(password, stored, &mut MemoryBlocks::default())
    }

    /// [`Self::verify`], reusing `memory` for Argon2's working memory. A
    /// long-lived hashing thread keeps one, saving a 19 MiB allocation (and
    /// the kernel zeroing its pages) on every login.
    pub fn verify_with(
        &self,
        password: &str,
        stored: Option<&str>,
        memory: &mut MemoryBlocks,
    ) -> Verdict {
        let normalised = normalise(password);
        match stored {
            Some(h) if is_bcrypt(h) => self.verify_bcrypt(&normalised, h),
            Some(h) => self.verify_argon2(&normalised, h, memory),
            None => {
                let _ = self.verify_argon2(&normalised, &self.dummy_hash, memory);
                Verdict::Mismatch
            }
        }
    }

    fn verify_argon2(&self, password: &str, stored: &str, memory: &mut MemoryBlocks) -> Verdict {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return Verdict::Mismatch;
        };
        if !argon2_matches(password, &parsed, memory) {
            return Verdict::Mismatch;
        }
        let current = Params::try_from(&parsed).ok().is_some_and(|p| {
            parsed.algorithm.as_str() == "argon2id"
                && p.m_cost() == self.cost.memory_kib
                && p.t_cost() == self.cost.iterations
                && p.p_cost() == self.cost.parallelism
        });
        Verdict::Match { rehash: !current }
    }

    /// One bcrypt check's worth of work at `cost`: what a login of an
    /// account with such a hash costs, measured by the caller so that
    /// failures elsewhere can be made to take as long.
    pub fn bcrypt_probe(&self, cost: u32) {
        let _ = bcrypt::hash("probe", cost.clamp(4, 31));
    }

    /// Synapse checks `bcrypt(NFKC(password) + pepper)`.
    fn verify_bcrypt(&self, password: &str, stored: &str) -> Verdict {
        let peppered = Zeroizing::new(format!("{password}{}", self.bcrypt_pepper.as_str()));
        match bcrypt::verify(peppered.as_bytes(), stored) {
            Ok(true) => Verdict::Match { rehash: true },
            _ => Verdict::Mismatch,
        }
    }
}

/// Reusable Argon2 working memory.
#[derive(Default)]
pub struct MemoryBlocks(Vec<argon2::Block>);

/// Recomputes the Argon2 hash described by `parsed` for `password` in
/// `memory` and compares it in constant time.
fn argon2_matches(password: &str, parsed: &PasswordHash<'_>, memory: &mut MemoryBlocks) -> bool {
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(parsed),
    ) else {
        return false;
    };
    let version = parsed
        .version
        .and_then(|v| Version::try_from(v).ok())
        .unwrap_or(Version::V0x13);
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.0.len() != blocks {
        memory.0.resize(blocks, argon2::Block::default());
    }
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    let argon2 = Argon2::new(algorithm, version, params);
    if argon2
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory.0[..])
        .is_err()
    {
        return false;
    }
    // `Output`'s equality is constant-time.
    argon2::password_hash::Output::new(&out).is_ok_and(|computed| computed == expected)
}

/// Whether `hash` is a bcrypt hash (Synapse's format).
pub fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

/// The cost of a bcrypt hash (`$2b$12$…` → 12).
pub fn bcrypt_cost(hash: &str) -> Option<u32> {
    if !is_bcrypt(hash) {
        return None;
    }
    hash.get(4..6)?.parse().ok()
}

/// Passwords are compared in Unicode NFKC, as Synapse does, so the same
/// password typed on two keyboards matches.
fn normalise(password: &str) -> Zeroizing<String> {
    Zeroizing::new(password.nfkc().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordPolicy {
        PasswordPolicy::new(
            Argon2Cost {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            "",
        )
        .unwrap()
    }

    #[test]
    fn hashes_verify() {
        let p = cheap();
        let h = p.hash("correct horse");
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert_eq!(
            p.verify("correct horse", Some(&h)),
            Verdict::Match { rehash: false }
        );
        assert_eq!(p.verify("wrong horse", Some(&h)), Verdict::Mismatch);
    }

    #[test]
    fn unknown_users_never_match() {
        assert_eq!(cheap().verify("anything", None), Verdict::Mismatch);
        assert_eq!(cheap().verify("", Some("garbage")), Verdict::Mismatch);
    }

    #[test]
    fn changed_cost_asks_for_rehash() {
        let old = cheap().hash("pw");
        let newer = PasswordPolicy::new(
            Argon2Cost {
                memory_kib: 128,
                iterations: 1,
                parallelism: 1,
            },
            "",
        )
        .unwrap();
        assert_eq!(
            newer.verify("pw", Some(&old)),
            Verdict::Match { rehash: true }
        );
    }

    #[test]
    fn synapse_bcrypt_hashes_verify_with_pepper() {
        let stored = bcrypt::hash("hunter2pepper", 4).unwrap();
        let p = PasswordPolicy::new(
            Argon2Cost {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            "pepper",
        )
        .unwrap();
        assert_eq!(
            p.verify("hunter2", Some(&stored)),
            Verdict::Match { rehash: true }
        );
        assert_eq!(p.verify("hunter3", Some(&stored)), Verdict::Mismatch);
        assert_eq!(cheap().verify("hunter2", Some(&stored)), Verdict::Mismatch);
    }

    #[test]
    fn passwords_are_nfkc_normalised() {
        let p = cheap();
        let h = p.hash("ﬁsh"); // U+FB01 LATIN SMALL LIGATURE FI
        assert_eq!(p.verify("fish", Some(&h)), Verdict::Match { rehash: false });
    }

    #[test]
    fn hashes_made_with_reused_memory_are_standard_phc() {
        let p = cheap();
        let mut memory = MemoryBlocks::default();
        let h = p.hash_with("pw", &mut memory);
        assert!(PasswordHash::new(&h).is_ok(), "{h}");
        assert_eq!(p.verify("pw", Some(&h)), Verdict::Match { rehash: false });
        // And argon2's own verifier agrees.
        use argon2::password_hash::PasswordVerifier;
        assert!(
            Argon2::default()
                .verify_password(b"pw", &PasswordHash::new(&h).unwrap())
                .is_ok()
        );
    }

    #[test]
    fn reused_memory_gives_the_same_answers() {
        use argon2::password_hash::PasswordHasher as _;
        let p = cheap();
        let mut memory = MemoryBlocks::default();
        let h = p.hash("pw");
        for _ in 0..3 {
            assert_eq!(
                p.verify_with("pw", Some(&h), &mut memory),
                Verdict::Match { rehash: false }
            );
            assert_eq!(
                p.verify_with("px", Some(&h), &mut memory),
                Verdict::Mismatch
            );
        }
        // A hash made by another implementation (argon2's own PHC path)
        // verifies too, including argon2i/argon2d hashes flagged for rehash.
        let other = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw", &SaltString::encode_b64(b"0123456789abcdef").unwrap())
        .unwrap()
        .to_string();
        assert_eq!(
            p.verify_with("pw", Some(&other), &mut memory),
            Verdict::Match { rehash: true }
        );
    }

    #[test]
    fn dummy_hash_is_well_formed() {
        let p = cheap();
        assert!(PasswordHash::new(&p.dummy_hash).is_ok());
    }
}
