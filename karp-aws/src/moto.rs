//! A moto_server (PyPI `moto[server]`) on a free loopback port: the real EC2 / SSM / SQS HTTP API
//! that karp's tests and the embedded demo talk to through the AWS SDK.
//!
//! The server is a child Python process that exits when its parent does; [`MotoServer`] also
//! kills it on drop.

pub mod faults;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

use crate::sdk::{AwsClients, AwsSettings};

fn aws_err(e: &dyn std::error::Error) -> String {
    aws_sdk_ec2::error::DisplayErrorContext(e).to_string()
}

const SCRIPT: &str = include_str!("moto/server.py");

/// What to install when moto is missing.
pub const INSTALL_HINT: &str =
    "moto_server is required: install it with `pip install 'moto[server]==5.2.1'` (./scripts/test does this)";

/// Errors of [`MotoServer::start`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MotoError {
    /// Python could not be started.
    #[error("starting python3 failed: {0}; {INSTALL_HINT}")]
    StartPython(#[source] std::io::Error),
    /// moto is not installed or did not come up.
    #[error("moto_server did not start ({0}); {INSTALL_HINT}")]
    NotListening(String),
}

/// A running moto_server.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    port: u16,
}

impl MotoServer {
    /// Starts a server on a free loopback port and waits until it listens.
    ///
    /// # Errors
    /// [`MotoError`] when python3 or moto is missing (the message says what to install).
    pub fn start() -> Result<Self, MotoError> {
        let python = std::env::var("KARP_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(python)
            .arg("-c")
            .arg(SCRIPT)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(MotoError::StartPython)?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| MotoError::NotListening("no stdout".into()))?;
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let port = match read {
            Ok(_) => line
                .trim()
                .strip_prefix("port ")
                .and_then(|p| p.parse::<u16>().ok()),
            Err(_) => None,
        };
        match port {
            Some(port) => Ok(MotoServer { child, port }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(MotoError::NotListening(if line.trim().is_empty() {
                    "no output".into()
                } else {
                    line.trim().to_string()
                }))
            }
        }
    }

    /// The port it listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

/// Seeds an emulated account for `settings.cluster_name`: a VPC `10.<octet>.0.0/16` with subnets
/// in us-east-1a/b/c and a security group, all tagged `karpenter.sh/discovery: <cluster>`, the
/// node role `KarpenterNodeRole-<cluster>`, and an AL2023 AMI published under
/// `settings.ssm_parameter_prefix` (moto has no EKS parameters). Returns the AMI id.
///
/// # Errors
/// A message naming the call that failed.
pub async fn seed_cluster(
    clients: &AwsClients,
    settings: &AwsSettings,
    octet: u8,
) -> Result<String, String> {
    let cluster = &settings.cluster_name;
    let ec2 = &clients.ec2;
    let vpc = ec2
        .create_vpc()
        .cidr_block(format!("10.{octet}.0.0/16"))
        .send()
        .await
        .map_err(|e| aws_err(&e))?;
    let vpc_id = vpc
        .vpc()
        .and_then(|v| v.vpc_id())
        .ok_or("CreateVpc returned no VPC id")?
        .to_string();
    for (i, zone) in ["us-east-1a", "us-east-1b", "us-east-1c"]
        .iter()
        .enumerate()
    {
        ec2.create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(format!("10.{octet}.{i}.0/24"))
            .availability_zone(*zone)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Subnet)
                    .tags(tag("karpenter.sh/discovery", cluster))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| aws_err(&e))?;
    }
    ec2.create_security_group()
        .group_name(format!("{cluster}-nodes"))
        .description("nodes")
        .vpc_id(&vpc_id)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::SecurityGroup)
                .tags(tag("karpenter.sh/discovery", cluster))
                .build(),
        )
        .send()
        .await
        .map_err(|e| aws_err(&e))?;
    let images = ec2
        .describe_images()
        .owners("amazon")
        .filters(
            Filter::builder()
                .name("name")
                .values("al2023-ami-2023*-x86_64")
                .build(),
        )
        .send()
        .await
        .map_err(|e| aws_err(&e))?;
    let mut ids: Vec<&str> = images
        .images()
        .iter()
        .filter_map(|i| i.image_id())
        .collect();
    ids.sort_unstable();
    let ami = ids.first().ok_or("moto has no AL2023 AMI")?.to_string();
    clients
        .iam
        .create_role()
        .role_name(format!("KarpenterNodeRole-{cluster}"))
        .assume_role_policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#,
        )
        .send()
        .await
        .map_err(|e| aws_err(&e))?;
    publish_al2023_ami(clients, settings, &ami).await?;
    Ok(ami)
}

/// Publishes `ami` as the AL2023 x86_64 standard AMI under the settings' SSM prefix.
///
/// # Errors
/// A message when PutParameter fails.
pub async fn publish_al2023_ami(
    clients: &AwsClients,
    settings: &AwsSettings,
    ami: &str,
) -> Result<(), String> {
    clients
        .ssm
        .put_parameter()
        .name(format!(
            "{}/eks/optimized-ami/{}/amazon-linux-2023/x86_64/standard/recommended/image_id",
            settings.ssm_parameter_prefix, settings.kubernetes_version
        ))
        .value(ami)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .map_err(|e| aws_err(&e))?;
    Ok(())
}
