// SPDX-License-Identifier: GPL-2.0

//! Interleavings of the timers' concurrent sides, explored exhaustively up
//! to a bound (see `interleave/sched.rs`).
//!
//! `vcpu.rs` and `el1.rs` rest on one protocol: the vCPU thread cancels the
//! host timer (which waits for a running callback) before it changes what
//! the callback reads.  Here the callback runs on its own thread, step by
//! step (every atomic access of the logic and every platform call is a
//! scheduling point), against the vCPU thread's load, put, guest entry,
//! timer programming and WFI, a ONE_REG ioctl, a preemption of the vCPU
//! thread and a remote kick.  The logic is the real one: `build.rs` copies
//! `rust/timer/` with instrumented atomics, line for line.

mod sched;

/// The instrumented copy of `rust/timer/`.
#[expect(dead_code, reason = "the tests drive part of the copied API")]
mod timer {
    include!(concat!(env!("OUT_DIR"), "/timer/mod.rs"));
}

mod arm64;
mod hrtimer;
mod riscv;

/// The preemption bound of the explorations (the `finds_*` tests use 2).
const BOUND: usize = 3;

/// `vcpu.rs`, in SBI and Sstc mode.
mod rv {
    use crate::riscv::{self, Ioctl, Op, Scenario};
    use crate::timer::vcpu::{Mode, STATE_OFF, STATE_ON};
    use crate::BOUND;

    fn sbi(vcpu: Vec<Op>) -> Scenario {
        Scenario {
            mode: Mode::Sbi,
            advance: false,
            vcpu,
            ioctl: Vec::new(),
            preempt: false,
            kick: false,
        }
    }

    /// Explore and require no violation; returns the number of executions.
    fn clean(s: &Scenario) -> usize {
        let r = riscv::explore(s, BOUND, None);
        if let Some(v) = r.violation {
            panic!("{s:?}\n{v}");
        }
        r.executions
    }

    fn sstc(vcpu: Vec<Op>) -> Scenario {
        Scenario {
            mode: Mode::Sstc,
            ..sbi(vcpu)
        }
    }

    fn with(mut s: Scenario, f: impl FnOnce(&mut Scenario)) -> Scenario {
        f(&mut s);
        s
    }

    /// Explore `s` with `mutation` on: the harness must report a violation
    /// that says `what`.  Prints the interleaving.
    fn finds(s: &Scenario, mutation: &'static str, what: &str) {
        let r = riscv::explore(s, 2, Some(mutation));
        let Some(v) = r.violation else {
            panic!(
                "{mutation}: no violation in {} executions of {s:?}",
                r.executions
            );
        };
        eprintln!("{mutation}: found after {} executions:\n{v}", r.executions);
        assert!(v.contains(what), "{mutation}: another violation:\n{v}");
    }

    #[test]
    fn sbi_program_races_the_callback() {
        let s = sbi(vec![Op::SetTimer(Some(100)), Op::SetTimer(Some(200))]);
        let n = clean(&s);
        eprintln!("executions: {n}");
    }

    #[test]
    fn sbi_migration_races_the_callback() {
        for advance in [false, true] {
            let s = with(
                sbi(vec![Op::SetTimer(Some(100)), Op::Run(40), Op::PreEnter]),
                |s| {
                    s.preempt = true;
                    s.advance = advance;
                },
            );
            eprintln!("executions: {}", clean(&s));
        }
    }

    #[test]
    fn sbi_wfi() {
        for advance in [false, true] {
            let s = with(
                sbi(vec![
                    Op::SetTimer(Some(100)),
                    Op::Halt { migrate: true },
                    Op::PreEnter,
                ]),
                |s| {
                    s.advance = advance;
                    s.kick = true;
                },
            );
            eprintln!("executions: {}", clean(&s));
        }
    }

    #[test]
    fn sbi_wfi_preempted() {
        let s = with(
            sbi(vec![
                Op::SetTimer(Some(100)),
                Op::Halt { migrate: false },
                Op::PreEnter,
            ]),
            |s| {
                s.advance = true;
                s.preempt = true;
            },
        );
        eprintln!("executions: {}", clean(&s));
    }

    #[test]
    fn sbi_reprogram_to_never() {
        let s = with(
            sbi(vec![
                Op::SetTimer(Some(100)),
                Op::Run(10),
                Op::SetTimer(None),
                Op::PreEnter,
            ]),
            |s| s.preempt = true,
        );
        eprintln!("executions: {}", clean(&s));
    }

