//! The `tessera` binary: every role and command lives in `tessera-cli`.

fn main() -> std::process::ExitCode {
    tessera_cli::main()
}
