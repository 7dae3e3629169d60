//! The demo target of a run: its own network namespace when it asks for one, its database's
//! tables (journaled before they exist), its options from the scenario, and the variables
//! (`{demo.url}`, `{demo.primary.pid}`, …) that what runs after it may name.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use relapse_core::fault::RevertInstructions;
use relapse_core::scenario::{DemoHostKind, DemoTarget, Vars};
use relapse_demo::{Demo, DemoHost, DemoOptions, Launcher, MonitorOptions};
use relapse_ports::netns::{Host, NetnsRecord};

use super::{Harness, StartFailure, DEMO_TABLES};
use crate::reach::{dsn_host, reachable, render};

impl Harness {
    /// The demo target: its own host if it asks for one, its database's tables journaled, its
    /// variables (`{demo.…}`) set once it serves.
    pub(super) async fn start_demo(
        &mut self,
        target: &DemoTarget,
        launcher: &Launcher,
        upstream: &Vars,
        allowed: &[String],
    ) -> Result<(), StartFailure> {
        if target.host == DemoHostKind::Netns {
            self.start_host()?;
        }
        let database = match &target.database {
            None => None,
            Some(db) => Some(self.demo_database(db, upstream, allowed)?),
        };
        let mailstore = match &target.mailstore {
            None => None,
            Some(path) => {
                Some(PathBuf::from(render(path, &self.vars).map_err(|e| {
                    StartFailure::Invalid(format!("demo mailstore: {e}"))
                })?))
            }
        };
        let mut options = self.demo_options(target, launcher, database);
        options.mailstore = mailstore;
        options.event_log = Some(self.event_log()?);
        let demo = Demo::start(options)
            .await
            .map_err(|e| StartFailure::Harness(format!("demo target: {e}")))?;
        set_demo_vars(&mut self.vars, &demo);
        self.demo = Some(demo);
        Ok(())
    }

