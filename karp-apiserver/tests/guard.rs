//! The HTTP listener's guard end to end: raw requests to a server on loopback.

use std::io::{Read as _, Write as _};

use karp_apiserver::{ApiServer, ServeOptions};

/// The HTTP status of one request (each header line ends with CRLF).
fn status(port: u16, method: &str, path: &str, headers: &str, body: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_admits_only_token_bearing_json_requests_to_its_own_host() {
    let server = ApiServer::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let options = ServeOptions {
        token: Some("s3cret".into()),
        max_body_bytes: 1 << 10,
        ..ServeOptions::default()
    };
    tokio::spawn(server.serve_with(listener, options));
    let pods = "/api/v1/namespaces/default/pods";
    let host = format!("Host: 127.0.0.1:{port}\r\n");
    let auth = "Authorization: Bearer s3cret\r\n";
    let run = move |method: &'static str, headers: String, body: String| {
        tokio::task::spawn_blocking(move || status(port, method, pods, &headers, &body))
    };
    assert_eq!(run("GET", host.clone(), String::new()).await.unwrap(), 401);
    assert_eq!(
        run("GET", format!("{host}{auth}"), String::new())
            .await
            .unwrap(),
        200
    );
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"x"}]}}"#;
    let json = format!("{host}{auth}Content-Type: application/json\r\n");
    assert_eq!(
        run("POST", json.clone(), pod.to_string()).await.unwrap(),
        201
    );
    // A web page's cross-site form post, a rebound DNS name, an oversized body.
    let form = format!("{host}{auth}Content-Type: text/plain\r\n");
    assert_eq!(run("POST", form, pod.to_string()).await.unwrap(), 415);
    let rebound = format!("Host: rebound.example:{port}\r\n{auth}");
    assert_eq!(run("GET", rebound, String::new()).await.unwrap(), 403);
    assert_eq!(run("POST", json, "x".repeat(4096)).await.unwrap(), 413);
}
