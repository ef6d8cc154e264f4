//! The `rack-gateway` binary: everything lives in the library; this only
//! hands the command line to [`rack_gateway::cli`].

fn main() -> std::process::ExitCode {
    rack_gateway::cli::main()
}
