//! The `karp` command line (clap). Only this module parses flags.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::commands::catalog::{fetch_catalog_json, CatalogOptions, FetchedCatalog};
use crate::commands::disrupt::{
    disrupt_paths, render_table as render_disrupt_table, DisruptOptions,
};
use crate::commands::plan::{plan_paths, render_table, Solver};
use karp_core::disruption::{Justification, Mode, SavingsThreshold, Timestamp};

/// karp: a Kubernetes node autoscaler API-compatible with Karpenter v1.
#[derive(Debug, Parser)]
#[command(name = "karp", version, about)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan which nodes to launch for the pending pods in Kubernetes manifests (no cluster needed).
    Plan(PlanArgs),
    /// Dry-run disruption: which nodes karp would remove or replace now, in Kubernetes manifests
    /// (NodePools, Nodes, NodeClaims, Pods, PDBs; no cluster needed).
    Disrupt(DisruptArgs),
    /// Write the instance-type catalog of a live EC2 API (JSON, the `karp plan --catalog` format).
    Catalog(CatalogArgs),
    /// Print the CustomResourceDefinitions (NodePool, NodeClaim, EC2NodeClass) as YAML.
    Crds,
    #[cfg(feature = "embedded")]
    /// Run the embedded cluster with the real controllers on examples/, show the scale-up, remove a
    /// node, scale down and consolidate, and summarize (no cluster or AWS account needed).
    Demo(Box<DemoArgs>),
    #[cfg(feature = "embedded")]
    /// Serve the embedded cluster (API server, simulated cloud and kubelets, karp's controllers)
    /// on a loopback port with a kubeconfig for kubectl, until interrupted.
    Cluster(Box<ClusterArgs>),
    /// Run the operator against a Kubernetes cluster and EC2 (as deployed by the Helm chart).
    Run(Box<RunArgs>),
    /// Watch this node's EC2 instance metadata (IMDSv2) for spot interruption notices, scheduled
    /// maintenance and rebalance recommendations; taint, cordon and drain the node on them (the
    /// chart's optional DaemonSet; no interruption queue or NodeClaim needed).
    ImdsMonitor(Box<ImdsMonitorArgs>),
}

