//! A fault-injecting HTTP proxy in front of moto_server, for soak tests: the SDK talks to the
//! proxy, which forwards to moto and, per EC2 call and at the configured rates, answers with the
//! faults moto cannot produce itself.
//!
//! - **throttling**: `RequestLimitExceeded` (HTTP 400) instead of forwarding (any EC2 action);
//! - **lost CreateFleet responses**: the call is forwarded (moto launches the instances) and the
//!   answer replaced by an HTTP 500 `InternalError`, so the SDK retries the same request;
//! - **insufficient capacity**: CreateFleet answered with an `InsufficientInstanceCapacity`
//!   error for every override of the request, nothing launched;
//! - **DescribeInstances lag**: for `lag` after an instance was launched through the proxy, a
//!   DescribeInstances naming it by id answers with no reservations (EC2 is eventually
//!   consistent after CreateFleet).
//!
//! Other services (SSM, IAM, SQS) pass through. The proxy speaks HTTP/1.1 with
//! `Connection: close` on every answer; faults are drawn from a seeded generator.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Fault rates (probabilities per eligible call) and the DescribeInstances lag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultPlan {
    /// EC2 calls answered `RequestLimitExceeded`.
    pub throttle: f64,
    /// CreateFleet calls whose answer is lost after moto launched.
    pub lose_create_fleet: f64,
    /// CreateFleet calls answered with insufficient capacity.
    pub insufficient_capacity: f64,
    /// How long a launched instance stays invisible to DescribeInstances by id.
    pub describe_lag: Duration,
    /// Seed of the fault draws.
    pub seed: u64,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            throttle: 0.05,
            lose_create_fleet: 0.1,
            insufficient_capacity: 0.05,
            describe_lag: Duration::from_secs(3),
            seed: 1,
        }
    }
}

/// How many faults of each kind were injected, and calls forwarded.
#[derive(Debug, Default)]
pub struct FaultCounts {
    /// Calls forwarded to moto.
    pub forwarded: AtomicU64,
    /// `RequestLimitExceeded` answers.
    pub throttled: AtomicU64,
    /// CreateFleet answers lost after the launch.
    pub lost_create_fleet: AtomicU64,
    /// CreateFleet insufficient-capacity answers.
    pub insufficient_capacity: AtomicU64,
    /// DescribeInstances answered without instances still lagging.
    pub lagged_describes: AtomicU64,
}

impl FaultCounts {
    /// `kind=count` pairs for a report.
    #[must_use]
    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::SeqCst);
        format!(
            "forwarded={} throttled={} lost_create_fleet={} insufficient_capacity={} lagged_describes={}",
            g(&self.forwarded),
            g(&self.throttled),
            g(&self.lost_create_fleet),
            g(&self.insufficient_capacity),
            g(&self.lagged_describes)
        )
    }
}

struct Shared {
    upstream: String,
    plan: FaultPlan,
    rng: Mutex<u64>,
    launched: Mutex<BTreeMap<String, Instant>>,
    enabled: AtomicBool,
    counts: FaultCounts,
}

impl Shared {
    fn draw(&self, p: f64) -> bool {
        if p <= 0.0 || !self.enabled.load(Ordering::SeqCst) {
            return false;
        }
        let mut s = self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // splitmix64
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        #[allow(clippy::cast_precision_loss)]
        let u = (z >> 11) as f64 / (1u64 << 53) as f64;
        u < p
    }
}

/// A running fault proxy (stops when dropped).
pub struct FaultProxy {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream` (`http://127.0.0.1:PORT`).
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(upstream: &str, plan: FaultPlan) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            upstream: upstream
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
            plan,
            rng: Mutex::new(plan.seed),
            launched: Mutex::new(BTreeMap::new()),
            enabled: AtomicBool::new(true),
            counts: FaultCounts::default(),
        });
        let s = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let _ = serve(conn, &s).await;
                });
            }
        });
        Ok(FaultProxy { url, shared, task })
    }

    /// The proxy's URL (the SDK's endpoint).
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Turns fault injection on or off (off: a plain proxy).
    pub fn set_enabled(&self, on: bool) {
        self.shared.enabled.store(on, Ordering::SeqCst);
    }

    /// The faults injected so far.
    #[must_use]
    pub fn counts(&self) -> &FaultCounts {
        &self.shared.counts
    }
}

