//! Embeds `migrations/clickhouse/*.sql` into the binary and makes cargo rebuild when migrations change.

use std::fmt::Write as _;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=migrations/clickhouse");
    println!("cargo:rerun-if-changed=migrations/postgres");
    let dir = Path::new("migrations/clickhouse");
    let mut files: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .collect();
    files.sort();
    let mut out = String::from("&[\n");
    // Paths relative to the crate, resolved when the crate compiles: the target directory may be
    // shared by several checkouts, and a cached absolute path would point into another one.
    for name in files {
        writeln!(
            out,
            "    ({name:?}, include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/migrations/clickhouse/{name}\"))),"
        )?;
    }
    out.push(']');
    let target = Path::new(&std::env::var("OUT_DIR")?).join("clickhouse_migrations.rs");
    std::fs::write(target, out)?;
    Ok(())
}
