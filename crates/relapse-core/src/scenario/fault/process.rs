//! The target process of `process_freeze` and `fd_exhaustion`.

use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

use crate::scenario::load::{problem, Problem};
use crate::scenario::{DemoComponent, DemoTarget, ProcessTarget};

/// Exactly one of `pid`, `pidfile`, `demo`. `kind` names the fault in messages, `verb` says what
/// it does to the process ("freeze"). `demo = "standby"` needs the demo's failover.
pub fn target(
    span: Range<usize>,
    pid: Option<u32>,
    pidfile: &Option<String>,
    demo_component: &Option<Spanned<String>>,
    demo: Option<&DemoTarget>,
    kind: &str,
    verb: &str,
) -> Result<ProcessTarget, Problem> {
    match (pid, pidfile, demo_component) {
        (Some(pid), None, None) => {
            if pid <= 1 {
                return problem(span, format!("refusing to {verb} pid 0 or 1"));
            }
            Ok(ProcessTarget::Pid(pid))
        }
        (None, Some(file), None) => Ok(ProcessTarget::Pidfile(PathBuf::from(file))),
        (None, None, Some(component)) => {
            let Some(demo) = demo else {
                return problem(
                    component.span(),
                    "`demo` names a demo component but the scenario has no [target.demo]",
                );
            };
            match component.get_ref().as_str() {
                "backend" | "primary" => Ok(ProcessTarget::Demo(DemoComponent::Primary)),
                "standby" if demo.failover.is_some() => {
                    Ok(ProcessTarget::Demo(DemoComponent::Standby))
                }
                "standby" => problem(
                    component.span(),
                    "the demo has no standby: expected `failover = { … }` in [target.demo]",
                ),
                "frontend" => Ok(ProcessTarget::Demo(DemoComponent::Frontend)),
                other => problem(
                    component.span(),
                    format!(
                        "unknown demo component \"{other}\": expected \"backend\" (or \"primary\"), \"standby\" or \"frontend\""
                    ),
                ),
            }
        }
        _ => problem(
            span,
            format!("{kind} needs exactly one target: expected one of `pid`, `pidfile`, `demo`"),
        ),
    }
}
