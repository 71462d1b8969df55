//! `lisp-agent`: the daemon.
//!
//! Exit codes: 0 after a clean stop (SIGINT/SIGTERM, programs detached) or a passing `--check`;
//! 2 when the configuration is refused; 1 for any other failure (loading, attaching, ...).
//!
//! `lisp-agent show …` asks a running agent through its local API (`shell::api`) and prints
//! the answer: a table, or the API's JSON with `--json`. 0 when answered, 1 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lisp_agent::config::Config;
use lisp_agent::shell::api;

/// eBPF/XDP-accelerated LISP xTR (RFC 9300/9301).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The YAML configuration (see deploy/lisp-agent.example.yaml). Required to run the agent;
    /// for `show`, only read for its `api-socket`.
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Validate the configuration and exit: 0 if valid, 2 if not.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Ask the running agent (through its local API socket; root only).
    Show {
        #[command(subcommand)]
        what: Show,
        /// The agent's API socket (default: the config's `api-socket`, else
        /// /run/lisp-agent/api.sock).
        #[arg(long, value_name = "PATH", global = true)]
        socket: Option<PathBuf>,
        /// Print the API's JSON answer instead of a table.
        #[arg(long, global = true)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum Show {
    /// Dynamic EIDs: map, EID, interface, uptime, last packet, origin (local / site / away).
    DynamicEid {
        /// Counts per map and origin instead of one line per EID.
        #[arg(long)]
        summary: bool,
    },
}

/// `lisp-agent show …`: one request, the answer printed.
fn show(what: &Show, socket: Option<PathBuf>, json: bool, config: Option<&PathBuf>) -> ExitCode {
    let path = socket
        .or_else(|| {
            config
                .and_then(|c| Config::load(c).ok())
                .and_then(|c| c.api_socket)
        })
        .unwrap_or_else(|| api::DEFAULT_SOCKET.into());
    let (req, format): (
        api::Request,
        fn(&serde_json::Value) -> anyhow::Result<String>,
    ) = match what {
        Show::DynamicEid { summary: false } => (api::Request::DynamicEid, api::format_dynamic_eids),
        Show::DynamicEid { summary: true } => {
            (api::Request::DynamicEidSummary, api::format_summary)
        }
    };
    let printed = api::request(&path, &req).and_then(|v| {
        if json {
            Ok(format!("{}\n", serde_json::to_string_pretty(&v)?))
        } else {
            format(&v)
        }
    });
    match printed {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lisp-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Show { what, socket, json }) = &args.command {
        return show(what, socket.clone(), *json, args.config.as_ref());
    }
    let Some(config) = &args.config else {
        eprintln!("lisp-agent: --config FILE is required to run the agent (see --help)");
        return ExitCode::from(2);
    };
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            // One paragraph: the context chain names the file, then the problem and its place.
            eprintln!("lisp-agent: {e:#}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("{}: configuration OK", config.display());
        return ExitCode::SUCCESS;
    }

    // The config's level unless RUST_LOG says otherwise.
    let mut logs = env_logger::Builder::new();
    logs.filter_level(cfg.log_level.as_filter());
    if let Ok(spec) = std::env::var("RUST_LOG") {
        logs.parse_filters(&spec);
    }
    if let Ok(style) = std::env::var("RUST_LOG_STYLE") {
        logs.parse_write_style(&style);
    }
    logs.init();

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(lisp_agent::shell::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