/// Arguments of `karp imds-monitor`.
#[derive(Debug, clap::Args)]
pub struct ImdsMonitorArgs {
    /// The node this agent runs on (the DaemonSet sets it from `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Kubeconfig; default: in-cluster config, then $KUBECONFIG / ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// IMDS endpoint (default: `http://169.254.169.254`, or
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`).
    #[arg(long, env = "IMDS_ENDPOINT")]
    pub imds_endpoint: Option<String>,
    /// How often to read IMDS (a duration: `2s`, `500ms`).
    #[arg(long, default_value = "2s")]
    pub poll_interval: String,
    /// Taint, cordon and drain on spot interruption notices.
    #[arg(long, env = "ENABLE_SPOT_INTERRUPTION_DRAINING", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_spot_interruption_draining: bool,
    /// Taint, cordon and drain on scheduled maintenance events (uncordon when EC2 cancels them).
    #[arg(long, env = "ENABLE_SCHEDULED_EVENT_DRAINING", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_scheduled_event_draining: bool,
    /// Taint, cordon and drain on rebalance recommendations.
    #[arg(long, env = "ENABLE_REBALANCE_DRAINING", default_value_t = false, action = clap::ArgAction::Set)]
    pub enable_rebalance_draining: bool,
    /// Taint and cordon (without draining) on rebalance recommendations.
    #[arg(long, env = "ENABLE_REBALANCE_MONITORING", default_value_t = false, action = clap::ArgAction::Set)]
    pub enable_rebalance_monitoring: bool,
    /// Grace period in seconds of the evicted pods (-1: each pod's own).
    #[arg(long, env = "POD_TERMINATION_GRACE_PERIOD", default_value_t = -1, allow_negative_numbers = true)]
    pub pod_termination_grace_period: i64,
    /// Effect of the monitor's taints: NoSchedule, PreferNoSchedule or NoExecute.
    #[arg(long, env = "TAINT_EFFECT", default_value = "NoSchedule")]
    pub taint_effect: String,
    /// Log what would be done, without writing to the cluster.
    #[arg(long, env = "DRY_RUN")]
    pub dry_run: bool,
    /// Logging.
    #[command(flatten)]
    pub logging: LoggingArgs,
}

/// Arguments of `karp run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Kubeconfig; default: in-cluster config, then $KUBECONFIG / ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Cluster name (tags, user data).
    #[arg(long, env = "CLUSTER_NAME")]
    pub cluster_name: String,
    /// API server URL written into node user data.
    #[arg(long, env = "CLUSTER_ENDPOINT", default_value = "")]
    pub cluster_endpoint: String,
    /// Base64 CA bundle of the API server for node user data.
    #[arg(long, env = "CLUSTER_CA_BUNDLE", default_value = "")]
    pub cluster_ca_bundle: String,
    /// AWS region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,
    /// EC2 / SSM / IAM / SQS endpoint override (moto_server, VPC endpoint).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// Kubernetes minor version of the cluster (selects EKS AMI parameters).
    #[arg(long, default_value = "1.33")]
    pub kubernetes_version: String,
    /// Prefix of the public SSM parameters used by AMI aliases.
    #[arg(long, default_value = "/aws/service")]
    pub ssm_parameter_prefix: String,
    /// SQS queue (name or URL) with EventBridge interruption messages.
    #[arg(long, env = "INTERRUPTION_QUEUE")]
    pub interruption_queue: Option<String>,
    /// Drain nodes on EC2 rebalance recommendations too (default: record an Event only, as
    /// Karpenter does).
    #[arg(long, env = "DRAIN_ON_REBALANCE")]
    pub drain_on_rebalance: bool,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,
    /// Elect a leader among replicas through a Lease.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "SYSTEM_NAMESPACE", default_value = "kube-system")]
    pub namespace: String,
    /// This replica's identity (default: the pod / host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Logging.
    #[command(flatten)]
    pub logging: LoggingArgs,
    /// Disruption.
    #[command(flatten)]
    pub disruption: DisruptionArgs,
    /// Provisioning.
    #[command(flatten)]
    pub provisioning: ProvisioningArgs,
}

/// Logging flags of `karp run` and `karp cluster`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoggingArgs {
    /// Log level (`error`, `warn`, `info`, `debug`, `trace`) or a tracing filter such as
    /// `info,karp_sim=debug`; `RUST_LOG`, when set, takes precedence.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl LoggingArgs {
    /// Installs the process's tracing subscriber (logs to stderr).
    ///
    /// # Errors
    /// A message naming `--log-level` when it is not a valid filter.
    pub fn init(&self) -> Result<(), String> {
        let filter = match tracing_subscriber::EnvFilter::try_from_default_env() {
            Ok(f) => f,
            Err(_) => tracing_subscriber::EnvFilter::try_new(&self.log_level)
                .map_err(|e| format!("--log-level {}: {e}", self.log_level))?,
        };
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let _ = match self.log_format {
            LogFormat::Json => builder.json().try_init(),
            LogFormat::Text => builder.try_init(),
        };
        Ok(())
    }
}

/// Disruption flags of `karp run`, `karp cluster` and `karp demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DisruptionArgs {
    /// Consolidator of NodePools without the `karp.dev/consolidation-mode` annotation:
    /// `karpenter` (Karpenter v1.14's methods) or `global` (karp's global consolidator).
    #[arg(long = "consolidation-mode", env = "CONSOLIDATION_MODE", value_enum, default_value_t = ModeArg::Karpenter)]
    pub consolidation_mode: ModeArg,
    /// Feature gates as Karpenter's, `Name=true|false` separated by commas; karp acts on
    /// `SpotToSpotConsolidation` and accepts Karpenter's others.
    #[arg(long = "feature-gates", env = "FEATURE_GATES", default_value = "")]
    pub feature_gates: String,
    /// Run the disruption controller (consolidation, emptiness, drift).
    #[arg(long = "disruption", default_value_t = true, action = clap::ArgAction::Set)]
    pub disruption: bool,
}