    #[test]
    fn sbi_one_reg() {
        for ioctl in [
            vec![Ioctl::SetCompare(50), Ioctl::SetState(STATE_ON)],
            vec![Ioctl::SetCompare(-10), Ioctl::SetState(STATE_ON)],
            vec![Ioctl::SetTime(300), Ioctl::GetState],
            vec![Ioctl::SetState(STATE_OFF)],
        ] {
            let s = with(
                sbi(vec![Op::SetTimer(Some(100)), Op::ExitToUser, Op::PreEnter]),
                |s| s.ioctl = ioctl,
            );
            eprintln!("executions: {}", clean(&s));
        }
    }

    #[test]
    fn sstc_set_timer_and_wfi() {
        for advance in [false, true] {
            let s = with(
                sstc(vec![
                    Op::SetTimer(Some(100)),
                    Op::WriteCsr(60),
                    Op::Halt { migrate: true },
                    Op::PreEnter,
                ]),
                |s| {
                    s.advance = advance;
                    s.preempt = true;
                    s.kick = true;
                },
            );
            eprintln!("executions: {}", clean(&s));
        }
    }

    #[test]
    fn sstc_one_reg() {
        for ioctl in [
            vec![Ioctl::SetCompare(50)],
            vec![Ioctl::SetState(STATE_OFF), Ioctl::GetState],
        ] {
            let s = with(
                sstc(vec![
                    Op::SetTimer(Some(100)),
                    Op::ExitToUser,
                    Op::Halt { migrate: false },
                    Op::PreEnter,
                ]),
                |s| s.ioctl = ioctl,
            );
            eprintln!("executions: {}", clean(&s));
        }
    }

    #[test]
    fn finds_load_rearming_by_a_stale_armed() {
        let s = with(
            sbi(vec![Op::SetTimer(Some(100)), Op::Run(40), Op::PreEnter]),
            |s| s.preempt = true,
        );
        finds(&s, "load_armed_before_cancel", "raised twice");
    }

    #[test]
    fn finds_load_rearming_a_delivery_noted_for_entry() {
        let s = with(
            sbi(vec![
                Op::SetTimer(Some(100)),
                Op::Halt { migrate: true },
                Op::PreEnter,
            ]),
            |s| s.advance = true,
        );
        finds(&s, "load_ignores_entry", "");
    }

    #[test]
    fn finds_state_on_raising_a_raised_deadline_again() {
        let s = with(
            sbi(vec![Op::SetTimer(Some(100)), Op::ExitToUser, Op::PreEnter]),
            |s| s.ioctl = vec![Ioctl::SetCompare(-10), Ioctl::SetState(STATE_ON)],
        );
        finds(&s, "state_on_raises_again", "second time");
    }

    #[test]
    fn finds_a_lost_sstc_update() {
        let s = with(sstc(vec![Op::SetTimer(Some(100)), Op::PreEnter]), |s| {
            s.preempt = true
        });
        finds(&s, "sstc_csr_then_deadline", "lost update");
    }

    #[test]
    fn finds_a_start_preempted_by_a_migrating_load() {
        let s = with(
            sbi(vec![Op::SetTimer(Some(100)), Op::Run(40), Op::PreEnter]),
            |s| s.preempt = true,
        );
        finds(&s, "arm_preemptible", "");
    }

    #[test]
    fn finds_a_disarm_preempted_by_a_migrating_load() {
        let s = with(
            sbi(vec![
                Op::SetTimer(Some(100)),
                Op::Run(10),
                Op::SetTimer(Some(-10)),
                Op::PreEnter,
            ]),
            |s| s.preempt = true,
        );
        finds(&s, "disarm_cancel_first", "");
    }

    #[test]
    fn finds_one_reg_deciding_before_the_cancel() {
        let s = with(
            sbi(vec![Op::SetTimer(Some(100)), Op::ExitToUser, Op::PreEnter]),
            |s| s.ioctl = vec![Ioctl::SetTime(300), Ioctl::GetState],
        );
        finds(&s, "one_reg_armed_before_cancel", "second time");
    }
}

/// `el1.rs`, virtual and physical timers.
mod el1 {
    use crate::arm64::{self, Ioctl, Op, Scenario};
    use crate::timer::el1::{Placement, TimerReg, Which, CTL_ENABLE, CTL_IMASK};
    use crate::BOUND;

