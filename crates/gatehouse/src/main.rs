//! The `gatehouse` binary: parses the command line and wires the crates together.
//! No request-path logic lives here.

mod allocator;
mod demo;
mod run;

use gatehouse::server;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

const ENV_HELP: &str = "Environment:\n  RUST_LOG  process log filter when --log-level is not given: error, warn, info,\n            debug, trace, or per-module directives such as info,gatehouse_proxy=debug";

/// Gatehouse: an API gateway and load balancer.
#[derive(Parser, Debug)]
#[command(
    name = "gatehouse",
    version,
    about = "Gatehouse: an API gateway and load balancer",
    after_help = ENV_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve with a config file.
    #[command(after_help = ENV_HELP)]
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
        /// Process log level: error, warn, info (default), debug, trace, or a filter such
        /// as `info,gatehouse_proxy=debug`. Overrides the RUST_LOG environment variable.
        #[arg(long, value_name = "LEVEL")]
        log_level: Option<String>,
    },
    /// Check a config file and exit: 0 when valid, 1 with one line per problem.
    Validate {
        /// Config file.
        #[arg(short, long, default_value = "gatehouse.yaml")]
        config: String,
    },
    /// Print a shell completion script: `gatehouse completions bash > /etc/bash_completion.d/gatehouse`.
    Completions {
        /// Target shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `gatehouse man > gatehouse.1`.
    Man,
    /// Print the JSON Schema of the config file, for editor completion and CI checks.
    Schema,
    /// Start two demo backends and a gateway on 127.0.0.1:8080 with the demo config.
    Demo {
        /// Gateway port.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Admin API port.
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
    },
}

fn main() -> ExitCode {
    gatehouse_proxy::housekeeping::set(allocator::collect);
    let cli = Cli::parse();
    match cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "gatehouse", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cannot write the man page: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Schema => match serde_json::to_string_pretty(
            &gatehouse_policies::Kinds::builtin().config_schema(),
        ) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot render the schema: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Validate { config } => run::validate(&config),
        Command::Run {
            config,
            threads,
            log_format,
            log_level,
        } => {
            gatehouse_observe::logging::init(log_format == "json", log_level.as_deref());
            run::run(&config, threads)
        }
        Command::Demo { port, admin_port } => {
            gatehouse_observe::logging::init(false, None);
            demo::demo(port, admin_port)
        }
    }
}
