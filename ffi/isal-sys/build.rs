//! Links the system ISA-L (`apt-get install libisal-dev`).
fn main() {
    println!("cargo:rustc-link-lib=isal");
    println!("cargo:rerun-if-changed=build.rs");
}
