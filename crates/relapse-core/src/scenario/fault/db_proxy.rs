//! `db_proxy` (the fault): switch a `[[db_proxy]]` of the run out of pass-through.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use crate::scenario::check::{quoted_list, Env};
use crate::scenario::file::Dur;
use crate::scenario::load::{problem, Problem};
use crate::scenario::{
    DbErrorCode, DbProxyMode, DbServer, MYSQL_PROXY_ERRORS, POSTGRES_PROXY_ERRORS,
};

/// `db_proxy`: switch a `[[db_proxy]]` of the run to a mode.
#[derive(Debug, Clone, PartialEq)]
pub struct DbProxyFaultSpec {
    /// Index into `Scenario::db_proxies`.
    pub proxy: usize,
    pub mode: DbProxyMode,
}

/// `db_proxy = { proxy, mode, … }`: the proxy and a mode, with the settings of that mode only.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DbProxyFaultSection {
    /// The `[[db_proxy]]` to switch, by name; required.
    #[schemars(with = "String")]
    pub proxy: Spanned<String>,
    /// `"stall"`, `"stall_writes"`, `"latency"`, `"error"`, `"reset"` or `"refuse_new"`;
    /// required.
    #[schemars(
        with = "String",
        extend("enum" = ["stall", "stall_writes", "latency", "error", "reset", "refuse_new"])
    )]
    pub mode: Spanned<String>,
    /// With mode `"latency"`, required there: how much later each client message is forwarded.
    pub latency: Option<Dur>,
    /// With mode `"latency"`: a uniform jitter, at most `latency`; default 0.
    pub jitter: Option<Dur>,
    /// With mode `"error"`, required there: the error each statement is answered with, for the
    /// proxy's server.
    #[schemars(with = "Option<ErrorCodeValue>")]
    pub error: Option<Spanned<ErrorCodeValue>>,
}

/// A database error: a PostgreSQL SQLSTATE (`"55P03"`) or a MySQL error number (`1205`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ErrorCodeValue {
    Number(i64),
    Text(String),
}

/// By hand, to list the codes: a number or a string (a SQLSTATE in any case) of either server;
/// which server's codes apply is the loader's check, by the proxy's server.
impl JsonSchema for ErrorCodeValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DbErrorCode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let numbers: Vec<i64> = MYSQL_PROXY_ERRORS
            .iter()
            .map(|code| code.parse().expect("MySQL error codes are numbers"))
            .collect();
        let texts: Vec<String> = POSTGRES_PROXY_ERRORS
            .iter()
            .chain(&MYSQL_PROXY_ERRORS)
            .map(|code| {
                code.chars()
                    .map(|c| match c {
                        c if c.is_ascii_alphabetic() => {
                            format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
                        }
                        c => c.to_string(),
                    })
                    .collect()
            })
            .collect();
        schemars::json_schema!({
            "description": "PostgreSQL: \"55P03\" (lock_not_available), \"40P01\" (deadlock_detected), \"57014\" (query_canceled); MySQL: 1205 (lock wait timeout), 1213 (deadlock), 1317 (query interrupted).",
            "anyOf": [
                { "type": "integer", "enum": numbers },
                { "type": "string", "pattern": format!("^(?:{})$", texts.join("|")) }
            ]
        })
    }
}

/// Which proxy, and a mode whose settings fit it.
pub fn check(spanned: &Spanned<DbProxyFaultSection>, env: &Env) -> Result<DbProxyFaultSpec, Problem> {
    let proxies = env.db_proxies;
    let span = spanned.span();
    let dp = spanned.get_ref();
    let Some(proxy) = proxies.iter().position(|p| &p.name == dp.proxy.get_ref()) else {
        return problem(
            dp.proxy.span(),
            if proxies.is_empty() {
                format!(
                    "unknown db_proxy \"{}\": the scenario declares no [[db_proxy]]",
                    dp.proxy.get_ref()
                )
            } else {
                format!(
                    "unknown db_proxy \"{}\": expected one of {}",
                    dp.proxy.get_ref(),
                    quoted_list(proxies.iter().map(|p| p.name.as_str()))
                )
            },
        );
    };
    let mode_name = dp.mode.get_ref().as_str();
    let settings_for = |wanted: &str| -> Result<(), Problem> {
        let given = [
            ("latency", dp.latency.is_some()),
            ("jitter", dp.jitter.is_some()),
            ("error", dp.error.is_some()),
        ];
        match given
            .iter()
            .find(|(key, set)| *set && !wanted.contains(key))
        {
            Some((key, _)) => problem(
                span.clone(),
                format!("`{key}` does not apply to mode \"{mode_name}\""),
            ),
            None => Ok(()),
        }
    };
    let mode = match mode_name {
        "stall" => DbProxyMode::Stall,
        "stall_writes" => DbProxyMode::StallWrites,
        "reset" => DbProxyMode::Reset,
        "refuse_new" => DbProxyMode::RefuseNew,
        "latency" => {
            settings_for("latency jitter")?;
            let Some(latency) = dp.latency else {
                return problem(span, "mode \"latency\" needs `latency`, e.g. latency = \"200ms\"");
            };
            let jitter = dp.jitter.map_or(Duration::ZERO, |d| d.0);
            if jitter > latency.0 {
                return problem(span, "`jitter` must not exceed `latency`");
            }
            DbProxyMode::Latency { latency: latency.0, jitter }
        }
        "error" => {
            settings_for("error")?;
            let Some(code) = &dp.error else {
                return problem(span, "mode \"error\" needs `error`: a SQLSTATE such as \"55P03\" or a MySQL error number such as 1205");
            };
            let text = match code.get_ref() {
                ErrorCodeValue::Number(n) => n.to_string(),
                ErrorCodeValue::Text(t) => t.to_ascii_uppercase(),
            };
            let allowed: &[&str] = match proxies[proxy].server {
                DbServer::Postgres => &POSTGRES_PROXY_ERRORS,
                DbServer::Mysql => &MYSQL_PROXY_ERRORS,
            };
            let Some(parsed) = DbErrorCode::parse(proxies[proxy].server, &text) else {
                return problem(code.span(), format!("unknown error {text} for a {} proxy: expected one of {}", match proxies[proxy].server { DbServer::Postgres => "postgres", DbServer::Mysql => "mysql" }, allowed.join(", ")));
            };
            DbProxyMode::Error { code: parsed }
        }
        other => {
            return problem(
                dp.mode.span(),
                format!("unknown db_proxy mode \"{other}\": expected \"stall\", \"stall_writes\", \"latency\", \"error\", \"reset\" or \"refuse_new\""),
            )
        }
    };
    if !matches!(
        mode,
        DbProxyMode::Latency { .. } | DbProxyMode::Error { .. }
    ) {
        settings_for("")?;
    }
    Ok(DbProxyFaultSpec { proxy, mode })
}

/// One small valid table of this kind, for the kind list's own test.
#[cfg(test)]
pub const EXAMPLE: &str = r#"db_proxy = { proxy = "db", mode = "stall" }"#;
