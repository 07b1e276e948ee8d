//! Robustness of the parsers against any input: random and mutated texts must never panic.
//! (Deterministic pseudo-random inputs, so a failure is reproducible.)

use guest::event::{Event, Frame, decode_stream, encode_frame};
use guest::parse::{
    parse_key_values, parse_meminfo, parse_psi, parse_single, parse_size, parse_zoneinfo,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const ALPHABET: &[&str] = &[
    "a",
    "z",
    "_",
    "0",
    "9",
    "-",
    "1234567890123456789012",
    " ",
    "  ",
    "\t",
    "\n",
    "\r",
    "=",
    ".",
    ":",
    "kB",
    "some",
    "full",
    "avg10=",
    "total=",
    "Node 0, zone",
    "pages free",
    "min",
    "max",
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    "é",
    "\u{0}",
    "💥",
    "99999999999999999999",
    "seq",
    "t_ms",
];

fn random_text(rng: &mut Rng) -> String {
    (0..rng.below(60))
        .map(|_| ALPHABET[rng.below(ALPHABET.len())])
        .collect()
}

/// Valid inputs with bytes flipped, cut or repeated.
fn mutate(rng: &mut Rng, valid: &str) -> String {
    let mut b = valid.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            break;
        }
        let i = rng.below(b.len());
        match rng.below(4) {
            0 => b[i] = rng.next() as u8,
            1 => b.truncate(i),
            2 => b.insert(i, b"=: \n{"[rng.below(5)]),
            _ => {
                let tail = b[i..].to_vec();
                b.extend_from_slice(&tail);
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

const VMSTAT: &str = "nr_free_pages 1234\npgscan_kswapd 0\npgscan_direct 17\n";
const PSI: &str = "some avg10=1.50 avg60=0.00 avg300=0.00 total=123456\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=99\n";
const MEMINFO: &str = "MemTotal:  1000 kB\nMemFree: 10 kB\nHugePages_Total:  0\n";
const ZONEINFO: &str = "Node 0, zone    DMA32\n  pages free     3988\n        min      33\n        low      41\n        high     49\n";

#[test]
fn text_parsers_never_panic() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for _ in 0..20_000 {
        let t = random_text(&mut rng);
        let _ = parse_key_values(&t);
        let _ = parse_psi(&t);
        let _ = parse_meminfo(&t);
        let _ = parse_zoneinfo(&t);
        let _ = parse_single(&t);
        let _ = parse_size(&t);
        for valid in [VMSTAT, PSI, MEMINFO, ZONEINFO] {
            let m = mutate(&mut rng, valid);
            let _ = parse_key_values(&m);
            let _ = parse_psi(&m);
            let _ = parse_meminfo(&m);
            let _ = parse_zoneinfo(&m);
        }
    }
}

#[test]
fn the_stream_decoder_never_panics_and_never_calls_a_damaged_stream_complete() {
    let events = vec![
        Event::Hello {
            kernel: "6.12.117".into(),
        },
        Event::Ready,
        Event::StepStart {
            step: "read".into(),
        },
        Event::End { frames: 3 },
    ];
    let valid: String = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            encode_frame(&Frame {
                seq: i as u64,
                t_ms: i as u64,
                event,
            })
        })
        .collect();
    assert!(decode_stream(valid.as_bytes()).is_complete());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let _ = decode_stream(random_text(&mut rng).as_bytes());
        let cut = rng.below(valid.len());
        // Any cut before the final newline loses the end frame.
        let s = decode_stream(&valid.as_bytes()[..cut]);
        if cut < valid.trim_end().len() {
            assert!(
                !s.is_complete(),
                "a stream cut at byte {cut} was taken as complete"
            );
        }
        let _ = decode_stream(mutate(&mut rng, &valid).as_bytes());
    }
}

#[test]
fn the_stream_decoded_as_it_grows_equals_the_stream_decoded_at_once() {
    let valid: String = (0..6)
        .map(|i| {
            let event = match i {
                5 => Event::End { frames: 5 },
                _ => Event::StepStart {
                    step: format!("s{i}"),
                },
            };
            encode_frame(&Frame {
                seq: i,
                t_ms: i,
                event,
            })
        })
        .collect();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for _ in 0..5_000 {
        let text = match rng.below(3) {
            0 => valid.clone(),
            1 => random_text(&mut rng),
            _ => mutate(&mut rng, &valid),
        };
        let bytes = text.as_bytes();
        let mut d = guest::event::Decoder::default();
        let mut at = 0;
        while at < bytes.len() {
            let n = 1 + rng.below(bytes.len() - at);
            d.feed(&bytes[at..at + n]);
            at += n;
        }
        assert_eq!(d.finish(), decode_stream(bytes), "{text:?}");
    }
}
