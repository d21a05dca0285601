//! Embeds an rpath to the libtorch that torch-sys linked against, so `icl-lab`
//! and the test binaries start without `LD_LIBRARY_PATH`.
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH");
}
