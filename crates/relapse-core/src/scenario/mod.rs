//! Scenarios: the model of what a run does (`model`), and the loader that reads a scenario file
//! (`file`, its serde types), checks it section by section (`check`, and `fault` per fault
//! kind) and builds the model (`load`). Everything public is re-exported here.

mod check;
mod fault;
mod file;
mod load;
mod model;
pub mod target;
mod template;

pub use fault::exports::*;
pub use load::{load, load_allowing, parse, parse_allowing, ScenarioError};
pub use model::*;
pub use template::{Template, TemplateError, Vars, RUN_DIR_VARIABLE};

#[cfg(test)]
mod tests;
