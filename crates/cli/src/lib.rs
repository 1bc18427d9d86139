//! The `tessera` command line: cluster set-up, the server roles, and client
//! commands for people and scripts.
//!
//! Owns argument parsing, turning the cluster file into running roles, and
//! human and JSON output. It must not hold storage logic: every command is a
//! call into meta, node or the SDK.

mod admin_client;
mod args;
mod bench;
mod client_cmds;
mod dev;
mod heal_cmds;
mod machine;
mod mount;
mod servers;
mod units;
mod volume_cmds;

pub use args::Cli;
pub use bench::s3_client;

use clap::Parser;

/// Parses the process arguments and runs the command; the binary's `main`.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(args::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