impl DisruptionArgs {
    /// The controller settings these flags select (Karpenter's timings).
    ///
    /// # Errors
    /// A message naming the malformed `--feature-gates` entry.
    pub fn control(&self) -> Result<crate::controllers::disruption::DisruptionControl, String> {
        let spot_to_spot = crate::controllers::disruption::spot_to_spot_gate(&self.feature_gates)
            .map_err(|e| format!("--feature-gates: {e}"))?;
        Ok(crate::controllers::disruption::DisruptionControl {
            enabled: self.disruption,
            mode: mode_of(self.consolidation_mode),
            spot_to_spot,
            ..Default::default()
        })
    }
}

/// Provisioning flags of `karp run`, `karp cluster` and `karp demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProvisioningArgs {
    /// How each provisioning batch is packed: `milp` (default: karp's MILP packer, validated like
    /// FFD's plans and kept only when cheaper, 35–80 % cheaper on the benchmark traces) or `ffd`
    /// (Karpenter's first-fit decreasing, Karpenter's exact decisions).
    #[arg(long = "solver", env = "SOLVER", value_enum, default_value_t = SolverArg::Milp)]
    pub solver: SolverArg,
    /// The MILP's wall-clock budget per 1 000 pending pods (a Go duration, `1.5s`); when it runs
    /// out the batch keeps the best plan found, FFD's at worst.
    #[arg(long = "solver-budget", env = "SOLVER_BUDGET", default_value = "1.5s")]
    pub solver_budget: String,
    /// A MILP NodeClaim may launch on instance types up to this fraction dearer than its chosen
    /// offering (spot claims keep at least 15 options), so a short offering does not block it.
    #[arg(long = "launch-price-margin", env = "LAUNCH_PRICE_MARGIN", default_value_t = karp_core::packing::flexibility::DEFAULT_PRICE_MARGIN)]
    pub launch_price_margin: f64,
}

impl ProvisioningArgs {
    /// The provisioner's solver settings.
    ///
    /// # Errors
    /// A message naming the flag whose value is invalid.
    pub fn settings(&self) -> Result<crate::controllers::provisioner::SolverSettings, String> {
        let budget = karp_core::disruption::time::parse_go_duration(&self.solver_budget)
            .map_err(|e| format!("--solver-budget {:?}: {e}", self.solver_budget))?;
        if budget.is_zero() {
            return Err(format!(
                "--solver-budget {:?}: must be positive",
                self.solver_budget
            ));
        }
        if !(self.launch_price_margin.is_finite() && self.launch_price_margin >= 0.0) {
            return Err(format!(
                "--launch-price-margin {}: must be a fraction ≥ 0 (0.1 = 10 %)",
                self.launch_price_margin
            ));
        }
        Ok(crate::controllers::provisioner::SolverSettings {
            solver: solver_of(self.solver),
            budget_secs: budget.as_secs_f64(),
            price_margin: self.launch_price_margin,
            ..Default::default()
        })
    }
}

/// The controller settings the disruption and provisioning flags select; a bad flag is printed
/// and becomes exit status 2.
fn controller_flags(
    disruption: &DisruptionArgs,
    provisioning: &ProvisioningArgs,
) -> Result<
    (
        crate::controllers::disruption::DisruptionControl,
        crate::controllers::provisioner::SolverSettings,
    ),
    ExitCode,
> {
    disruption
        .control()
        .and_then(|d| Ok((d, provisioning.settings()?)))
        .map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(2)
        })
}

fn solver_of(s: SolverArg) -> Solver {
    match s {
        SolverArg::Ffd => Solver::Ffd,
        SolverArg::Milp => Solver::Milp,
    }
}

