//! The `karp` binary.

/// mimalloc instead of glibc's malloc: glibc keeps up to eight arenas per core for a tokio
/// runtime's threads and holds freed memory in them; `karp cluster` with 20 000 pods peaked
/// higher with it (figures in docs/operator.md, "The embedded cluster").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    karp_operator::cli::main()
}