    fn base(phys: Placement, vcpu: Vec<Op>) -> Scenario {
        Scenario {
            phys,
            user_irqchip: false,
            offsets: (7_000, 0),
            advance: false,
            vcpu,
            ioctl: Vec::new(),
            preempt: false,
            kick: false,
        }
    }

    fn clean(s: &Scenario) -> usize {
        let r = arm64::explore(s, BOUND, None);
        if let Some(v) = r.violation {
            panic!("{s:?}\n{v}");
        }
        r.executions
    }

    fn finds(s: &Scenario, mutation: &'static str, what: &str) {
        let r = arm64::explore(s, 2, Some(mutation));
        let Some(v) = r.violation else {
            panic!(
                "{mutation}: no violation in {} executions of {s:?}",
                r.executions
            );
        };
        eprintln!("{mutation}: found after {} executions:\n{v}", r.executions);
        assert!(v.contains(what), "{mutation}: another violation:\n{v}");
    }

    /// The virtual timer due in 100, blocked in WFI, handled, then a read
    /// of another vCPU's pending bits.
    fn wfi_virt(phys: Placement) -> Scenario {
        base(
            phys,
            vec![
                Op::Program(Which::Virt, CTL_ENABLE, 100),
                Op::Halt { migrate: true },
                Op::Handle(Which::Virt),
                Op::ReadOtherPending,
            ],
        )
    }

    #[test]
    fn virt_timer_in_wfi() {
        for phys in [Placement::Direct, Placement::Emulated] {
            let mut s = wfi_virt(phys);
            s.kick = true;
            eprintln!("executions: {}", clean(&s));
        }
    }

    #[test]
    fn direct_phys_timer_in_wfi() {
        // VHE: both timers direct; the physical one without an offset,
        // programmed by the guest without a trap.
        let mut s = base(
            Placement::Direct,
            vec![
                Op::Program(Which::Phys, CTL_ENABLE, 80),
                Op::Program(Which::Virt, CTL_ENABLE, 100),
                Op::Run(90),
                Op::ReadOtherPending,
                Op::Handle(Which::Phys),
                Op::Halt { migrate: true },
                Op::Handle(Which::Virt),
            ],
        );
        s.preempt = true;
        eprintln!("executions: {}", clean(&s));
    }

    #[test]
    fn wfit() {
        for phys in [Placement::Direct, Placement::Emulated] {
            let mut s = base(
                phys,
                vec![
                    Op::Program(Which::Virt, CTL_ENABLE | CTL_IMASK, 50),
                    Op::HaltWfit(120),
                ],
            );
            s.kick = true;
            eprintln!("executions: {}", clean(&s));
        }
    }

    /// A blocked vCPU with the timer advance, for timer `x` due in 100:
    /// programmed by the guest, or with trapped writes if emulated.
    fn wfi_advance(phys: Placement, x: Which) -> Scenario {
        let mut vcpu = if phys == Placement::Emulated && x == Which::Phys {
            vec![
                Op::Write(x, TimerReg::Tval, 100),
                Op::Write(x, TimerReg::Ctl, CTL_ENABLE),
            ]
        } else {
            vec![Op::Program(x, CTL_ENABLE, 100)]
        };
        vcpu.extend([Op::Halt { migrate: true }, Op::Handle(x)]);
        let mut s = base(phys, vcpu);
        s.advance = true;
        s
    }

    #[test]
    fn advance_in_wfi() {
        for (phys, x) in [
            (Placement::Direct, Which::Virt),
            (Placement::Direct, Which::Phys),
            (Placement::Emulated, Which::Phys),
        ] {
            for (kick, preempt) in [(false, false), (true, false), (false, true)] {
                let mut s = wfi_advance(phys, x);
                s.kick = kick;
                s.preempt = preempt;
                eprintln!("{phys:?} {x:?}: executions: {}", clean(&s));
            }
        }
    }

    #[test]
    fn emulated_timer_races_trapped_writes() {
        let mut s = base(
            Placement::Emulated,
            vec![
                Op::Write(Which::Phys, TimerReg::Tval, 100),
                Op::Write(Which::Phys, TimerReg::Ctl, CTL_ENABLE),
                Op::Run(20),
                Op::Write(Which::Phys, TimerReg::Tval, 200),
                Op::Handle(Which::Phys),
            ],
        );
        s.offsets = (7_000, 3_000);
        s.preempt = true;
        eprintln!("executions: {}", clean(&s));
    }