fn mode_of(m: ModeArg) -> Mode {
    match m {
        ModeArg::Karpenter => Mode::Karpenter,
        ModeArg::Global => Mode::Global,
    }
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Resolves on Ctrl-C or SIGTERM (how Kubernetes stops a pod).
async fn termination_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Run `karp imds-monitor` until SIGTERM / Ctrl-C.
pub fn run_imds_monitor(args: &ImdsMonitorArgs) -> ExitCode {
    if let Err(e) = args.logging.init() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let poll = match crate::api::duration::parse(&args.poll_interval) {
        Ok(Some(d)) if !d.is_zero() => d,
        _ => {
            eprintln!(
                "error: --poll-interval {:?}: expected a positive duration such as 2s",
                args.poll_interval
            );
            return ExitCode::from(2);
        }
    };
    if !matches!(
        args.taint_effect.as_str(),
        "NoSchedule" | "PreferNoSchedule" | "NoExecute"
    ) {
        eprintln!(
            "error: --taint-effect {:?}: expected NoSchedule, PreferNoSchedule or NoExecute",
            args.taint_effect
        );
        return ExitCode::from(2);
    }
    let poller = match karp_aws::imds::ImdsPoller::new(
        args.imds_endpoint.as_deref(),
        std::time::Duration::from_secs(21_600),
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: --imds-endpoint: {e}");
            return ExitCode::from(2);
        }
    };
    let options = crate::commands::imds_monitor::MonitorOptions {
        node_name: args.node_name.clone(),
        drain_on_spot: args.enable_spot_interruption_draining,
        drain_on_scheduled: args.enable_scheduled_event_draining,
        drain_on_rebalance: args.enable_rebalance_draining,
        cordon_on_rebalance: args.enable_rebalance_monitoring,
        dry_run: args.dry_run,
        grace_period: (args.pod_termination_grace_period >= 0)
            .then_some(args.pod_termination_grace_period),
        taint_effect: args.taint_effect.clone(),
        poll,
    };
    let Some(rt) = runtime() else {
        return ExitCode::from(1);
    };
    let result = rt.block_on(async {
        let client = crate::commands::run::client(args.kubeconfig.as_deref())
            .await
            .map_err(|e| crate::commands::imds_monitor::MonitorError::KubeConfig(e.to_string()))?;
        crate::commands::imds_monitor::run_monitor(client, poller, options, termination_signal())
            .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ crate::commands::imds_monitor::MonitorError::NodeNotFound(_)) => {
            eprintln!("error: {}", report(&e));
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {}", report(&e));
            ExitCode::from(1)
        }
    }
}

/// Run `karp run` until SIGINT / SIGTERM.
pub fn run_operator(args: &RunArgs) -> ExitCode {
    if let Err(e) = args.logging.init() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let mut aws = karp_aws::AwsSettings::new(&args.region, &args.cluster_name);
    if let Some(url) = &args.endpoint_url {
        aws = aws.with_endpoint(url);
        aws.dummy_credentials = std::env::var_os("AWS_ACCESS_KEY_ID").is_none();
    }
    aws.cluster_endpoint = args.cluster_endpoint.clone();
    aws.cluster_ca_bundle = args.cluster_ca_bundle.clone();
    aws.kubernetes_version = args.kubernetes_version.clone();
    aws.ssm_parameter_prefix = args.ssm_parameter_prefix.clone();
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME").unwrap_or_else(|_| format!("karp-{}", std::process::id()))
    });
    let (disruption, solver) = match controller_flags(&args.disruption, &args.provisioning) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let settings = crate::controllers::OperatorSettings {
        identity: identity.clone(),
        disruption,
        solver,
        ..crate::controllers::OperatorSettings::default()
    };
    let options = crate::commands::run::RunOptions {
        kubeconfig: args.kubeconfig.clone(),
        aws,
        interruption: args.interruption_queue.as_ref().map(|queue| {
            crate::controllers::interruption::InterruptionOptions {
                queue: queue.clone(),
                drain_on_rebalance: args.drain_on_rebalance,
            }
        }),
        metrics_addr: args.metrics_addr.clone(),
        leader_election: args
            .leader_elect
            .then(|| crate::runtime::leader::LeaderElection::new(&args.namespace, &identity)),
        settings,
    };
    let Some(rt) = runtime() else {
        return ExitCode::from(1);
    };
    match rt.block_on(crate::commands::run::run(options, termination_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            ExitCode::from(1)
        }
    }
}

