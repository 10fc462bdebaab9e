//! Sluice: a stream processor whose pipelines are YAML or TOML spec files.
//!
//! The library is what the `sluice` binary is made of: [`spec`] reads and validates spec
//! files, [`connectors`] and [`operators`] hold the components a spec names, [`plan`] turns a
//! validated spec into the physical graph, [`runtime`] runs it with keyed [`state`], and
//! [`checkpoint`] stores what a restarted job resumes from; [`diagnostics`] reports problems
//! with their location.

pub mod checkpoint;
pub mod connectors;
pub mod diagnostics;
pub mod operators;
pub mod plan;
pub mod runtime;
pub mod spec;
pub mod state;
pub mod testing;
