//! Settings of the AWS provider and the SDK clients built from them (aws-config's default chain,
//! with an optional endpoint override for moto_server or a VPC endpoint).

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Where and for which cluster karp-aws works.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsSettings {
    /// AWS region (`us-east-1`).
    pub region: String,
    /// Endpoint override for every service (`http://127.0.0.1:5055` for moto_server).
    pub endpoint_url: Option<String>,
    /// Cluster name: tags (`kubernetes.io/cluster/<name>`, `eks:eks-cluster-name`) and user data.
    pub cluster_name: String,
    /// API server URL written into node user data.
    pub cluster_endpoint: String,
    /// Base64 CA bundle of the API server, written into node user data.
    pub cluster_ca_bundle: String,
    /// Service CIDR (AL2023 nodeadm `cidr`), e.g. `10.100.0.0/16`.
    pub cluster_cidr: String,
    /// Kubernetes minor version of the cluster (`1.33`): selects the EKS AMI SSM parameters.
    pub kubernetes_version: String,
    /// Prefix of the public SSM parameters (`/aws/service`). Tests point it at a prefix they may
    /// write, since `/aws/` names are reserved.
    pub ssm_parameter_prefix: String,
    /// Whether to query the Pricing API for on-demand prices (it exists only in a few regions and
    /// not in moto); without it, the built-in table is used.
    pub use_pricing_api: bool,
    /// Attempts per call, including the first (standard retry mode with exponential back-off).
    pub max_attempts: u32,
    /// Initial back-off between attempts.
    pub initial_backoff: Duration,
    /// Use fixed dummy credentials instead of the default chain (moto_server accepts any).
    pub dummy_credentials: bool,
}

impl AwsSettings {
    /// Settings for `cluster_name` in `region` with Karpenter's defaults.
    #[must_use]
    pub fn new(region: impl Into<String>, cluster_name: impl Into<String>) -> Self {
        AwsSettings {
            region: region.into(),
            endpoint_url: None,
            cluster_name: cluster_name.into(),
            cluster_endpoint: String::new(),
            cluster_ca_bundle: String::new(),
            cluster_cidr: "10.100.0.0/16".into(),
            kubernetes_version: "1.33".into(),
            ssm_parameter_prefix: "/aws/service".into(),
            use_pricing_api: true,
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            dummy_credentials: false,
        }
    }

    /// The same settings against another endpoint (moto_server); disables the Pricing API, which
    /// such endpoints rarely have.
    #[must_use]
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self.use_pricing_api = false;
        self
    }

    /// Settings for a local moto_server: endpoint override, dummy credentials, short back-off.
    #[must_use]
    pub fn for_moto(region: &str, cluster_name: &str, url: &str) -> Self {
        let mut s = Self::new(region, cluster_name).with_endpoint(url);
        s.dummy_credentials = true;
        s.initial_backoff = Duration::from_millis(10);
        s
    }

    /// The cluster ownership tag key, `kubernetes.io/cluster/<name>`.
    #[must_use]
    pub fn cluster_tag_key(&self) -> String {
        format!("kubernetes.io/cluster/{}", self.cluster_name)
    }
}

/// The SDK clients karp-aws uses.
#[derive(Debug, Clone)]
pub struct AwsClients {
    /// EC2.
    pub ec2: aws_sdk_ec2::Client,
    /// SSM (AMI aliases).
    pub ssm: aws_sdk_ssm::Client,
    /// SQS (interruption queue).
    pub sqs: aws_sdk_sqs::Client,
    /// IAM (instance profiles for `spec.role`).
    pub iam: aws_sdk_iam::Client,
    /// Pricing (on-demand prices), when enabled.
    pub pricing: Option<aws_sdk_pricing::Client>,
}

impl AwsClients {
    /// Loads the default credential chain and region settings, applying `settings`.
    pub async fn load(settings: &AwsSettings) -> Self {
        let retry = RetryConfig::standard()
            .with_max_attempts(settings.max_attempts.max(1))
            .with_initial_backoff(settings.initial_backoff);
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .retry_config(retry);
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        if settings.dummy_credentials {
            loader = loader.credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "karp-dummy",
            ));
        }
        let conf = loader.load().await;
        Self::from_sdk_config(&conf, settings.use_pricing_api)
    }

    /// Clients from an already loaded SDK configuration.
    #[must_use]
    pub fn from_sdk_config(conf: &SdkConfig, use_pricing_api: bool) -> Self {
        let pricing = use_pricing_api.then(|| {
            // The Pricing API is served from us-east-1 (and two other regions) only.
            let pconf = aws_sdk_pricing::config::Builder::from(conf)
                .region(Region::new("us-east-1"))
                .build();
            aws_sdk_pricing::Client::from_conf(pconf)
        });
        AwsClients {
            ec2: aws_sdk_ec2::Client::new(conf),
            ssm: aws_sdk_ssm::Client::new(conf),
            sqs: aws_sdk_sqs::Client::new(conf),
            iam: aws_sdk_iam::Client::new(conf),
            pricing,
        }
    }
}
