//! Checks on processes a provider started, for tests of cancellation and timeouts.

/// Whether a process of the process group `pgid` still runs. Zombies (killed, not yet reaped
/// by their parent) run nothing and do not count, which is what `kill -0 -PGID` cannot tell.
/// Reads `/proc` on Linux; elsewhere falls back to `kill -0`.
pub fn process_group_running(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return std::process::Command::new("kill")
            .args(["-0", "--", &format!("-{pgid}")])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
    };
    let pgid = pgid.to_string();
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .any(|stat| {
            // `pid (comm) state ppid pgrp …`: comm may hold spaces, so split after it.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            fields.len() > 2 && fields[2] == pgid && fields[0] != "Z"
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_group_runs_and_a_made_up_one_does_not() {
        let output = std::process::Command::new("sh")
            .args(["-c", "ps -o pgid= -p $PPID"])
            .output()
            .expect("ps");
        if let Ok(pgid) = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse::<u32>()
        {
            assert!(process_group_running(pgid));
        }
        assert!(!process_group_running(u32::MAX - 7));
    }
}
