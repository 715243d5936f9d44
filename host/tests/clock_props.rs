// SPDX-License-Identifier: GPL-2.0

//! Properties of the cycles <-> ns conversions over the whole `u64` range,
//! against 128-bit arithmetic.

use kvm_vtimer_logic::timer::clock::{Clock, MAX_FREQ_HZ, NSEC_PER_SEC};
use proptest::prelude::*;

fn wide(value: u64, mul: u64, div: u64, ceil: bool) -> u64 {
    let p = value as u128 * mul as u128;
    let q = if ceil {
        p.div_ceil(div as u128)
    } else {
        p / div as u128
    };
    u64::try_from(q).unwrap_or(u64::MAX)
}

fn freq() -> impl Strategy<Value = u64> {
    prop_oneof![
        1u64..=MAX_FREQ_HZ,
        prop::sample::select(vec![
            1,
            10_000_000,
            24_000_000,
            62_500_000,
            NSEC_PER_SEC,
            MAX_FREQ_HZ
        ]),
    ]
}

fn value() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0u64..1 << 40,
        (u64::MAX - (1 << 20))..=u64::MAX
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn conversions_are_exact_or_saturate(hz in freq(), v in value()) {
        let c = Clock::new(hz).unwrap();
        prop_assert_eq!(c.cycles_to_ns(v), wide(v, NSEC_PER_SEC, hz, false));
        prop_assert_eq!(c.cycles_to_ns_ceil(v), wide(v, NSEC_PER_SEC, hz, true));
        prop_assert_eq!(c.ns_to_cycles(v), wide(v, hz, NSEC_PER_SEC, false));
    }

    #[test]
    fn ceil_is_never_early_and_monotonic(hz in freq(), v in value(), w in value()) {
        let c = Clock::new(hz).unwrap();
        let ns = c.cycles_to_ns_ceil(v);
        if ns != u64::MAX {
            // A host timer armed `ns` ahead sees at least `v` cycles pass.
            prop_assert!(wide(ns, hz, NSEC_PER_SEC, false) >= v);
        }
        let (a, b) = if v <= w { (v, w) } else { (w, v) };
        prop_assert!(c.cycles_to_ns_ceil(a) <= c.cycles_to_ns_ceil(b));
        prop_assert!(c.cycles_to_ns(a) <= c.cycles_to_ns(b));
    }
}

#[test]
fn matches_wide_reference_at_edges() {
    let freqs = [
        1,
        3,
        10_000_000,
        24_000_000,
        62_500_000,
        NSEC_PER_SEC,
        MAX_FREQ_HZ,
    ];
    let values = [
        0,
        1,
        2,
        u64::MAX / 2,
        u64::MAX - 1,
        u64::MAX,
        1 << 63,
        999_999_999,
    ];
    for &hz in &freqs {
        let c = Clock::new(hz).unwrap();
        for &v in &values {
            assert_eq!(c.cycles_to_ns(v), wide(v, NSEC_PER_SEC, hz, false));
            assert_eq!(c.cycles_to_ns_ceil(v), wide(v, NSEC_PER_SEC, hz, true));
            assert_eq!(c.ns_to_cycles(v), wide(v, hz, NSEC_PER_SEC, false));
        }
    }
}
