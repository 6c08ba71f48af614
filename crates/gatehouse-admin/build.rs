//! Stamps the commit being built into `gatehouse_build_info` (GATEHOUSE_COMMIT, unless the
//! environment already sets it; "unknown" outside a git checkout).

fn main() {
    println!("cargo:rerun-if-env-changed=GATEHOUSE_COMMIT");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
    if std::env::var_os("GATEHOUSE_COMMIT").is_some() {
        return;
    }
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=GATEHOUSE_COMMIT={commit}");
}
