//! Machine-dependent defaults of `system`, `extra-platforms`, `system-features` and
//! `max-jobs = auto`, computed the way Nix/Lix compute theirs.

use std::collections::BTreeSet;
use std::path::Path;

/// What the settings fall back to when neither nix.conf nor the parent set them. Detected
/// once with [`HostDefaults::detect`]; tests build their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDefaults {
    /// Default of `system`.
    pub system: String,
    /// Default of `extra-platforms`.
    pub extra_platforms: BTreeSet<String>,
    /// Default of `system-features`.
    pub system_features: BTreeSet<String>,
    /// What `max-jobs = auto` means.
    pub cpus: u32,
}

impl HostDefaults {
    pub fn detect() -> Self {
        let system = compile_time_system();
        HostDefaults {
            extra_platforms: default_extra_platforms(&system),
            system_features: default_system_features(),
            cpus: std::thread::available_parallelism()
                .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
                .unwrap_or(1),
            system,
        }
    }
}

/// Nix's name for the platform this crate was compiled for, e.g. `x86_64-linux`.
///
/// Nix bakes in the platform it was built for; the hook runs on the same machine, so its own
/// build target is the best stand-in when the setting is not sent.
pub fn compile_time_system() -> String {
    let arch = match std::env::consts::ARCH {
        "x86" => "i686",
        // Nix's 32-bit ARM systems carry the ISA version; v7 is what current distributions ship.
        "arm" => "armv7l",
        "powerpc64" if cfg!(target_endian = "little") => "powerpc64le",
        other => other,
    };
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    format!("{arch}-{os}")
}

/// The pseudo-features Nixpkgs routes on, `uid-range` on Linux and `kvm` when `/dev/kvm` is
/// usable. `uid-range` is absent from Nix 2.8's default but present in later Nix and in every
/// Lix; it only matters when the parent did not send `system-features`, and the parent that
/// omits settings is Lix.
fn default_system_features() -> BTreeSet<String> {
    let mut features: BTreeSet<String> = ["nixos-test", "benchmark", "big-parallel"].map(String::from).into();
    if cfg!(target_os = "linux") {
        features.insert("uid-range".into());
        let rw = rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK;
        if rustix::fs::access("/dev/kvm", rw).is_ok() {
            features.insert("kvm".into());
        }
    }
    features
}

fn default_extra_platforms(system: &str) -> BTreeSet<String> {
    let mut platforms = BTreeSet::new();
    if system == "x86_64-linux" && !is_wsl1() {
        platforms.insert("i686-linux".to_string());
    }
    if cfg!(target_os = "linux") {
        for level in x86_64_levels() {
            platforms.insert(format!("{level}-linux"));
        }
    }
    if cfg!(target_os = "macos") {
        // Rosetta 2 lets either Darwin architecture run the other's binaries.
        let rosetta = [
            "/Library/Apple/System/Library/LaunchDaemons/com.apple.oahd.plist",
            "/System/Library/LaunchDaemons/com.apple.oahd.plist",
        ]
        .iter()
        .any(|p| Path::new(p).exists());
        if rosetta {
            match system {
                "x86_64-darwin" => platforms.insert("aarch64-darwin".into()),
                "aarch64-darwin" => platforms.insert("x86_64-darwin".into()),
                _ => false,
            };
        }
    }
    platforms
}

/// WSL1 cannot run 32-bit binaries; its kernel release ends in `-Microsoft`.
fn is_wsl1() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim_end().ends_with("-Microsoft"))
        .unwrap_or(false)
}

/// x86-64 micro-architecture levels the CPU satisfies (`x86_64-v1` … `x86_64-v4`), which Nix
/// offers as extra platforms when built with libcpuid.
#[cfg(target_arch = "x86_64")]
fn x86_64_levels() -> Vec<&'static str> {
    use std::arch::is_x86_feature_detected as has;
    let mut levels = vec!["x86_64-v1"];
    // LAHF/SAHF in 64-bit mode is also part of v2 but has no std detection; every CPU with the
    // rest of the v2 set has it.
    let v2 = has!("cmpxchg16b")
        && has!("popcnt")
        && has!("sse3")
        && has!("ssse3")
        && has!("sse4.1")
        && has!("sse4.2");
    if !v2 {
        return levels;
    }
    levels.push("x86_64-v2");
    let v3 = has!("avx")
        && has!("avx2")
        && has!("bmi1")
        && has!("bmi2")
        && has!("f16c")
        && has!("fma")
        && has!("lzcnt")
        && has!("movbe")
        && has!("xsave");
    if !v3 {
        return levels;
    }
    levels.push("x86_64-v3");
    let v4 = has!("avx512f") && has!("avx512bw") && has!("avx512cd") && has!("avx512dq") && has!("avx512vl");
    if v4 {
        levels.push("x86_64-v4");
    }
    levels
}

#[cfg(not(target_arch = "x86_64"))]
fn x86_64_levels() -> Vec<&'static str> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_is_sane() {
        let host = HostDefaults::detect();
        assert!(host.cpus >= 1);
        assert!(host.system.contains('-'), "{}", host.system);
        for f in ["nixos-test", "benchmark", "big-parallel"] {
            assert!(host.system_features.contains(f));
        }
        if host.system == "x86_64-linux" {
            assert!(host.extra_platforms.contains("x86_64-v1-linux"));
        }
    }

    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn linux_x86_64_name() {
        assert_eq!(compile_time_system(), "x86_64-linux");
    }
}
