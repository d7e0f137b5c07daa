//! What moto cannot show (see STACK-NOTES: CreateFleet ignores strategies and never fails, no EKS
//! SSM parameters, constant spot prices, no Pricing API), checked with aws-smithy-mocks: the
//! CreateFleet request karp builds, alias resolution, price refreshes, and faults
//! (insufficient capacity, throttling, 5xx, partial fleet errors, over-launch).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::Credentials;
use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_ec2::operation::create_fleet::{CreateFleetError, CreateFleetInput, CreateFleetOutput};
use aws_sdk_ec2::operation::create_launch_template::CreateLaunchTemplateInput;
use aws_sdk_ec2::operation::create_launch_template::CreateLaunchTemplateOutput;
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::describe_launch_templates::DescribeLaunchTemplatesOutput;
use aws_sdk_ec2::operation::describe_placement_groups::{
    DescribePlacementGroupsInput, DescribePlacementGroupsOutput,
};
use aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsOutput;
use aws_sdk_ec2::operation::describe_spot_price_history::DescribeSpotPriceHistoryOutput;
use aws_sdk_ec2::operation::describe_subnets::DescribeSubnetsOutput;
use aws_sdk_ec2::operation::terminate_instances::{
    TerminateInstancesInput, TerminateInstancesOutput,
};
use aws_sdk_ec2::types::{
    ArchitectureValues, CreateFleetError as FleetErrorItem, CreateFleetInstance,
    DefaultTargetCapacityType, FleetLaunchTemplateOverrides, FleetOnDemandAllocationStrategy,
    FleetType, Image, Instance as Ec2Instance, InstanceLifecycle, InstanceState,
    InstanceStateChange, InstanceStateName, InstanceType as Ec2Type,
    LaunchTemplateAndOverridesResponse, Placement, PlacementGroupState, PlacementStrategy,
    Reservation, ResourceType, SecurityGroup, SpotAllocationStrategy, SpotPrice, Subnet, Tag,
};
use aws_sdk_ssm::operation::get_parameter::{
    GetParameterError, GetParameterInput, GetParameterOutput,
};
use aws_sdk_ssm::types::Parameter;
use aws_smithy_mocks::{create_mock_http_client, mock, MockResponseInterceptor, Rule, RuleMode};
use karp_aws::catalog::{builtin_offerings, builtin_type_facts};
use karp_aws::nodeclass::EC2NodeClass;
use karp_aws::provider::AccountCatalog;
use karp_aws::{AwsClients, AwsCloudProvider, AwsSettings};
use karp_core::cloud::{CloudError, CloudProvider, LaunchRequest};
use karp_core::labels;
use karp_core::requirements::{Requirement, Requirements};
use karp_core::resources::Resources;

macro_rules! client {
    ($krate:ident, $rules:expr) => {{
        let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
        for rule in $rules {
            interceptor = interceptor.with_rule(rule);
        }
        let conf = $krate::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("a", "b", None, None, "test"))
            .http_client(create_mock_http_client())
            .interceptor(interceptor)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(Duration::from_millis(1)),
            )
            .build();
        $krate::Client::from_conf(conf)
    }};
}

/// IAM already holds karp's instance profile with the node role.
fn iam_rules() -> Vec<Rule> {
    vec![
        mock!(aws_sdk_iam::Client::get_instance_profile).then_compute_output(|i| {
            aws_sdk_iam::operation::get_instance_profile::GetInstanceProfileOutput::builder()
                .instance_profile(
                    aws_sdk_iam::types::InstanceProfile::builder()
                        .instance_profile_name(i.instance_profile_name().unwrap_or_default())
                        .instance_profile_id("AIPA1")
                        .arn("arn:aws:iam::123456789012:instance-profile/x")
                        .path("/")
                        .create_date(aws_smithy_types::DateTime::from_secs(0))
                        .roles(
                            aws_sdk_iam::types::Role::builder()
                                .role_name("KarpenterNodeRole")
                                .role_id("AROA1")
                                .arn("arn:aws:iam::123456789012:role/KarpenterNodeRole")
                                .path("/")
                                .create_date(aws_smithy_types::DateTime::from_secs(0))
                                .build()
                                .unwrap(),
                        )
                        .build()
                        .unwrap(),
                )
                .build()
        }),
    ]
}

fn clients(ec2: &[&Rule], ssm: &[&Rule], pricing: Option<&[&Rule]>) -> AwsClients {
    let iam = iam_rules();
    AwsClients {
        ec2: client!(aws_sdk_ec2, ec2.iter().copied()),
        ssm: client!(aws_sdk_ssm, ssm.iter().copied()),
        sqs: client!(aws_sdk_sqs, std::iter::empty::<&Rule>()),
        iam: client!(aws_sdk_iam, iam.iter()),
        pricing: pricing.map(|rules| client!(aws_sdk_pricing, rules.iter().copied())),
    }
}

fn settings() -> AwsSettings {
    let mut s = AwsSettings::new("us-east-1", "mocked");
    s.use_pricing_api = false;
    s
}

fn builtin_account() -> Arc<AccountCatalog> {
    let offerings = builtin_offerings().unwrap();
    let zones = offerings
        .iter()
        .map(|(t, os)| {
            let mut z: Vec<String> = os.iter().map(|o| o.zone.clone()).collect();
            z.dedup();
            (t.clone(), z)
        })
        .collect();
    Arc::new(AccountCatalog {
        types: builtin_type_facts().unwrap(),
        zones,
    })
}

fn ec2_tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

/// Rules for a node class with subnets in 1a and 1b, one security group, and an AL2023 AMI for
/// each architecture published under the real `/aws/service` SSM prefix.
fn resolution_rules() -> (Vec<Rule>, Vec<Rule>) {
    let subnets = mock!(aws_sdk_ec2::Client::describe_subnets).then_output(|| {
        DescribeSubnetsOutput::builder()
            .subnets(
                Subnet::builder()
                    .subnet_id("subnet-a")
                    .availability_zone("us-east-1a")
                    .availability_zone_id("use1-az2")
                    .available_ip_address_count(200)
                    .build(),
            )
            .subnets(
                Subnet::builder()
                    .subnet_id("subnet-b")
                    .availability_zone("us-east-1b")
                    .availability_zone_id("use1-az4")
                    .available_ip_address_count(100)
                    .build(),
            )
            .build()
    });
    let sgs = mock!(aws_sdk_ec2::Client::describe_security_groups).then_output(|| {
        DescribeSecurityGroupsOutput::builder()
            .security_groups(
                SecurityGroup::builder()
                    .group_id("sg-1")
                    .group_name("nodes")
                    .build(),
            )
            .build()
    });
    let images = mock!(aws_sdk_ec2::Client::describe_images).then_compute_output(|input| {
        let id = input.image_ids().first().cloned().unwrap_or_default();
        let arch = if id.contains("arm") {
            ArchitectureValues::Arm64
        } else {
            ArchitectureValues::X8664
        };
        DescribeImagesOutput::builder()
            .images(
                Image::builder()
                    .image_id(&id)
                    .name(format!("{id}-name"))
                    .architecture(arch)
                    .creation_date("2026-11-01T00:00:00.000Z")
                    .build(),
            )
            .build()
    });
    let param = mock!(aws_sdk_ssm::Client::get_parameter)
        .match_requests(|i: &GetParameterInput| {
            i.name()
                .is_some_and(|n| n.contains("/standard/recommended/"))
        })
        .then_compute_output(|i| {
            let name = i.name().unwrap_or_default();
            let id = if name.contains("/arm64/") {
                "ami-arm"
            } else {
                "ami-x86"
            };
            GetParameterOutput::builder()
                .parameter(Parameter::builder().name(name).value(id).build())
                .build()
        });
    let missing = mock!(aws_sdk_ssm::Client::get_parameter).then_error(|| {
        GetParameterError::ParameterNotFound(
            aws_sdk_ssm::types::error::ParameterNotFound::builder().build(),
        )
    });
    (vec![subnets, sgs, images], vec![param, missing])
}

fn node_class() -> EC2NodeClass {
    serde_yaml::from_str(
        r"
metadata: {name: default}
spec:
  role: KarpenterNodeRole
  amiSelectorTerms: [{alias: al2023@latest}]
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: mocked}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: mocked}}]
",
    )
    .unwrap()
}

fn lt_rules() -> Vec<Rule> {
    vec![
        mock!(aws_sdk_ec2::Client::describe_launch_templates).then_error(|| {
            aws_sdk_ec2::operation::describe_launch_templates::DescribeLaunchTemplatesError::generic(
                ErrorMetadata::builder()
                    .code("InvalidLaunchTemplateName.NotFoundException")
                    .build(),
            )
        }),
        mock!(aws_sdk_ec2::Client::create_launch_template)
            .then_output(|| CreateLaunchTemplateOutput::builder().build()),
    ]
}

