//! The `gatehouse` binary: parses the command line and wires the crates together.
//! No request-path logic lives here.

mod demo;
mod run;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gatehouse: an API gateway and load balancer.
#[derive(Parser, Debug)]
#[command(name = "gatehouse", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve with a config file.
    Run {
        /// Config file.
        #[arg(short, long, default_value = "gatehouse.yaml")]
        config: String,
        /// Worker threads (default: number of cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Process log format on stderr.
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        log_format: String,
    },
    /// Check a config file and exit: 0 when valid, 1 with one line per problem.
    Validate {
        /// Config file.
        #[arg(short, long, default_value = "gatehouse.yaml")]
        config: String,
    },
    /// Start two demo backends and a gateway on 127.0.0.1:8080 with the demo config.
    Demo {
        /// Gateway port.
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => run::validate(&config),
        Command::Run {
            config,
            threads,
            log_format,
        } => {
            gatehouse_observe::logging::init(log_format == "json");
            run::run(&config, threads)
        }
        Command::Demo { port } => {
            gatehouse_observe::logging::init(false);
            demo::demo(port)
        }
    }
}
