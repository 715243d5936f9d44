# SPDX-License-Identifier: GPL-2.0
"""Unit tests of trace_bench.py's reading of a trace dump."""

import unittest

import trace_bench as tb

# Two threads: 59 a vCPU blocked in WFI for 26.5 ms, 54 the main thread
# between two VMs (no WFI exit), as `cat trace` prints them on a console.
TRACE = """\
    # entries-in-buffer/entries-written: 9/9   #P:4
           kvt_bench-54      [000] d....     1.000000: kvm_entry: PC: 0x0161118c
           kvt_bench-54      [000] .....     1.000010: kvm_exit: SEPC:0x1118c, SCAUSE:0xa, STVAL:0x0, HTVAL:0x0, HTINST:0x0
           kvt_bench-59      [002] d....     2.820141: kvm_entry: PC: 0x0161cf2a
           kvt_bench-59      [002] .....     2.820151: kvm_exit: SEPC:0x1141e, SCAUSE:0x16, STVAL:0x10500073, HTVAL:0x0, HTINST:0x0
           kvt_bench-59      [002] d....     2.820187: hrtimer_start: hrtimer=00000000fa730798 function=0xffffffff00617022 expires=2759940700
              <idle>-0       [002] d.h..     2.821143: hrtimer_expire_entry: hrtimer=00000000fa730798 function=0xffffffff00617022 now=2759954600
              <idle>-0       [002] d.h..     2.821164: ipi_send_cpu: cpu=3 callsite=ttwu_queue_wakelist+0xda/0xee callback=0x0
              <idle>-0       [003] d....     2.821170: hrtimer_start: hrtimer=00000000aaaaaaaa function=tick_nohz_handler expires=1
           kvt_bench-54      [001] d....     1.100000: kvm_entry: PC: 0x0161118c
           kvt_bench-59      [000] d....     2.846676: kvm_entry: PC: 0x01611422
"""


class TraceTest(unittest.TestCase):
    def setUp(self):
        self.events = tb.parse_trace(TRACE.splitlines())

    def test_parses_every_event_in_time_order(self):
        self.assertEqual(len(self.events), 10)
        self.assertEqual([e.ts for e in self.events], sorted(e.ts for e in self.events))
        e = self.events[-1]
        self.assertEqual((e.cpu, e.comm, e.pid, e.name), (0, "kvt_bench", 59, "kvm_entry"))

    def test_reports_a_wfi_wait_not_the_main_threads_gap(self):
        # 54's 100 ms between VMs has no WFI exit; 59's 26.5 ms has one.
        self.assertEqual(tb.entry_gaps(self.events, 0.01), [(59, 2.820141, 2.846676)])
        self.assertEqual(tb.entry_gaps(self.events, 0.03), [])

    def test_window_keeps_the_threads_own_timer_starts_only(self):
        lines = tb.window(self.events, 2.820141, 2.846676, 59)
        self.assertTrue(any("ipi_send_cpu: cpu=3" in l for l in lines))
        self.assertTrue(any("hrtimer_start" in l and "-59 " in l for l in lines))
        self.assertFalse(any("tick_nohz_handler expires" in l for l in lines))
        self.assertFalse(any(l.startswith("1.") for l in lines), "outside the window")

    def test_late_runs(self):
        console = ['    # kvt-bench {"backend": "vtimer", "mode": "sbi", "workload": "migrate", '
                   '"rep": 0, "hz": 10000000, "lateness": [35, 255564, 40]}']
        # 5 ms of a 10 MHz counter: 50000 ticks.
        self.assertEqual(tb.late_runs(console, 5),
                         [("vtimer", "sbi", "migrate", 0, [(1, 255564)])])
        self.assertEqual(tb.late_runs(console, 26),
                         [("vtimer", "sbi", "migrate", 0, [])])


# arm64: vCPU thread 55 on CPU 1 waits in WFI twice.  The first wakeup
# (kvm_vtimer's timer, a module address) meets CPU 1's tick on its way,
# the second only CPU 0's; a nanosleep's expiry wakes no vCPU.
ARM64_TRACE = """\
       kvt_bench-55      [001] .....     2.323580: kvm_exit: TRAP: HSR_EC: 0x0001 (WFx), PC: 0x0000000000412350
          <idle>-0       [001] d.h..     2.324400: hrtimer_expire_entry: hrtimer=00000000b7f1daef function=0xffff8000788020fc now=2320371664
          <idle>-0       [001] d.h..     2.324440: hrtimer_expire_entry: hrtimer=000000004e58f067 function=tick_nohz_handler now=2320400000
       kvt_bench-55      [001] d....     2.324591: kvm_entry: PC: 0x0000000000412350
       kvt_bench-55      [001] .....     2.325600: kvm_exit: TRAP: HSR_EC: 0x0001 (WFx), PC: 0x0000000000412350
          <idle>-0       [001] d.h..     2.326400: hrtimer_expire_entry: hrtimer=00000000b7f1daef function=0xffff8000788020fc now=2322371664
          <idle>-0       [000] d.h..     2.326420: hrtimer_expire_entry: hrtimer=000000004009def2 function=tick_nohz_handler now=2322400000
          <idle>-0       [002] d.h..     2.326430: hrtimer_expire_entry: hrtimer=000000001111def2 function=hrtimer_wakeup now=2322400000
       kvt_bench-55      [001] d....     2.326504: kvm_entry: PC: 0x0000000000412350
"""


