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
    let frontend = |extra: &[&str]| {
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
    };
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
    let frontend = |extra: &[&str]| {
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
    };
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
        parse(&args).map(|_| ()).map_err(|error| error.to_string())
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
        parse(&args).map(|args| match args {
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