fn launched(
    id: &str,
    itype: &str,
    zone: &str,
    lifecycle: InstanceLifecycle,
) -> CreateFleetInstance {
    CreateFleetInstance::builder()
        .instance_ids(id)
        .instance_type(Ec2Type::from(itype))
        .lifecycle(lifecycle)
        .launch_template_and_overrides(
            LaunchTemplateAndOverridesResponse::builder()
                .overrides(
                    FleetLaunchTemplateOverrides::builder()
                        .instance_type(Ec2Type::from(itype))
                        .availability_zone(zone)
                        .build(),
                )
                .build(),
        )
        .build()
}

fn fleet_error(code: &str, itype: &str, subnet: &str) -> FleetErrorItem {
    FleetErrorItem::builder()
        .error_code(code)
        .error_message("no capacity")
        .launch_template_and_overrides(
            LaunchTemplateAndOverridesResponse::builder()
                .overrides(
                    FleetLaunchTemplateOverrides::builder()
                        .instance_type(Ec2Type::from(itype))
                        .subnet_id(subnet)
                        .build(),
                )
                .build(),
        )
        .build()
}

fn request(types: &[&str], capacity_types: &[&str]) -> LaunchRequest {
    let mut reqs = Requirements::from_iter([Requirement::in_values(
        labels::CAPACITY_TYPE,
        capacity_types.iter().copied(),
    )]);
    if !types.is_empty() {
        reqs.add(Requirement::in_values(
            labels::INSTANCE_TYPE,
            types.iter().copied(),
        ));
    }
    LaunchRequest {
        nodeclaim: "nc-1".into(),
        nodepool: "default".into(),
        node_class: Some("default".into()),
        requirements: reqs,
        requests: Resources::from_pairs([("cpu", "1"), ("memory", "2Gi")]).unwrap(),
        labels: BTreeMap::new(),
        taints: Vec::new(),
        startup_taints: Vec::new(),
    }
}

type Captured<T> = Arc<Mutex<Vec<T>>>;

fn capture_fleet(
    captured: &Captured<CreateFleetInput>,
    respond: impl Fn() -> CreateFleetOutput + Send + Sync + 'static,
) -> Rule {
    let c = Arc::clone(captured);
    mock!(aws_sdk_ec2::Client::create_fleet)
        .match_requests(move |i| {
            c.lock().unwrap().push(i.clone());
            true
        })
        .then_output(respond)
}

/// The zones of a CreateFleet request's overrides.
fn override_zones(fleet: &CreateFleetInput) -> std::collections::BTreeSet<&str> {
    fleet
        .launch_template_configs()
        .iter()
        .flat_map(|c| c.overrides())
        .filter_map(|o| o.availability_zone())
        .collect()
}

/// CreateFleet that fails the first call with `code` for m5.large in subnet-a (us-east-1a) and
/// then launches `id` on demand there; every input is captured.
fn fails_once_then_on_demand(
    captured: &Captured<CreateFleetInput>,
    code: &'static str,
    id: &'static str,
) -> Rule {
    let calls = Arc::new(Mutex::new(0));
    let cap = Arc::clone(captured);
    mock!(aws_sdk_ec2::Client::create_fleet)
        .match_requests(move |i| {
            cap.lock().unwrap().push(i.clone());
            true
        })
        .then_compute_output(move |_| {
            let mut n = calls.lock().unwrap();
            *n += 1;
            if *n == 1 {
                CreateFleetOutput::builder()
                    .errors(fleet_error(code, "m5.large", "subnet-a"))
                    .build()
            } else {
                CreateFleetOutput::builder()
                    .instances(launched(
                        id,
                        "m5.large",
                        "us-east-1a",
                        InstanceLifecycle::OnDemand,
                    ))
                    .build()
            }
        })
}

/// DescribeCapacityReservations answering one active, targeted reservation `id` of m5.large in
/// us-east-1a with room for `available` instances.
fn m5_large_reservation(id: &'static str, available: i32) -> Rule {
    use aws_sdk_ec2::operation::describe_capacity_reservations::DescribeCapacityReservationsOutput;
    use aws_sdk_ec2::types::{
        CapacityReservation, CapacityReservationState, InstanceMatchCriteria,
    };
    mock!(aws_sdk_ec2::Client::describe_capacity_reservations).then_output(move || {
        DescribeCapacityReservationsOutput::builder()
            .capacity_reservations(
                CapacityReservation::builder()
                    .capacity_reservation_id(id)
                    .instance_type("m5.large")
                    .availability_zone("us-east-1a")
                    .owner_id("123456789012")
                    .instance_match_criteria(InstanceMatchCriteria::Targeted)
                    .state(CapacityReservationState::Active)
                    .available_instance_count(available)
                    .build(),
            )
            .build()
    })
}

async fn provider(extra_ec2: Vec<Rule>) -> AwsCloudProvider {
    let mut ec2 = lt_rules();
    ec2.extend(extra_ec2);
    provider_for(&node_class(), ec2).await
}

/// A provider with `nc` resolved; `ec2` rules come before the resolution rules (so they win).
async fn provider_for(nc: &EC2NodeClass, mut ec2: Vec<Rule>) -> AwsCloudProvider {
    let (resolution, ssm) = resolution_rules();
    ec2.extend(resolution);
    let ec2_refs: Vec<&Rule> = ec2.iter().collect();
    let ssm_refs: Vec<&Rule> = ssm.iter().collect();
    let p = AwsCloudProvider::new(clients(&ec2_refs, &ssm_refs, None), settings());
    p.set_account_catalog(builtin_account());
    let status = p.resolve_node_class(nc).await.unwrap();
    assert!(
        status.conditions.iter().all(|c| c.status == "True"),
        "{:?}",
        status.conditions
    );
    p
}

#[tokio::test]
async fn alias_resolution_reads_the_eks_parameters() {
    let p = provider(Vec::new()).await;
    let resolved = p.resolved_node_class("default").unwrap();
    let status = resolved.status();
    let ids: Vec<&str> = status.amis.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, vec!["ami-arm", "ami-x86"]);
    let arm = &status.amis[0];
    assert!(arm
        .requirements
        .iter()
        .any(|r| r.key == labels::ARCH && r.values == vec!["arm64"]));
    // Subnets: most free addresses first; zone 1a uses subnet-a.
    assert_eq!(status.subnets[0].id, "subnet-a");
    assert_eq!(
        resolved.subnet_for_zone("us-east-1b").unwrap().id,
        "subnet-b"
    );
    // Both architectures' types are offered, GPU types are not (no nvidia AMI published).
    let types = p.instance_types("default", Some("default")).await.unwrap();
    assert!(types.iter().any(|t| t.label(labels::ARCH) == Some("arm64")));
    assert!(!types.iter().any(|t| t.name.starts_with("g5.")));
}