#[cfg(feature = "embedded")]
/// Arguments of `karp demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Manifests to apply (the seed NodePool / EC2NodeClass and workloads).
    #[arg(short = 'f', long = "filename", default_value = "examples")]
    pub path: PathBuf,
    /// Disruption.
    #[command(flatten)]
    pub disruption: DisruptionArgs,
    /// Provisioning.
    #[command(flatten)]
    pub provisioning: ProvisioningArgs,
}

#[cfg(feature = "embedded")]
/// Arguments of `karp cluster`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Address to serve the Kubernetes API on (loopback unless `--allow-remote`).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: String,
    /// Allow `--listen` on a non-loopback address (requests still need the kubeconfig's token).
    #[arg(long)]
    pub allow_remote: bool,
    /// Where to write the kubeconfig.
    #[arg(long, default_value = "karp.kubeconfig")]
    pub kubeconfig: PathBuf,
    /// Cloud backend of the embedded cluster.
    #[arg(long, value_enum, default_value_t = CloudArg::Sim)]
    pub cloud: CloudArg,
    /// EC2 endpoint for `--cloud aws` (its account must have subnets and security groups tagged
    /// `karpenter.sh/discovery: <cluster name>`, the role `KarpenterNodeRole-<cluster name>` and
    /// an AL2023 AMI under the SSM prefix `/karp/<cluster name>`); without it, karp starts its own
    /// moto_server and seeds it so for the cluster name.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Cluster name of `--cloud aws` (discovery tags, node role, instance tags); the default is
    /// the name examples/seed selects, so the README's example works in both clouds.
    #[arg(long, default_value = "my-cluster")]
    pub cluster_name: String,
    /// Serve the operator's `/metrics`, `/healthz` and `/readyz` on this address (off when
    /// not given).
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// `--cloud aws`: handle EventBridge interruption messages from this SQS queue (name or URL),
    /// as `karp run` does; with karp's own moto_server the queue is created, so
    /// `aws sqs send-message` to it plays a spot interruption.
    #[arg(long)]
    pub interruption_queue: Option<String>,
    /// `--cloud aws`: drain nodes on rebalance recommendations too.
    #[arg(long)]
    pub drain_on_rebalance: bool,
    /// Logging (`--log-level warn` keeps only the status lines).
    #[command(flatten)]
    pub logging: LoggingArgs,
    /// Disruption.
    #[command(flatten)]
    pub disruption: DisruptionArgs,
    /// Provisioning.
    #[command(flatten)]
    pub provisioning: ProvisioningArgs,
}

#[cfg(feature = "embedded")]
/// `--cloud`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CloudArg {
    /// The in-memory simulated cloud.
    Sim,
    /// karp-aws against an EC2 API endpoint.
    Aws,
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

