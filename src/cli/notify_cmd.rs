//! `vantage notify test`: one test event to every `[[notify]]` sink of a fleet file, each
//! with the sink's own time limit and attempts, and one line per sink with the result.

use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;
use vantage_aggregator::notify::{delivery, Sink};
use vantage_protocol::config::{EventKind, FleetConfig};
use vantage_runtime::Backoff;

pub const NOTIFY_TEST_HELP: &str = "\
Sends one event of kind \"test\" to every [[notify]] sink in the fleet file, as the running
aggregator would (same body, same signature, same time limit and attempts), and prints one
line per sink: ok (with the attempts it took) or failed (with why: connect, timeout, HTTP
status, SNS error code). Filters are ignored: a test event goes to every sink. Secrets and
URLs are never printed.

Examples:
  VANTAGE_WEBHOOK_SECRET=... vantage notify test --config fleet.toml
  vantage notify test --config fleet.toml --sink oncall

Exit status: 0 every sink accepted the event, 1 at least one failed, 2 bad fleet file or a
sink that cannot be opened (missing secret variable or file).";

#[derive(Subcommand, Debug)]
pub enum NotifyCommand {
    /// Send a test event to every [[notify]] sink and report each result.
    #[command(after_help = NOTIFY_TEST_HELP)]
    Test(NotifyTestArgs),
}

#[derive(Args, Debug)]
pub struct NotifyTestArgs {
    /// The fleet file with the [[notify]] sinks.
    #[arg(long, env = "VANTAGE_CONFIG")]
    config: PathBuf,
    /// Only this sink (its `name`); repeat for several.
    #[arg(long)]
    sink: Vec<String>,
}

pub async fn run(command: NotifyCommand) -> ExitCode {
    let NotifyCommand::Test(args) = command;
    let fleet = match FleetConfig::load(&args.config) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("vantage: {e}");
            return ExitCode::from(super::EXIT_BAD_INPUT);
        }
    };
    let sections: Vec<_> = fleet
        .notify
        .iter()
        .filter(|s| args.sink.is_empty() || args.sink.contains(s.name.get_ref()))
        .collect();
    if sections.is_empty() {
        eprintln!(
            "vantage: no [[notify]] sink{} in {}; add one, e.g.\n  [[notify]]\n  name = \"oncall\"\n  kind = \"webhook\"\n  url = \"https://hooks.example.com/vantage\"",
            if args.sink.is_empty() { "" } else { " with that name" },
            args.config.display()
        );
        return ExitCode::from(super::EXIT_BAD_INPUT);
    }
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let base = fleet
        .notifications
        .status_url
        .as_ref()
        .map(|u| u.get_ref().trim_end_matches('/').to_owned());
    let mut failed = 0;
    for section in sections {
        let name = section.name.get_ref();
        let sink = match Sink::open(section).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("vantage: {e}");
                return ExitCode::from(super::EXIT_BAD_INPUT);
            }
        };
        let event = vantage_aggregator::notify::NotifyEvent::new(
            fleet.fleet.name.get_ref(),
            EventKind::Test,
            now_ms,
            None,
            None,
            format!("test event from vantage notify test to sink {name}"),
        )
        .with_link(base.as_deref());
        let limits = delivery::Limits {
            timeout: section.timeout(),
            max_attempts: section.max_attempts(),
            backoff: Backoff::new(
                std::time::Duration::from_millis(500),
                std::time::Duration::from_secs(5),
            ),
        };
        match delivery::deliver(name, &sink, &event, limits).await {
            delivery::Outcome::Sent { attempts } => println!(
                "{name} ({}): ok after {attempts} attempt(s)",
                section.kind.get_ref()
            ),
            delivery::Outcome::DeadLetter { last_error: why } => {
                failed += 1;
                println!("{name} ({}): failed: {why}", section.kind.get_ref());
            }
        }
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