#[tokio::test]
async fn create_fleet_request_has_overrides_strategy_tags_and_templates() {
    let captured: Captured<CreateFleetInput> = Arc::default();
    let fleet = capture_fleet(&captured, || {
        CreateFleetOutput::builder()
            .instances(launched(
                "i-1",
                "t4g.nano",
                "us-east-1a",
                InstanceLifecycle::Spot,
            ))
            .build()
    });
    let p = provider(vec![fleet]).await;
    let inst = p
        .create(&request(&[], &["spot", "on-demand"]))
        .await
        .unwrap();
    assert_eq!(inst.provider_id, "aws:///us-east-1a/i-1");
    assert_eq!(inst.capacity_type, "spot");

    let input = captured.lock().unwrap()[0].clone();
    assert_eq!(input.r#type(), Some(&FleetType::Instant));
    let target = input.target_capacity_specification().unwrap();
    assert_eq!(target.total_target_capacity(), Some(1));
    assert_eq!(
        target.default_target_capacity_type(),
        Some(&DefaultTargetCapacityType::Spot)
    );
    assert_eq!(
        input.spot_options().and_then(|o| o.allocation_strategy()),
        Some(&SpotAllocationStrategy::PriceCapacityOptimized)
    );
    let overrides: Vec<_> = input
        .launch_template_configs()
        .iter()
        .flat_map(|c| c.overrides())
        .collect();
    assert_eq!(overrides.len(), 60);
    // Only the node class's zones, each in the zone's subnet; the 60 cheapest offerings that fit.
    let mut included = std::collections::BTreeSet::new();
    let mut max_included: f64 = 0.0;
    for o in &overrides {
        let t = o.instance_type().unwrap().as_str();
        let zone = o.availability_zone().unwrap();
        assert!(["us-east-1a", "us-east-1b"].contains(&zone), "{zone}");
        let subnet = if zone == "us-east-1a" {
            "subnet-a"
        } else {
            "subnet-b"
        };
        assert_eq!(o.subnet_id(), Some(subnet));
        max_included = max_included.max(p.prices().spot(t, zone).unwrap());
        included.insert((t.to_string(), zone.to_string()));
    }
    let req = request(&[], &["spot", "on-demand"]);
    let types = p.instance_types("default", Some("default")).await.unwrap();
    let mut min_excluded = f64::INFINITY;
    for it in &types {
        if !req.requests.fits_in(it.allocatable()) {
            continue;
        }
        for o in it.offerings.iter().filter(|o| o.capacity_type == "spot") {
            if !included.contains(&(it.name.clone(), o.zone.clone())) {
                min_excluded = min_excluded.min(o.price);
            }
        }
    }
    assert!(
        max_included <= min_excluded,
        "an override costs {max_included} but an offering left out costs {min_excluded}"
    );
    for lt in input.launch_template_configs() {
        let spec = lt.launch_template_specification().unwrap();
        assert!(spec
            .launch_template_name()
            .unwrap()
            .starts_with("karpenter.k8s.aws/"));
        assert_eq!(spec.version(), Some("$Latest"));
    }
    let instance_tags: BTreeMap<&str, &str> = input
        .tag_specifications()
        .iter()
        .find(|t| t.resource_type() == Some(&ResourceType::Instance))
        .unwrap()
        .tags()
        .iter()
        .map(|t| (t.key().unwrap(), t.value().unwrap()))
        .collect();
    assert_eq!(instance_tags["karpenter.sh/nodeclaim"], "nc-1");
    assert_eq!(instance_tags["karpenter.sh/nodepool"], "default");
    assert_eq!(instance_tags["karpenter.k8s.aws/ec2nodeclass"], "default");
    assert_eq!(instance_tags["kubernetes.io/cluster/mocked"], "owned");
    assert_eq!(instance_tags["eks:eks-cluster-name"], "mocked");
    for rt in [ResourceType::Volume, ResourceType::Fleet] {
        assert!(input
            .tag_specifications()
            .iter()
            .any(|t| t.resource_type() == Some(&rt)));
    }
}

#[tokio::test]
async fn on_demand_uses_lowest_price() {
    let captured: Captured<CreateFleetInput> = Arc::default();
    let fleet = capture_fleet(&captured, || {
        CreateFleetOutput::builder()
            .instances(launched(
                "i-2",
                "m5.large",
                "us-east-1b",
                InstanceLifecycle::OnDemand,
            ))
            .build()
    });
    let p = provider(vec![fleet]).await;
    let inst = p
        .create(&request(&["m5.large", "m5.xlarge"], &["on-demand"]))
        .await
        .unwrap();
    assert_eq!(inst.capacity_type, "on-demand");
    assert_eq!(inst.zone, "us-east-1b");
    let input = captured.lock().unwrap()[0].clone();
    assert_eq!(
        input
            .on_demand_options()
            .and_then(|o| o.allocation_strategy()),
        Some(&FleetOnDemandAllocationStrategy::LowestPrice)
    );
    assert!(input.spot_options().is_none());
    let n: usize = input
        .launch_template_configs()
        .iter()
        .map(|c| c.overrides().len())
        .sum();
    assert_eq!(n, 4, "2 types x 2 zones");
}

#[tokio::test]
async fn insufficient_capacity_is_cached_and_avoided() {
    let captured: Captured<CreateFleetInput> = Arc::default();
    let calls = Arc::new(Mutex::new(0));
    let c = Arc::clone(&calls);
    let cap = Arc::clone(&captured);
    let fleet = mock!(aws_sdk_ec2::Client::create_fleet)
        .match_requests(move |i| {
            cap.lock().unwrap().push(i.clone());
            true
        })
        .then_compute_output(move |_| {
            let mut n = c.lock().unwrap();
            *n += 1;
            if *n == 1 {
                CreateFleetOutput::builder()
                    .errors(fleet_error(
                        "InsufficientInstanceCapacity",
                        "c5.large",
                        "subnet-a",
                    ))
                    .build()
            } else {
                CreateFleetOutput::builder()
                    .instances(launched(
                        "i-3",
                        "c5.large",
                        "us-east-1b",
                        InstanceLifecycle::Spot,
                    ))
                    .build()
            }
        });
    let p = provider(vec![fleet]).await;
    let req = request(&["c5.large"], &["spot"]);
    let err = p.create(&req).await.unwrap_err();
    match &err {
        CloudError::InsufficientCapacity { offerings } => {
            assert_eq!(offerings.len(), 1);
            assert_eq!(offerings[0].instance_type, "c5.large");
            assert_eq!(offerings[0].zone, "us-east-1a");
            assert_eq!(offerings[0].capacity_type, "spot");
        }
        other => panic!("expected InsufficientCapacity, got {other:?}"),
    }
    let now = Instant::now();
    assert!(p
        .unavailable_offerings()
        .is_unavailable("c5.large", "us-east-1a", "spot", now));
    // The scheduler sees the offering as unavailable.
    let types = p.instance_types("default", Some("default")).await.unwrap();
    let c5 = types.iter().find(|t| t.name == "c5.large").unwrap();
    let o = c5
        .offerings
        .iter()
        .find(|o| o.zone == "us-east-1a" && o.capacity_type == "spot")
        .unwrap();
    assert!(!o.available);
    // The retry leaves the failed zone out and launches in 1b.
    let inst = p.create(&req).await.unwrap();
    assert_eq!(inst.zone, "us-east-1b");
    let second = captured.lock().unwrap()[1].clone();
    let zones: Vec<&str> = second
        .launch_template_configs()
        .iter()
        .flat_map(|c| c.overrides())
        .filter_map(|o| o.availability_zone())
        .collect();
    assert_eq!(zones, vec!["us-east-1b"]);
}

#[tokio::test]
async fn partial_fleet_errors_still_launch_and_cache_the_failures() {
    let fleet = mock!(aws_sdk_ec2::Client::create_fleet).then_output(|| {
        CreateFleetOutput::builder()
            .instances(launched(
                "i-4",
                "m5.large",
                "us-east-1b",
                InstanceLifecycle::Spot,
            ))
            .errors(fleet_error(
                "InsufficientInstanceCapacity",
                "c5.large",
                "subnet-a",
            ))
            .build()
    });
    let p = provider(vec![fleet]).await;
    let inst = p
        .create(&request(&["c5.large", "m5.large"], &["spot"]))
        .await
        .unwrap();
    assert_eq!(inst.instance_type, "m5.large");
    assert!(p.unavailable_offerings().is_unavailable(
        "c5.large",
        "us-east-1a",
        "spot",
        Instant::now()
    ));
}

#[tokio::test]
async fn account_wide_spot_limit_falls_back_to_on_demand() {
    let captured: Captured<CreateFleetInput> = Arc::default();
    let fleet = fails_once_then_on_demand(&captured, "MaxSpotInstanceCountExceeded", "i-5");
    let p = provider(vec![fleet]).await;
    let req = request(&["m5.large"], &["spot", "on-demand"]);
    assert!(p.create(&req).await.unwrap_err().is_insufficient_capacity());
    let inst = p.create(&req).await.unwrap();
    assert_eq!(inst.capacity_type, "on-demand");
    let second = captured.lock().unwrap()[1].clone();
    assert_eq!(
        second
            .target_capacity_specification()
            .unwrap()
            .default_target_capacity_type(),
        Some(&DefaultTargetCapacityType::OnDemand)
    );
}

#[tokio::test]
async fn server_errors_are_retried_then_reported_without_launching() {
    let fleet = mock!(aws_sdk_ec2::Client::create_fleet)
        .sequence()
        .http_status(500, None)
        .times(3)
        .build();
    let terminate = mock!(aws_sdk_ec2::Client::terminate_instances)
        .then_output(|| TerminateInstancesOutput::builder().build());
    let p = provider(vec![fleet.clone(), terminate.clone()]).await;
    let err = p
        .create(&request(&["m5.large"], &["spot"]))
        .await
        .unwrap_err();
    match err {
        CloudError::Api {
            operation,
            retryable,
            ..
        } => {
            assert_eq!(operation, "CreateFleet");
            assert!(retryable);
        }
        other => panic!("expected Api error, got {other:?}"),
    }
    assert_eq!(fleet.num_calls(), 3, "three attempts");
    assert_eq!(terminate.num_calls(), 0);
}

#[tokio::test]
async fn throttled_describes_back_off_and_succeed() {
    let describe = mock!(aws_sdk_ec2::Client::describe_instances)
        .sequence()
        .error(|| {
            aws_sdk_ec2::operation::describe_instances::DescribeInstancesError::generic(
                ErrorMetadata::builder()
                    .code("RequestLimitExceeded")
                    .message("Request limit exceeded.")
                    .build(),
            )
        })
        .times(2)
        .output(|| {
            DescribeInstancesOutput::builder()
                .reservations(
                    Reservation::builder()
                        .instances(
                            Ec2Instance::builder()
                                .instance_id("i-7")
                                .instance_type(Ec2Type::M5Large)
                                .placement(
                                    Placement::builder().availability_zone("us-east-1a").build(),
                                )
                                .state(
                                    InstanceState::builder()
                                        .name(InstanceStateName::Running)
                                        .build(),
                                )
                                .tags(ec2_tag("karpenter.sh/nodeclaim", "nc-7"))
                                .build(),
                        )
                        .build(),
                )
                .build()
        })
        .build();
    let p = provider(vec![describe.clone()]).await;
    let inst = p.get("aws:///us-east-1a/i-7").await.unwrap();
    assert_eq!(inst.nodeclaim.as_deref(), Some("nc-7"));
    assert_eq!(inst.capacity_type, "on-demand");
    assert_eq!(describe.num_calls(), 3);
}

#[tokio::test]
async fn extra_instances_from_a_fleet_are_terminated() {
    let fleet = mock!(aws_sdk_ec2::Client::create_fleet).then_output(|| {
        CreateFleetOutput::builder()
            .instances(launched(
                "i-8",
                "m5.large",
                "us-east-1a",
                InstanceLifecycle::Spot,
            ))
            .instances(launched(
                "i-9",
                "m5.large",
                "us-east-1a",
                InstanceLifecycle::Spot,
            ))
            .build()
    });
    let terminated: Captured<TerminateInstancesInput> = Arc::default();
    let t = Arc::clone(&terminated);
    let terminate = mock!(aws_sdk_ec2::Client::terminate_instances)
        .match_requests(move |i| {
            t.lock().unwrap().push(i.clone());
            true
        })
        .then_output(|| {
            TerminateInstancesOutput::builder()
                .terminating_instances(InstanceStateChange::builder().instance_id("i-9").build())
                .build()
        });
    let p = provider(vec![fleet, terminate]).await;
    let inst = p.create(&request(&["m5.large"], &["spot"])).await.unwrap();
    assert_eq!(inst.provider_id, "aws:///us-east-1a/i-8");
    let calls = terminated.lock().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].instance_ids(), ["i-9".to_string()]);
}

