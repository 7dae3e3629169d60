//! `relapse agent`: the TLS material agents and coordinators authenticate with, and the agent
//! itself (`host`: what it does with a coordinator's fault).

pub mod host;

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
