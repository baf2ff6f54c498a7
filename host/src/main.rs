//! The `chorus` binary: `serve`, `token` and `plugin check`.
//!
//! Run with: `cargo run -p chorus -- serve --dev`

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use chorus::config::Config;
use chorus::telemetry::{LogFormat, init_logs};

/// Chorus signaling server.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server.
    Serve {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Development defaults: a fixed, public app secret and admin token
        /// when none is configured. Never in production.
        #[arg(long)]
        dev: bool,
    },
    /// Prints a user's session credentials as JSON.
    Token {
        /// TOML configuration file (for the app secret).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Use the `--dev` secret when none is configured.
        #[arg(long)]
        dev: bool,
        /// The user.
        #[arg(long)]
        user_id: u64,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86400)]
        ttl: u64,
    },
    /// Plugin tooling.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Compiles and links a plugin against this host's WIT world and prints
    /// its description; exits non-zero with the reason it would be refused.
    Check {
        /// The `.wasm` file.
        file: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        init_logs(cli.log_format);
    }
    match cli.command {
        Command::Serve { config, dev } => {
            // Serving installs its subscriber once the configuration says
            // whether spans are exported too.
            if dev {
                eprintln!(
                    "warning: --dev uses a public app secret and admin token; never in production \
                     (it refuses any listen address but loopback)"
                );
            }
            let config = Config::load(config.as_deref(), dev)?;
            let endpoint = config.telemetry.otlp_endpoint.clone();
            let telemetry = chorus::telemetry::init(cli.log_format, endpoint.as_deref())?;
            let served = serve(config);
            telemetry.shutdown();
            served
        }
        Command::Token {
            config,
            dev,
            user_id,
            ttl,
        } => {
            let config = Config::load(config.as_deref(), dev)?;
            let token = chorus::token::mint(config.app_secret(), user_id, ttl)?;
            println!("{}", serde_json::to_string(&token)?);
            Ok(())
        }
        Command::Plugin {
            command: PluginCommand::Check { file },
        } => {
            let description = chorus::plugin::check_file(&file)
                .with_context(|| format!("{} would be refused", file.display()))?;
            let grants = chorus::plugin::check_grants(&file)
                .with_context(|| format!("{} would be refused", file.display()))?;
            let mut report = serde_json::to_value(&description)?;
            report["grants"] = serde_json::to_value(&grants)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

/// How many tasks a worker runs between looks at the runtime's global
/// queue (tokio's default is 61). When a thousand sockets become ready at
/// once, all but 256 of their tasks overflow to that queue, and with the
/// default those waited behind the ones that kept cycling locally: signed
/// pings from 1,000 clients had a p99 of 168 ms at a p50 of 2.7 ms. At 4 the
/// p99 was 47 ms for the same 76k pings/s (2 and 1 cost throughput);
/// BENCHMARKS.md has the run.
const GLOBAL_QUEUE_INTERVAL: u32 = 4;

fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .global_queue_interval(GLOBAL_QUEUE_INTERVAL)
        .build()?;
    runtime.block_on(async {
        // Handlers first: a SIGTERM that arrives while the node starts
        // must still shut it down cleanly rather than kill the process.
        let signal = shutdown_signal()?;
        let node = chorus::Node::start(config).await?;
        signal.await;
        tracing::info!("shutting down");
        node.shutdown(Duration::from_secs(10)).await;
        anyhow::Ok(())
    })
}

/// Resolves on SIGTERM or Ctrl-C; the handlers are installed at once.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
