//! The child command line's parsing.

use super::*;

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn parses_backend_args() {
    let args = parse(&strings(&["backend", "--listen", "127.0.0.1:0"])).unwrap();
    assert_eq!(
        args,
        ChildArgs::Backend {
            listen: "127.0.0.1:0".parse().unwrap(),
            mailstore: None,
        }
    );
}

#[test]
fn parses_and_checks_the_mailstore_flags() {
    let backend = |extra: &[&str]| {
        let mut args = strings(&["backend", "--listen", "127.0.0.1:0"]);
        args.extend(strings(extra));
        parse(&args).map(|args| match args {
            ChildArgs::Backend { mailstore, .. } => mailstore,
            ChildArgs::Frontend { .. } => unreachable!("parsed a backend"),
        })
    };
    assert_eq!(
        backend(&["--mailstore", "/srv/mail"]).unwrap(),
        Some(("/srv/mail".into(), DEFAULT_DEEP_CHECK_TIMEOUT))
    );
    assert_eq!(
        backend(&["--deep-check-timeout-ms", "900", "--mailstore", "/srv/mail"]).unwrap(),
        Some(("/srv/mail".into(), Duration::from_millis(900)))
    );
    let error = |extra: &[&str]| backend(extra).unwrap_err().to_string();
    assert!(error(&["--deep-check-timeout-ms", "900"]).contains("needs --mailstore"));
    assert!(error(&["--mailstore", ""]).contains("needs a directory"));
    assert!(error(&["--mailstore"]).contains("needs a value"));
    for bad in ["0", "-1", "soon"] {
        let message = error(&["--mailstore", "/m", "--deep-check-timeout-ms", bad]);
        assert!(
            message.contains("bad --deep-check-timeout-ms"),
            "{bad:?}: {message}"
        );
    }
    // The frontend has no mail store, the backend no deep-health proxy.
    let frontend = frontend_with;
    assert!(frontend(&["--mailstore", "/srv/mail"]).is_err());
    assert!(matches!(
        frontend(&["--deep-health"]).unwrap(),
        ChildArgs::Frontend {
            deep_health: true,
            ..
        }
    ));
    assert!(backend(&["--deep-health"]).is_err());
}

#[test]
fn parses_frontend_args() {
    let args = parse(&strings(&[
        "frontend",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "http://127.0.0.1:9",
        "--upstream-timeout-ms",
        "250",
    ]))
    .unwrap();
    assert_eq!(
        args,
        ChildArgs::Frontend {
            listen: "127.0.0.1:0".parse().unwrap(),
            backend: "http://127.0.0.1:9".into(),
            upstream_timeout: Duration::from_millis(250),
            fresh_upstream: false,
            database: None,
            misleading_errors: false,
            auth: None,
            deep_health: false,
            failover: None,
            jobs: None,
            event_log: None,
        }
    );
    let args = parse(&strings(&[
        "frontend",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "http://127.0.0.1:9",
        "--upstream-timeout-ms",
        "250",
        "--postgres-dsn",
        "host=127.0.0.1 user=postgres dbname=test",
        "--mail-table",
        "relapse_demo_1_mail",
        "--queue-table",
        "relapse_demo_1_queue",
        "--misleading-errors",
    ]))
    .unwrap();
    assert!(matches!(
        args,
        ChildArgs::Frontend {
            database: Some((DatabaseDsn::Postgres(_), DemoTables { ref mail, ref queue })),
            misleading_errors: true,
            ..
        } if mail == "relapse_demo_1_mail" && queue == "relapse_demo_1_queue"
    ));
    let args = parse(&strings(&[
        "frontend",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "http://127.0.0.1:9",
        "--upstream-timeout-ms",
        "250",
        "--postgres-dsn",
        "host=127.0.0.1 user=postgres dbname=test",
        "--mail-table",
        "relapse_demo_1_mail",
        "--queue-table",
        "relapse_demo_1_queue",
    ]))
    .unwrap();
    assert!(matches!(
        args,
        ChildArgs::Frontend {
            database: Some((DatabaseDsn::Postgres(_), _)),
            misleading_errors: false,
            ..
        }
    ));
    let args = parse(&strings(&[
        "frontend",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "http://127.0.0.1:9",
        "--upstream-timeout-ms",
        "250",
        "--mysql-url",
        "mysql://root@127.0.0.1:3306/test",
        "--mail-table",
        "relapse_demo_1_mail",
        "--queue-table",
        "relapse_demo_1_queue",
    ]))
    .unwrap();
    assert!(matches!(
        args,
        ChildArgs::Frontend {
            database: Some((DatabaseDsn::Mysql(ref url), _)),
            misleading_errors: false,
            ..
        } if url == "mysql://root@127.0.0.1:3306/test"
    ));
}

