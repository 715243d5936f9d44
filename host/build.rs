// SPDX-License-Identifier: GPL-2.0
//
// The interleaving tests (tests/interleave.rs) run the timer logic of
// rust/timer/ with every atomic access a scheduling point.  This writes a
// copy of those files to $OUT_DIR/timer/ that the test crate includes:
//
// - vcpu.rs and el1.rs take their atomics from the test's scheduler
//   (`crate::sched::atomic`) instead of `core::sync::atomic`;
// - a few lines get a test-only switch, `crate::sched::mutant(NAME)`, that
//   brings back a known bug, so that a test can check that the harness
//   finds it;
// - each file gets `#[cfg(test)]` modules disabled (the library's unit
//   tests run them) and test-only accessors appended at its end.
//
// Every edit keeps the line count, so a location in the copy is the same
// line of the file in rust/timer/.  An edit whose text is not found exactly
// once fails the build: update it with the code.

use std::env;
use std::fs;
use std::path::PathBuf;

/// The timer files, and whether their atomics are instrumented.  The
/// statistics and the advance estimate are not: no decision reads them
/// across the two sides of the protocol.
const FILES: [(&str, bool); 8] = [
    ("mod.rs", false),
    ("advance.rs", false),
    ("clock.rs", false),
    ("cntp.rs", false),
    ("el1.rs", true),
    ("host_timer.rs", true),
    ("stats.rs", false),
    ("vcpu.rs", true),
];

/// A mutation: in `file`, the text `from` (found exactly once, within one
/// line or spanning lines) becomes `to`, which has as many lines.
struct Mutation {
    file: &'static str,
    from: &'static str,
    to: &'static str,
}

