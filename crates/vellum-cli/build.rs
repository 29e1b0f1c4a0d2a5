//! Sets `cfg(vellum_postgres)` / `cfg(vellum_mysql)` when `VELLUM_POSTGRES_URL` /
//! `VELLUM_MYSQL_URL` is set and not empty: without it, the tests that need that server are
//! reported as ignored, saying why. `VELLUM_PG_RESTART` (a shell command that restarts the
//! PostgreSQL server, set by `.ci/run`) likewise sets `cfg(vellum_pg_restart)`. Changing any of
//! them rebuilds the crate.

fn main() {
    for (var, cfg) in [
        ("VELLUM_POSTGRES_URL", "vellum_postgres"),
        ("VELLUM_MYSQL_URL", "vellum_mysql"),
        ("VELLUM_PG_RESTART", "vellum_pg_restart"),
    ] {
        println!("cargo:rerun-if-env-changed={var}");
        println!("cargo:rustc-check-cfg=cfg({cfg})");
        if std::env::var_os(var).is_some_and(|url| !url.is_empty()) {
            println!("cargo:rustc-cfg={cfg}");
        }
    }
}
