//! The `vantage` binary: parse the command line, set up logging, call a library entry point.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let command_line = match lambda_command_line(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("vantage: {message}");
            return ExitCode::from(2);
        }
    };
    let args = match cli::Cli::try_parse_from(command_line) {
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

/// Lambda's custom runtime (`provided.al2023`) starts the zip's `bootstrap` with no arguments;
/// the function's Handler setting, which Lambda passes as `_HANDLER`, names the subcommand
/// instead (`agent` or `status-endpoint`), so one artifact serves every function. Outside
/// Lambda, or with arguments, the command line is left as it is.
fn lambda_command_line(
    mut args: Vec<std::ffi::OsString>,
) -> Result<Vec<std::ffi::OsString>, &'static str> {
    if args.len() > 1 || std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        return Ok(args);
    }
    let handler = std::env::var("_HANDLER").unwrap_or_default();
    if handler.trim().is_empty() {
        return Err(
            "started by Lambda with no arguments and no handler: set the function's \
                    Handler to `agent` or `status-endpoint`",
        );
    }
    args.extend(handler.split_whitespace().map(Into::into));
    Ok(args)
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
