//! `scripts/setup.sh` (run by the README's two commands) on a machine that
//! lacks something and where it cannot install: it prints the one apt-get
//! line to run and goes on, or fails under CI=true. Run as `nobody` (it
//! never installs anything here), with a PATH that hides the C compiler.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// A directory of links to every program in /usr/bin and /bin but
/// `hidden`, readable by `nobody`.
fn path_without(hidden: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for bin in ["/usr/bin", "/bin"] {
        let Ok(entries) = std::fs::read_dir(bin) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if hidden.contains(&name.as_ref())
                || name.starts_with("gcc")
                || name.starts_with("x86_64-linux-gnu-gcc")
            {
                continue;
            }
            let _ = std::os::unix::fs::symlink(entry.path(), dir.path().join(name.as_ref()));
        }
    }
    dir
}

fn run_as_nobody(path: &std::path::Path, ci: bool) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/setup.sh");
    Command::new("runuser")
        .args(["-u", "nobody", "--", "env", "-i"])
        .arg(format!("PATH={}", path.display()))
        .arg(format!("CI={ci}"))
        .args(["bash", script, "build"])
        .current_dir("/")
        .output()
        .expect("runuser")
}

#[test]
fn setup_without_rights_prints_the_apt_get_line_and_goes_on_or_fails_under_ci() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root || Command::new("runuser").arg("--version").output().is_err() {
        eprintln!("!!!!!!!! SKIPPED setup.sh test: needs root and runuser (to run it as nobody)");
        return;
    }
    let path = path_without(&["cc", "c++", "gcc", "g++", "cargo"]);
    let out = run_as_nobody(path.path(), false);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{said}");
    let lines: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("apt-get install"))
        .collect();
    assert_eq!(lines.len(), 1, "one line to paste: {said}");
    assert!(lines[0].contains("sudo apt-get install -y gcc"), "{said}");
    assert!(
        said.contains("cargo build fails"),
        "what goes wrong without it: {said}"
    );

    let out = run_as_nobody(path.path(), true);
    assert_eq!(out.status.code(), Some(1), "CI=true fails instead");
}
