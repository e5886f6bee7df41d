//! What the runner needs from the machine, and getting it: `qemu-system-x86_64` always, the
//! OVMF firmware for UEFI boots (`--uefi`, and `cargo test`, which boots both).
//!
//! Both are found the same way every run: QEMU on `PATH` (or the file `MEMKERNEL_QEMU` names),
//! OVMF at Debian's paths (or the file `MEMKERNEL_OVMF` names). When something is missing, the
//! runner says what and, on a terminal, offers to install it with Debian's packages
//! (`qemu-system-x86`, `ovmf`), through `sudo` when it is not root, and goes on; without a
//! terminal it prints the exact command and exits 2 (`boot/main.rs`).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::Command;

/// Names the QEMU binary instead of a `PATH` lookup (a missing file counts as not installed).
pub const QEMU_ENV: &str = "MEMKERNEL_QEMU";
/// Names the OVMF firmware file instead of Debian's paths.
pub const OVMF_ENV: &str = "MEMKERNEL_OVMF";

/// Debian's OVMF firmware (package `ovmf`).
pub const OVMF_PATHS: &[&str] =
    &["/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd", "/usr/share/OVMF/OVMF.fd"];

/// Where apt keeps its package lists; none there means `apt-get update` must run first.
const APT_LISTS: &str = "/var/lib/apt/lists";

/// The QEMU binary, if installed.
pub fn find_qemu() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(QEMU_ENV) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join("qemu-system-x86_64")).find(|p| p.is_file())
}

/// The OVMF firmware, if installed.
pub fn find_ovmf() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(OVMF_ENV) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    OVMF_PATHS.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// What is missing on this machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Missing {
    pub qemu: bool,
    pub ovmf: bool,
}

impl Missing {
    pub fn now() -> Missing {
        Missing { qemu: find_qemu().is_none(), ovmf: find_ovmf().is_none() }
    }

    /// Whether a boot (UEFI or not) cannot start.
    pub fn blocks(&self, uefi: bool) -> bool {
        self.qemu || (uefi && self.ovmf)
    }

    /// The Debian packages to install: whatever is missing of the two, since `cargo test`
    /// needs both (a plain `cargo run` needs only QEMU).
    pub fn packages(&self) -> Vec<&'static str> {
        let mut p = Vec::new();
        if self.qemu {
            p.push("qemu-system-x86");
        }
        if self.ovmf {
            p.push("ovmf");
        }
        p
    }

    /// One sentence: what is missing.
    pub fn describe(&self) -> String {
        match (self.qemu, self.ovmf) {
            (true, true) => {
                "qemu-system-x86_64 is not installed, nor the OVMF firmware (UEFI boots, `cargo test`)".into()
            }
            (true, false) => "qemu-system-x86_64 is not installed".into(),
            (false, true) => "the OVMF firmware (UEFI boots, `cargo test`) is not installed".into(),
            (false, false) => "nothing is missing".into(),
        }
    }
}

/// The commands that install `packages`: `apt-get update` first when apt has no package lists
/// yet (a fresh container), through `sudo` unless the runner is root.
pub fn install_commands(packages: &[&str], root: bool, have_lists: bool) -> Vec<Vec<String>> {
    let prefix: Vec<String> = if root { vec![] } else { vec!["sudo".into()] };
    let mut cmds = Vec::new();
    if !have_lists {
        cmds.push(prefix.iter().cloned().chain(["apt-get".into(), "update".into()]).collect());
    }
    cmds.push(
        prefix
            .iter()
            .cloned()
            .chain(["apt-get".into(), "install".into()])
            .chain(packages.iter().map(|p| p.to_string()))
            .collect(),
    );
    cmds
}

/// The commands as one shell line.
pub fn command_line(cmds: &[Vec<String>]) -> String {
    cmds.iter().map(|c| c.join(" ")).collect::<Vec<_>>().join(" && ")
}

/// Whether this process runs as root: the owner of `/proc/self` is the effective user.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Whether apt has package lists.
pub fn have_apt_lists() -> bool {
    std::fs::read_dir(APT_LISTS)
        .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().contains("_Packages")))
        .unwrap_or(false)
}

/// How [`ensure`] ended when it could not go on.
#[derive(Debug, PartialEq, Eq)]
pub enum SetupError {
    /// Not on a terminal, or the user said no: the command to run was printed (exit 2).
    NotInstalled,
    /// The install ran and failed, or did not provide the missing pieces (exit 1).
    InstallFailed(String),
}

/// Makes sure a boot (`uefi` or not) can start. `interactive`: the runner is on a terminal,
/// where it may ask; `answer` reads the user's reply (stdin).
pub fn ensure(uefi: bool, interactive: bool, answer: &mut dyn BufRead) -> Result<(), SetupError> {
    let missing = Missing::now();
    if !missing.blocks(uefi) {
        return Ok(());
    }
    let cmds = install_commands(&missing.packages(), is_root(), have_apt_lists());
    let line = command_line(&cmds);
    eprintln!("runner: {}", missing.describe());
    if !interactive {
        eprintln!("runner: install with (Debian):\n  {line}");
        return Err(SetupError::NotInstalled);
    }
    eprint!("runner: install now with `{line}`? [Y/n] ");
    let _ = std::io::stderr().flush();
    let mut reply = String::new();
    let _ = answer.read_line(&mut reply);
    if !matches!(reply.trim(), "" | "y" | "Y" | "yes" | "Yes") {
        eprintln!("runner: not installed; when you want them:\n  {line}");
        return Err(SetupError::NotInstalled);
    }
    for cmd in &cmds {
        eprintln!("runner: running `{}`", cmd.join(" "));
        let status = Command::new(&cmd[0])
            .args(&cmd[1..])
            .status()
            .map_err(|e| SetupError::InstallFailed(format!("cannot run `{}`: {e}", cmd[0])))?;
        if !status.success() {
            return Err(SetupError::InstallFailed(format!("`{}` failed ({status})", cmd.join(" "))));
        }
    }
    let now = Missing::now();
    if now.blocks(uefi) {
        return Err(SetupError::InstallFailed(format!("after the install, {}", now.describe())));
    }
    eprintln!("runner: installed; going on");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_name_the_packages_and_use_sudo_unless_root() {
        let both = Missing { qemu: true, ovmf: true };
        assert_eq!(both.packages(), ["qemu-system-x86", "ovmf"]);
        assert_eq!(
            command_line(&install_commands(&both.packages(), false, true)),
            "sudo apt-get install qemu-system-x86 ovmf"
        );
        assert_eq!(command_line(&install_commands(&["ovmf"], true, true)), "apt-get install ovmf");
        assert_eq!(
            command_line(&install_commands(&["qemu-system-x86"], false, false)),
            "sudo apt-get update && sudo apt-get install qemu-system-x86",
            "a fresh container has no package lists"
        );
        assert!(Missing { qemu: true, ovmf: false }.blocks(false));
        assert!(!Missing { qemu: false, ovmf: true }.blocks(false), "BIOS boots need no OVMF");
        assert!(Missing { qemu: false, ovmf: true }.blocks(true));
    }
}
