//! Which keys a benchmark touches: fixed-size keys over a key space, chosen uniformly, by a
//! Zipfian law (a few hot keys, as in YCSB), or in sequence.

pub use strata_core::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Distribution {
    Uniform,
    Zipfian,
    Sequential,
}

/// Chooses key indexes in `[0, space)`.
#[derive(Clone, Debug)]
pub enum Chooser {
    Uniform {
        space: u64,
    },
    /// YCSB's Zipfian generator (Gray et al.), constant 0.99: item 0 is the hottest.
    Zipfian {
        space: u64,
        theta: f64,
        alpha: f64,
        zeta_n: f64,
        eta: f64,
    },
    /// Each client walks the space from its own offset.
    Sequential {
        space: u64,
        next: u64,
    },
}

const ZIPF_THETA: f64 = 0.99;

impl Chooser {
    pub fn new(distribution: Distribution, space: u64, offset: u64) -> Self {
        let space = space.max(1);
        match distribution {
            Distribution::Uniform => Chooser::Uniform { space },
            Distribution::Sequential => Chooser::Sequential { space, next: offset % space },
            Distribution::Zipfian => {
                let theta = ZIPF_THETA;
                let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
                let zeta_n = zeta(space);
                let zeta_2 = zeta(2.min(space));
                let alpha = 1.0 / (1.0 - theta);
                let eta = (1.0 - (2.0 / space as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n);
                Chooser::Zipfian { space, theta, alpha, zeta_n, eta }
            }
        }
    }

    pub fn next(&mut self, rng: &mut Rng) -> u64 {
        match self {
            Chooser::Uniform { space } => rng.range(0, *space),
            Chooser::Sequential { space, next } => {
                let index = *next;
                *next = (*next + 1) % *space;
                index
            }
            Chooser::Zipfian { space, theta, alpha, zeta_n, eta } => {
                let u = rng.unit();
                let uz = u * *zeta_n;
                if uz < 1.0 {
                    return 0;
                }
                if uz < 1.0 + 0.5f64.powf(*theta) {
                    return 1.min(*space - 1);
                }
                let index = (*space as f64 * (*eta * u - *eta + 1.0).powf(*alpha)) as u64;
                index.min(*space - 1)
            }
        }
    }
}

/// The key for an index: `prefix` then the index in hex, zero-padded to `size` bytes in all
/// (longer if the index needs more digits).
pub fn key(prefix: &str, index: u64, size: usize) -> Vec<u8> {
    let digits = size.saturating_sub(prefix.len()).max(1);
    format!("{prefix}{index:0digits$x}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_requested_size() {
        assert_eq!(key("", 255, 8), b"000000ff");
        assert_eq!(key("c/", 3, 8), b"c/000003");
    }

    #[test]
    fn zipfian_prefers_the_first_keys_and_stays_in_range() {
        let mut chooser = Chooser::new(Distribution::Zipfian, 1_000, 0);
        let mut rng = Rng::new(1);
        let draws: Vec<u64> = (0..10_000).map(|_| chooser.next(&mut rng)).collect();
        assert!(draws.iter().all(|&d| d < 1_000));
        let hot = draws.iter().filter(|&&d| d < 10).count();
        assert!(hot > 3_000, "{hot} of 10,000 draws hit the 10 hottest keys");
    }

    #[test]
    fn sequential_walks_the_space() {
        let mut chooser = Chooser::new(Distribution::Sequential, 3, 1);
        let mut rng = Rng::new(1);
        let draws: Vec<u64> = (0..4).map(|_| chooser.next(&mut rng)).collect();
        assert_eq!(draws, [1, 2, 0, 1]);
    }
}
