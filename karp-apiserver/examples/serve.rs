//! Serves an empty in-process API server on 127.0.0.1 and writes a kubeconfig for kubectl.
//!
//! `cargo run -p karp-apiserver --example serve -- [PORT] [KUBECONFIG]`
//! (defaults: a free port, `./karp.kubeconfig`), then `kubectl --kubeconfig karp.kubeconfig get ns`.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let kubeconfig = PathBuf::from(args.next().unwrap_or_else(|| "karp.kubeconfig".into()));
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        karp_apiserver::write_kubeconfig(&kubeconfig, &url)?;
        println!(
            "serving on {url}; kubeconfig written to {}",
            kubeconfig.display()
        );
        karp_apiserver::ApiServer::new().serve(listener).await;
        Ok(())
    })
}
