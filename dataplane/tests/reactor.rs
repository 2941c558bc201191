//! Reactor behaviour: tasks, cross-core calls and messages, parking and
//! waking, timers, back-pressure, counters, draining shutdown, failures.

mod common;

use flint_dataplane::mesh;
use flint_dataplane::poller::{poller_fn, PollStatus, Poller};
use flint_dataplane::reactor::{Core, ReactorConfig, ReactorSet};
use flint_dataplane::Error;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

#[test]
fn run_on_returns_the_result_from_that_core() {
    let set = common::reactors(2);
    for i in 0..set.len() {
        let (idx, reactors) = set.call(i, |core| (core.index(), core.reactors())).unwrap();
        assert_eq!((idx, reactors), (i, 2));
    }
    let err = set.call(7, |_| ()).unwrap_err();
    assert!(matches!(err, Error::NoSuchCore { core: 7, .. }), "{err}");
}

#[test]
fn core_call_brings_the_answer_back_to_the_caller() {
    let set = common::reactors(2);
    let (tx, rx) = mpsc::channel();
    set.send(0, move |core| {
        core.call(
            1,
            |c| c.index() * 10 + 1,
            move |c, r| tx.send((c.index(), r)).unwrap(),
        )
        .unwrap();
    })
    .unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), (0, 11));
}

