//! The processes under test: `engines` × `sagas run` (one consumer group) and the three
//! domain services, each a child process with its log in the run directory, as the fault
//! harness starts them; and their resident memory, read from `/proc/<pid>/status`.

use std::path::Path;

use anyhow::Context;

use crate::chaos::processes::Fleet;
use crate::chaos::schedule::Role;
use crate::chaos::{free_port, sagas_spec, wait_until_ready, START_TIMEOUT};
use crate::domains::Domain;
use crate::settings::Settings;

/// Starts the engines and the services for `settings` (database, broker, topic prefix and
/// partitions are passed on; `child_flags` go before the subcommand) and waits until every
/// engine's admin API says it is ready. The processes are added to `fleet`.
pub async fn start(
    settings: &Settings,
    engines: u8,
    child_flags: &[String],
    run_dir: &Path,
    fleet: &mut Fleet,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the sagas binary")?;
    let mut common = child_flags.to_vec();
    common.extend(crate::chaos::connection_flags(settings));
    let env = vec![
        (
            "SAGAS_ENGINE__PARTITIONS".to_string(),
            settings.engine.partitions.to_string(),
        ),
        (
            "SAGAS_PARTICIPANT__PARTITIONS".to_string(),
            settings.participant.partitions.to_string(),
        ),
    ];
    let mut admin_addrs = Vec::new();
    for n in 1..=engines {
        let addr = free_port()?;
        admin_addrs.push(addr);
        let mut args = common.clone();
        args.extend(["run".into(), "--admin-addr".into(), addr.to_string()]);
        let mut spec = sagas_spec(&exe, args, run_dir, Role::Engine(n));
        spec.env = env.clone();
        fleet.start(Role::Engine(n), spec)?;
    }
    for domain in Domain::ALL {
        let mut args = common.clone();
        args.extend(["participant".into(), domain.name().into()]);
        let role = Role::Participant(domain);
        let mut spec = sagas_spec(&exe, args, run_dir, role);
        spec.env = env.clone();
        fleet.start(role, spec)?;
    }
    for addr in admin_addrs {
        wait_until_ready(addr, START_TIMEOUT).await?;
    }
    Ok(())
}

/// Resident memory of the engine processes together, in MiB (0 for one that is not
/// running or whose status cannot be read).
pub fn engines_rss_mb(fleet: &Fleet, engines: u8) -> f64 {
    (1..=engines)
        .filter_map(|n| fleet.pid(Role::Engine(n)))
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| vm_rss_kib(&status))
        .map(|kib| kib as f64 / 1024.0)
        .sum()
}

/// The `VmRSS` of a `/proc/<pid>/status` text, in KiB.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resident_set_is_read_from_the_status_text() {
        let status =
            "Name:\tsagas\nVmPeak:\t  912344 kB\nVmRSS:\t   40960 kB\nRssAnon:\t 30000 kB\n";
        assert_eq!(vm_rss_kib(status), Some(40_960));
        assert_eq!(vm_rss_kib("Name:\tsagas\n"), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(vm_rss_kib(&status).is_some_and(|kib| kib > 0));
    }
}
