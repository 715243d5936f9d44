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