class WakePathsTest(unittest.TestCase):
    def setUp(self):
        self.events = tb.parse_trace(ARM64_TRACE.splitlines())

    def test_arm64_wfi_exits_count(self):
        # From an entry to the next across a WFx exit (the first entry is
        # before the trace).
        self.assertEqual([(p, round((c - a) * 1e6)) for p, a, c in tb.entry_gaps(self.events, 0)],
                         [(55, 1913)])

    def test_each_wake_its_timer_and_its_cpus_tick(self):
        paths = tb.wake_paths(self.events)
        self.assertEqual([(p, cpu, tb.timer_function(w), round((c - w.ts) * 1e6), len(t))
                          for p, cpu, w, c, t in paths],
                         [(55, 1, "0xffff8000788020fc", 191, 1),
                          (55, 1, "0xffff8000788020fc", 104, 0)])

    def test_summary_splits_by_a_tick_inside(self):
        lines = tb.wake_summary(tb.wake_paths(self.events))
        self.assertEqual(lines, [
            "# wakeups by 0xffff8000788020fc entering on the timer's CPU, without a tick "
            "of that CPU inside: 1, expiry to entry median 104 us, p99 104 us, max 104 us",
            "# wakeups by 0xffff8000788020fc entering on the timer's CPU, with a tick "
            "of that CPU inside: 1, expiry to entry median 191 us, p99 191 us, max 191 us"])

    def test_summary_splits_by_the_entering_cpu(self):
        # RISC-V: KVM's timer fires on CPU 2, the thread enters on CPU 0.
        lines = tb.wake_summary(tb.wake_paths(tb.parse_trace(TRACE.splitlines())))
        self.assertEqual(len(lines), 1)
        self.assertIn("entering on another CPU, without a tick of that CPU inside: 1, "
                      "expiry to entry median 25533 us", lines[0])

    def test_no_wake_without_a_wfi_exit(self):
        # The main thread's entries, and a timer while no vCPU waits.
        self.assertEqual(tb.wake_paths(tb.parse_trace(TRACE.splitlines()))[0][0], 59)
        self.assertEqual(len(tb.wake_paths(tb.parse_trace(TRACE.splitlines()))), 1)


class EventsTest(unittest.TestCase):
    def test_more_events_once_each_after_the_default(self):
        ev = tb.event_list("workqueue/workqueue_execute_start, sched/sched_switch")
        self.assertEqual(ev, tb.EVENTS + ["workqueue/workqueue_execute_start"])
        self.assertEqual(tb.event_list(""), tb.EVENTS)
        with self.assertRaises(SystemExit):
            tb.event_list("workqueue")

    def test_light_is_only_what_the_reports_read(self):
        ev = tb.event_list("irq/softirq_entry", tb.LIGHT_EVENTS)
        self.assertEqual(ev, tb.LIGHT_EVENTS + ["irq/softirq_entry"])
        self.assertNotIn("sched/sched_switch", ev)

    def test_steps_enable_the_given_events(self):
        test = {"id": "trace.bench", "timeout": 10, "argv": ["kvt_bench"]}
        cmds = [c for _, c in tb.steps(test, False, ["workqueue/workqueue_queue_work"])]
        enabled = [c for c in cmds if c.endswith("/enable 1")]
        self.assertEqual(enabled, [f"write {tb.TRACEFS}/events/workqueue/"
                                   "workqueue_queue_work/enable 1"])
        self.assertEqual(len([c for c in cmds if c.endswith("/enable 1")
                              and "sched_switch" in c]), 0)
        default = [c for _, c in tb.steps(test, False) if c.endswith("/enable 1")]
        self.assertEqual(len(default), len(tb.EVENTS))

    def test_the_module_has_the_benchmark_parameters(self):
        plan = {"config": {"c": {"bench_module_params": "advance_max_ns=100000"}}}
        argv = tb.bench_argv(plan, "c", "sstc", "wfi", 3)
        self.assertEqual(argv[argv.index("-o") + 1], "advance_max_ns=100000")
        self.assertEqual(argv[argv.index("-m") + 1], "sstc")
        self.assertEqual(argv[argv.index("-w") + 1], "wfi")
        self.assertEqual(argv[argv.index("-r") + 1], "3")
        argv = tb.bench_argv(plan, "c", "sbi", "busy,storm", 1, "advance_max_ns=0")
        self.assertEqual(argv[argv.index("-o") + 1], "advance_max_ns=0")
        self.assertEqual(argv[argv.index("-w") + 1], "busy,storm")


if __name__ == "__main__":
    unittest.main()