    #[test]
    fn one_reg_while_out() {
        let mut s = base(
            Placement::Emulated,
            vec![
                Op::Write(Which::Phys, TimerReg::Tval, 100),
                Op::Write(Which::Phys, TimerReg::Ctl, CTL_ENABLE),
                Op::ExitToUser,
                Op::Halt { migrate: false },
            ],
        );
        s.ioctl = vec![
            Ioctl::Write(Which::Phys, TimerReg::Cnt, -500),
            Ioctl::ReadCtl(Which::Phys),
            Ioctl::Write(Which::Virt, TimerReg::Cval, 50),
            Ioctl::Write(Which::Virt, TimerReg::Ctl, CTL_ENABLE as i64),
        ];
        eprintln!("executions: {}", clean(&s));
    }

    #[test]
    fn userspace_irqchip() {
        for phys in [Placement::Direct, Placement::Emulated] {
            let mut s = base(
                phys,
                vec![
                    Op::Program(Which::Virt, CTL_ENABLE, 100),
                    Op::Run(100),
                    Op::Program(Which::Virt, CTL_ENABLE | CTL_IMASK, 0),
                    Op::Program(Which::Virt, CTL_ENABLE, 50),
                    Op::Halt { migrate: true },
                ],
            );
            s.user_irqchip = true;
            s.preempt = true;
            eprintln!("executions: {}", clean(&s));
        }
        // nVHE: the emulated physical timer's line, from its host timer.
        let mut s = base(
            Placement::Emulated,
            vec![
                Op::Write(Which::Phys, TimerReg::Tval, 100),
                Op::Write(Which::Phys, TimerReg::Ctl, CTL_ENABLE),
                Op::Run(100),
                Op::Write(Which::Phys, TimerReg::Ctl, CTL_ENABLE | CTL_IMASK),
                Op::Write(Which::Phys, TimerReg::Tval, 60),
                Op::Write(Which::Phys, TimerReg::Ctl, CTL_ENABLE),
                Op::Halt { migrate: true },
            ],
        );
        s.user_irqchip = true;
        s.offsets = (0, 5_000);
        eprintln!("executions: {}", clean(&s));
    }

    #[test]
    fn finds_a_trapped_write_that_does_not_stop_the_host_timer() {
        let mut s = base(
            Placement::Emulated,
            vec![
                Op::Write(Which::Phys, TimerReg::Tval, 100),
                Op::Write(Which::Phys, TimerReg::Ctl, CTL_ENABLE),
                Op::Write(Which::Phys, TimerReg::Ctl, 0),
            ],
        );
        s.offsets = (7_000, 3_000);
        finds(
            &s,
            "el1_write_without_cancel",
            "the host timer runs for no timer that can fire",
        );
    }

    #[test]
    fn finds_a_line_raised_at_the_early_wake() {
        finds(
            &wfi_advance(Placement::Emulated, Which::Phys),
            "el1_advance_raises",
            "raised early",
        );
    }

    #[test]
    fn finds_a_vcpu_back_before_its_deadline() {
        finds(
            &wfi_advance(Placement::Direct, Which::Virt),
            "el1_no_wait_out",
            "before the deadline",
        );
    }

    #[test]
    fn finds_input_level_changing_state() {
        finds(
            &wfi_virt(Placement::Direct),
            "el1_input_level_writes",
            "input_level changes state",
        );
    }

    #[test]
    fn finds_a_preempted_trapped_write() {
        let mut s = base(
            Placement::Emulated,
            vec![
                Op::Write(Which::Phys, TimerReg::Tval, 100),
                Op::Write(Which::Phys, TimerReg::Ctl, CTL_ENABLE),
                Op::Run(20),
                Op::Write(Which::Phys, TimerReg::Tval, 200),
            ],
        );
        s.offsets = (7_000, 3_000);
        s.preempt = true;
        finds(&s, "el1_write_preemptible", "raised twice");
    }

    #[test]
    fn finds_a_userspace_irqchip_vcpu_left_asleep() {
        let mut s = base(
            Placement::Direct,
            vec![
                Op::Program(Which::Virt, CTL_ENABLE, 100),
                Op::Halt { migrate: false },
            ],
        );
        s.user_irqchip = true;
        finds(&s, "el1_user_no_wake", "never woken");
    }
}