#[tokio::test]
async fn create_fleet_api_errors_are_typed() {
    let fleet = mock!(aws_sdk_ec2::Client::create_fleet).then_error(|| {
        CreateFleetError::generic(
            ErrorMetadata::builder()
                .code("UnauthorizedOperation")
                .message("not allowed")
                .build(),
        )
    });
    let p = provider(vec![fleet]).await;
    match p
        .create(&request(&["m5.large"], &["spot"]))
        .await
        .unwrap_err()
    {
        CloudError::Api {
            operation,
            message,
            retryable,
        } => {
            assert_eq!(operation, "CreateFleet");
            assert!(message.contains("UnauthorizedOperation"), "{message}");
            assert!(!retryable);
        }
        other => panic!("unexpected {other:?}"),
    }
    // A node class that was never resolved is NodeClassNotReady.
    let mut req = request(&["m5.large"], &["spot"]);
    req.node_class = Some("other".into());
    assert!(p.create(&req).await.unwrap_err().is_node_class_not_ready());
}

#[tokio::test]
async fn spot_prices_refresh_to_the_latest_sample() {
    let ts = |s: i64| aws_smithy_types::DateTime::from_secs(s);
    let history = mock!(aws_sdk_ec2::Client::describe_spot_price_history).then_output(move || {
        DescribeSpotPriceHistoryOutput::builder()
            .spot_price_history(
                SpotPrice::builder()
                    .instance_type(Ec2Type::M5Large)
                    .availability_zone("us-east-1a")
                    .spot_price("0.0400")
                    .timestamp(ts(1_000))
                    .build(),
            )
            .spot_price_history(
                SpotPrice::builder()
                    .instance_type(Ec2Type::M5Large)
                    .availability_zone("us-east-1a")
                    .spot_price("0.0350")
                    .timestamp(ts(2_000))
                    .build(),
            )
            .spot_price_history(
                SpotPrice::builder()
                    .instance_type(Ec2Type::M5Large)
                    .availability_zone("us-east-1b")
                    .spot_price("not-a-price")
                    .timestamp(ts(2_000))
                    .build(),
            )
            .build()
    });
    let products = mock!(aws_sdk_pricing::Client::get_products).then_output(|| {
        aws_sdk_pricing::operation::get_products::GetProductsOutput::builder()
            .price_list(
                r#"{"product":{"attributes":{"instanceType":"m5.large"}},"terms":{"OnDemand":{"a":{"priceDimensions":{"b":{"pricePerUnit":{"USD":"0.1010000000"}}}}}}}"#,
            )
            .build()
    });
    let clients = clients(&[&history], &[], Some(&[&products]));
    let mut s = settings();
    s.use_pricing_api = true;
    let p = AwsCloudProvider::new(clients, s);
    let od_before = p.prices().on_demand("m5.large").unwrap();
    assert!((od_before - 0.096).abs() < 1e-9);
    p.refresh_prices().await.unwrap();
    assert_eq!(p.prices().spot("m5.large", "us-east-1a"), Some(0.035));
    // Unknown (bad row): spot falls back to the on-demand price, now from the Pricing API.
    assert_eq!(p.prices().on_demand("m5.large"), Some(0.101));
    assert_eq!(p.prices().spot("m5.large", "us-east-1b"), Some(0.101));
    assert_eq!(p.prices().spot_len(), 1);
}

#[tokio::test]
async fn launch_templates_created_concurrently_are_not_an_error() {
    let describe = mock!(aws_sdk_ec2::Client::describe_launch_templates)
        .then_output(|| DescribeLaunchTemplatesOutput::builder().build());
    let create = mock!(aws_sdk_ec2::Client::create_launch_template).then_error(|| {
        aws_sdk_ec2::operation::create_launch_template::CreateLaunchTemplateError::generic(
            ErrorMetadata::builder()
                .code("InvalidLaunchTemplateName.AlreadyExistsException")
                .build(),
        )
    });
    let fleet = mock!(aws_sdk_ec2::Client::create_fleet).then_output(|| {
        CreateFleetOutput::builder()
            .instances(launched(
                "i-10",
                "m5.large",
                "us-east-1a",
                InstanceLifecycle::Spot,
            ))
            .build()
    });
    // These rules come before the default template rules, so they win.
    let (mut ec2, ssm) = resolution_rules();
    let mut rules = vec![describe, create, fleet];
    rules.append(&mut ec2);
    let ec2_refs: Vec<&Rule> = rules.iter().collect();
    let ssm_refs: Vec<&Rule> = ssm.iter().collect();
    let p = AwsCloudProvider::new(clients(&ec2_refs, &ssm_refs, None), settings());
    p.set_account_catalog(builtin_account());
    p.resolve_node_class(&node_class()).await.unwrap();
    let inst = p.create(&request(&["m5.large"], &["spot"])).await.unwrap();
    assert_eq!(inst.provider_id, "aws:///us-east-1a/i-10");
}

/// A running instance as DescribeInstances returns it.
fn running_instance(id: &str) -> Ec2Instance {
    Ec2Instance::builder()
        .instance_id(id)
        .instance_type(Ec2Type::from("m5.large"))
        .placement(Placement::builder().availability_zone("us-east-1a").build())
        .state(
            InstanceState::builder()
                .name(InstanceStateName::Running)
                .build(),
        )
        .tags(ec2_tag("karpenter.sh/nodeclaim", &format!("claim-{id}")))
        .tags(ec2_tag("karpenter.sh/nodepool", "default"))
        .build()
}

/// DescribeInstances answering every `instance-id` filter value with a running instance, and
/// recording how many ids each call carried.
fn describe_by_filter(sizes: Captured<usize>) -> Rule {
    mock!(aws_sdk_ec2::Client::describe_instances)
        .match_requests(|_| true)
        .then_compute_output(move |i| {
            let ids: Vec<String> = i
                .filters()
                .iter()
                .filter(|f| f.name() == Some("instance-id"))
                .flat_map(|f| f.values().to_vec())
                .collect();
            sizes.lock().unwrap().push(ids.len());
            let mut r = Reservation::builder();
            for id in &ids {
                r = r.instances(running_instance(id));
            }
            DescribeInstancesOutput::builder()
                .reservations(r.build())
                .build()
        })
}

