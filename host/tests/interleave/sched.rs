// SPDX-License-Identifier: GPL-2.0

//! An exhaustive, deterministic scheduler for a few actors (OS threads)
//! that share state: exactly one runs at a time, and it yields at every
//! scheduling point ([`point`]: every atomic access of the timer logic,
//! every call into the simulated platform).  At each point the scheduler
//! picks the next actor among those the world says can run
//! ([`World::enabled`]); [`explore`] runs the actors again and again, each
//! time with another sequence of picks, depth first, until every sequence
//! with at most `bound` preemptions has run (a preemption: switching away
//! from an actor that could have gone on).  This is CHESS's iterative
//! context bounding; a bound of 2 or 3 finds most concurrency bugs.
//!
//! An actor that must wait (a cancel for a running callback, a halted vCPU
//! for its wakeup) just yields: it is not picked until the world enables
//! it again.  When no actor can run the execution ends, and the world
//! checks what it must hold at the end ([`World::finish`]).  A violation is
//! a panic in any actor or check; the exploration stops at the first and
//! reports it with the interleaving that led to it.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe, Location};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

/// The atomics of the instrumented timer logic: `core`'s, with a
/// scheduling point before every access.
#[expect(dead_code, reason = "each type gets every method; the logic uses some")]
pub mod atomic {
    pub use core::sync::atomic::Ordering;

    macro_rules! atomic {
        ($name:ident, $t:ty) => {
            /// An instrumented atomic.
            #[derive(Debug, Default)]
            pub struct $name(core::sync::atomic::$name);

            impl $name {
                /// As `core`'s.
                pub const fn new(v: $t) -> Self {
                    Self(core::sync::atomic::$name::new(v))
                }
                /// As `core`'s, after a scheduling point.
                #[track_caller]
                pub fn load(&self, o: Ordering) -> $t {
                    super::access("load", self as *const _ as usize, None);
                    self.0.load(o)
                }
                /// As `core`'s, after a scheduling point.
                #[track_caller]
                pub fn store(&self, v: $t, o: Ordering) {
                    super::access("store", self as *const _ as usize, Some(v as u64));
                    self.0.store(v, o)
                }
                /// As `core`'s, after a scheduling point.
                #[track_caller]
                pub fn swap(&self, v: $t, o: Ordering) -> $t {
                    super::access("swap", self as *const _ as usize, Some(v as u64));
                    self.0.swap(v, o)
                }
                /// The value, without a scheduling point (checks only).
                pub fn peek(&self) -> $t {
                    self.0.load(Ordering::SeqCst)
                }
            }
        };
    }

    atomic!(AtomicBool, bool);
    atomic!(AtomicU8, u8);
    atomic!(AtomicU32, u32);
    atomic!(AtomicU64, u64);
}

/// The state the actors share, as the scheduler sees it.
pub trait World: Send + Sync + 'static {
    /// Whether actor `a` (not finished) can take its next step.
    fn enabled(&self, a: usize) -> bool;
    /// An instrumented atomic at `addr` is about to be written with `val`.
    fn on_store(&self, _addr: usize, _val: u64) {}
    /// The end of an execution, no actor running: check the final state
    /// (panics on a violation).
    fn finish(&self);
}

