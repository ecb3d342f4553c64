//! Gives the shared library a deliberate SONAME.
//!
//! Cargo names the file `libmitosis_capi.so` (the lib name must not collide
//! with the client crate's `libmitosis.rlib`); `scripts/install-c-api` installs
//! it as `libmitosis.so.<version>` with the links `libmitosis.so.0` (this
//! SONAME, what programs record as DT_NEEDED) and `libmitosis.so` (what `-lmitosis`
//! finds). Major version 0: the ABI may change between 0.x releases.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmitosis.so.0");
    println!("cargo:rerun-if-changed=build.rs");
}
