//! The `vantage` binary: parse the command line, set up logging, call a library entry point.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => return cli::exit_for_parse_error(e),
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vantage: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(cli::dispatch(args))
}

/// Logs go to stderr so stdout stays clean for `--json`; `VANTAGE_LOG` (or `RUST_LOG`) sets
/// the filter, warnings only by default. Colour only when stderr is a terminal: escape codes
/// would otherwise land in files, journald and CloudWatch Logs.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("VANTAGE_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "warn".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
