use std::process::ExitCode;

use clap::Parser;

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