#[test]
fn rejects_a_bad_or_second_database() {
    let frontend = frontend_with;
    assert!(frontend(&["--mysql-url", "postgres://127.0.0.1/test"]).is_err());
    assert!(frontend(&[
        "--mysql-url",
        "mysql://root@127.0.0.1:3306/test",
        "--postgres-dsn",
        "host=127.0.0.1 user=postgres dbname=test",
    ])
    .is_err());
    assert!(frontend(&[
        "--mysql-url",
        "mysql://root@127.0.0.1:3306/test",
        "--mysql-url",
        "mysql://root@127.0.0.1:3306/test",
    ])
    .is_err());
    assert!(frontend(&["--misleading-errors"]).is_err());
}

#[test]
fn a_database_needs_both_valid_table_names_and_they_need_a_database() {
    let frontend = |extra: &[&str]| {
        frontend_with(extra)
            .map(|_| ())
            .map_err(|error| error.to_string())
    };
    let url = ["--mysql-url", "mysql://root@127.0.0.1:3306/test"];
    let mail = ["--mail-table", "relapse_demo_1_mail"];
    let queue = ["--queue-table", "relapse_demo_1_queue"];
    assert_eq!(frontend(&[&url[..], &mail, &queue].concat()), Ok(()));
    for missing in [
        &[&url[..], &mail].concat(),
        &[&url[..], &queue].concat(),
        &url[..],
    ] {
        let error = frontend(missing).unwrap_err();
        assert!(
            error.contains("needs --mail-table and --queue-table"),
            "{error}"
        );
    }
    let error = frontend(&[&mail[..], &queue].concat()).unwrap_err();
    assert!(
        error.contains("need --postgres-dsn or --mysql-url"),
        "{error}"
    );
    for bad in [
        "users",
        "relapse_demo_x; DROP TABLE users",
        "relapse_demo_X_mail",
        "relapse_demo_",
    ] {
        let error = frontend(&[&url[..], &["--mail-table", bad], &queue].concat()).unwrap_err();
        assert!(error.contains("bad --mail-table"), "{bad:?}: {error}");
    }
    let same = ["--queue-table", "relapse_demo_1_mail"];
    let error = frontend(&[&url[..], &mail, &same].concat()).unwrap_err();
    assert!(error.contains("must differ"), "{error}");
}