/// Where a point comes from, for the trace.
enum Label {
    Code(&'static str, &'static Location<'static>),
    Text(String),
}

/// One pick with more than one candidate.
#[derive(Clone, Copy, Debug)]
struct Pick {
    options: usize,
    chosen: usize,
    /// Picking another than option 0 is a preemption.
    preemptive: bool,
}

/// Why an execution stops early.
enum Stop {
    /// A violation: the message.
    Failed(String),
    /// No actor can run: the execution is over.
    Quiet,
}

/// Unwinds an actor when its execution stops.
struct Unwind;

struct State {
    names: Vec<&'static str>,
    done: Vec<bool>,
    running: Option<usize>,
    prefix: Vec<usize>,
    picks: Vec<Pick>,
    trace: Vec<(usize, Label)>,
    stop: Option<Stop>,
    steps: usize,
}

struct Exec {
    state: Mutex<State>,
    /// One per actor: its turn came (or the execution stops).
    turn: Vec<Condvar>,
    world: Arc<dyn World>,
}

/// The most steps of one execution: more is a livelock.
const MAX_STEPS: usize = 20_000;

thread_local! {
    static CURRENT: RefCell<Option<(Arc<Exec>, usize)>> = const { RefCell::new(None) };
    static MUTANT: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Whether the test-only switch `name` of the instrumented copy is on (see
/// `build.rs`): the mutation an exploration runs with.
pub fn mutant(name: &str) -> bool {
    MUTANT.get() == Some(name)
}

/// The actor this thread is, if it runs in an execution.
pub fn current() -> Option<usize> {
    CURRENT.with(|c| c.borrow().as_ref().map(|(_, me)| *me))
}

#[track_caller]
fn access(what: &'static str, addr: usize, val: Option<u64>) {
    let Some((exec, me)) = CURRENT.with(|c| c.borrow().clone()) else {
        return;
    };
    exec.point(me, Label::Code(what, Location::caller()));
    if let Some(v) = val {
        exec.world.on_store(addr, v);
    }
}

/// A scheduling point named `what` (a platform call, a step of an actor).
/// Outside an execution, nothing.
pub fn point(what: impl Into<String>) {
    let Some((exec, me)) = CURRENT.with(|c| c.borrow().clone()) else {
        return;
    };
    exec.point(me, Label::Text(what.into()));
}

/// Record a violation and stop the execution (also from a final check).
pub fn fail(msg: impl Into<String>) -> ! {
    panic!("{}", msg.into());
}

impl Exec {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn point(&self, me: usize, label: Label) {
        let mut st = self.lock();
        if st.stop.is_some() {
            drop(st);
            panic::resume_unwind(Box::new(Unwind));
        }
        st.trace.push((me, label));
        st.steps += 1;
        if st.steps > MAX_STEPS {
            st.stop = Some(Stop::Failed(format!("more than {MAX_STEPS} steps")));
            self.wake_all();
            drop(st);
            panic::resume_unwind(Box::new(Unwind));
        }
        self.pick(&mut st, Some(me));
        self.wait_turn(st, me);
    }

    fn wait_turn(&self, mut st: MutexGuard<'_, State>, me: usize) {
        while st.running != Some(me) {
            if st.stop.is_some() {
                drop(st);
                panic::resume_unwind(Box::new(Unwind));
            }
            st = self.turn[me].wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Pick the next actor; `from` is the one yielding, if it may go on.
    fn pick(&self, st: &mut State, from: Option<usize>) {
        let n = st.names.len();
        let enabled: Vec<usize> = (0..n)
            .filter(|&a| !st.done[a] && self.world.enabled(a))
            .collect();
        if enabled.is_empty() {
            st.running = None;
            if st.stop.is_none() {
                st.stop = Some(Stop::Quiet);
            }
            self.wake_all();
            return;
        }
        let (options, preemptive) = match from {
            Some(a) if enabled.contains(&a) => {
                let mut o = vec![a];
                o.extend(enabled.iter().copied().filter(|&b| b != a));
                (o, true)
            }
            _ => (enabled, false),
        };
        let chosen = if options.len() == 1 {
            0
        } else {
            let d = st.picks.len();
            let chosen = st.prefix.get(d).copied().unwrap_or(0);
            if chosen >= options.len() {
                st.running = None;
                st.stop = Some(Stop::Failed(
                    "the replay diverged: the world is not deterministic".into(),
                ));
                self.wake_all();
                return;
            }
            st.picks.push(Pick {
                options: options.len(),
                chosen,
                preemptive,
            });
            chosen
        };
        st.running = Some(options[chosen]);
        self.turn[options[chosen]].notify_one();
    }

    fn wake_all(&self) {
        for cv in &self.turn {
            cv.notify_one();
        }
    }

    fn finish(&self, me: usize, failed: Option<String>) {
        let mut st = self.lock();
        st.done[me] = true;
        if let Some(msg) = failed {
            if !matches!(st.stop, Some(Stop::Failed(_))) {
                st.stop = Some(Stop::Failed(msg));
            }
        }
        if st.stop.is_some() {
            st.running = None;
            self.wake_all();
            return;
        }
        self.pick(&mut st, None);
    }
}

/// An actor: a name and its body.
pub type Actor = (&'static str, Box<dyn FnOnce() + Send>);

/// What one execution did.
struct Outcome {
    picks: Vec<Pick>,
    failure: Option<String>,
}

fn panic_message(e: &(dyn std::any::Any + Send)) -> Option<String> {
    if e.is::<Unwind>() {
        None
    } else if let Some(s) = e.downcast_ref::<String>() {
        Some(s.clone())
    } else if let Some(s) = e.downcast_ref::<&str>() {
        Some((*s).to_string())
    } else {
        Some("panic".to_string())
    }
}

/// Silence the default panic message of actors' violations: the
/// exploration reports them itself.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let hook = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if current().is_none() && !QUIET.get() {
                hook(info);
            }
        }));
    });
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

