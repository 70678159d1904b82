//! Runs every fuzz target on its seed corpus and on seeded mutations of each seed
//! (bit flips, overwritten, inserted and removed bytes, truncation), on stable and
//! in seconds: the short fuzzing run of the test command. The long runs use
//! libFuzzer (`docs/fuzzing.md`).

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("request", sluice_fuzz::request),
    ("record_batch", sluice_fuzz::record_batch),
    ("wal_object", sluice_fuzz::wal_object),
    ("metadata_records", sluice_fuzz::metadata_records),
    ("embedded_log", sluice_fuzz::embedded_log),
];

/// Mutations per seed.
const MUTATIONS: usize = 2_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut m = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] ^= 1 << rng.below(8);
            }
            1 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] = [0x00, 0xff, 0x7f, 0x80][rng.below(4)];
            }
            2 => {
                let i = rng.below(m.len() + 1);
                m.insert(i, rng.next() as u8);
            }
            3 if !m.is_empty() => {
                m.remove(rng.below(m.len()));
            }
            _ => m.truncate(rng.below(m.len() + 1)),
        }
    }
    m
}

#[test]
fn every_target_survives_its_corpus_and_mutations_of_it() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, target) in TARGETS {
        let dir = corpus.join(name);
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|f| std::fs::read(f.expect("entry").path()).expect("seed"))
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "no seeds for {name}");
        let mut rng = Rng(0x5eed ^ name.len() as u64);
        let mut runs = 0usize;
        for seed in &seeds {
            target(seed);
            for _ in 0..MUTATIONS {
                target(&mutate(seed, &mut rng));
                runs += 1;
            }
        }
        eprintln!("{name}: {} seeds, {runs} mutations", seeds.len());
    }
}