/// One HTTP request: head lines and body.
struct Request {
    head: Vec<String>,
    body: Vec<u8>,
}

async fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head_text = String::from_utf8_lossy(&buf[..end]).to_string();
            let head: Vec<String> = head_text.split("\r\n").map(str::to_string).collect();
            let length = head
                .iter()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let mut chunk = [0u8; 16384];
                let n = conn.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + length].to_vec();
            buf.drain(..end + 4 + length);
            return Some(Request { head, body });
        }
        let mut chunk = [0u8; 16384];
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `application/x-www-form-urlencoded` pairs.
fn form(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                if let Ok(b) = u8::from_str_radix(hex, 16) {
                    out.push(b);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

fn answer(status: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn ec2_error(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>fault-injected</RequestID></Response>"
    )
}

/// A CreateFleet answer with an insufficient-capacity error for every override of `params`.
fn ice_answer(params: &[(String, String)]) -> String {
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let lifecycle = get("TargetCapacitySpecification.DefaultTargetCapacityType")
        .unwrap_or_else(|| "on-demand".into());
    let mut items = String::new();
    for c in 1..=50 {
        let Some(lt) = get(&format!(
            "LaunchTemplateConfigs.{c}.LaunchTemplateSpecification.LaunchTemplateId"
        ))
        .or_else(|| {
            get(&format!(
                "LaunchTemplateConfigs.{c}.LaunchTemplateSpecification.LaunchTemplateName"
            ))
        }) else {
            break;
        };
        for o in 1..=200 {
            let Some(t) = get(&format!(
                "LaunchTemplateConfigs.{c}.Overrides.{o}.InstanceType"
            )) else {
                break;
            };
            let subnet = get(&format!("LaunchTemplateConfigs.{c}.Overrides.{o}.SubnetId"))
                .unwrap_or_default();
            items.push_str(&format!(
                "<item><launchTemplateAndOverrides><launchTemplateSpecification><launchTemplateId>{lt}</launchTemplateId><version>$Latest</version></launchTemplateSpecification><overrides><instanceType>{t}</instanceType><subnetId>{subnet}</subnetId></overrides></launchTemplateAndOverrides><lifecycle>{lifecycle}</lifecycle><errorCode>InsufficientInstanceCapacity</errorCode><errorMessage>We currently do not have sufficient {t} capacity (fault injected).</errorMessage></item>"
            ));
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><CreateFleetResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>fault-injected</requestId><fleetId>fleet-fault-injected</fleetId><errorSet>{items}</errorSet><fleetInstanceSet/></CreateFleetResponse>"
    )
}

fn empty_describe() -> String {
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>fault-injected</requestId><reservationSet/></DescribeInstancesResponse>".to_string()
}

/// Instance ids in a moto answer (`<instanceId>i-…</instanceId>` or `<item>i-…</item>`).
fn instance_ids(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(">i-") {
        let tail = &rest[i + 1..];
        let end = tail.find('<').unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

async fn forward(shared: &Shared, req: &Request) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(&shared.upstream).await?;
    let mut head = String::new();
    for (i, line) in req.head.iter().enumerate() {
        if i > 0 {
            let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
            if name == "connection" || name == "host" {
                continue;
            }
        }
        head.push_str(line);
        head.push_str("\r\n");
        if i == 0 {
            head.push_str(&format!(
                "Host: {}\r\nConnection: close\r\n",
                shared.upstream
            ));
        }
    }
    head.push_str("\r\n");
    up.write_all(head.as_bytes()).await?;
    up.write_all(&req.body).await?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp).await?;
    Ok(resp)
}

async fn serve(mut conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut buf = Vec::new();
    if let Some(req) = read_request(&mut conn, &mut buf).await {
        let params = form(&req.body);
        let action = params
            .iter()
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let ec2 = params
            .iter()
            .any(|(k, v)| k == "Version" && v == "2016-11-15");
        let c = &shared.counts;
        let out = if ec2 && shared.draw(shared.plan.throttle) {
            c.throttled.fetch_add(1, Ordering::SeqCst);
            answer(
                400,
                "Bad Request",
                &ec2_error("RequestLimitExceeded", "Request limit exceeded."),
            )
        } else if ec2 && action == "CreateFleet" && shared.draw(shared.plan.insufficient_capacity) {
            c.insufficient_capacity.fetch_add(1, Ordering::SeqCst);
            answer(200, "OK", &ice_answer(&params))
        } else if ec2 && action == "DescribeInstances" && lagging(shared, &params) {
            c.lagged_describes.fetch_add(1, Ordering::SeqCst);
            answer(200, "OK", &empty_describe())
        } else {
            c.forwarded.fetch_add(1, Ordering::SeqCst);
            let resp = forward(shared, &req).await?;
            if ec2 && action == "CreateFleet" {
                let text = String::from_utf8_lossy(&resp).to_string();
                let now = Instant::now();
                let mut launched = shared
                    .launched
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for id in instance_ids(&text) {
                    launched.insert(id, now);
                }
                drop(launched);
                if shared.draw(shared.plan.lose_create_fleet) {
                    c.lost_create_fleet.fetch_add(1, Ordering::SeqCst);
                    answer(
                        500,
                        "Internal Server Error",
                        &ec2_error(
                            "InternalError",
                            "An internal error has occurred (fault injected after the launch).",
                        ),
                    )
                } else {
                    resp
                }
            } else {
                resp
            }
        };
        // Every answer says `Connection: close`: one request per connection.
        conn.write_all(&out).await?;
        conn.flush().await?;
    }
    Ok(())
}

/// Whether a DescribeInstances names an instance launched less than the lag ago.
fn lagging(shared: &Shared, params: &[(String, String)]) -> bool {
    if !shared.enabled.load(Ordering::SeqCst) || shared.plan.describe_lag.is_zero() {
        return false;
    }
    let launched = shared
        .launched
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    params.iter().any(|(k, v)| {
        (k.starts_with("InstanceId.") || (k.starts_with("Filter.") && k.contains(".Value.")))
            && launched
                .get(v)
                .is_some_and(|at| at.elapsed() < shared.plan.describe_lag)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode_and_ice_answers_name_every_override() {
        let params = form(b"Action=CreateFleet&Version=2016-11-15&LaunchTemplateConfigs.1.LaunchTemplateSpecification.LaunchTemplateId=lt-1&LaunchTemplateConfigs.1.Overrides.1.InstanceType=c5.large&LaunchTemplateConfigs.1.Overrides.1.SubnetId=subnet-a&LaunchTemplateConfigs.1.Overrides.2.InstanceType=m5.large&LaunchTemplateConfigs.1.Overrides.2.SubnetId=subnet-b&TargetCapacitySpecification.DefaultTargetCapacityType=spot&Name=a%2Fb+c");
        assert!(params.contains(&("Name".into(), "a/b c".into())));
        let xml = ice_answer(&params);
        assert_eq!(xml.matches("InsufficientInstanceCapacity").count(), 2);
        assert!(xml.contains("<instanceType>m5.large</instanceType><subnetId>subnet-b</subnetId>"));
        assert!(xml.contains("<lifecycle>spot</lifecycle>"));
        assert_eq!(
            instance_ids("<instanceIds><item>i-0abc</item><item>i-0def</item></instanceIds>"),
            ["i-0abc", "i-0def"]
        );
    }
}
