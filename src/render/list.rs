//! `relapse list`: the fault kinds, probe kinds and detection sources, one line of help each.

/// The whole text of `relapse list`: the fault kinds from the kind table, then the rest.
pub fn list() -> String {
    let mut out = String::from("fault kinds\n");
    for entry in crate::kinds::FAULT_KINDS {
        let mut lines = entry.help.lines();
        out += &format!(
            "  {:<17} {}\n",
            entry.kind,
            lines.next().unwrap_or_default()
        );
        for line in lines {
            out += &format!("  {:<17} {}\n", "", line.trim_start());
        }
    }
    out + "\n" + SENSES
}

/// Probes, detection sources and backlog gauges.
const SENSES: &str = "\
probe kinds (the SLI: what users feel)
  http              an HTTP/1.1 request; success = status in `expect`, within `timeout`
  tcp               a TCP connect within `timeout`
  imap              an IMAP session: LOGIN, SELECT (a hung mail store shows here, where LOGIN
                    alone still answers), optionally FETCH one header; within `timeout`

detection sources (how relapse learns that the system noticed)
  webhook           an alert POSTed to relapse's sink ({sink.url}); Alertmanager v4 or plain
                    JSON, matched by labels
  http              a health endpoint answering a status outside `healthy`, or not answering
  command           a command exiting non-zero (a Nagios-style check)
  log               a line appended to a file matching a regular expression
  prometheus        a PromQL query on a Prometheus server returning a sample (with `above`, one
                    greater than it); a query that fails counts neither way
  alertmanager      an active alert on an Alertmanager whose labels include every `match` pair

backlog gauges ([backlog]: recovery also waits for it to drain)
  metric            a metric in Prometheus text format (summed over its label sets)
  sql               the first column of a query's first row (PostgreSQL or MySQL/MariaDB)
";

#[cfg(test)]
mod tests {
    use expect_test::expect;

    #[test]
    fn the_listing() {
        expect![[r#"
            fault kinds
              process_freeze    stop a process (or its process group) with SIGSTOP, resume with SIGCONT
                                (the FLG incident: a healthcheck script hung the database server)
              port_exhaustion   take a network namespace's ephemeral ports: reserve (bind), leak (hold
                                connections) or time_wait (churn) (the iPaper incident)
              fd_exhaustion     lower a process's RLIMIT_NOFILE to what it uses, so it can open nothing new
              db_lock           hold a real lock on PostgreSQL or MySQL/MariaDB: a table, rows, or the
                                global read lock (the Kolab incident)
              http_flood        an HTTP request flood: open model (a rate) or closed (connections), from
                                many loopback source addresses (the OpenSRS incident)
              slowloris         connections that send headers slowly and never finish them
              connection_flood  connections opened and held idle
              db_proxy          switch a [[db_proxy]] (a PostgreSQL / MySQL aware proxy the target talks
                                through) to stall, stall_writes, latency, error (SQLSTATE / MySQL error),
                                reset or refuse_new
              fs_freeze         freeze a file system relapse made (FIFREEZE): writers block in state D, reads
                                go on (the OpenSRS Cluster B incident: a file system locked up)
              fs_gate           switch an [[fs_gate]] (a FUSE passthrough relapse mounts) to stall, latency or
                                error (EIO, ENOSPC, EROFS), for all operations, writes or fsync

            probe kinds (the SLI: what users feel)
              http              an HTTP/1.1 request; success = status in `expect`, within `timeout`
              tcp               a TCP connect within `timeout`
              imap              an IMAP session: LOGIN, SELECT (a hung mail store shows here, where LOGIN
                                alone still answers), optionally FETCH one header; within `timeout`

            detection sources (how relapse learns that the system noticed)
              webhook           an alert POSTed to relapse's sink ({sink.url}); Alertmanager v4 or plain
                                JSON, matched by labels
              http              a health endpoint answering a status outside `healthy`, or not answering
              command           a command exiting non-zero (a Nagios-style check)
              log               a line appended to a file matching a regular expression
              prometheus        a PromQL query on a Prometheus server returning a sample (with `above`, one
                                greater than it); a query that fails counts neither way
              alertmanager      an active alert on an Alertmanager whose labels include every `match` pair

            backlog gauges ([backlog]: recovery also waits for it to drain)
              metric            a metric in Prometheus text format (summed over its label sets)
              sql               the first column of a query's first row (PostgreSQL or MySQL/MariaDB)
        "#]].assert_eq(&super::list());
    }
}
