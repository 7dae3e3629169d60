//! Template strings: `"{demo.url}/health"`. Variables name things only known once the run has
//! started (the demo's ports and pids, the sink's address), so they are checked at load time
//! and rendered at run time.

use std::collections::BTreeMap;

/// A string with `{variable}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(String);

/// Values of template variables.
#[derive(Debug, Clone, Default)]
pub struct Vars(BTreeMap<String, String>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("unclosed `{{` in \"{0}\": expected `{{variable}}`")]
    Unclosed(String),
    #[error("unknown template variable `{{{name}}}`: expected one of {known}")]
    Unknown { name: String, known: String },
    #[error("template variable `{{{0}}}` needs [target.demo] in the scenario")]
    NeedsDemo(String),
    #[error("template variable `{{{0}}}` needs the demo's standby: expected `failover = {{ … }}` in [target.demo]")]
    NeedsStandby(String),
}

/// The variables that the demo target provides. `demo.backend.*` and `demo.primary.*` are the
/// same process; `demo.frontend.log` is the frontend's event log (failover and backend state).
pub const DEMO_VARIABLES: [&str; 12] = [
    "demo.url",
    "demo.frontend.url",
    "demo.backend.url",
    "demo.backend.address",
    "demo.frontend.pid",
    "demo.backend.pid",
    "demo.primary.url",
    "demo.primary.address",
    "demo.primary.pid",
    "demo.frontend.log",
    "demo.mail_table",
    "demo.queue_table",
];

/// The variables of the demo's standby backend, which exists with `failover` only.
pub const STANDBY_VARIABLES: [&str; 3] = [
    "demo.standby.url",
    "demo.standby.address",
    "demo.standby.pid",
];

/// The variables that every run provides.
pub const RUN_VARIABLES: [&str; 1] = ["sink.url"];

/// The directory relapse makes for a run's `[[target.process]]` (their files and output).
pub const RUN_DIR_VARIABLE: &str = "run.dir";