#[cfg(feature = "embedded")]
/// Run `karp demo`.
pub fn run_demo(args: &DemoArgs) -> ExitCode {
    let (control, solver) = match controller_flags(&args.disruption, &args.provisioning) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(rt) = runtime() else {
        return ExitCode::from(1);
    };
    let mut stdout = std::io::stdout();
    let choices = crate::commands::demo::Choices {
        disruption: control,
        solver,
    };
    match rt.block_on(crate::commands::demo::run_demo(
        &args.path,
        choices,
        &mut stdout,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(
            e @ (crate::commands::demo::DemoError::ReadManifests { .. }
            | crate::commands::demo::DemoError::ApplyManifest { .. }),
        ) => {
            eprintln!("error: {}", report(&e));
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {}", report(&e));
            ExitCode::from(1)
        }
    }
}

#[cfg(feature = "embedded")]
/// Run `karp cluster` until Ctrl-C.
pub fn run_cluster(args: &ClusterArgs) -> ExitCode {
    if args.cloud == CloudArg::Sim && (args.interruption_queue.is_some() || args.drain_on_rebalance)
    {
        eprintln!(
            "error: --interruption-queue and --drain-on-rebalance need --cloud aws (the simulated cloud sends no interruption messages)"
        );
        return ExitCode::from(2);
    }
    let (control, solver) = match controller_flags(&args.disruption, &args.provisioning) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = args.logging.init() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let Some(rt) = runtime() else {
        return ExitCode::from(1);
    };
    let mut stdout = std::io::stdout();
    let result = rt.block_on(async {
        // `--cloud aws` without an endpoint starts (and seeds) its own moto_server.
        let mut moto = None;
        let cloud = match args.cloud {
            CloudArg::Sim => crate::commands::demo::ClusterCloud::Sim,
            CloudArg::Aws => {
                let url = match &args.endpoint_url {
                    Some(u) => u.clone(),
                    None => {
                        let m = karp_aws::moto::MotoServer::start()
                            .map_err(|e| crate::commands::demo::DemoError::Start(e.to_string()))?;
                        let u = m.url();
                        moto = Some(m);
                        u
                    }
                };
                let mut settings =
                    karp_aws::AwsSettings::for_moto("us-east-1", &args.cluster_name, &url);
                settings.ssm_parameter_prefix = format!("/karp/{}", args.cluster_name);
                if moto.is_some() {
                    let clients = karp_aws::AwsClients::load(&settings).await;
                    karp_aws::moto::seed_cluster(&clients, &settings, 0)
                        .await
                        .map_err(crate::commands::demo::DemoError::Start)?;
                    if let Some(q) = args
                        .interruption_queue
                        .as_ref()
                        .filter(|q| !q.contains("://"))
                    {
                        clients
                            .sqs
                            .create_queue()
                            .queue_name(q)
                            .send()
                            .await
                            .map_err(|e| {
                                crate::commands::demo::DemoError::Start(format!(
                                    "creating the interruption queue {q} in moto: {e}"
                                ))
                            })?;
                    }
                }
                let interruption = args.interruption_queue.as_ref().map(|queue| {
                    crate::controllers::interruption::InterruptionOptions {
                        queue: queue.clone(),
                        drain_on_rebalance: args.drain_on_rebalance,
                    }
                });
                crate::commands::demo::ClusterCloud::Aws(Box::new(settings), interruption)
            }
        };
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let r = crate::commands::demo::run_cluster(
            &crate::commands::demo::Serving {
                listen: args.listen.clone(),
                allow_remote: args.allow_remote,
                kubeconfig: args.kubeconfig.clone(),
                metrics_addr: args.metrics_addr.clone(),
            },
            cloud,
            crate::commands::demo::Choices {
                disruption: control,
                solver,
            },
            &mut stdout,
            shutdown,
        )
        .await;
        drop(moto);
        r
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            let usage = matches!(e, crate::commands::demo::DemoError::RemoteListen(_));
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// Arguments of `karp catalog`.
#[derive(Debug, clap::Args)]
pub struct CatalogArgs {
    /// AWS region.
    #[arg(long)]
    pub region: String,
    /// Endpoint override for EC2 / Pricing (e.g. moto_server's `http://127.0.0.1:5000`).
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Keep only these zones (repeatable); default: every zone.
    #[arg(long = "zone")]
    pub zones: Vec<String>,
    /// Output file; default: stdout.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
}

/// Arguments of `karp plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Manifest files or folders (searched recursively for .yaml, .yml, .json); `-` reads stdin.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub paths: Vec<PathBuf>,
    /// Instance-type catalog file (JSON); default: the built-in AWS us-east-1 catalog.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Packing solver.
    #[arg(long, value_enum, default_value_t = SolverArg::Ffd)]
    pub solver: SolverArg,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,
}

/// Arguments of `karp disrupt`.
#[derive(Debug, clap::Args)]
pub struct DisruptArgs {
    /// Manifest files or folders (searched recursively for .yaml, .yml, .json); `-` reads stdin.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub paths: Vec<PathBuf>,
    /// Instance-type catalog file (JSON); default: the built-in AWS us-east-1 catalog.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// The time every age and window is measured at (RFC 3339); default: the clock.
    #[arg(long)]
    pub now: Option<String>,
    /// Planner: `karpenter` follows Karpenter v1.14; `global` is karp's global consolidator
    /// (pools may override it with the `karp.dev/consolidation-mode` annotation).
    #[arg(long, value_enum, default_value_t = ModeArg::Karpenter)]
    pub mode: ModeArg,
    /// Repeat passes as a running operator would, assuming every command completes, until no
    /// window is left; print the whole sequence.
    #[arg(long = "until-stable")]
    pub until_stable: bool,
    /// What a `global` consolidation must save: dollars per hour, a percentage of the touched
    /// pools' cost, or both (`0.05`, `2%`, `0.05,2%`); default `0.01` (pools may override it with
    /// the `karp.dev/consolidation-min-savings` annotation).
    #[arg(long = "min-savings")]
    pub min_savings: Option<String>,
    /// How a `global` move justifies its disruption: a Balanced `k` (1, 2, 3: its share of the
    /// pools' cost saved must be at least 1/k of its share of their disruption cost) or `off`;
    /// default `2`. Pools with the `Balanced` policy always use their own threshold.
    #[arg(long = "global-balanced-k")]
    pub global_balanced_k: Option<String>,
    /// Feature gates, `Name=true|false` separated by commas (SpotToSpotConsolidation).
    #[arg(long = "feature-gates", default_value = "")]
    pub feature_gates: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Karpenter v1.14's methods.
    Karpenter,
    /// karp's global consolidator (with Karpenter's methods as a fallback).
    Global,
}

/// `--solver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SolverArg {
    /// Karpenter-faithful first-fit decreasing.
    Ffd,
    /// Mixed-integer programming packer.
    Milp,
}

/// `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The JSON plan (the stable contract).
    Json,
    /// A readable summary.
    Table,
}

/// Render an error with its sources, `a: b: c`.
#[must_use]
pub fn report(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Run `karp plan`, printing the plan on stdout and warnings / errors on stderr.
pub fn run_plan(args: &PlanArgs) -> ExitCode {
    let solver = solver_of(args.solver);
    let result = plan_paths(&args.paths, args.catalog.as_deref(), solver);
    let plan = match result {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            return ExitCode::from(e.exit_code());
        }
    };
    print_result(
        &plan.warnings,
        &plan.output,
        args.output,
        render_table,
        "the plan",
    )
}

/// Prints warnings on stderr and `output` on stdout as JSON or a table; exit 1 when stdout
/// cannot be written.
fn print_result<T: serde::Serialize>(
    warnings: &[String],
    output: &T,
    format: OutputFormat,
    table: impl FnOnce(&T) -> String,
    what: &str,
) -> ExitCode {
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let stdout = std::io::stdout().lock();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout);
    let written = match format {
        // Streamed: a plan of 20 000 pods is tens of megabytes of JSON.
        OutputFormat::Json => match serde_json::to_writer_pretty(&mut out, output) {
            Ok(()) => out.write_all(b"\n"),
            Err(e) if e.is_io() => Err(e.into()),
            Err(e) => {
                eprintln!("error: cannot serialize {what}: {e}");
                return ExitCode::from(1);
            }
        },
        OutputFormat::Table => out.write_all(table(output).as_bytes()),
    };
    if written.and_then(|()| out.flush()).is_err() {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// Run `karp catalog`: exit 0 with the catalog written, 1 when the API fails, 2 on bad output path.
pub fn run_catalog(args: &CatalogArgs) -> ExitCode {
    // With an endpoint override and no credentials in the environment, sign with dummy ones
    // (emulators such as moto accept any).
    let dummy_credentials =
        args.endpoint_url.is_some() && std::env::var_os("AWS_ACCESS_KEY_ID").is_none();
    let opts = CatalogOptions {
        region: args.region.clone(),
        endpoint_url: args.endpoint_url.clone(),
        zones: args.zones.iter().cloned().collect(),
        dummy_credentials,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let FetchedCatalog {
        json,
        types: n,
        warnings,
    } = match runtime.block_on(fetch_catalog_json(&opts)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            return ExitCode::from(1);
        }
    };
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let written = match &args.output {
        Some(path) => {
            std::fs::write(path, json + "\n").map_err(|e| (path.display().to_string(), e))
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all((json + "\n").as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(|e| ("stdout".to_string(), e))
        }
    };
    if let Err((what, e)) = written {
        eprintln!("error: writing {what}: {e}");
        return ExitCode::from(2);
    }
    eprintln!("{n} instance types");
    ExitCode::SUCCESS
}

/// `--feature-gates` into disruption options (a dry run names unknown gates as errors).
fn feature_gates(text: &str, options: &mut DisruptOptions) -> Result<(), String> {
    let gates = crate::controllers::disruption::parse_feature_gates(text)
        .map_err(|e| format!("--feature-gates: {e}"))?;
    for (name, on) in gates {
        match name.as_str() {
            "SpotToSpotConsolidation" => options.spot_to_spot_consolidation = on,
            other => {
                return Err(format!(
                "--feature-gates: unknown feature gate {other:?} (known: SpotToSpotConsolidation)"
            ))
            }
        }
    }
    Ok(())
}

/// Run `karp disrupt`, printing the dry run on stdout and warnings / errors on stderr.
pub fn run_disrupt(args: &DisruptArgs) -> ExitCode {
    let mode = mode_of(args.mode);
    let min_savings = match args.min_savings.as_deref().map(SavingsThreshold::parse) {
        None => SavingsThreshold::DEFAULT,
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            eprintln!("error: --min-savings: {e}");
            return ExitCode::from(2);
        }
    };
    let justification = match args.global_balanced_k.as_deref().map(Justification::parse) {
        None => Justification::default(),
        Some(Ok(j)) => j,
        Some(Err(e)) => {
            eprintln!("error: --global-balanced-k: {e}");
            return ExitCode::from(2);
        }
    };
    let now = match &args.now {
        Some(t) => match t.parse() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: --now: {e}");
                return ExitCode::from(2);
            }
        },
        None => Timestamp::from(std::time::SystemTime::now()),
    };
    let mut options = DisruptOptions {
        now,
        mode,
        min_savings,
        justification,
        until_stable: args.until_stable,
        ..DisruptOptions::default()
    };
    if let Err(e) = feature_gates(&args.feature_gates, &mut options) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let out = match disrupt_paths(&args.paths, args.catalog.as_deref(), &options) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            return ExitCode::from(e.exit_code());
        }
    };
    print_result(
        &out.warnings,
        &out.output,
        args.output,
        render_disrupt_table,
        "the dry run",
    )
}

/// Parse the command line and run it.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Plan(args) => run_plan(args),
        Command::Disrupt(args) => run_disrupt(args),
        Command::Catalog(args) => run_catalog(args),
        #[cfg(feature = "embedded")]
        Command::Demo(args) => run_demo(args),
        Command::Run(args) => run_operator(args),
        Command::ImdsMonitor(args) => run_imds_monitor(args),
        #[cfg(feature = "embedded")]
        Command::Cluster(args) => run_cluster(args),
        Command::Crds => {
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(crate::api::crds::all_yaml().as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(1),
            }
        }
    }
}
