//! Gives the shared library a deliberate SONAME, `libmitosis.so.<major>`.
//!
//! Cargo names the file `libmitosis_capi.so` (the lib name must not collide
//! with the client crate's `libmitosis.rlib`); `scripts/install-c-api` installs
//! it as `libmitosis.so.<version>` with the links `libmitosis.so.<major>` (this
//! SONAME, what programs record as DT_NEEDED) and `libmitosis.so` (what
//! `-lmitosis` finds). With major version 0 the ABI may change between 0.x
//! releases.

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmitosis.so.{major}");
    println!("cargo:rerun-if-changed=build.rs");
}
