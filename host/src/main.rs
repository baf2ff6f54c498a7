//! The `chorus` binary: `serve`, `token` and the plugin tooling
//! (`plugin new`, `plugin check`, `plugin run`, `plugin dev`).
//!
//! Run with: `cargo run -p chorus -- serve --dev`

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use chorus::config::Config;
use chorus::telemetry::{LogFormat, init_logs};

#[path = "main/dev.rs"]
mod dev;
#[path = "main/new.rs"]
mod new;
#[path = "main/run.rs"]
mod run;

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
    ///
    /// Plugins: the server runs the plugins of the folder `plugins.dir`
    /// (`[plugins] dir = "…"` in the configuration file, or the
    /// environment variable CHORUS_PLUGINS__DIR): each `<name>.wasm` with
    /// its `<name>.toml` (grants and settings). A file added, replaced
    /// (write, then rename) or removed there takes effect within 2 s
    /// without a restart; `chorus plugin dev` does that on every save.
    /// The bundled plugins built into the binary serve beside the
    /// folder's (a file of a bundled plugin's name replaces it; removing
    /// the file brings it back); `plugins.bundled = false`
    /// (CHORUS_PLUGINS__BUNDLED=false) serves the folder's only. See
    /// docs/plugins.md.
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
        /// A running server's admin URL (e.g. http://127.0.0.1:9090): also
        /// refuses the plugin when another plugin there already serves one
        /// of its client or server actions (the server would refuse it).
        #[arg(long)]
        server: Option<String>,
        /// The admin bearer token (`admin.token`).
        #[arg(long, env = "CHORUS_ADMIN__TOKEN")]
        admin_token: Option<String>,
    },
    /// Runs one event through the real plugin runtime (the server's
    /// limits and the grants of the `<name>.toml` beside the file) against
    /// a room state, without a server; prints the result, the state
    /// changes and notifications the server would apply and deliver, and
    /// the call's time. Exits non-zero when the call fails.
    Run {
        /// The `.wasm` file.
        file: PathBuf,
        /// The event: `{"action", "source", "user_id", "payload"}`.
        #[arg(long)]
        event: PathBuf,
        /// The room state: `{"seats", "rooms", "calls", "kv",
        /// "attributes", "profiles"}` (see docs/plugins.md).
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Writes a new plugin crate, `<path>/<name>`: one example action, its
    /// `<name>.toml` (grants), a unit test on the SDK's fake host and a
    /// README. It depends on this checkout's SDK and builds into this
    /// checkout's `plugins/target`, so it builds for wasm32-wasip2 at once.
    New {
        /// The plugin's name (the `.wasm` file's stem and the example
        /// action): a-z, 0-9 and _, starting with a letter.
        name: String,
        /// The folder to create it in.
        #[arg(long, default_value = ".")]
        path: PathBuf,
        /// The plugin SDK to depend on (default: this checkout's
        /// `plugins/sdk`).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Builds a plugin crate for wasm32-wasip2 and puts it into a running
    /// server (uploaded through its admin URL, or written into its plugins
    /// folder, write then rename), again on every save; the server swaps
    /// it in without a restart.
    Dev {
        /// The plugin crate's folder.
        #[arg(default_value = ".")]
        crate_dir: PathBuf,
        /// Where the build goes: the server's admin URL (e.g.
        /// http://127.0.0.1:9090; uploaded, and the server writes it into
        /// its plugins.dir) or, on the same machine, its plugins folder
        /// (plugins.dir).
        #[arg(long)]
        server: String,
        /// With a plugins folder as --server: the server's admin URL, to
        /// print the version that went live or the server's load error.
        #[arg(long)]
        admin: Option<String>,
        /// The admin bearer token (`admin.token`); default: the token of
        /// `serve --dev` (`chorus-dev-admin`).
        #[arg(long, env = "CHORUS_ADMIN__TOKEN")]
        admin_token: Option<String>,
        /// Build and install once, then exit.
        #[arg(long)]
        once: bool,
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
            print_out(&serde_json::to_string(&token)?)?;
            Ok(())
        }
        Command::Plugin {
            command:
                PluginCommand::Check {
                    file,
                    server,
                    admin_token,
                },
        } => {
            let description = chorus::plugin::check_file(&file)
                .with_context(|| format!("{} would be refused", file.display()))?;
            let grants = chorus::plugin::check_grants(&file)
                .with_context(|| format!("{} would be refused", file.display()))?;
            let mut report = serde_json::to_value(&description)?;
            report["grants"] = serde_json::to_value(&grants)?;
            if let Some(server) = server {
                let listing = dev::get_json(&server, "/admin/plugins", admin_token.as_deref())
                    .with_context(|| format!("asking {server} what it serves"))?;
                let clashes = clashes(&report, &listing);
                if !clashes.is_empty() {
                    anyhow::bail!(
                        "{} would be refused by {server}: {}",
                        file.display(),
                        clashes.join("; ")
                    );
                }
            }
            print_out(&serde_json::to_string_pretty(&report)?)?;
            Ok(())
        }
        Command::Plugin {
            command: PluginCommand::Run { file, event, state },
        } => run::run(&file, &event, state.as_deref()),
        Command::Plugin {
            command: PluginCommand::New { name, path, sdk },
        } => {
            let created = new::create(&name, &path, sdk.as_deref())?;
            let dir = created.dir.display();
            println!("created {dir}");
            println!("  cd {dir} && cargo test");
            println!(
                "  chorus plugin dev {dir} --server http://127.0.0.1:9090 \
                 (the server's admin URL; or its plugins.dir)"
            );
            if !created.target_installed {
                println!("{}", new::missing_target_hint());
            }
            Ok(())
        }
        Command::Plugin {
            command:
                PluginCommand::Dev {
                    crate_dir,
                    server,
                    admin,
                    admin_token,
                    once,
                },
        } => dev::run(&dev::Options {
            crate_dir,
            server: dev::Server::parse(&server),
            admin,
            // The `--dev` token is public: a production server refuses it
            // and `plugin dev` says which option to pass.
            admin_token: admin_token.or_else(|| Some(chorus::config::DEV_ADMIN_TOKEN.into())),
            once,
        }),
    }
}

/// The actions `report` (a `plugin check` description) claims from the
/// client or server source that another plugin of `listing` (`GET
/// /admin/plugins`) already serves: the server refuses such a load. A
/// plugin of the same name is a new version, not a clash; system events
/// are shared by design.
fn clashes(report: &serde_json::Value, listing: &serde_json::Value) -> Vec<String> {
    let name = &report["name"];
    let empty = Vec::new();
    let plugins = listing["plugins"].as_array().unwrap_or(&empty);
    let actions = report["actions"].as_array().unwrap_or(&empty);
    let mut found = Vec::new();
    for action in actions {
        let sources = action["sources"].as_array().unwrap_or(&empty);
        if !sources.iter().any(|s| s == "client" || s == "server") {
            continue;
        }
        for plugin in plugins.iter().filter(|p| &p["name"] != name) {
            let serves = plugin["actions"].as_array().unwrap_or(&empty);
            if serves.contains(&action["name"]) {
                found.push(format!(
                    "action {} is already served by plugin {}",
                    action["name"], plugin["name"]
                ));
            }
        }
    }
    found
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

/// Writes `text` and a newline to stdout. A reader that went away (a
/// closed pipe: `chorus plugin run … | head -1`) is not an error: the
/// output was for it alone.
fn print_out(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