#[test]
fn parked_reactors_wake_for_mesh_messages() {
    let set = common::reactors(2);
    let mut eps = mesh::mesh::<u64>(set.wakers(), 64);
    let mut rx_ep = eps.pop().unwrap();
    let mut tx_ep = eps.pop().unwrap();
    let got = Arc::new(AtomicU64::new(0));
    let got2 = got.clone();
    set.call(1, move |core| {
        core.add_poller(poller_fn("rx", move |_| {
            let n = rx_ep.recv(64, |_, m| {
                got2.fetch_add(m, Ordering::Relaxed);
            });
            PollStatus::from_work(n > 0)
        }));
    })
    .unwrap();
    // Let the receiver park, then send in bursts from reactor 0, sleeping in
    // between so every burst has to wake it.
    std::thread::sleep(Duration::from_millis(50));
    let parks_before = set.stats()[1].parks;
    set.call(0, move |core| {
        let mut sent = 0u64;
        core.add_periodic(Duration::from_millis(5), move |_| {
            if sent < 20 {
                sent += 1;
                tx_ep.send(1, sent).unwrap();
                tx_ep.flush();
            }
        });
    })
    .unwrap();
    let t0 = Instant::now();
    while got.load(Ordering::Relaxed) != (1..=20).sum::<u64>() {
        assert!(t0.elapsed() < Duration::from_secs(10), "messages lost");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(set.stats()[1].parks > parks_before, "the receiver did park");
}

#[test]
fn timers_fire_once_and_periodically_and_cancel() {
    let set = common::reactors(1);
    let once = Arc::new(AtomicUsize::new(0));
    let ticks = Arc::new(AtomicUsize::new(0));
    let (o, t) = (once.clone(), ticks.clone());
    set.call(0, move |core| {
        core.add_timer(Duration::from_millis(10), move |_| {
            o.fetch_add(1, Ordering::Relaxed);
        });
        let id = core.add_periodic(Duration::from_millis(5), move |_| {
            t.fetch_add(1, Ordering::Relaxed);
        });
        core.set_local(id);
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    set.call(0, |core| {
        let id = *core.local().unwrap();
        assert!(core.cancel_timer(id));
    })
    .unwrap();
    let n = ticks.load(Ordering::Relaxed);
    assert_eq!(once.load(Ordering::Relaxed), 1);
    assert!(
        (5..=60).contains(&n),
        "periodic timer fired {n} times in 200 ms"
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        ticks.load(Ordering::Relaxed),
        n,
        "cancelled timers stay quiet"
    );
}

#[test]
fn a_full_inbox_is_backpressure_not_a_crash() {
    let cfg = ReactorConfig {
        cores: vec![flint_dataplane::placement::allowed_cores().unwrap()[0]],
        inbox_capacity: 4,
        ..ReactorConfig::default()
    };
    let set = ReactorSet::start(&cfg).unwrap();
    let (block_tx, block_rx) = mpsc::channel::<()>();
    set.send(0, move |_| {
        let _ = block_rx.recv_timeout(Duration::from_secs(10));
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let mut busy = 0;
    for _ in 0..16 {
        if let Err(Error::Busy { core: 0 }) = set.send(0, |_| ()) {
            busy += 1;
        }
    }
    assert!(busy >= 8, "a 4-slot inbox refused only {busy} of 16");
    block_tx.send(()).unwrap();
    let t0 = Instant::now();
    loop {
        match set.call(0, |_| 5) {
            Ok(v) => break assert_eq!(v, 5),
            Err(Error::Busy { .. }) if t0.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("the reactor did not recover: {e}"),
        }
    }
}

#[test]
fn counters_are_readable_while_running() {
    let set = common::reactors(1);
    for _ in 0..10 {
        set.call(0, |core| core.stats().add_ios(3)).unwrap();
    }
    let s = &set.stats()[0];
    assert_eq!(s.ios, 30);
    assert!(s.messages >= 10);
    assert!((0.0..=1.0).contains(&s.busy_ratio));
    // The loop's own counters are published as it goes round: on a busy
    // machine the first round may not have been published yet.
    let t0 = std::time::Instant::now();
    while set.stats()[0].polls == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "polls never counted");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A poller with work in flight that finishes one item per poll.
struct Slow {
    left: usize,
    stopped: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
}

impl Poller for Slow {
    fn poll(&mut self, _core: &mut Core) -> PollStatus {
        if self.left > 0 {
            self.left -= 1;
            if self.left == 0 {
                self.finished.fetch_add(1, Ordering::Relaxed);
            }
            return PollStatus::Busy;
        }
        PollStatus::Idle
    }
    fn in_flight(&self) -> usize {
        self.left
    }
    fn stop(&mut self, _core: &mut Core) {
        self.stopped.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn shutdown_drains_in_flight_work() {
    let set = common::reactors(2);
    let stopped = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    for i in 0..2 {
        let (s, f) = (stopped.clone(), finished.clone());
        set.call(i, move |core| {
            core.add_poller(Slow {
                left: 1_000_000,
                stopped: s,
                finished: f,
            })
        })
        .unwrap();
    }
    let reports = set.shutdown();
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|r| r.clean));
    assert_eq!(
        stopped.load(Ordering::Relaxed),
        2,
        "pollers were told to stop"
    );
    assert_eq!(
        finished.load(Ordering::Relaxed),
        2,
        "in-flight work finished first"
    );
}

#[test]
fn a_panicking_task_fails_its_reactor_only() {
    let set = common::reactors(2);
    let _ = set.send(0, |_| panic!("injected failure"));
    std::thread::sleep(Duration::from_millis(100));
    let err = set.call(0, |_| ()).unwrap_err();
    assert!(matches!(err, Error::Stopped { core: 0 }), "{err}");
    assert_eq!(set.call(1, |c| c.index()).unwrap(), 1);
    let reports = set.shutdown();
    assert!(!reports[0].clean && reports[1].clean);
}

#[test]
fn config_errors_name_the_key() {
    let cfg = ReactorConfig {
        cores: vec![4096],
        ..ReactorConfig::default()
    };
    let err = ReactorSet::start(&cfg).err().unwrap().to_string();
    assert!(
        err.contains("reactor.cores") && err.contains("4096"),
        "{err}"
    );
    let cfg: Result<ReactorConfig, _> = toml::from_str("poll_mode = \"busy\"\nspinn_us = 3");
    assert!(cfg.unwrap_err().to_string().contains("spinn_us"));
    let cfg: ReactorConfig = toml::from_str("poll_mode = \"busy\"\ncores = []").unwrap();
    assert_eq!(cfg.poll_mode, flint_dataplane::reactor::PollMode::Busy);
}
