// SPDX-License-Identifier: GPL-2.0

//! The direct EL1 physical timer (VHE hosts) and KVM's world switch: where
//! the guest's `CNTP_CVAL` is while its vCPU is loaded, and what the
//! hardware register holds.  The one statement of that contract;
//! [`super::el1::El1Timers`] applies it at load and put.
//!
//! The hardware compares `CNTP_CVAL_EL0` with the raw physical counter
//! while the host runs (`HCR_EL2.TGE` set, `CNTPOFF_EL2` not applied), and
//! with the counter less `CNTPOFF_EL2` while a guest runs on a CPU with ECV.
//! The guest's `CVAL` is in its own view (counter less the VM's physical
//! offset).  So with an offset, the host must not leave the guest's value
//! in the hardware, and KVM (6.12, `arch/arm64/kvm/hyp/vhe/switch.c`) keeps
//! the guest's value in the vCPU's saved `CNTP_CVAL_EL0`:
//!
//! - With CNTPOFF, guest entry (`__activate_traps()`) loads the hardware
//!   from the saved register; guest exit (`__deactivate_traps()`) stores the
//!   hardware into it and, if `CNTPOFF_EL2` is not 0, writes the hardware
//!   the host-context value of [`host_cval`].  Between an exit and the put
//!   the hardware may thus read 0 or `u64::MAX`: only the saved register
//!   has the guest's value.
//! - Without CNTPOFF and with an offset, every guest access to `CNTP_*`
//!   traps (the module sets the traps at load), and the trapped access
//!   writes the saved register and reloads the hardware.
//! - Without CNTPOFF and with no offset, the guest programs the hardware
//!   directly: the hardware has the guest's value, the saved register is
//!   stale until the put.

/// How a loaded direct physical timer's `CVAL` is kept: from whether the
/// CPU has CNTPOFF and from the VM's physical counter offset, both as of
/// the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysCval {
    /// The CPU has ECV's `CNTPOFF_EL2` and KVM's VHE switch uses it.
    pub cntpoff: bool,
    /// The VM's physical counter offset.
    pub offset: u64,
}

impl PhysCval {
    /// Whether the guest's `CVAL` is the vCPU's saved register while the
    /// timer is loaded (else it is the hardware's).
    pub fn saved_is_guests(self) -> bool {
        self.cntpoff || self.offset != 0
    }

    /// The value to write to the hardware `CNTP_CVAL_EL0` from the host for
    /// the guest's `cval`, `now` being the raw physical counter.
    pub fn hw_cval(self, cval: u64, now: u64) -> u64 {
        host_cval(cval, self.offset, now)
    }

    /// The guest's `CVAL` at a put or a trapped access: `saved` (the vCPU's
    /// saved register) or `hw` (read from the hardware).
    pub fn guest_cval(self, saved: u64, hw: u64) -> u64 {
        if self.saved_is_guests() {
            saved
        } else {
            hw
        }
    }
}

/// The compare value that makes the hardware, comparing the raw counter,
/// agree with a guest whose counter is the raw one less `offset` and whose
/// `CVAL` is `cval`, from raw counter `now` on:
///
/// - no offset: `cval` itself (the views are the same);
/// - the guest's timer is due (`now - offset >= cval`, in the guest's
///   wrapping counter): 0, due for ever after;
/// - it is due in `d` ticks: `now + d`, unless the raw counter wraps before
///   that: `u64::MAX`, never due in any lifetime of the host.
///
/// `cval + offset` alone would be wrong both ways: a wrapped sum is small
/// and fires at once, and a due timer whose sum is ahead of `now` would not
/// be due.
pub fn host_cval(cval: u64, offset: u64, now: u64) -> u64 {
    if offset == 0 {
        return cval;
    }
    let guest_now = now.wrapping_sub(offset);
    if guest_now >= cval {
        return 0;
    }
    now.saturating_add(cval - guest_now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFF: u64 = 1_000;

    #[test]
    fn no_offset_is_the_guests_value() {
        assert_eq!(host_cval(5, 0, 10), 5);
        assert_eq!(host_cval(u64::MAX, 0, 10), u64::MAX);
    }

    #[test]
    fn due_is_zero() {
        // Guest counter 9_000; deadline reached or passed.
        assert_eq!(host_cval(9_000, OFF, 10_000), 0);
        assert_eq!(host_cval(1, OFF, 10_000), 0);
        assert_eq!(host_cval(0, OFF, 10_000), 0);
    }

    #[test]
    fn ahead_is_the_raw_deadline() {
        assert_eq!(host_cval(9_001, OFF, 10_000), 10_001);
        assert_eq!(host_cval(u64::MAX - OFF, OFF, 10_000), u64::MAX);
    }

    #[test]
    fn a_wrapping_sum_never_fires() {
        // cval + offset wraps to 998 and 999: behind `now`, due at once.
        assert_eq!(host_cval(u64::MAX - 1, OFF, 10_000), u64::MAX);
        assert_eq!(host_cval(u64::MAX, OFF, 10_000), u64::MAX);
    }

    #[test]
    fn a_guest_counter_near_its_top() {
        // Offset above the raw counter: the guest's counter is 100 below
        // the top of its range.  A deadline in between is 49 ticks away; one
        // past the wrap is behind the guest's counter, due (as the
        // architecture compares, unsigned).
        let (off, now) = (1_100, 1_000);
        assert_eq!(host_cval(u64::MAX - 50, off, now), 1_049);
        assert_eq!(host_cval(u64::MAX - 99, off, now), 0);
        assert_eq!(host_cval(50, off, now), 0);
    }

    #[test]
    fn where_the_guests_value_is() {
        let hw_only = PhysCval {
            cntpoff: false,
            offset: 0,
        };
        let trapped = PhysCval {
            cntpoff: false,
            offset: OFF,
        };
        let ecv = PhysCval {
            cntpoff: true,
            offset: 0,
        };
        let ecv_off = PhysCval {
            cntpoff: true,
            offset: OFF,
        };
        assert_eq!(hw_only.guest_cval(1, 2), 2);
        for c in [trapped, ecv, ecv_off] {
            assert!(c.saved_is_guests());
            assert_eq!(c.guest_cval(1, 2), 1);
        }
        // What the world switch leaves after a due timer exits: not the
        // guest's value, which stays in the saved register.
        assert_eq!(ecv_off.hw_cval(9_000, 10_000), 0);
        assert_eq!(ecv_off.guest_cval(9_000, 0), 9_000);
    }
}
