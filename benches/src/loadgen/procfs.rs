//! What `/proc` says about a process: resident memory, CPU time, the file descriptor limit.
//!
//! Linux only, read as text; the broker under test is named by its pid on the command line.

use std::fs;

use super::LoadError;

/// Clock ticks per second of the CPU times in `/proc/<pid>/stat` (`USER_HZ`, fixed at 100 in
/// the Linux user ABI on every architecture the benches run on).
pub const USER_HZ: u64 = 100;

/// Which process: the generator itself or another one by pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    /// This process (`/proc/self`).
    Current,
    /// Another process.
    Pid(u32),
}

impl Process {
    fn file(self, name: &str) -> String {
        match self {
            Process::Current => format!("/proc/self/{name}"),
            Process::Pid(pid) => format!("/proc/{pid}/{name}"),
        }
    }
}

fn read(path: &str) -> Result<String, LoadError> {
    fs::read_to_string(path).map_err(|error| LoadError::Proc {
        path: path.to_owned(),
        detail: error.to_string(),
    })
}

/// Resident memory (`VmRSS`) of `process`, in KiB.
///
/// # Errors
///
/// [`LoadError::Proc`] when the process does not exist or the file has no `VmRSS` line.
pub fn resident_kib(process: Process) -> Result<u64, LoadError> {
    let path = process.file("status");
    parse_vm_rss(&read(&path)?).ok_or_else(|| LoadError::Proc {
        path,
        detail: "no VmRSS line".to_owned(),
    })
}

/// The `VmRSS:` value of a `/proc/<pid>/status` text, in KiB.
///
/// ```
/// use aliot_benches::loadgen::procfs::parse_vm_rss;
///
/// assert_eq!(parse_vm_rss("Name:\tx\nVmRSS:\t   5120 kB\nThreads:\t1\n"), Some(5120));
/// assert_eq!(parse_vm_rss("Name:\tx\n"), None);
/// ```
#[must_use]
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// CPU time (user + system, every thread) `process` has used, in clock ticks of [`USER_HZ`].
///
/// # Errors
///
/// [`LoadError::Proc`] when the process does not exist or its `stat` line is not understood.
pub fn cpu_ticks(process: Process) -> Result<u64, LoadError> {
    let path = process.file("stat");
    parse_cpu_ticks(&read(&path)?).ok_or_else(|| LoadError::Proc {
        path,
        detail: "no utime/stime fields".to_owned(),
    })
}

/// `utime + stime` of a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces, so fields are counted after its closing parenthesis.
///
/// ```
/// use aliot_benches::loadgen::procfs::parse_cpu_ticks;
///
/// let stat = "42 (my broker) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 3 0";
/// assert_eq!(parse_cpu_ticks(stat), Some(280));
/// ```
#[must_use]
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    // After the name: state (field 3), then fields 4 onwards; utime is 14, stime 15.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The soft limit on open file descriptors of this process (`Max open files`).
///
/// # Errors
///
/// [`LoadError::Proc`] when `/proc/self/limits` cannot be read or has no such line.
pub fn open_files_limit() -> Result<u64, LoadError> {
    let path = "/proc/self/limits";
    parse_open_files_limit(&read(path)?).ok_or_else(|| LoadError::Proc {
        path: path.to_owned(),
        detail: "no \"Max open files\" line".to_owned(),
    })
}

/// The soft `Max open files` limit of a `/proc/<pid>/limits` text (`u64::MAX` when
/// unlimited).
///
/// ```
/// use aliot_benches::loadgen::procfs::parse_open_files_limit;
///
/// let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
///               Max open files            20000                20000                files\n";
/// assert_eq!(parse_open_files_limit(limits), Some(20_000));
/// ```
#[must_use]
pub fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let rest = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?;
    match rest.split_whitespace().next()? {
        "unlimited" => Some(u64::MAX),
        soft => soft.parse().ok(),
    }
}

/// CPU use between two readings of [`cpu_ticks`] over `wall_ns` nanoseconds, in percent of one
/// core.
#[must_use]
pub fn cpu_percent(ticks_before: u64, ticks_after: u64, wall_ns: u64) -> f64 {
    if wall_ns == 0 {
        return 0.0;
    }
    let cpu_ns = ticks_after.saturating_sub(ticks_before) as f64 * (1e9 / USER_HZ as f64);
    cpu_ns / wall_ns as f64 * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_resident_size_and_cpu_time() {
        assert!(resident_kib(Process::Current).expect("readable") > 0);
        assert!(cpu_ticks(Process::Current).is_ok());
        assert!(open_files_limit().expect("readable") > 3);
    }

    #[test]
    fn a_missing_process_is_an_error_naming_its_file() {
        // Pid 0 is the scheduler; it never has a /proc entry.
        let error = resident_kib(Process::Pid(0)).expect_err("no such process");
        assert!(error.to_string().contains("/proc/0/status"), "{error}");
    }

    #[test]
    fn an_unlimited_open_files_limit_is_the_largest_value() {
        let limits = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files_limit(limits), Some(u64::MAX));
        assert_eq!(parse_open_files_limit("Max processes 1 1\n"), None);
    }

    #[test]
    fn cpu_percent_is_of_one_core() {
        // 50 ticks of 10 ms over one second: half a core.
        assert!((cpu_percent(100, 150, 1_000_000_000) - 50.0).abs() < 1e-9);
        assert_eq!(cpu_percent(0, 10, 0), 0.0);
        assert_eq!(cpu_percent(10, 0, 1), 0.0);
    }

    #[test]
    fn a_stat_line_cut_short_has_no_cpu_time() {
        assert_eq!(parse_cpu_ticks("1 (x) S 1 2 3"), None);
        assert_eq!(parse_cpu_ticks("no parenthesis"), None);
    }
}
