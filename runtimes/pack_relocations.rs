//! The build script both servers share: it links them with packed relative relocations
//! (DT_RELR). A position-independent executable otherwise carries a 24-byte entry for each
//! pointer the loader must move (about 50,000 here, 1.2 MB), which it reads at every start
//! and which then count in the server's resident memory; packed, they take about 13 KB.
//! The GNU linker leaves the option out where the C library cannot load it (before glibc 2.36).
fn main() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os == "linux" && target_env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