#[tokio::test]
async fn concurrent_gets_are_batched_within_the_filter_limit_of_200_ids() {
    let sizes: Captured<usize> = Arc::default();
    let p = Arc::new(provider(vec![describe_by_filter(Arc::clone(&sizes))]).await);
    let mut handles = Vec::new();
    for i in 0..250 {
        let p = Arc::clone(&p);
        handles.push(tokio::spawn(async move {
            p.get(&format!("aws:///us-east-1a/i-{i:04}")).await
        }));
    }
    for (i, h) in handles.into_iter().enumerate() {
        let inst = h.await.unwrap().unwrap();
        assert_eq!(inst.provider_id, format!("aws:///us-east-1a/i-{i:04}"));
    }
    let sizes = sizes.lock().unwrap();
    assert!(sizes.iter().all(|n| *n <= 200), "ids per call: {sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 250);
}

#[tokio::test]
async fn one_bad_id_in_a_terminate_batch_does_not_fail_the_others() {
    let sizes: Captured<usize> = Arc::default();
    let terminated: Captured<Vec<String>> = Arc::default();
    let t = Arc::clone(&terminated);
    let reject = mock!(aws_sdk_ec2::Client::terminate_instances)
        .match_requests(|i| i.instance_ids().iter().any(|id| id == "i-bad"))
        .then_error(|| {
            aws_sdk_ec2::operation::terminate_instances::TerminateInstancesError::generic(
                ErrorMetadata::builder()
                    .code("UnauthorizedOperation")
                    .message("not allowed for i-bad")
                    .build(),
            )
        });
    let accept = mock!(aws_sdk_ec2::Client::terminate_instances)
        .match_requests(move |i| {
            t.lock().unwrap().push(i.instance_ids().to_vec());
            true
        })
        .then_compute_output(|i| {
            let mut out = TerminateInstancesOutput::builder();
            for id in i.instance_ids() {
                out = out
                    .terminating_instances(InstanceStateChange::builder().instance_id(id).build());
            }
            out.build()
        });
    let p = Arc::new(provider(vec![describe_by_filter(sizes), reject, accept]).await);
    let ids = ["i-good1", "i-bad", "i-good2"];
    let mut handles = Vec::new();
    for id in ids {
        let p = Arc::clone(&p);
        handles.push(tokio::spawn(async move {
            p.delete(&format!("aws:///us-east-1a/{id}")).await
        }));
    }
    let results: Vec<_> = futures_results(handles).await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(results[2].is_ok(), "{:?}", results[2]);
    let bad = results[1].as_ref().unwrap_err();
    assert!(
        !bad.is_not_found(),
        "a refused id must not look deleted: {bad:?}"
    );
    let done: Vec<String> = terminated
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .cloned()
        .collect();
    assert!(done.contains(&"i-good1".to_string()) && done.contains(&"i-good2".to_string()));
}

async fn futures_results(
    handles: Vec<tokio::task::JoinHandle<Result<(), CloudError>>>,
) -> Vec<Result<(), CloudError>> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

fn token_recording_fleet(tokens: &Captured<Option<String>>) -> Rule {
    let t = Arc::clone(tokens);
    mock!(aws_sdk_ec2::Client::create_fleet)
        .match_requests(move |i| {
            t.lock().unwrap().push(i.client_token().map(str::to_string));
            true
        })
        .then_output(|| {
            CreateFleetOutput::builder()
                .instances(launched(
                    "i-1",
                    "m5.large",
                    "us-east-1a",
                    InstanceLifecycle::Spot,
                ))
                .build()
        })
}

#[tokio::test]
async fn create_fleet_is_idempotent_per_claim_and_request() {
    let tokens: Captured<Option<String>> = Arc::default();
    let p = provider(vec![token_recording_fleet(&tokens)]).await;
    let same = request(&["m5.large"], &["spot"]);
    p.create(&same).await.unwrap();
    p.create(&same).await.unwrap();
    let mut other = request(&["m5.large"], &["spot"]);
    other.nodeclaim = "another-claim".into();
    p.create(&other).await.unwrap();
    let tokens: Vec<String> = tokens
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.clone().expect("a ClientToken"))
        .collect();
    assert_eq!(tokens.len(), 3);
    assert!(tokens.iter().all(|t| t.len() <= 64 && t.is_ascii()));
    assert_eq!(
        tokens[0], tokens[1],
        "the same claim and request: the same token"
    );
    assert_ne!(tokens[0], tokens[2], "another claim: another token");
}

#[tokio::test]
async fn a_create_fleet_whose_response_was_lost_is_retried_with_its_token() {
    let tokens: Captured<Option<String>> = Arc::default();
    let t = Arc::clone(&tokens);
    // The first attempt's response is lost (a 500 after EC2 may have acted); the SDK retries the
    // same request, token included, so EC2 answers with the first launch instead of a second.
    let fleet = mock!(aws_sdk_ec2::Client::create_fleet)
        .match_requests(move |i| {
            t.lock().unwrap().push(i.client_token().map(str::to_string));
            true
        })
        .sequence()
        .http_status(500, None)
        .output(|| {
            CreateFleetOutput::builder()
                .instances(launched(
                    "i-1",
                    "m5.large",
                    "us-east-1a",
                    InstanceLifecycle::Spot,
                ))
                .build()
        })
        .build();
    let p = provider(vec![fleet.clone()]).await;
    p.create(&request(&["m5.large"], &["spot"])).await.unwrap();
    assert_eq!(fleet.num_calls(), 2, "one retry");
    assert!(tokens.lock().unwrap().iter().all(Option::is_some));
}

// ---- The documented IAM policy against the requests karp sends ----------------------------

/// The policy block of docs/aws.md with its placeholders filled in.
fn documented_policy(cluster: &str) -> serde_json::Value {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/aws.md"))
        .expect("docs/aws.md");
    let section = &doc[doc.find("## IAM policy").expect("the IAM policy section")..];
    let start = section.find("```json").expect("a json block") + "```json".len();
    let end = start + section[start..].find("```").expect("the block's end");
    let text = section[start..end]
        .replace("${AWS_PARTITION}", "aws")
        .replace("${AWS_REGION}", "us-east-1")
        .replace("${AWS_ACCOUNT_ID}", "123456789012")
        .replace("${CLUSTER_NAME}", cluster)
        .replace("${NODE_ROLE_NAME}", "KarpenterNodeRole")
        .replace("${INTERRUPTION_QUEUE}", "karp-queue");
    serde_json::from_str(&text).expect("the documented policy is JSON")
}

