//! Finding the processes a test started, by descent from the child it spawned: tests end only
//! processes of their own.

use std::process::Child;
use std::time::{Duration, Instant};

/// Parent PID and command line of a process.
pub fn parent_and_cmdline(pid: u32) -> Option<(u32, Vec<String>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ppid = stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into())
        .collect();
    Some((ppid, argv))
}

pub fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    while pid > 1 {
        if pid == ancestor {
            return true;
        }
        match parent_and_cmdline(pid) {
            Some((ppid, _)) => pid = ppid,
            None => return false,
        }
    }
    false
}

/// Waits (up to 240 s, looking every 2 ms) for a descendant of `child` whose argv `wanted`
/// accepts; returns its PID, its parent's and its argv. Fails if `child` ends first.
pub fn wait_for_descendant(
    child: &mut Child,
    what: &str,
    wanted: impl Fn(&[String]) -> bool,
) -> (u32, u32, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(240);
    while Instant::now() < deadline {
        assert!(child.try_wait().unwrap().is_none(), "nix-build ended before {what} ran");
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Some((ppid, argv)) = parent_and_cmdline(pid) else { continue };
            if wanted(&argv) && descends_from(pid, child.id()) {
                return (pid, ppid, argv);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("{what} never ran under nix-build");
}

/// SIGKILL, as Nix ends its hook.
pub fn kill(pid: u32) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
}

/// The builders' store programs (`nix-store --serve --write`) running now, by PID: the test
/// bed's builders share the host's PID space.
pub fn serve_programs() -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            parent_and_cmdline(*pid).is_some_and(|(_, argv)| argv == ["nix-store", "--serve", "--write"])
        })
        .collect();
    pids.sort();
    pids
}
