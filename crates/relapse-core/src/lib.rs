//! relapse-core: the scenario model, the engine, measurement, gates and the report model.
//!
//! This crate knows no protocol and no syscall: it schedules, observes, measures and judges.
//! Injectors implement [`fault::Fault`]; probes and detection sources implement
//! [`sense::Probe`] and [`sense::Detector`].

#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod compare;
pub mod duration;
pub mod engine;
pub mod fault;
pub mod gate;
pub mod measure;
pub mod report;
pub mod scenario;
pub mod sense;
