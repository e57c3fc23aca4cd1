use std::process::ExitCode;

use clap::Parser;

// Ingestion allocates many small strings per event; mimalloc handles that far better than glibc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = chgate::cli::Cli::parse();
    match chgate::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            chgate::cli::report_error(&err);
            ExitCode::FAILURE
        }
    }
}
