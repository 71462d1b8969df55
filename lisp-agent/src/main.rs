//! `lisp-agent`: the daemon.
//!
//! Exit codes: 0 after a clean stop (SIGINT/SIGTERM, programs detached) or a passing `--check`;
//! 2 when the configuration is refused; 1 for any other failure (loading, attaching, ...).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lisp_agent::config::Config;

/// eBPF/XDP-accelerated LISP xTR (RFC 9300/9301).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The YAML configuration (see deploy/lisp-agent.example.yaml).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Validate the configuration and exit: 0 if valid, 2 if not.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            // One paragraph: the context chain names the file, then the problem and its place.
            eprintln!("lisp-agent: {e:#}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("{}: configuration OK", args.config.display());
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
