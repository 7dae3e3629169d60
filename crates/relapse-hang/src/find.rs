//! Finding a process by its command line, for targets whose pid is not known in advance: a
//! database's background worker on another host (`"postgres: checkpointer"`).

use super::{proc_stat, TargetError};

/// A process whose command line matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub pid: u32,
    /// Its arguments joined by spaces, as `ps` shows them.
    pub command: String,
}

/// The one process, other than relapse itself, whose command line contains `text`. None, or
/// more than one, is an error that names what matched, so the scenario can be made precise.
/// Kernel threads (no command line) never match.
pub fn find_by_command(text: &str) -> Result<u32, TargetError> {
    let own = std::process::id();
    let own_command = std::fs::read("/proc/self/cmdline")
        .ok()
        .and_then(|raw| command_line(&raw));
    let matches: Vec<Match> = processes()
        .filter(|m| m.pid != own && m.command.contains(text))
        .filter(|m| !is_own_fork(m, own, own_command.as_deref()))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.pid),
        [] => Err(TargetError::NoCommandMatch(text.to_string())),
        many => Err(TargetError::AmbiguousCommand {
            text: text.to_string(),
            matches: many
                .iter()
                .map(|m| format!("{} \"{}\"", m.pid, m.command))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// A child of relapse caught between fork and exec still shows relapse's own command line: it is
/// relapse itself for a moment, not a target (seen in CI, while another thread spawned a child).
fn is_own_fork(candidate: &Match, own: u32, own_command: Option<&str>) -> bool {
    own_command == Some(candidate.command.as_str())
        && proc_stat(candidate.pid as i32).is_some_and(|stat| stat.ppid == own as i32)
}

/// Every process `/proc` shows with a command line. A process that ends while it is read is
/// left out.
fn processes() -> impl Iterator<Item = Match> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(entry.path().join("cmdline")).ok()?;
            let command = command_line(&raw)?;
            Some(Match { pid, command })
        })
}

/// `/proc/PID/cmdline` is the arguments, each ended by a NUL; a process that rewrote its title
/// (PostgreSQL's workers) may leave one string, padded. Empty for kernel threads and zombies.
fn command_line(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let joined = text
        .split('\0')
        .filter(|arg| !arg.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let joined = joined.trim().to_string();
    (!joined.is_empty()).then_some(joined)
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command};
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A `sleep` with an argument no other process has, ended by its pid when dropped.
    struct Sleeper(Child);

    impl Sleeper {
        /// Started, and showing its own command line: a process seen between fork and exec
        /// still shows its parent's (seen once in CI), and there is no event for the exec of a
        /// process, so /proc is polled, for at most 5 s.
        fn start(seconds: &str) -> Sleeper {
            let sleeper = Sleeper(Command::new("sleep").arg(seconds).spawn().expect("sleep"));
            let path = format!("/proc/{}/cmdline", sleeper.pid());
            let wanted = format!("sleep\0{seconds}\0");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::fs::read(&path).ok().as_deref() != Some(wanted.as_bytes()) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "sleep {seconds} never exec'd"
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            sleeper
        }
        fn pid(&self) -> u32 {
            self.0.id()
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// An argument unique to this test (this process's pid, then a count): sleep accepts
    /// fractional seconds.
    fn unique_seconds() -> String {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        format!("3600.{}0{n}", std::process::id())
    }

    #[test]
    fn exactly_one_match_is_found_by_pid() {
        let seconds = unique_seconds();
        let sleeper = Sleeper::start(&seconds);
        let found = find_by_command(&format!("sleep {seconds}")).unwrap();
        assert_eq!(found, sleeper.pid());
    }

    #[test]
    fn two_matches_are_an_error_naming_both() {
        let seconds = unique_seconds();
        let a = Sleeper::start(&seconds);
        let b = Sleeper::start(&seconds);
        let error = find_by_command(&seconds).unwrap_err();
        let message = error.to_string();
        for pid in [a.pid(), b.pid()] {
            assert!(
                message.contains(&format!("{pid} \"sleep {seconds}\"")),
                "{message}"
            );
        }
    }

    #[test]
    fn no_match_is_an_error_and_relapse_itself_never_matches() {
        let seconds = unique_seconds();
        // This test process's own command line holds its own path, and is left out.
        let own_name = std::env::args().next().unwrap();
        assert!(matches!(
            find_by_command(&own_name),
            Err(TargetError::NoCommandMatch(_))
        ));
        assert_eq!(
            find_by_command(&seconds),
            Err(TargetError::NoCommandMatch(seconds.clone()))
        );
    }

    #[test]
    #[allow(unsafe_code)]
    fn a_child_of_ours_before_its_exec_is_relapse_itself() {
        use nix::sys::signal::{kill, Signal};
        use nix::sys::wait::waitpid;
        use nix::unistd::{fork, pause, ForkResult};

        let own_name = std::env::args().next().unwrap();
        // SAFETY: the child only waits for signals (async-signal-safe) until it is killed.
        let child = match unsafe { fork() }.expect("fork") {
            ForkResult::Child => loop {
                pause();
            },
            ForkResult::Parent { child } => child,
        };
        let found = find_by_command(&own_name);
        kill(child, Signal::SIGKILL).expect("kill the forked child");
        waitpid(child, None).expect("reap the forked child");
        assert!(
            matches!(found, Err(TargetError::NoCommandMatch(_))),
            "{found:?}"
        );
    }

    #[test]
    fn command_lines_are_joined_and_padding_dropped() {
        assert_eq!(
            command_line(b"sleep\x003600\x00").as_deref(),
            Some("sleep 3600")
        );
        assert_eq!(
            command_line(b"postgres: checkpointer   \x00\x00\x00").as_deref(),
            Some("postgres: checkpointer")
        );
        assert_eq!(command_line(b""), None);
    }
}