impl Vars {
    /// Placeholder values for every variable a scenario may use; `with_demo` adds the demo's.
    pub fn known(with_demo: bool) -> Vars {
        let mut vars = Vars::default();
        for name in RUN_VARIABLES {
            vars.set(name, "");
        }
        if with_demo {
            for name in DEMO_VARIABLES {
                vars.set(name, "");
            }
        }
        vars
    }

    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(name.to_string(), value.into());
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Every variable and its value, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl Template {
    pub fn new(text: &str) -> Template {
        Template(text.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks that every variable is known, without rendering.
    pub fn check(&self, vars: &Vars) -> Result<(), TemplateError> {
        self.render(vars).map(|_| ())
    }

    pub fn render(&self, vars: &Vars) -> Result<String, TemplateError> {
        self.render_keeping(vars, |_| false)
    }

    /// Renders, leaving `{name}` as written where `keep(name)` holds: placeholders that a later
    /// stage fills in per use (a flood's `{seq}` or `{rand.u32}`).
    pub fn render_keeping(
        &self,
        vars: &Vars,
        keep: impl Fn(&str) -> bool,
    ) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(self.0.len());
        let mut rest = self.0.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| TemplateError::Unclosed(self.0.clone()))?;
            let name = after[..close].trim();
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None if keep(name) => {
                    out.push('{');
                    out.push_str(&after[..close]);
                    out.push('}');
                }
                None if DEMO_VARIABLES.contains(&name) => {
                    return Err(TemplateError::NeedsDemo(name.to_string()))
                }
                None if STANDBY_VARIABLES.contains(&name) => {
                    return Err(TemplateError::NeedsStandby(name.to_string()))
                }
                None => {
                    let known = self_or_defaults(vars)
                        .iter()
                        .map(|v| format!("{{{v}}}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(TemplateError::Unknown {
                        name: name.to_string(),
                        known,
                    });
                }
            }
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

impl Template {
    /// Checks a config template (see [`Template::render_config`]) without rendering.
    pub fn check_config(&self, vars: &Vars) -> Result<(), TemplateError> {
        self.render_config(vars).map(|_| ())
    }

    /// Renders a config file's text, where braces mostly belong to the config: only `{name}`
    /// with a variable's shape (lower-case words joined by `.`, no spaces, not after `$`) is a
    /// variable, and every other brace is kept as written — nginx's `server {`, PromQL's
    /// `up{job="x"}`, Go templates' `{{ $labels.instance }}`, a shell's `${HOME}`. A name of
    /// that shape that is not a variable is an error, so a misspelt one is caught.
    pub fn render_config(&self, vars: &Vars) -> Result<String, TemplateError> {
        let text = self.0.as_str();
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        let mut search = 0;
        while let Some(offset) = text[search..].find('{') {
            let open = search + offset;
            search = open + 1;
            if text[..open].ends_with('$') {
                continue;
            }
            let Some(len) = text[open + 1..].find('}') else {
                break;
            };
            let name = &text[open + 1..open + 1 + len];
            if !is_variable_shaped(name) {
                continue;
            }
            out.push_str(&text[copied..open]);
            out.push_str(&Template::new(&format!("{{{name}}}")).render(vars)?);
            copied = open + 1 + len + 1;
            search = copied;
        }
        out.push_str(&text[copied..]);
        Ok(out)
    }
}

/// `demo.url`, `port.web`, `process.nginx-1.pid`: lower-case words of a-z, 0-9, `_`, `-`,
/// joined by `.`, the first starting with a letter.
fn is_variable_shaped(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.split('.').all(|word| {
            !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        })
}

/// The names to suggest for an unknown variable: those defined (which include any
/// `db_proxy.NAME.*`), and the demo's even where the scenario has no demo.
fn self_or_defaults(vars: &Vars) -> Vec<String> {
    let mut names: Vec<String> = vars.0.keys().cloned().collect();
    for name in DEMO_VARIABLES
        .iter()
        .chain(STANDBY_VARIABLES.iter())
        .chain(RUN_VARIABLES.iter())
    {
        if !names.iter().any(|n| n == name) {
            names.push((*name).to_string());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_known_variables() {
        let mut vars = Vars::default();
        vars.set("demo.url", "http://127.0.0.1:4000");
        let t = Template::new("{demo.url}/health?x=1");
        assert_eq!(t.render(&vars).unwrap(), "http://127.0.0.1:4000/health?x=1");
        assert_eq!(Template::new("plain").render(&vars).unwrap(), "plain");
    }

    #[test]
    fn a_config_keeps_its_own_braces_and_renders_only_variables() {
        let mut vars = Vars::default();
        vars.set("port.web", "4100");
        vars.set("demo.url", "http://127.0.0.1:4000");
        let config = Template::new(
            "server {\n  listen 127.0.0.1:{port.web};\n  location / { proxy_pass {demo.url}; }\n}\n\
             expr: up{job=\"x\"} == 0\nsummary: \"{{ $labels.instance }} is down\"\n\
             path: ${HOME}/{port.web}{}\n{ port.web } {Port.web} {",
        );
        assert_eq!(
            config.render_config(&vars).unwrap(),
            "server {\n  listen 127.0.0.1:4100;\n  location / { proxy_pass http://127.0.0.1:4000; }\n}\n\
             expr: up{job=\"x\"} == 0\nsummary: \"{{ $labels.instance }} is down\"\n\
             path: ${HOME}/4100{}\n{ port.web } {Port.web} {"
        );
        // A name of a variable's shape that is no variable is a mistake, not config text.
        assert!(matches!(
            Template::new("listen {port.wbe};").check_config(&vars),
            Err(TemplateError::Unknown { name, .. }) if name == "port.wbe"
        ));
    }

    #[test]
    fn names_what_is_wrong() {
        let vars = Vars::known(false);
        assert_eq!(
            Template::new("{demo.url}/").check(&vars),
            Err(TemplateError::NeedsDemo("demo.url".into()))
        );
        assert!(matches!(
            Template::new("{nope}").check(&vars),
            Err(TemplateError::Unknown { .. })
        ));
        assert!(matches!(
            Template::new("{sink.url").check(&vars),
            Err(TemplateError::Unclosed(_))
        ));
        assert_eq!(Template::new("{sink.url}").check(&vars), Ok(()));
    }
}
