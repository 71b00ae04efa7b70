//! Per-phase timing of one training step ([`crate::step::train_step_marked`] calls a marker at
//! the end of each [`Phase`]).
//!
//! [`PhaseTimer`] records, at every mark, the host clock and, on a CUDA device (feature
//! `cuda`), a timing event on the device's stream. The events add no synchronisation inside the
//! step: [`PhaseTimer::finish`] waits once for the last event and reads the device time between
//! consecutive events, so each phase's figure is the stream's time from the end of the previous
//! phase's work to the end of its own (including any time the device sat idle waiting for the
//! host to queue that work). On the CPU, where every op runs before it returns, the host clock
//! is the phase time.

use std::time::Instant;

use candle_core::Device;

use crate::error::Result;

/// One phase of a training step, in step order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// The batch copied from the host (done by the caller, before the step proper).
    DataToDevice,
    /// The master encoder on the query view (both views with a symmetric loss).
    QueryForward,
    /// The momentum encoder on the key view (shuffled BN included).
    KeyForward,
    /// The contrastive loss (and its read-back when the step reads it).
    Loss,
    /// Backpropagation into the master encoder.
    Backward,
    /// The optimizer update (the gradient norm when clipping or logging needs it).
    Optimizer,
    /// The momentum update of the key encoder.
    Momentum,
    /// The keys pushed into the queue.
    Enqueue,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::DataToDevice,
        Phase::QueryForward,
        Phase::KeyForward,
        Phase::Loss,
        Phase::Backward,
        Phase::Optimizer,
        Phase::Momentum,
        Phase::Enqueue,
    ];

    /// The name used in JSON reports, e.g. `query_forward`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::DataToDevice => "data_to_device",
            Phase::QueryForward => "query_forward",
            Phase::KeyForward => "key_forward",
            Phase::Loss => "loss",
            Phase::Backward => "backward",
            Phase::Optimizer => "optimizer",
            Phase::Momentum => "momentum",
            Phase::Enqueue => "enqueue",
        }
    }
}

/// Milliseconds per phase of one timed step, summed when a phase occurs more than once (the
/// symmetric loss), in [`Phase`] order; phases that did not occur are absent.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseTimes {
    /// Device time from CUDA events, or the host clock on the CPU ([`PhaseTimes::clock`]).
    pub device_ms: Vec<(Phase, f64)>,
    /// Host time spent issuing each phase (on CUDA: queueing work, plus any read-back).
    pub host_ms: Vec<(Phase, f64)>,
    /// `"cuda-events"` or `"host"`.
    pub clock: &'static str,
}

impl PhaseTimes {
    /// Sum over the phases of [`PhaseTimes::device_ms`].
    pub fn device_total_ms(&self) -> f64 {
        self.device_ms.iter().map(|(_, ms)| ms).sum()
    }
}

/// See the module docs. Use: [`PhaseTimer::start`], a [`PhaseTimer::mark`] at the end of each
/// phase, then [`PhaseTimer::finish`]; the timer can be started again afterwards.
pub struct PhaseTimer {
    marks: Vec<(Phase, Instant)>,
    start: Option<Instant>,
    #[cfg(feature = "cuda")]
    cuda: Option<cuda::Events>,
}

impl PhaseTimer {
    /// A timer for work on `dev`: CUDA events on a CUDA device (feature `cuda`), else the host
    /// clock.
    pub fn new(dev: &Device) -> Result<Self> {
        #[cfg(feature = "cuda")]
        let cuda = cuda::Events::new(dev)?;
        #[cfg(not(feature = "cuda"))]
        let _ = dev;
        Ok(Self {
            marks: Vec::new(),
            start: None,
            #[cfg(feature = "cuda")]
            cuda,
        })
    }

    /// Which clock the device figures come from: `"cuda-events"` or `"host"`.
    pub fn clock(&self) -> &'static str {
        #[cfg(feature = "cuda")]
        if self.cuda.is_some() {
            return "cuda-events";
        }
        "host"
    }

    /// Starts a step: forgets earlier marks and records the starting point.
    pub fn start(&mut self) -> Result<()> {
        self.marks.clear();
        #[cfg(feature = "cuda")]
        if let Some(c) = &mut self.cuda {
            c.record(0)?;
        }
        self.start = Some(Instant::now());
        Ok(())
    }

    /// Marks the end of `phase` (the work queued since the previous mark belongs to it).
    pub fn mark(&mut self, phase: Phase) -> Result<()> {
        if self.start.is_none() {
            return Err(crate::Error::PhaseTimer {
                reason: format!("mark({}) before start", phase.name()),
            });
        }
        #[cfg(feature = "cuda")]
        if let Some(c) = &mut self.cuda {
            c.record(self.marks.len() + 1)?;
        }
        self.marks.push((phase, Instant::now()));
        Ok(())
    }

    /// Waits for the marked work (one synchronisation on CUDA) and returns the phase times.
    pub fn finish(&mut self) -> Result<PhaseTimes> {
        let start = self.start.take().ok_or_else(|| crate::Error::PhaseTimer {
            reason: "finish before start".to_string(),
        })?;
        let mut host = Vec::with_capacity(self.marks.len());
        let mut prev = start;
        for &(p, t) in &self.marks {
            host.push((p, t.duration_since(prev).as_secs_f64() * 1e3));
            prev = t;
        }
        #[cfg(feature = "cuda")]
        if let Some(c) = &self.cuda {
            let device: Vec<(Phase, f64)> = self
                .marks
                .iter()
                .enumerate()
                .map(|(i, (p, _))| Ok((*p, c.elapsed_ms(i, i + 1)?)))
                .collect::<Result<_>>()?;
            return Ok(PhaseTimes {
                device_ms: merge(&device),
                host_ms: merge(&host),
                clock: "cuda-events",
            });
        }
        let host = merge(&host);
        Ok(PhaseTimes {
            device_ms: host.clone(),
            host_ms: host,
            clock: "host",
        })
    }
}

