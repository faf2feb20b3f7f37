//! A request's randomness: an upload id from the operating system's random source, and a
//! small seeded generator (SplitMix64) for lock tokens, part names and retry jitter. The
//! driver supplies both, so runs are repeatable.

/// Fresh randomness for one request, supplied by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entropy {
    /// The id a new upload session gets. It must come from a cryptographically secure source:
    /// anyone who could compute another session's id could write into that upload.
    pub upload_id: u128,
    /// Seeds the generator for what only has to differ, not be secret.
    pub seed: u64,
}

impl Entropy {
    /// Everything derived from one seed, for simulations and tests that replay a run.
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let upload_id = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
        Entropy {
            upload_id,
            seed: rng.next_u64(),
        }
    }

    pub(crate) fn upload_id(&self) -> String {
        format!("{:032x}", self.upload_id)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 128 random bits as 32 hex characters.
    pub(crate) fn id(&mut self) -> String {
        format!("{:016x}{:016x}", self.next_u64(), self.next_u64())
    }

    /// A value in `0..bound` (`bound > 0`).
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}
