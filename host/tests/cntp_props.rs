// SPDX-License-Identifier: GPL-2.0

//! The direct physical timer's host-context compare value
//! (`rust/timer/cntp.rs`) against the guest's own timer condition, over the
//! whole `u64` range: from the moment it is written on, the hardware
//! condition (raw counter >= value) holds exactly when the guest's does
//! (counter less offset >= CVAL).  Also against KVM's 6.12
//! `timer_apply_offset()`, restated here as a second opinion.

use kvm_vtimer_logic::timer::cntp::{host_cval, PhysCval};
use proptest::prelude::*;

fn value() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0u64..1 << 20,
        (u64::MAX - (1 << 20))..=u64::MAX,
        prop::sample::select(vec![0, 1, u64::MAX - 1, u64::MAX, 1 << 63]),
    ]
}

/// KVM's rule (`include/kvm/arm_arch_timer.h`, 6.12), for an offset that
/// is not 0: due now is 0; a sum ahead of `now` is the sum; else never.
fn kvm_rule(cval: u64, offset: u64, now: u64) -> u64 {
    if now.wrapping_sub(offset) >= cval {
        return 0;
    }
    let sum = cval.wrapping_add(offset);
    if sum > now {
        sum
    } else {
        u64::MAX
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn hardware_agrees_with_the_guest(
        cval in value(),
        offset in value(),
        now in value(),
        frac in 0.0f64..=1.0,
        edge in prop::sample::select(vec![None, Some(0u64), Some(1), Some(2)]),
    ) {
        let now = now.min(u64::MAX - 1);
        let hw = host_cval(cval, offset, now);
        let guest_now = now.wrapping_sub(offset);
        // Later raw counter values `t`, before either counter wraps (and
        // below u64::MAX, where "never" would read as due).
        let span = (u64::MAX - 1 - now).min(u64::MAX - guest_now);
        let mut ts = vec![now, now + (span as f64 * frac) as u64 % (span + 1)];
        if let Some(e) = edge {
            // Around the guest's deadline, in raw counter terms.
            if cval > guest_now && cval - guest_now <= span {
                let at = now + (cval - guest_now);
                ts.extend([at.saturating_sub(e), at.saturating_add(e)]);
            }
        }
        for t in ts {
            if t < now || t - now > span {
                continue;
            }
            let guest_t = guest_now + (t - now);
            prop_assert_eq!(t >= hw, guest_t >= cval,
                "cval {:#x} offset {:#x} now {:#x}: hw {:#x} at {:#x}", cval, offset, now, hw, t);
        }
    }

    #[test]
    fn same_as_kvm(cval in value(), offset in value(), now in value()) {
        let offset = offset.max(1);
        prop_assert_eq!(host_cval(cval, offset, now), kvm_rule(cval, offset, now));
    }

    #[test]
    fn a_saved_value_round_trips(cval in value(), offset in value(), now in value(), hw in value(),
                                 cntpoff in any::<bool>()) {
        // Whatever the hardware was left holding, a put returns the
        // guest's value where the saved register is the guest's.
        let c = PhysCval { cntpoff, offset };
        let back = c.guest_cval(cval, c.hw_cval(cval, now));
        if c.saved_is_guests() {
            prop_assert_eq!(c.guest_cval(cval, hw), cval);
        }
        prop_assert_eq!(back, cval);
    }
}
