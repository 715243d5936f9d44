// SPDX-License-Identifier: GPL-2.0

//! The host's hrtimer as both worlds model it.

use crate::sched;
use crate::timer::Expiry;

/// What an actor waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    No,
    /// hrtimer_cancel(): the running callback to end.
    Callback,
    /// The vCPU mutex.
    Mutex,
    /// A halted vCPU: a wakeup.
    Wakeup,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hr {
    Idle,
    Queued {
        at: u64,
        cpu: u32,
    },
    /// The callback runs on `cpu`; `restarted`: `hrtimer_start()` queued
    /// it meanwhile, at that expiry (on the callback's CPU: a running
    /// timer keeps its base).
    Running {
        cpu: u32,
        at: u64,
        restarted: Option<u64>,
    },
}

/// The hrtimer core after the callback returned `r` (`__run_hrtimer()`).
pub fn end_run(hr: Hr, r: Expiry) -> Hr {
    let Hr::Running { cpu, at, restarted } = hr else {
        unreachable!("only the callback ends its run")
    };
    match (r, restarted) {
        (Expiry::Done, None) => Hr::Idle,
        (Expiry::Done, Some(at)) => Hr::Queued { at, cpu },
        (Expiry::Again(ns), None) => {
            assert!(ns > at, "re-armed without progress");
            Hr::Queued { at: ns, cpu }
        }
        (Expiry::Again(_), Some(_)) => sched::fail(
            "the host timer is started while its callback returns RESTART: \
             hrtimer_set_expires() on a queued timer",
        ),
    }
}

/// `hrtimer_start()` from `cpu` for `at`: queued there, or, while the
/// callback runs, noted for when it returns ([`end_run`] checks that it
/// then ends with NORESTART).  Never past KTIME_MAX: both logics call such
/// a deadline "never" (rust/timer/host_timer.rs).
pub fn start(hr: Hr, cpu: u32, at: u64) -> Hr {
    assert!(at <= i64::MAX as u64, "host timer started past KTIME_MAX");
    match hr {
        Hr::Running { cpu, at: now, .. } => Hr::Running {
            cpu,
            at: now,
            restarted: Some(at),
        },
        _ => Hr::Queued { at, cpu },
    }
}

/// `hrtimer_cancel()` once no callback runs: the timer is idle.  Whether
/// it was queued.
pub fn cancel(hr: &mut Hr) -> bool {
    let was = matches!(*hr, Hr::Queued { .. });
    *hr = Hr::Idle;
    was
}

/// The host clock and timer of a mock world: `HostClock` for `$t`, which
/// has `lock()` (a world with `now`, `hr` and `cpu_of()`) and `wait()`,
/// beside `me()` and the `TIMER` actor.  The same for both worlds.
macro_rules! impl_host_clock {
    ($t:ty) => {
        impl HostClock for $t {
            fn host_ns(&self) -> u64 {
                self.lock().now
            }
            fn cpu(&self) -> u32 {
                self.lock().cpu_of(me())
            }
            fn timer_start(&self, expires_ns: u64) {
                sched::point(format!("timer_start({expires_ns})"));
                if me() == TIMER {
                    sched::fail("the callback starts its own timer");
                }
                let mut w = self.lock();
                let cpu = w.cpu_of(me());
                w.hr = hrtimer::start(w.hr, cpu, expires_ns);
            }
            fn timer_cancel(&self) -> bool {
                sched::point("timer_cancel");
                if me() == TIMER {
                    sched::fail("the callback cancels its own timer");
                }
                // hrtimer_cancel(): wait for a running callback, then
                // dequeue.
                self.wait(Wait::Callback);
                hrtimer::cancel(&mut self.lock().hr)
            }
        }
    };
}
pub(crate) use impl_host_clock;