/// `*` and `?` wildcards, as IAM matches ARNs and StringLike values.
fn glob(pattern: &str, value: &str) -> bool {
    fn go(p: &[u8], v: &[u8]) -> bool {
        match (p.first(), v.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], v) || (!v.is_empty() && go(p, &v[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &v[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &v[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), value.as_bytes())
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// One authorization IAM makes for a call: the action on one resource, with the request's
/// tags, the resource's tags and other context keys.
struct Authz<'a> {
    action: &'a str,
    resource: String,
    request_tags: &'a BTreeMap<String, String>,
    resource_tags: &'a BTreeMap<String, String>,
    context: BTreeMap<&'a str, &'a str>,
}

impl Authz<'_> {
    fn key(&self, key: &str) -> Option<&str> {
        if let Some(t) = key.strip_prefix("aws:RequestTag/") {
            return self.request_tags.get(t).map(String::as_str);
        }
        if let Some(t) = key.strip_prefix("aws:ResourceTag/") {
            return self.resource_tags.get(t).map(String::as_str);
        }
        self.context.get(key).copied()
    }

    /// Whether an Allow statement of `policy` grants it (no Deny statements are used).
    fn allowed_by(&self, policy: &serde_json::Value) -> bool {
        policy["Statement"].as_array().unwrap().iter().any(|st| {
            st["Effect"] == "Allow"
                && strings(&st["Action"]).iter().any(|a| glob(a, self.action))
                && strings(&st["Resource"])
                    .iter()
                    .any(|r| glob(r, &self.resource))
                && st["Condition"].as_object().is_none_or(|ops| {
                    ops.iter().all(|(op, conds)| {
                        conds.as_object().unwrap().iter().all(|(k, want)| {
                            let Some(have) = self.key(k) else {
                                return false;
                            };
                            strings(want).iter().any(|w| match op.as_str() {
                                "StringEquals" => w == have,
                                "StringLike" => glob(w, have),
                                other => panic!("condition operator {other} not evaluated"),
                            })
                        })
                    })
                })
        })
    }
}

fn tags_of(specs: &[aws_sdk_ec2::types::TagSpecification]) -> BTreeMap<String, String> {
    specs
        .iter()
        .flat_map(|s| s.tags())
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .collect()
}

#[tokio::test]
async fn the_documented_iam_policy_allows_every_call_karp_makes_with_the_tags_it_writes() {
    // Capture what karp sends: the launch template's tags, the fleet's tags.
    let templates: Captured<CreateLaunchTemplateInput> = Arc::default();
    let fleets: Captured<CreateFleetInput> = Arc::default();
    let terminated: Captured<TerminateInstancesInput> = Arc::default();
    let (mut ec2, ssm) = resolution_rules();
    let t = Arc::clone(&templates);
    ec2.push(mock!(aws_sdk_ec2::Client::describe_launch_templates).then_error(|| {
        aws_sdk_ec2::operation::describe_launch_templates::DescribeLaunchTemplatesError::generic(
            ErrorMetadata::builder().code("InvalidLaunchTemplateName.NotFoundException").build(),
        )
    }));
    ec2.push(
        mock!(aws_sdk_ec2::Client::create_launch_template)
            .match_requests(move |i| {
                t.lock().unwrap().push(i.clone());
                true
            })
            .then_output(|| CreateLaunchTemplateOutput::builder().build()),
    );
    ec2.push(capture_fleet(&fleets, || {
        CreateFleetOutput::builder()
            .instances(launched(
                "i-1",
                "m5.large",
                "us-east-1a",
                InstanceLifecycle::Spot,
            ))
            .build()
    }));
    let tt = Arc::clone(&terminated);
    ec2.push(
        mock!(aws_sdk_ec2::Client::terminate_instances)
            .match_requests(move |i| {
                tt.lock().unwrap().push(i.clone());
                true
            })
            .then_output(|| TerminateInstancesOutput::builder().build()),
    );
    let ec2_refs: Vec<&Rule> = ec2.iter().collect();
    let ssm_refs: Vec<&Rule> = ssm.iter().collect();
    let p = AwsCloudProvider::new(clients(&ec2_refs, &ssm_refs, None), settings());
    p.set_account_catalog(builtin_account());
    p.resolve_node_class(&node_class()).await.unwrap();
    p.create(&request(&["m5.large"], &["spot"])).await.unwrap();

    let cluster = settings().cluster_name;
    let policy = documented_policy(&cluster);
    let lt_tags = tags_of(templates.lock().unwrap()[0].tag_specifications());
    let fleet = fleets.lock().unwrap()[0].clone();
    let fleet_tags = tags_of(fleet.tag_specifications());
    let none = BTreeMap::new();
    let arn = |kind: &str, id: &str| format!("arn:aws:ec2:us-east-1:123456789012:{kind}/{id}");
    let check = |action: &str,
                 resource: String,
                 request_tags,
                 resource_tags,
                 context: &[(&'static str, &'static str)]| {
        let a = Authz {
            action,
            resource: resource.clone(),
            request_tags,
            resource_tags,
            context: context.iter().copied().collect(),
        };
        assert!(
            a.allowed_by(&policy),
            "{action} on {resource} is denied by the documented policy"
        );
    };
    // Creating the launch template (and tagging it on create).
    check(
        "ec2:CreateLaunchTemplate",
        arn("launch-template", "lt-1"),
        &lt_tags,
        &none,
        &[],
    );
    check(
        "ec2:CreateTags",
        arn("launch-template", "lt-1"),
        &lt_tags,
        &none,
        &[("ec2:CreateAction", "CreateLaunchTemplate")],
    );
    // CreateFleet (and the RunInstances it makes) on every resource it creates or uses.
    for action in ["ec2:CreateFleet", "ec2:RunInstances"] {
        for kind in [
            "fleet",
            "instance",
            "volume",
            "network-interface",
            "spot-instances-request",
        ] {
            check(action, arn(kind, "x-1"), &fleet_tags, &none, &[]);
        }
        check(
            action,
            arn("launch-template", "lt-1"),
            &fleet_tags,
            &lt_tags,
            &[],
        );
        for shared in ["security-group/sg-1", "subnet/subnet-1"] {
            check(
                action,
                format!("arn:aws:ec2:us-east-1:123456789012:{shared}"),
                &fleet_tags,
                &none,
                &[],
            );
        }
        check(
            action,
            "arn:aws:ec2:us-east-1::image/ami-1".into(),
            &fleet_tags,
            &none,
            &[],
        );
    }
    for kind in ["fleet", "instance", "volume"] {
        check(
            "ec2:CreateTags",
            arn(kind, "x-1"),
            &fleet_tags,
            &none,
            &[("ec2:CreateAction", "CreateFleet")],
        );
    }
    // Cleanup: terminating its instances, deleting its launch templates.
    check(
        "ec2:TerminateInstances",
        arn("instance", "i-1"),
        &none,
        &fleet_tags,
        &[],
    );
    check(
        "ec2:DeleteLaunchTemplate",
        arn("launch-template", "lt-1"),
        &none,
        &lt_tags,
        &[],
    );
    for read in [
        "ec2:DescribeInstances",
        "ec2:DescribeLaunchTemplates",
        "ec2:DescribeSubnets",
        "ec2:DescribeImages",
    ] {
        check(
            read,
            "*".into(),
            &none,
            &none,
            &[("aws:RequestedRegion", "us-east-1")],
        );
    }
    // The instance profile karp creates for the node class, and the node role it passes.
    let profile = karp_aws::resolve::instance_profile_name(&settings(), "default");
    let profile_arn = format!(
        "arn:aws:iam::123456789012:instance-profile/karpenter/us-east-1/{cluster}/{profile}"
    );
    for action in [
        "iam:CreateInstanceProfile",
        "iam:TagInstanceProfile",
        "iam:AddRoleToInstanceProfile",
        "iam:GetInstanceProfile",
        "iam:RemoveRoleFromInstanceProfile",
        "iam:DeleteInstanceProfile",
    ] {
        check(action, profile_arn.clone(), &none, &none, &[]);
    }
    check(
        "iam:PassRole",
        "arn:aws:iam::123456789012:role/KarpenterNodeRole".into(),
        &none,
        &none,
        &[("iam:PassedToService", "ec2.amazonaws.com")],
    );

    // The evaluator refuses what the policy must refuse: another cluster's instance.
    let foreign = BTreeMap::from([("karpenter.sh/nodepool".to_string(), "x".to_string())]);
    let denied = Authz {
        action: "ec2:TerminateInstances",
        resource: arn("instance", "i-other"),
        request_tags: &none,
        resource_tags: &foreign,
        context: BTreeMap::new(),
    };
    assert!(!denied.allowed_by(&policy));
}

/// A node class with every launch-template field of Karpenter 1.14 set.
fn node_class_with_launch_fields(extra: &str) -> EC2NodeClass {
    serde_yaml::from_str(&format!(
        r"
metadata: {{name: default}}
spec:
  role: KarpenterNodeRole
  amiSelectorTerms: [{{alias: al2023@latest}}]
  subnetSelectorTerms: [{{tags: {{karpenter.sh/discovery: mocked}}}}]
  securityGroupSelectorTerms: [{{tags: {{karpenter.sh/discovery: mocked}}}}]
  associatePublicIPAddress: false
  ipPrefixCount: 2
  connectionTracking: {{tcpEstablishedTimeout: 120, udpStreamTimeout: 90, udpTimeout: 30}}
  cpuOptions: {{nestedVirtualization: enabled}}
{extra}"
    ))
    .unwrap()
}

fn placement_group_rule(strategy: &str, captured: &Captured<DescribePlacementGroupsInput>) -> Rule {
    let c = Arc::clone(captured);
    let strategy = strategy.to_string();
    mock!(aws_sdk_ec2::Client::describe_placement_groups)
        .match_requests(move |i| {
            c.lock().unwrap().push(i.clone());
            true
        })
        .then_output(move || {
            DescribePlacementGroupsOutput::builder()
                .placement_groups(
                    aws_sdk_ec2::types::PlacementGroup::builder()
                        .group_id("pg-0123abcd")
                        .group_name("training")
                        .strategy(PlacementStrategy::from(strategy.as_str()))
                        .partition_count(3)
                        .state(PlacementGroupState::Available)
                        .build(),
                )
                .build()
        })
}

fn capture_templates(captured: &Captured<CreateLaunchTemplateInput>) -> Vec<Rule> {
    let c = Arc::clone(captured);
    vec![
        mock!(aws_sdk_ec2::Client::describe_launch_templates).then_error(|| {
            aws_sdk_ec2::operation::describe_launch_templates::DescribeLaunchTemplatesError::generic(
                ErrorMetadata::builder()
                    .code("InvalidLaunchTemplateName.NotFoundException")
                    .build(),
            )
        }),
        mock!(aws_sdk_ec2::Client::create_launch_template)
            .match_requests(move |i| {
                c.lock().unwrap().push(i.clone());
                true
            })
            .then_output(|| CreateLaunchTemplateOutput::builder().build()),
    ]
}

#[tokio::test]
async fn karpenter_1_14_launch_fields_reach_the_launch_template_as_karpenter_sends_them() {
    let templates: Captured<CreateLaunchTemplateInput> = Arc::default();
    let fleets: Captured<CreateFleetInput> = Arc::default();
    let groups: Captured<DescribePlacementGroupsInput> = Arc::default();
    let mut ec2 = capture_templates(&templates);
    ec2.push(placement_group_rule("partition", &groups));
    ec2.push(capture_fleet(&fleets, || {
        CreateFleetOutput::builder()
            .instances(launched(
                "i-1",
                "m5.large",
                "us-east-1a",
                InstanceLifecycle::Spot,
            ))
            .build()
    }));
    let nc = node_class_with_launch_fields(
        "  placementGroupSelector: {name: training}
  networkInterfaces:
  - {networkCardIndex: 0, deviceIndex: 0, interfaceType: interface}
  - {networkCardIndex: 0, deviceIndex: 1, interfaceType: efa-only}
  - {networkCardIndex: 1, deviceIndex: 0, interfaceType: efa-only}
",
    );
    let p = provider_for(&nc, ec2).await;
    // The placement group is looked up by name, available ones only, and lands in the status.
    let lookup = groups.lock().unwrap()[0].clone();
    assert_eq!(lookup.group_names(), ["training"]);
    assert!(lookup.group_ids().is_empty());
    assert_eq!(lookup.filters()[0].name(), Some("state"));
    assert_eq!(lookup.filters()[0].values(), ["available"]);
    let status = p.resolved_node_class("default").unwrap().status();
    assert_eq!(status.placement_groups[0].id, "pg-0123abcd");
    assert_eq!(status.placement_groups[0].strategy, "partition");
    assert_eq!(status.placement_groups[0].partition_count, Some(3));
    assert!(status
        .conditions
        .iter()
        .any(|c| c.type_ == "PlacementGroupReady" && c.status == "True"));

    p.create(&request(&["m5.large"], &["spot"])).await.unwrap();
    let lt = templates.lock().unwrap()[0].clone();
    let data = lt.launch_template_data().unwrap();
    // Security groups move onto the interfaces.
    assert!(data.security_group_ids().is_empty());
    let nics = data.network_interfaces();
    let layout: Vec<_> = nics
        .iter()
        .map(|n| {
            (
                n.network_card_index(),
                n.device_index(),
                n.interface_type().map(str::to_string),
                n.groups().to_vec(),
            )
        })
        .collect();
    let sg = vec!["sg-1".to_string()];
    assert_eq!(
        layout,
        vec![
            (Some(0), Some(0), Some("interface".to_string()), sg.clone()),
            (Some(0), Some(1), Some("efa-only".to_string()), sg.clone()),
            (Some(1), Some(0), Some("efa-only".to_string()), sg.clone()),
        ]
    );
    // The primary interface carries the public-IP choice and the prefixes; connection tracking
    // goes on interfaces with IP traffic only.
    assert_eq!(nics[0].associate_public_ip_address(), Some(false));
    assert_eq!(nics[0].ipv4_prefix_count(), Some(2));
    assert_eq!(nics[1].ipv4_prefix_count(), None);
    let ct = nics[0].connection_tracking_specification().unwrap();
    assert_eq!(
        (
            ct.tcp_established_timeout(),
            ct.udp_stream_timeout(),
            ct.udp_timeout()
        ),
        (Some(120), Some(90), Some(30))
    );
    assert!(nics[1].connection_tracking_specification().is_none());
    assert_eq!(
        data.cpu_options().and_then(|c| c.nested_virtualization()),
        Some(&aws_sdk_ec2::types::NestedVirtualizationSpecification::Enabled)
    );
    let placement = data.placement().unwrap();
    assert_eq!(placement.group_id(), Some("pg-0123abcd"));
    assert_eq!(
        placement.partition_number(),
        None,
        "EC2 picks the partition"
    );
    // A partition group keeps every zone in the fleet.
    let fleet = fleets.lock().unwrap()[0].clone();
    let zones = override_zones(&fleet);
    assert_eq!(zones.len(), 2, "{zones:?}");
}

#[tokio::test]
async fn without_a_layout_the_new_fields_put_only_a_primary_interface_in_the_template() {
    let templates: Captured<CreateLaunchTemplateInput> = Arc::default();
    let mut ec2 = capture_templates(&templates);
    ec2.push(capture_fleet(&Arc::default(), || {
        CreateFleetOutput::builder()
            .instances(launched(
                "i-1",
                "m5.large",
                "us-east-1a",
                InstanceLifecycle::Spot,
            ))
            .build()
    }));
    let p = provider_for(&node_class_with_launch_fields(""), ec2).await;
    p.create(&request(&["m5.large"], &["spot"])).await.unwrap();
    let lt = templates.lock().unwrap()[0].clone();
    let nics = lt
        .launch_template_data()
        .unwrap()
        .network_interfaces()
        .to_vec();
    assert_eq!(nics.len(), 1);
    assert_eq!(nics[0].device_index(), Some(0));
    assert_eq!(nics[0].network_card_index(), None);
    assert_eq!(nics[0].interface_type(), None);
    assert_eq!(nics[0].groups(), ["sg-1"]);
    assert_eq!(nics[0].ipv4_prefix_count(), Some(2));
    assert!(nics[0].connection_tracking_specification().is_some());
    // ipPrefixCount counts pods with prefix delegation: m5.large gets 110, not 29.
    let types = p.instance_types("default", Some("default")).await.unwrap();
    let m5 = types.iter().find(|t| t.name == "m5.large").unwrap();
    assert_eq!(m5.capacity.pods, 110);
}

#[tokio::test]
async fn a_cluster_placement_group_keeps_the_fleet_in_one_zone() {
    let fleets: Captured<CreateFleetInput> = Arc::default();
    let groups: Captured<DescribePlacementGroupsInput> = Arc::default();
    let mut ec2 = lt_rules();
    ec2.push(placement_group_rule("cluster", &groups));
    ec2.push(capture_fleet(&fleets, || {
        CreateFleetOutput::builder()
            .instances(launched(
                "i-1",
                "m5.large",
                "us-east-1a",
                InstanceLifecycle::Spot,
            ))
            .build()
    }));
    let nc = node_class_with_launch_fields("  placementGroupSelector: {id: pg-0123abcd}\n");
    let p = provider_for(&nc, ec2).await;
    let lookup = groups.lock().unwrap()[0].clone();
    assert_eq!(lookup.group_ids(), ["pg-0123abcd"]);
    assert!(lookup.group_names().is_empty());
    p.create(&request(&["m5.large", "m5.xlarge"], &["spot"]))
        .await
        .unwrap();
    let fleet = fleets.lock().unwrap()[0].clone();
    let zones = override_zones(&fleet);
    assert_eq!(zones.len(), 1, "{zones:?}");
}

#[tokio::test]
async fn a_missing_placement_group_makes_the_node_class_not_ready() {
    let (mut ec2, ssm) = resolution_rules();
    ec2.insert(
        0,
        mock!(aws_sdk_ec2::Client::describe_placement_groups).then_error(|| {
            aws_sdk_ec2::operation::describe_placement_groups::DescribePlacementGroupsError::generic(
                ErrorMetadata::builder()
                    .code("InvalidPlacementGroup.Unknown")
                    .build(),
            )
        }),
    );
    let ec2_refs: Vec<&Rule> = ec2.iter().collect();
    let ssm_refs: Vec<&Rule> = ssm.iter().collect();
    let p = AwsCloudProvider::new(clients(&ec2_refs, &ssm_refs, None), settings());
    p.set_account_catalog(builtin_account());
    let nc = node_class_with_launch_fields("  placementGroupSelector: {name: gone}\n");
    let status = p.resolve_node_class(&nc).await.unwrap();
    let pg = status
        .conditions
        .iter()
        .find(|c| c.type_ == "PlacementGroupReady")
        .unwrap();
    assert_eq!(
        (pg.status.as_str(), pg.reason.as_deref()),
        ("False", Some("PlacementGroupNotFound"))
    );
    assert!(p.resolved_node_class("default").is_err());
}

#[tokio::test]
async fn capacity_reservations_are_resolved_into_the_status_as_karpenter_reports_them() {
    use aws_sdk_ec2::operation::describe_capacity_reservations::{
        DescribeCapacityReservationsInput, DescribeCapacityReservationsOutput,
    };
    use aws_sdk_ec2::types::{
        CapacityReservation as Ec2Reservation, CapacityReservationInstancePlatform,
        CapacityReservationState, CapacityReservationType, InstanceMatchCriteria,
    };
    let lookups: Captured<DescribeCapacityReservationsInput> = Arc::default();
    let c = Arc::clone(&lookups);
    let rule = mock!(aws_sdk_ec2::Client::describe_capacity_reservations)
        .match_requests(move |i| {
            c.lock().unwrap().push(i.clone());
            true
        })
        .then_output(|| {
            DescribeCapacityReservationsOutput::builder()
                .capacity_reservations(
                    Ec2Reservation::builder()
                        .capacity_reservation_id("cr-0123abcd")
                        .instance_type("m5.large")
                        .availability_zone("us-east-1a")
                        .owner_id("123456789012")
                        .instance_match_criteria(InstanceMatchCriteria::Targeted)
                        .reservation_type(CapacityReservationType::CapacityBlock)
                        .instance_platform(CapacityReservationInstancePlatform::LinuxUnix)
                        .state(CapacityReservationState::Active)
                        .available_instance_count(2)
                        .end_date(aws_smithy_types::DateTime::from_secs(1_800_000_000))
                        .build(),
                )
                .build()
        });
    let nc: EC2NodeClass = serde_yaml::from_str(
        r"
metadata: {name: default}
spec:
  role: KarpenterNodeRole
  amiSelectorTerms: [{alias: al2023@latest}]
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: mocked}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: mocked}}]
  capacityReservationSelectorTerms:
  - {tags: {team: ml}, ownerID: '123456789012', instanceMatchCriteria: targeted}
  - {id: cr-0123abcd}
