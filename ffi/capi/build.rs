//! Links libflint.so with its explicit export list (`flint.map`).
fn main() {
    let map = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flint.map");
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
        map.display()
    );
    println!("cargo:rerun-if-changed=flint.map");
}