#[test]
fn parses_and_checks_the_login_flags() {
    let frontend = |extra: &[&str]| {
        frontend_with(extra).map(|args| match args {
            ChildArgs::Frontend { auth, .. } => auth,
            ChildArgs::Backend { .. } => unreachable!("parsed a frontend"),
        })
    };
    let defaults = LimiterConfig {
        max_failures: 3,
        window: Duration::from_secs(10),
        ban: Duration::from_secs(30),
    };
    assert_eq!(frontend(&[]).unwrap(), None);
    assert_eq!(frontend(&["--auth"]).unwrap(), Some(Some(defaults)));
    assert_eq!(
        frontend(&["--auth", "--no-mitigation"]).unwrap(),
        Some(None)
    );
    assert_eq!(
        frontend(&[
            "--auth-ban-ms",
            "500",
            "--auth",
            "--auth-max-failures",
            "5",
            "--auth-window-ms",
            "2000",
        ])
        .unwrap(),
        Some(Some(LimiterConfig {
            max_failures: 5,
            window: Duration::from_secs(2),
            ban: Duration::from_millis(500),
        }))
    );
    let error = |extra: &[&str]| frontend(extra).unwrap_err().to_string();
    assert!(error(&["--no-mitigation"]).contains("needs --auth"));
    assert!(error(&["--auth-ban-ms", "5"]).contains("--auth-ban-ms needs --auth"));
    assert!(
        error(&["--auth", "--no-mitigation", "--auth-window-ms", "5"])
            .contains("--no-mitigation turns off")
    );
    for bad in [
        &["--auth", "--auth-max-failures", "0"][..],
        &["--auth", "--auth-max-failures", "-1"],
        &["--auth", "--auth-window-ms", "0"],
        &["--auth", "--auth-ban-ms", "soon"],
        &["--auth", "--auth-ban-ms"],
    ] {
        assert!(frontend(bad).is_err(), "{bad:?}");
    }
    // The backend has no login.
    assert!(parse(&strings(&["backend", "--listen", "127.0.0.1:0", "--auth"])).is_err());
}

#[test]
fn rejects_unknown_and_incomplete_args() {
    assert!(parse(&[]).is_err());
    assert!(parse(&strings(&["database"])).is_err());
    assert!(parse(&strings(&["backend"])).is_err());
    assert!(parse(&strings(&["backend", "--listen"])).is_err());
    assert!(parse(&strings(&["backend", "--listen", "127.0.0.1:0", "--x"])).is_err());
    // Frontend-only flags are not accepted by the backend.
    assert!(parse(&strings(&[
        "backend",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "http://127.0.0.1:9"
    ]))
    .is_err());
    assert!(parse(&strings(&["frontend", "--listen", "127.0.0.1:0"])).is_err());
}

#[test]
fn parses_ready_line() {
    assert_eq!(
        parse_ready_line("relapse-demo listening on 127.0.0.1:4242"),
        Some("127.0.0.1:4242".parse().unwrap())
    );
    assert_eq!(parse_ready_line("hello"), None);
}

/// The frontend's arguments with `extra` appended.
fn frontend_with(extra: &[&str]) -> Result<ChildArgs, DemoError> {
    let mut args = strings(&[
        "frontend",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "http://127.0.0.1:9",
        "--upstream-timeout-ms",
        "250",
    ]);
    args.extend(strings(extra));
    parse(&args)
}

/// The message of the usage error `extra` gets, which must be one.
fn usage_error(extra: &[&str]) -> String {
    match frontend_with(extra) {
        Err(DemoError::Usage(message)) => message,
        other => panic!("{extra:?}: expected a usage error, got {other:?}"),
    }
}