",
    )
    .unwrap();
    let p = provider_for(&nc, vec![rule]).await;
    let calls = lookups.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    let filters: Vec<(String, Vec<String>)> = calls[0]
        .filters()
        .iter()
        .map(|f| (f.name().unwrap().to_string(), f.values().to_vec()))
        .collect();
    let f = |n: &str, v: &str| (n.to_string(), vec![v.to_string()]);
    assert_eq!(
        filters,
        vec![
            f("tag:team", "ml"),
            f("owner-id", "123456789012"),
            f("instance-match-criteria", "targeted"),
            f("state", "active"),
        ]
    );
    assert_eq!(calls[1].capacity_reservation_ids(), ["cr-0123abcd"]);
    let status = p.resolved_node_class("default").unwrap().status();
    // Both terms select the same reservation: it is listed once.
    assert_eq!(status.capacity_reservations.len(), 1);
    let r = &status.capacity_reservations[0];
    assert_eq!(
        (
            r.id.as_str(),
            r.instance_type.as_str(),
            r.availability_zone.as_str(),
            r.owner_id.as_str(),
            r.instance_match_criteria.as_str(),
            r.reservation_type.as_str(),
            r.state.as_str(),
            r.end_time.as_deref()
        ),
        (
            "cr-0123abcd",
            "m5.large",
            "us-east-1a",
            "123456789012",
            "targeted",
            "capacity-block",
            "active",
            Some("2027-01-15T08:00:00Z")
        )
    );
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["capacityReservations"][0]["ownerID"], "123456789012");
    assert!(status
        .conditions
        .iter()
        .any(|c| c.type_ == "CapacityReservationsReady" && c.status == "True"));
}

