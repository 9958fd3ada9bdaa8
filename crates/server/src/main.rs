//! The `strata` binary.

fn main() -> std::process::ExitCode {
    strata::cli::main()
}