/// Sums the times of each phase, in [`Phase`] order.
fn merge(laps: &[(Phase, f64)]) -> Vec<(Phase, f64)> {
    let mut out: Vec<(Phase, f64)> = Vec::new();
    for p in Phase::ALL {
        let mut seen = false;
        let mut sum = 0.0;
        for (q, ms) in laps {
            if *q == p {
                seen = true;
                sum += ms;
            }
        }
        if seen {
            out.push((p, sum));
        }
    }
    out
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::Arc;

    use candle_core::Device;
    use candle_core::cuda_backend::cudarc::driver::{CudaEvent, CudaStream, sys};

    use crate::error::Result;

    fn err(e: impl std::fmt::Debug) -> crate::Error {
        crate::Error::PhaseTimer {
            reason: format!("CUDA event: {e:?}"),
        }
    }

    /// Timing events on the device's stream, created once and re-recorded every step.
    pub(super) struct Events {
        stream: Arc<CudaStream>,
        events: Vec<CudaEvent>,
    }

    impl Events {
        pub(super) fn new(dev: &Device) -> Result<Option<Self>> {
            let Device::Cuda(d) = dev else {
                return Ok(None);
            };
            Ok(Some(Self {
                stream: d.cuda_stream(),
                events: Vec::new(),
            }))
        }

        /// Records event `i` (created on first use) on the stream.
        pub(super) fn record(&mut self, i: usize) -> Result<()> {
            while self.events.len() <= i {
                let e = self
                    .stream
                    .context()
                    .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                    .map_err(err)?;
                self.events.push(e);
            }
            self.events[i].record(&self.stream).map_err(err)
        }

        /// Device milliseconds from event `a` to event `b` (waits for both).
        pub(super) fn elapsed_ms(&self, a: usize, b: usize) -> Result<f64> {
            let ms = self.events[a].elapsed_ms(&self.events[b]).map_err(err)?;
            Ok(f64::from(ms))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_timer_reports_every_marked_phase_in_step_order_and_sums_repeats() {
        let mut t = PhaseTimer::new(&Device::Cpu).unwrap();
        assert_eq!(t.clock(), "host");
        t.start().unwrap();
        for p in [
            Phase::QueryForward,
            Phase::KeyForward,
            Phase::Loss,
            Phase::QueryForward,
            Phase::KeyForward,
            Phase::Loss,
            Phase::Backward,
        ] {
            t.mark(p).unwrap();
        }
        let r = t.finish().unwrap();
        let phases: Vec<Phase> = r.device_ms.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            phases,
            [
                Phase::QueryForward,
                Phase::KeyForward,
                Phase::Loss,
                Phase::Backward
            ]
        );
        assert_eq!(r.device_ms, r.host_ms);
        assert!(
            r.device_ms
                .iter()
                .all(|(_, ms)| *ms >= 0.0 && ms.is_finite())
        );
        assert_eq!(r.clock, "host");
        // Restartable; a second step without marks reports nothing.
        t.start().unwrap();
        assert!(t.finish().unwrap().device_ms.is_empty());
    }

    #[test]
    fn marks_outside_a_started_step_are_errors() {
        let mut t = PhaseTimer::new(&Device::Cpu).unwrap();
        assert!(t.mark(Phase::Loss).is_err());
        assert!(t.finish().is_err());
        t.start().unwrap();
        t.finish().unwrap();
        assert!(t.finish().is_err());
    }

    #[test]
    fn merge_sums_by_phase_in_phase_order() {
        let laps = [
            (Phase::Loss, 1.0),
            (Phase::QueryForward, 2.0),
            (Phase::Loss, 0.5),
        ];
        assert_eq!(
            merge(&laps),
            vec![(Phase::QueryForward, 2.0), (Phase::Loss, 1.5)]
        );
        let times = PhaseTimes {
            device_ms: merge(&laps),
            host_ms: vec![],
            clock: "host",
        };
        assert_eq!(times.device_total_ms(), 3.5);
    }

    #[test]
    fn phase_names_are_distinct_snake_case() {
        let names: std::collections::BTreeSet<&str> = Phase::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names.len(), Phase::ALL.len());
        assert!(
            names
                .iter()
                .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
    }
}
