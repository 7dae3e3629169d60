//! `relapse agent certs`: the files it writes, their modes, what it keeps on a second call, and
//! its refusals. That the files make a working TLS pair is the agent crate's transport test.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn certs(out: &Path, agents: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relapse"))
        .args(["agent", "certs", "--out"])
        .arg(out)
        .args(agents)
        .output()
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn makes_a_ca_a_pair_per_agent_and_a_token_and_keeps_them_on_a_second_call() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tls");
    let made = certs(&out, &["db1=10.0.0.12", "web=web.staging.example"]);
    assert_eq!(made.status.code(), Some(0), "{made:?}");
    for (file, secret) in [
        ("ca.pem", false),
        ("ca-key.pem", true),
        ("db1.pem", false),
        ("db1-key.pem", true),
        ("web.pem", false),
        ("web-key.pem", true),
        ("token", true),
    ] {
        let path = out.join(file);
        assert!(path.exists(), "{file} missing");
        if secret {
            assert_eq!(mode(&path), 0o600, "{file} is readable by others");
        }
    }
    let token = std::fs::read_to_string(out.join("token")).unwrap();
    assert_eq!(token.trim().len(), 64, "32 random bytes in hex");
    let ca = std::fs::read_to_string(out.join("ca.pem")).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));

    // A later agent is signed by the same CA; the token stays.
    let again = certs(&out, &["db2=10.0.0.13"]);
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    assert_eq!(std::fs::read_to_string(out.join("ca.pem")).unwrap(), ca);
    assert_eq!(std::fs::read_to_string(out.join("token")).unwrap(), token);
    assert!(out.join("db2.pem").exists());
    assert!(String::from_utf8_lossy(&again.stdout).contains("(kept)"));
}

#[test]
fn bad_agent_arguments_are_refused_with_exit_2_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    for (argument, expected) in [
        ("db1", "expected NAME=ADDRESS"),
        ("=10.0.0.1", "the name must be"),
        ("../x=10.0.0.1", "the name must be"),
        ("ca=10.0.0.1", "the authority's own file name"),
        ("db1=", "expected an IP address or a DNS name"),
    ] {
        let out = dir.path().join("tls");
        let refused = certs(&out, &[argument]);
        assert_eq!(refused.status.code(), Some(2), "{argument}: {refused:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(expected), "{argument}: {stderr}");
        assert!(!out.exists(), "{argument}: something was written");
    }
    let twice = certs(&dir.path().join("tls"), &["a=10.0.0.1", "a=10.0.0.2"]);
    assert_eq!(twice.status.code(), Some(2));
}
