//! Writes Karpenter's benchmark mix as Kubernetes manifests for `karp plan` (docs/performance.md):
//! `cargo run --release -p karp-benches --example mix_manifests -- 5000 > /tmp/mix/pods.yaml`.

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    print!("{}", karp_benches::mix_manifests(n, 42));
}