fn run_once<W: World>(
    world: Arc<W>,
    actors: Vec<Actor>,
    prefix: &[usize],
    mutation: Option<&'static str>,
) -> (Outcome, Vec<(usize, Label)>, Vec<&'static str>) {
    let names: Vec<&'static str> = actors.iter().map(|(n, _)| *n).collect();
    let exec = Arc::new(Exec {
        state: Mutex::new(State {
            names: names.clone(),
            done: vec![false; actors.len()],
            running: None,
            prefix: prefix.to_vec(),
            picks: Vec::new(),
            trace: Vec::new(),
            stop: None,
            steps: 0,
        }),
        turn: (0..names.len()).map(|_| Condvar::new()).collect(),
        world: world.clone(),
    });
    let mut handles = Vec::new();
    for (me, (name, body)) in actors.into_iter().enumerate() {
        let exec = exec.clone();
        let h = thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                MUTANT.set(mutation);
                CURRENT.with(|c| *c.borrow_mut() = Some((exec.clone(), me)));
                let st = exec.lock();
                let r = match panic::catch_unwind(AssertUnwindSafe(|| {
                    exec.wait_turn(st, me);
                    body();
                })) {
                    Ok(()) => None,
                    Err(e) => panic_message(&*e),
                };
                CURRENT.with(|c| *c.borrow_mut() = None);
                exec.finish(me, r);
            })
            .expect("spawn an actor");
        handles.push(h);
    }
    {
        let mut st = exec.lock();
        exec.pick(&mut st, None);
    }
    for h in handles {
        h.join().expect("actor thread");
    }
    let mut st = exec.lock();
    let mut failure = match st.stop.take() {
        Some(Stop::Failed(msg)) => Some(msg),
        _ => None,
    };
    if failure.is_none() {
        MUTANT.set(mutation);
        QUIET.set(true);
        let r = panic::catch_unwind(AssertUnwindSafe(|| world.finish()));
        QUIET.set(false);
        MUTANT.set(None);
        if let Err(e) = r {
            failure = panic_message(&*e).map(|m| format!("at the end: {m}"));
        }
    }
    let trace = std::mem::take(&mut st.trace);
    (
        Outcome {
            picks: std::mem::take(&mut st.picks),
            failure,
        },
        trace,
        names,
    )
}

/// What an exploration found.
#[derive(Debug)]
pub struct Report {
    /// Executions run.
    pub executions: usize,
    /// The first violation and the interleaving that led to it.
    pub violation: Option<String>,
}

/// Run every interleaving of the actors `setup` makes, with at most
/// `bound` preemptions, each time on a fresh world; `mutation` names the
/// test-only switch to turn on.  Stops at the first violation.
pub fn explore<W: World>(
    bound: usize,
    mutation: Option<&'static str>,
    setup: impl Fn() -> (Arc<W>, Vec<Actor>),
) -> Report {
    quiet_panics();
    let mut prefix: Vec<usize> = Vec::new();
    let mut executions = 0;
    loop {
        let (world, actors) = setup();
        let (out, trace, names) = run_once(world, actors, &prefix, mutation);
        executions += 1;
        if std::env::var_os("KVT_TRACE").is_some() {
            eprintln!(
                "execution {executions}: picks {:?}\n{}",
                out.picks,
                render(&trace, &names)
            );
        }
        if let Some(msg) = out.failure {
            return Report {
                executions,
                violation: Some(format!("{msg}\n{}", render(&trace, &names))),
            };
        }
        // Depth first: the deepest pick with an untried option in bound.
        let mut used = 0;
        let mut budget = Vec::with_capacity(out.picks.len());
        for p in &out.picks {
            budget.push(used);
            if p.preemptive && p.chosen != 0 {
                used += 1;
            }
        }
        let next = (0..out.picks.len()).rev().find(|&i| {
            let p = out.picks[i];
            p.chosen + 1 < p.options && (!p.preemptive || budget[i] < bound)
        });
        let Some(i) = next else {
            return Report {
                executions,
                violation: None,
            };
        };
        prefix = out.picks[..i].iter().map(|p| p.chosen).collect();
        prefix.push(out.picks[i].chosen + 1);
    }
}

/// The source line `line` of `file` in rust/timer/, trimmed.
fn source_line(file: &str, line: u32) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../rust/timer/");
    std::fs::read_to_string(format!("{path}{file}"))
        .ok()
        .and_then(|t| {
            t.lines()
                .nth(line as usize - 1)
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_default()
}

/// The trace as lines `actor: step`, with the code of each atomic access.
fn render(trace: &[(usize, Label)], names: &[&'static str]) -> String {
    let mut s = String::from("interleaving (actor: step):\n");
    for (a, label) in trace {
        let step = match label {
            Label::Text(t) => t.clone(),
            Label::Code(what, loc) => {
                let file = loc.file().rsplit('/').next().unwrap_or(loc.file());
                format!(
                    "{file}:{} {what}  `{}`",
                    loc.line(),
                    source_line(file, loc.line())
                )
            }
        };
        let _ = writeln!(s, "  {:>8}: {step}", names[*a]);
    }
    s
}
