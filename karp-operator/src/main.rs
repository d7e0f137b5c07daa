//! The `karp` binary; everything lives in the `karp_operator` library.

fn main() -> std::process::ExitCode {
    karp_operator::cli::main()
}
