//! Sets `cfg(vellum_postgres)` / `cfg(vellum_mysql)` when `VELLUM_POSTGRES_URL` /
//! `VELLUM_MYSQL_URL` is set and not empty, and `cfg(vellum_tls)` when `VELLUM_TLS_DIR` (the
//! directory of the test certificates `.ci/tls` makes) is: without it, the tests that need that
//! server or those certificates are reported as ignored, saying why. Changing any of the
//! variables rebuilds the crate.

fn main() {
    for (var, cfg) in [
        ("VELLUM_POSTGRES_URL", "vellum_postgres"),
        ("VELLUM_MYSQL_URL", "vellum_mysql"),
        ("VELLUM_TLS_DIR", "vellum_tls"),
    ] {
        println!("cargo:rerun-if-env-changed={var}");
        println!("cargo:rustc-check-cfg=cfg({cfg})");
        if std::env::var_os(var).is_some_and(|url| !url.is_empty()) {
            println!("cargo:rustc-cfg={cfg}");
        }
    }
}
