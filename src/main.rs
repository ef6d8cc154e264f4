//! The `rack-gateway` binary: everything lives in the library (which
//! forbids unsafe code); this hands the command line to
//! [`rack_gateway::cli`] after the one process-global setting that needs
//! `unsafe`.

#[allow(unsafe_code)] // the one unsafe block; see below
fn main() -> std::process::ExitCode {
    // libgit2 waits forever on a stalled remote by default, which would pin
    // a fetch (and the config it should deliver) indefinitely.
    // SAFETY: these write libgit2 globals without synchronization; nothing
    // else runs yet — no thread has been started at this point.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(10_000);
        let _ = git2::opts::set_server_timeout_in_milliseconds(60_000);
    }
    rack_gateway::cli::main()
}