    /// The demo frontend's event log (its backends' state and its switches), `{demo.frontend.log}`:
    /// in the run's directory, which goes when the run does; emptied for each run of a repeat.
    fn event_log(&self) -> Result<PathBuf, StartFailure> {
        let dir = self.run_dir();
        let path = dir.join("demo-frontend.log");
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, b""))
            .map_err(|e| {
                StartFailure::Harness(format!("demo event log {}: {e}", path.display()))
            })?;
        Ok(path)
    }

    /// The demo's own host: a namespace journaled before it exists, so a crash of relapse
    /// leaves nothing for `cleanup` to miss.
    fn start_host(&mut self) -> Result<(), StartFailure> {
        static HOSTS: AtomicU32 = AtomicU32::new(0);
        let n = HOSTS.fetch_add(1, Ordering::SeqCst);
        let name = format!("relapse-{}-{n}", std::process::id());
        let description = format!("network namespace {name}");
        let record = NetnsRecord { name: name.clone() };
        let entry =
            self.journal_record("demo host", &description, RevertInstructions::new(&record))?;
        let seed = std::process::id().wrapping_mul(131).wrapping_add(n);
        match Host::create(&name, seed) {
            Ok(host) => {
                self.host = Some((host, entry));
                Ok(())
            }
            Err(e) => {
                // `create` removes what it made on failure; nothing is left to revert.
                self.forget(entry);
                Err(StartFailure::Harness(format!("demo host: {e}")))
            }
        }
    }

    /// The demo's database settings, its DSN rendered (it may name a proxy of the run) and
    /// checked; its tables journaled before the demo creates them.
    fn demo_database(
        &mut self,
        db: &relapse_core::scenario::DemoDatabaseSpec,
        upstream: &Vars,
        allowed: &[String],
    ) -> Result<relapse_demo::DemoDatabase, StartFailure> {
        let invalid = |e: String| StartFailure::Invalid(format!("demo database: {e}"));
        let dsn = render(&db.dsn, &self.vars).map_err(invalid)?;
        reachable(dsn_host(&dsn), allowed).map_err(invalid)?;
        // The guardian drops the tables after a crash, when the proxies are gone with relapse:
        // it must reach the server itself.
        let server_dsn = render(&db.dsn, upstream).map_err(invalid)?;
        let profile = if db.misleading_errors {
            relapse_demo::ErrorProfile::MisleadingErrors
        } else {
            relapse_demo::ErrorProfile::Honest
        };
        let as_dsn = |text: String| match db.server {
            relapse_core::scenario::DbServer::Postgres => relapse_demo::DatabaseDsn::Postgres(text),
            relapse_core::scenario::DbServer::Mysql => relapse_demo::DatabaseDsn::Mysql(text),
        };
        let database = relapse_demo::DemoDatabase::new(as_dsn(dsn), profile);
        let record = relapse_demo::DemoTablesRecord::new(&as_dsn(server_dsn), &database.tables);
        let description = format!(
            "demo tables {}, {} on {}",
            record.mail, record.queue, record.server
        );
        let entry = self.journal_record(
            "demo tables",
            &description,
            RevertInstructions::for_kind(DEMO_TABLES, &record),
        )?;
        self.tables = Some((record, entry));
        Ok(database)
    }

    fn demo_options(
        &self,
        target: &DemoTarget,
        launcher: &Launcher,
        database: Option<relapse_demo::DemoDatabase>,
    ) -> DemoOptions {
        let monitor = MonitorOptions {
            interval: target.monitor.interval,
            timeout: target.monitor.timeout,
            fall: target.monitor.fall,
            rise: target.monitor.rise,
            alertname: target.monitor.alertname.clone(),
            sink_url: self.sink.as_ref().map(|(sink, _)| sink.url()),
        };
        let host = self.host.as_ref().map(|(h, _)| {
            let mut args: Vec<std::ffi::OsString> = vec![
                "netns".into(),
                "exec".into(),
                h.name().into(),
                launcher.program.clone().into(),
            ];
            args.extend(launcher.args.iter().cloned());
            DemoHost {
                frontend_launcher: Launcher {
                    program: "ip".into(),
                    args,
                },
                frontend_address: h.inside.into(),
                backend_address: h.outside.into(),
            }
        });
        DemoOptions {
            upstream_timeout: target.upstream_timeout,
            monitor: Some(monitor),
            launcher: launcher.clone(),
            host,
            database,
            mailstore: None,
            event_log: None,
            failover: target
                .failover
                .as_ref()
                .map(|f| relapse_demo::FailoverOptions {
                    inter: f.inter,
                    timeout: f.timeout,
                    fall: f.fall,
                    rise: f.rise,
                    failback: f.failback,
                }),
            jobs: target.jobs.as_ref().map(|j| relapse_demo::JobOptions {
                per_request: j.per_request,
                work: j.work,
                max_queue: j.max_queue,
            }),
            auth: target.auth.as_ref().map(|a| relapse_demo::DemoAuth {
                mitigation: a.mitigation,
                max_failures: a.max_failures,
                window: a.window,
                ban: a.ban,
            }),
        }
    }
}

fn set_demo_vars(vars: &mut Vars, demo: &Demo) {
    vars.set("demo.url", demo.frontend_url());
    vars.set("demo.frontend.url", demo.frontend_url());
    vars.set("demo.frontend.pid", demo.frontend_pid().to_string());
    vars.set(
        "demo.frontend.log",
        demo.event_log()
            .map_or(String::new(), |path| path.display().to_string()),
    );
    // `backend` is the name from before the demo had a standby; both name the primary.
    for role in ["backend", "primary"] {
        set_backend_vars(vars, role, demo.primary_url(), demo.primary_pid());
    }
    if let (Some(url), Some(pid)) = (demo.standby_url(), demo.standby_pid()) {
        set_backend_vars(vars, "standby", url, pid);
    }
    let tables = demo.database_tables();
    vars.set(
        "demo.mail_table",
        tables.as_ref().map_or(String::new(), |t| t.mail.clone()),
    );
    vars.set(
        "demo.queue_table",
        tables.as_ref().map_or(String::new(), |t| t.queue.clone()),
    );
}

/// `{demo.ROLE.url}`, `{demo.ROLE.address}` and `{demo.ROLE.pid}` of one backend.
fn set_backend_vars(vars: &mut Vars, role: &str, url: &str, pid: u32) {
    vars.set(&format!("demo.{role}.url"), url);
    vars.set(
        &format!("demo.{role}.address"),
        url.trim_start_matches("http://"),
    );
    vars.set(&format!("demo.{role}.pid"), pid.to_string());
}
