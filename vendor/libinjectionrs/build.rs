// The published crate generates its keyword tables from libinjection's C sources when
// they sit beside it (a git submodule upstream); this copy always uses the tables in
// src/sqli/generated_data.rs, so the build only declares the cfg that would select them.
fn main() {
    println!("cargo:rustc-check-cfg=cfg(build_generated)");
}