#[tokio::test]
async fn a_request_allowing_reserved_launches_into_the_selected_reservation_first() {
    use aws_sdk_ec2::operation::create_launch_template::CreateLaunchTemplateInput;
    use aws_sdk_ec2::types::CapacityReservationPreference;
    let reservation = m5_large_reservation("cr-0123abcd", 1);
    let templates: Captured<CreateLaunchTemplateInput> = Arc::default();
    let t = Arc::clone(&templates);
    let create_lt = mock!(aws_sdk_ec2::Client::create_launch_template)
        .match_requests(move |i| {
            t.lock().unwrap().push(i.clone());
            true
        })
        .then_output(|| CreateLaunchTemplateOutput::builder().build());
    let fleets: Captured<CreateFleetInput> = Arc::default();
    let fleet = capture_fleet(&fleets, || {
        CreateFleetOutput::builder()
            .instances(launched(
                "i-r",
                "m5.large",
                "us-east-1a",
                InstanceLifecycle::OnDemand,
            ))
            .build()
    });
    let nc: EC2NodeClass = serde_yaml::from_str(
        r"
metadata: {name: default}
spec:
  role: KarpenterNodeRole
  amiSelectorTerms: [{alias: al2023@latest}]
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: mocked}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: mocked}}]
  capacityReservationSelectorTerms: [{id: cr-0123abcd}]
",
    )
    .unwrap();
    let describe_lt = lt_rules().remove(0);
    let p = provider_for(&nc, vec![describe_lt, create_lt, fleet, reservation]).await;

    // The scheduler sees a reserved offering of m5.large in 1a, priced near zero, for one.
    let types = p.instance_types("default", Some("default")).await.unwrap();
    let m5 = types.iter().find(|t| t.name == "m5.large").unwrap();
    let reserved: Vec<_> = m5
        .offerings
        .iter()
        .filter(|o| o.capacity_type == "reserved")
        .collect();
    assert_eq!(reserved.len(), 1);
    assert_eq!(reserved[0].zone, "us-east-1a");
    assert_eq!(
        reserved[0]
            .reservation
            .as_ref()
            .map(|r| (r.id.as_str(), r.available)),
        Some(("cr-0123abcd", 1))
    );
    assert!(reserved[0].price < 1e-6, "{}", reserved[0].price);

    // A claim allowing reserved and on-demand launches reserved, on demand, into the
    // reservation's template only.
    let inst = p
        .create(&request(
            &["m5.large", "m5.xlarge"],
            &["reserved", "on-demand"],
        ))
        .await
        .unwrap();
    assert_eq!(inst.capacity_type, "reserved");
    assert_eq!(
        inst.labels
            .get("karpenter.k8s.aws/capacity-reservation-id")
            .map(String::as_str),
        Some("cr-0123abcd")
    );
    let input = fleets.lock().unwrap()[0].clone();
    assert_eq!(
        input
            .target_capacity_specification()
            .and_then(|t| t.default_target_capacity_type()),
        Some(&DefaultTargetCapacityType::OnDemand)
    );
    let overrides: Vec<(String, String)> = input
        .launch_template_configs()
        .iter()
        .flat_map(|c| c.overrides())
        .map(|o| {
            (
                o.instance_type().unwrap().as_str().to_string(),
                o.availability_zone().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        overrides,
        [("m5.large".to_string(), "us-east-1a".to_string())]
    );
    let lt = templates.lock().unwrap()[0].clone();
    let target = lt
        .launch_template_data()
        .and_then(|d| d.capacity_reservation_specification())
        .and_then(|c| c.capacity_reservation_target())
        .and_then(|t| t.capacity_reservation_id());
    assert_eq!(target, Some("cr-0123abcd"));

    // A claim without reserved gets a template that opts out of open reservations.
    let inst = p
        .create(&request(&["m5.large"], &["on-demand"]))
        .await
        .unwrap();
    assert_eq!(inst.capacity_type, "on-demand");
    let lts = templates.lock().unwrap().clone();
    let plain = lts
        .iter()
        .map(|t| {
            t.launch_template_data()
                .and_then(|d| d.capacity_reservation_specification())
                .and_then(|c| c.capacity_reservation_preference())
                .cloned()
        })
        .collect::<Vec<_>>();
    assert!(
        plain.contains(&Some(CapacityReservationPreference::None)),
        "{plain:?}"
    );
}

#[tokio::test]
async fn a_full_reservation_is_marked_unavailable_and_the_retry_launches_on_demand() {
    let reservation = m5_large_reservation("cr-full", 3);
    let fleets: Captured<CreateFleetInput> = Arc::default();
    let fleet = fails_once_then_on_demand(&fleets, "ReservationCapacityExceeded", "i-od");
    let nc: EC2NodeClass = serde_yaml::from_str(
        r"
metadata: {name: default}
spec:
  role: KarpenterNodeRole
  amiSelectorTerms: [{alias: al2023@latest}]
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: mocked}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: mocked}}]
  capacityReservationSelectorTerms: [{id: cr-full}]
",
    )
    .unwrap();
    let mut rules = lt_rules();
    rules.extend([fleet, reservation]);
    let p = provider_for(&nc, rules).await;
    let req = request(&["m5.large"], &["reserved", "on-demand"]);
    let err = p.create(&req).await.unwrap_err();
    assert!(
        matches!(&err, CloudError::InsufficientCapacity { offerings } if offerings.iter().any(|o| o.capacity_type == "reserved")),
        "{err:?}"
    );
    assert!(p.unavailable_offerings().is_unavailable(
        "m5.large",
        "us-east-1a",
        "reserved",
        Instant::now()
    ));
    let inst = p.create(&req).await.unwrap();
    assert_eq!(inst.capacity_type, "on-demand");
    assert!(!inst
        .labels
        .contains_key("karpenter.k8s.aws/capacity-reservation-id"));
}
