//! What relapse prints, as text: a person should see at a glance what happened, when, and
//! whether each gate held. Pure functions returning `String`; `main.rs` prints them.

use std::time::Duration;

mod cleanup;
mod compare;
mod flood;
pub mod html;
mod list;
mod run;
mod validate;

pub use cleanup::cleanup_report;
pub use compare::comparison;
pub use flood::flood_shards;
pub use list::list;
pub use run::{progress_line, spread, summary, verdict_line};
pub use validate::validated;

/// A duration for people: `850ms`, `1.273s`, `2m05s`.
pub fn human(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else if d.as_secs() < 120 {
        format!("{:.3}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

pub(crate) fn optional(d: Option<Duration>) -> String {
    d.map_or_else(|| "—".to_string(), human)
}

/// `s` unless there is exactly one.
pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_micros(2500)), "2.5ms");
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_millis(1273)), "1.273s");
        assert_eq!(human(Duration::from_secs(125)), "2m05s");
    }
}
