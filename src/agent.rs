//! `relapse agent`: the TLS material agents and coordinators authenticate with, and the agent
//! itself (`host`: what it does with a coordinator's fault).

pub mod host;
mod probes;

use std::path::Path;

use rand::RngCore;

/// Why `relapse agent certs` made nothing (or not everything).
#[derive(Debug)]
pub enum CertsError {
    /// The command line was wrong (exit 2); nothing was written.
    Input(String),
    /// Writing or making the material failed (exit 3).
    Failed(String),
}

/// Makes the CA, each `NAME=ADDRESS` agent's certificate and the token in `out`; returns what
/// to print.
pub fn certs(out: &Path, agents: &[String]) -> Result<String, CertsError> {
    let mut parsed = Vec::new();
    for agent in agents {
        let Some((name, address)) = agent.split_once('=') else {
            return Err(CertsError::Input(format!(
                "\"{agent}\": expected NAME=ADDRESS, such as db1=10.0.0.12"
            )));
        };
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_name {
            return Err(CertsError::Input(format!(
                "\"{agent}\": the name must be letters, digits, '-' or '_' (it names files)"
            )));
        }
        if name == "ca" {
            return Err(CertsError::Input(format!(
                "\"{agent}\": \"ca\" is the authority's own file name"
            )));
        }
        if address.is_empty() || address.contains(char::is_whitespace) {
            return Err(CertsError::Input(format!(
                "\"{agent}\": expected an IP address or a DNS name after '='"
            )));
        }
        if parsed.iter().any(|(n, _): &(String, String)| n == name) {
            return Err(CertsError::Input(format!(
                "agent \"{name}\" is named twice"
            )));
        }
        parsed.push((name.to_string(), address.to_string()));
    }
    let files = relapse_agent::tls::make_certs(out, &parsed)
        .map_err(|e| CertsError::Failed(e.to_string()))?;
    let token_path = out.join("token");
    let token_line = if token_path.exists() {
        format!("token      {} (kept)", token_path.display())
    } else {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        write_secret(&token_path, &(hex + "\n")).map_err(CertsError::Failed)?;
        format!("token      {}", token_path.display())
    };
    let mut lines = vec![
        format!(
            "CA         {} (coordinators and agents)",
            files.ca.display()
        ),
        format!(
            "CA key     {} (keep it safe: it signs agents)",
            files.ca_key.display()
        ),
        token_line,
    ];
    for ((name, address), (_, cert, key)) in parsed.iter().zip(&files.agents) {
        lines.push(format!(
            "agent {name:<4} {} and {} (for {address})",
            cert.display(),
            key.display()
        ));
    }
    Ok(lines.join("\n") + "\n")
}

fn write_secret(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// What `relapse agent serve` was given.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: std::net::SocketAddr,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub token_file: std::path::PathBuf,
    pub allow: host::Allowlist,
    pub state_dir: std::path::PathBuf,
}

/// Why an agent did not start: bad input (exit 2) or a failure to set up (exit 3). Nothing
/// was applied either way.
#[derive(Debug)]
pub enum ServeError {
    Input(String),
    Failed(String),
}

/// Runs an agent until `stop`: TLS material, token and allowlist checked first, then the
/// journal and its guardian, then the listener; `ready` is told the address once it accepts
/// coordinators. On `stop` it reverts what the current run still holds.
pub async fn serve(
    options: &ServeOptions,
    stop: tokio_util::sync::CancellationToken,
    ready: impl FnOnce(std::net::SocketAddr),
) -> Result<(), ServeError> {
    for kind in &options.allow.kinds {
        if crate::kinds::fault_kind(kind).is_none() {
            let known: Vec<&str> = relapse_core::scenario::FAULT_KINDS.to_vec();
            return Err(ServeError::Input(format!(
                "--allow-kind {kind}: unknown fault kind; expected one of {}",
                known.join(", ")
            )));
        }
    }
    let tls = relapse_agent::tls::server_config(&options.cert, &options.key)
        .map_err(|e| ServeError::Input(e.to_string()))?;
    let secret = std::fs::read_to_string(&options.token_file)
        .map_err(|e| ServeError::Input(format!("{}: {e}", options.token_file.display())))?;
    let token = relapse_agent::Token::new(&secret)
        .map_err(|e| ServeError::Input(format!("{}: {e}", options.token_file.display())))?;
    let program = std::env::current_exe()
        .map_err(|e| ServeError::Failed(format!("cannot find the relapse executable: {e}")))?;
    let (journal, guardian) = crate::setup::start_safety(&options.state_dir)
        .map_err(|e| ServeError::Failed(format!("{e:#}")))?;
    let mut protected = vec![program.clone(), journal.dir()];
    if let Ok(cwd) = std::env::current_dir() {
        protected.push(cwd);
    }
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| ServeError::Failed(format!("cannot listen on {}: {e}", options.listen)))?;
    let address = listener
        .local_addr()
        .map_err(|e| ServeError::Failed(e.to_string()))?;
    let fault_host = std::sync::Arc::new(host::KindTableHost::new(
        options.allow.clone(),
        program,
        protected,
        journal,
    ));
    let agent = relapse_agent::server::Agent::new(token, fault_host);
    tracing::info!(%address, kinds = ?options.allow.kinds, "agent started");
    ready(address);
    agent.serve(listener, tls, stop).await;
    // Every fault is reverted by now; the guardian clears the journal's directory and exits.
    guardian.finish(std::time::Duration::from_secs(5));
    Ok(())
}