#[test]
fn parses_and_checks_the_failover_flags() {
    let failover = |extra: &[&str]| match frontend_with(extra).unwrap() {
        ChildArgs::Frontend { failover, .. } => failover,
        ChildArgs::Backend { .. } => unreachable!("parsed a frontend"),
    };
    assert_eq!(failover(&[]), None);
    assert_eq!(
        failover(&["--standby", "http://127.0.0.1:10"]),
        Some(("http://127.0.0.1:10".to_owned(), FailoverOptions::default()))
    );
    assert_eq!(
        failover(&[
            "--failover-fall",
            "3",
            "--standby",
            "http://127.0.0.1:10",
            "--failover-inter-ms",
            "100",
            "--failover-timeout-ms",
            "50",
            "--failover-rise",
            "4",
            "--failback",
        ]),
        Some((
            "http://127.0.0.1:10".to_owned(),
            FailoverOptions {
                inter: Duration::from_millis(100),
                timeout: Duration::from_millis(50),
                fall: 3,
                rise: 4,
                failback: true,
            }
        ))
    );
    for flag in ["--failover-inter-ms", "--failover-fall"] {
        let message = usage_error(&[flag, "2"]);
        assert_eq!(message, format!("{flag} needs --standby"));
    }
    assert_eq!(usage_error(&["--failback"]), "--failback needs --standby");
    let standby = ["--standby", "http://127.0.0.1:10"];
    for (flag, bad) in [
        ("--failover-inter-ms", "0"),
        ("--failover-timeout-ms", "-5"),
        ("--failover-fall", "0"),
        ("--failover-rise", "many"),
    ] {
        let message = usage_error(&[&standby[..], &[flag, bad]].concat());
        assert!(
            message.starts_with(&format!("bad {flag} value {bad:?}: expected")),
            "{message}"
        );
    }
    assert!(usage_error(&["--standby", "http://[::1"]).starts_with("bad --standby url"));
    assert_eq!(usage_error(&["--standby"]), "--standby needs a value");
    // The backend fails over to nothing: a standby is a frontend's flag.
    assert!(parse(&strings(&[
        "backend",
        "--listen",
        "127.0.0.1:0",
        "--standby",
        "http://127.0.0.1:10"
    ]))
    .is_err());
}

#[test]
fn parses_and_checks_the_job_flags() {
    let jobs = |extra: &[&str]| match frontend_with(extra).unwrap() {
        ChildArgs::Frontend { jobs, .. } => jobs,
        ChildArgs::Backend { .. } => unreachable!("parsed a frontend"),
    };
    assert_eq!(jobs(&[]), None);
    assert_eq!(
        jobs(&["--jobs-per-request", "3"]),
        Some(JobOptions {
            per_request: 3,
            ..JobOptions::default()
        })
    );
    assert_eq!(
        jobs(&[
            "--job-max-queue",
            "7",
            "--jobs-per-request",
            "1",
            "--job-work-ms",
            "249",
        ]),
        Some(JobOptions {
            per_request: 1,
            work: Duration::from_millis(249),
            max_queue: 7,
        })
    );
    assert_eq!(
        usage_error(&["--job-work-ms", "5"]),
        "--job-work-ms needs --jobs-per-request"
    );
    assert_eq!(
        usage_error(&["--job-max-queue", "5"]),
        "--job-max-queue needs --jobs-per-request"
    );
    for (flag, bad) in [
        ("--jobs-per-request", "0"),
        ("--job-work-ms", "0"),
        ("--job-max-queue", "0"),
        ("--job-max-queue", "lots"),
    ] {
        let mut extra = vec![flag, bad];
        if flag != "--jobs-per-request" {
            extra.extend(["--jobs-per-request", "1"]);
        }
        let message = usage_error(&extra);
        assert!(
            message.starts_with(&format!("bad {flag} value {bad:?}: expected")),
            "{message}"
        );
    }
    // A job that cannot finish within the upstream timeout would be retried forever.
    let message = usage_error(&["--jobs-per-request", "1", "--job-work-ms", "250"]);
    assert_eq!(
        message,
        "bad job settings: work (250 ms) must be less than the upstream timeout (250 ms)"
    );
}

#[test]
fn parses_the_event_log_flag() {
    let event_log = |extra: &[&str]| match frontend_with(extra).unwrap() {
        ChildArgs::Frontend { event_log, .. } => event_log,
        ChildArgs::Backend { .. } => unreachable!("parsed a frontend"),
    };
    assert_eq!(event_log(&[]), None);
    assert_eq!(
        event_log(&["--event-log", "/tmp/events.log"]),
        Some(PathBuf::from("/tmp/events.log"))
    );
    assert_eq!(
        usage_error(&["--event-log", ""]),
        "--event-log needs a file"
    );
    assert_eq!(usage_error(&["--event-log"]), "--event-log needs a value");
}