const MUTATIONS: &[Mutation] = &[
    // Load follows the vCPU to its new CPU by the `armed` it read before
    // the cancel, as before 3c82b67: a callback that ran meanwhile on the
    // old CPU already raised the interrupt, and the timer is started
    // again.  (Since fb10824 the `entry` check alone also stops this.)
    // Or load restarts a timer whose early delivery is already noted for
    // guest entry (before fb10824 added the `entry` check).
    Mutation {
        file: "vcpu.rs",
        from: "                    p.timer_cancel();
                    let deadline = self.deadline();
                    if self.armed() && self.entry.load(Ordering::Acquire) != deadline {",
        to: "                    let armed_before = crate::sched::mutant(\"load_armed_before_cancel\") && self.armed(); p.timer_cancel();
                    let deadline = self.deadline();
                    let rearm = if crate::sched::mutant(\"load_armed_before_cancel\") { armed_before } else { self.armed() && (crate::sched::mutant(\"load_ignores_entry\") || self.entry.load(Ordering::Acquire) != deadline) }; if rearm {",
    },
    // state=ON programs the saved deadline again although its interrupt
    // was raised (before b07eb59).
    Mutation {
        file: "vcpu.rs",
        from: "if self.fired.load(Ordering::Acquire) != deadline {",
        to: "if crate::sched::mutant(\"state_on_raises_again\") || self.fired.load(Ordering::Acquire) != deadline {",
    },
    // A ONE_REG write of TIME or COMPARE decides by `armed` read before
    // the cancel: a callback raising the deadline meanwhile is followed by
    // a second raise of it.
    Mutation {
        file: "vcpu.rs",
        from: "        self.cancel(p);
        self.armed()
    }",
        to: "        let armed_before = crate::sched::mutant(\"one_reg_armed_before_cancel\") && self.armed(); self.cancel(p);
        if crate::sched::mutant(\"one_reg_armed_before_cancel\") { armed_before } else { self.armed() }
    }",
    },
    // disarm() cancels before it clears `armed`: a load in between starts
    // the old deadline's timer again.
    Mutation {
        file: "vcpu.rs",
        from: "        self.armed.store(false, Ordering::Release);
        self.cancel(p);
    }",
        to: "        if crate::sched::mutant(\"disarm_cancel_first\") { self.cancel(p); } self.armed.store(false, Ordering::Release);
        if !crate::sched::mutant(\"disarm_cancel_first\") { self.cancel(p); }
    }",
    },
    // arm() with preemption on: a load in between (the vCPU moved) starts
    // the timer, which may fire before this start starts it again.
    Mutation {
        file: "vcpu.rs",
        from: "        p.atomic(|| self.arm_here(p, deadline));",
        to: "        if crate::sched::mutant(\"arm_preemptible\") { self.arm_here(p, deadline) } else { p.atomic(|| self.arm_here(p, deadline)) }",
    },
    // Sstc set_timer writes vstimecmp and then the deadline, preemptible:
    // a load in between writes the old deadline back to the CSR.
    Mutation {
        file: "vcpu.rs",
        from: "                p.atomic(|| {
                    self.deadline.store(deadline, Ordering::Release);
                    p.load_csrs(p.time_delta(), Some(deadline));
                });",
        to: "                if crate::sched::mutant(\"sstc_csr_then_deadline\") { p.load_csrs(p.time_delta(), Some(deadline)); self.deadline.store(deadline, Ordering::Release); } else { p.atomic(|| {
                    self.deadline.store(deadline, Ordering::Release);
                    p.load_csrs(p.time_delta(), Some(deadline));
                }); }",
    },
    // A trapped write of an emulated timer changes its registers without
    // first stopping the host timer whose callback reads them.
    Mutation {
        file: "el1.rs",
        from: "            self.cancel(p);
            let now = self.now(p, t);
            let mut regs = (p.ctl(t), p.cval(t));",
        to: "            if !crate::sched::mutant(\"el1_write_without_cancel\") { self.cancel(p); }
            let now = self.now(p, t);
            let mut regs = (p.ctl(t), p.cval(t));",
    },
    // ... or does it with interrupts on, as before: preemptible.
    Mutation {
        file: "el1.rs",
        from: "        p.atomic(|| {
            if !crate::sched::mutant",
        to: "        (|f: &dyn Fn()| if crate::sched::mutant(\"el1_write_preemptible\") { f() } else { p.atomic(f) })(&|| {
            if !crate::sched::mutant",
    },
    // The callback raises a line of a VM with a userspace irqchip and
    // does not wake the blocked vCPU, as before.
    Mutation {
        file: "el1.rs",
        from: "        if !p.irqchip_in_kernel() {
            // No vGIC",
        to: "        if !p.irqchip_in_kernel() && !crate::sched::mutant(\"el1_user_no_wake\") {
            // No vGIC",
    },
    // The callback of a blocked vCPU's host timer, early by the advance,
    // raises the lines of the timers that can fire instead of only waking
    // the vCPU: an interrupt before its deadline.
    Mutation {
        file: "el1.rs",
        from: "                // waits out the rest in `wfi_done()`.
                self.entry.store(d.target, Ordering::Relaxed);",
        to: "                // waits out the rest in `wfi_done()`.
                self.entry.store(d.target, Ordering::Relaxed); if crate::sched::mutant(\"el1_advance_raises\") { for t in Which::ALL { if can_fire(p.ctl(t)) { self.set_level(p, t, true); } } }",
    },
    // A vCPU woken by the advance does not wait out the rest of its
    // deadline: it leaves WFI early, with no interrupt for the guest.
    Mutation {
        file: "el1.rs",
        from: "        if !wait || early_ns == 0 || !self.still_first(p, target) {",
        to: "        if !wait || early_ns == 0 || !self.still_first(p, target) || crate::sched::mutant(\"el1_no_wait_out\") {",
    },
    // input_level lowers our record of the line, as it did: a getter the
    // vGIC calls for the running vCPU, also about another vCPU's line.
    Mutation {
        file: "el1.rs",
        from: "    pub fn input_level<P: Platform>(&self, p: &P, t: Which) -> bool {
        self.should_fire(p, t)",
        to: "    pub fn input_level<P: Platform>(&self, p: &P, t: Which) -> bool {
        { let fire = self.should_fire(p, t); if crate::sched::mutant(\"el1_input_level_writes\") && !fire { self.level[t.idx()].store(false, Ordering::Relaxed); } fire }",
    },
];

/// Accessors for the tests, appended to a file's copy.
fn accessors(file: &str) -> &'static str {
    match file {
        "vcpu.rs" => {
            "
impl VcpuTimer {
    /// The deadline whose interrupt was raised last, without a
    /// scheduling point.
    pub fn peek_fired(&self) -> u64 {
        self.fired.peek()
    }
    /// Where `deadline` is, to recognise its stores.
    pub fn deadline_addr(&self) -> usize {
        core::ptr::from_ref(&self.deadline) as usize
    }
    /// `armed`, without a scheduling point.
    pub fn peek_armed(&self) -> bool {
        self.armed.peek()
    }
    /// `deadline`, without a scheduling point.
    pub fn peek_deadline(&self) -> u64 {
        self.deadline.peek()
    }
}
"
        }
        _ => "",
    }
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let src = manifest.join("../rust/timer");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("timer");
    fs::create_dir_all(&out).unwrap();
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", src.display());
    let mut used = vec![false; MUTATIONS.len()];
    for (file, instrument) in FILES {
        let path = src.join(file);
        println!("cargo:rerun-if-changed={}", path.display());
        let text = fs::read_to_string(&path).unwrap();
        let text = edit(file, &text, instrument, &mut used);
        fs::write(out.join(file), text).unwrap();
    }
    for (m, used) in MUTATIONS.iter().zip(used) {
        assert!(used, "mutation for {} not applied", m.file);
    }
}

fn edit(file: &str, text: &str, instrument: bool, used: &mut [bool]) -> String {
    let mut text = text.to_string();
    for (i, m) in MUTATIONS.iter().enumerate() {
        if m.file != file {
            continue;
        }
        assert_eq!(
            m.from.lines().count(),
            m.to.lines().count(),
            "{file}: a mutation must keep the line count"
        );
        let n = text.matches(m.from).count();
        assert_eq!(n, 1, "{file}: mutation text found {n} times:\n{}", m.from);
        text = text.replacen(m.from, m.to, 1);
        used[i] = true;
    }
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines() {
        let mut line = line.to_string();
        // `include!` takes no inner attributes: the module docs become
        // plain comments.
        if line.trim_start().starts_with("//!") {
            line = line.replacen("//!", "// ", 1);
        }
        if line.trim() == "#[cfg(test)]" {
            line = line.replace("#[cfg(test)]", "#[cfg(any())]");
        }
        if instrument {
            line = line.replace("use core::sync::atomic::", "use crate::sched::atomic::");
        }
        if file == "mod.rs" {
            if let Some(name) = line
                .strip_prefix("pub mod ")
                .and_then(|l| l.strip_suffix(';'))
            {
                line = format!(
                    "pub mod {name} {{ include!(concat!(env!(\"OUT_DIR\"), \"/timer/{name}.rs\")); }}"
                );
            }
        }
        lines.push(line);
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out.push_str(accessors(file));
    out
}
