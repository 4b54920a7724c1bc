//! What machine and build a result was measured on.

use serde::{Deserialize, Serialize};

/// The commit the binary was built from (`git describe --dirty`), or "unknown".
pub const COMMIT: &str = env!("OCCAM_COMMIT");

/// Description of the measuring machine.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Machine {
    /// CPU model name from /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical cores available to this process.
    pub cores: usize,
    /// Operating system (PRETTY_NAME of /etc/os-release).
    pub os: String,
    /// Kernel release.
    pub kernel: String,
    /// Target architecture.
    pub arch: String,
}

impl Machine {
    /// `CPU (N cores), OS`, for the first line of a table.
    pub fn summary(&self) -> String {
        format!("{} ({} cores), {}", self.cpu_model, self.cores, self.os)
    }

    /// Reads the current machine's description (fields it cannot read say "unknown").
    pub fn detect() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).trim().to_string()))
            .unwrap_or_else(|| "unknown".into());
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
            .unwrap_or_else(|| std::env::consts::OS.into());
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os,
            kernel: if kernel.is_empty() { "unknown".into() } else { kernel },
            arch: std::env::consts::ARCH.into(),
        }
    }
}
