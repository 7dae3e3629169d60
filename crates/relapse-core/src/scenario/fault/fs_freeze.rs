//! `fs_freeze`: FIFREEZE a file system until the revert; writers block, reads go on.

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use crate::scenario::check::Env;
use crate::scenario::load::{problem, Problem};
use crate::scenario::Template;

/// `fs_freeze`: freeze the file system mounted at `mount`.
#[derive(Debug, Clone, PartialEq)]
pub struct FsFreezeSpec {
    /// The mount's root (a template, e.g. `{scratch_fs.mail.path}`).
    pub mount: Template,
    /// Whether `mount` may be a file system relapse did not make.
    pub allow_foreign_mount: bool,
}

/// `fs_freeze = { mount, allow_foreign_mount }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FsFreezeSection {
    /// The root of the file system to freeze: a `[[scratch_fs]]` of the run
    /// (`"{scratch_fs.NAME.path}"`), or with `allow_foreign_mount`, of a mount of your own
    /// (never `/`); required.
    #[schemars(with = "String")]
    pub mount: Spanned<String>,
    /// Allow a mount relapse did not make (never `/`, nor the file system of relapse's
    /// journal, executable or working directory); default false.
    #[serde(default)]
    pub allow_foreign_mount: bool,
}

pub fn check(section: &Spanned<FsFreezeSection>, env: &Env) -> Result<FsFreezeSpec, Problem> {
    let fs = section.get_ref();
    let mount = fs.mount.get_ref();
    let names_scratch = env
        .scratch_fs
        .iter()
        .any(|s| mount.contains(&format!("{{scratch_fs.{}.path}}", s.name)));
    if !names_scratch && !fs.allow_foreign_mount {
        return problem(
            fs.mount.span(),
            format!(
                "fs_freeze freezes only a file system relapse made: expected mount = \"{{scratch_fs.NAME.path}}\" of a [[scratch_fs]]{}, or allow_foreign_mount = true for a mount of your own",
                if env.scratch_fs.is_empty() { " (the scenario declares none)" } else { "" }
            ),
        );
    }
    if !(names_scratch || mount.starts_with('/') || mount.starts_with('{')) {
        return problem(fs.mount.span(), "expected an absolute path, the root of a mount");
    }
    if mount.trim_end_matches('/').is_empty() {
        return problem(fs.mount.span(), "refusing to freeze the root file system");
    }
    Ok(FsFreezeSpec {
        mount: env.template(&fs.mount)?,
        allow_foreign_mount: fs.allow_foreign_mount,
    })
}

/// One small valid table of this kind, for the kind list's own test.
#[cfg(test)]
pub const EXAMPLE: &str = r#"fs_freeze = { mount = "/srv/mail", allow_foreign_mount = true }"#;
