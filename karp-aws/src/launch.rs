//! Launching: the pure launch plan (capacity type, instance-type overrides, launch templates,
//! tags) and the calls that carry it out (CreateLaunchTemplate, CreateFleet `instant`).
//!
//! Karpenter's rules: spot when the request allows it and any spot offering is available, else
//! on-demand; overrides are the compatible (type, zone) offerings, cheapest first, at most 60,
//! each in the zone's subnet with the most free addresses; spot uses `price-capacity-optimized`,
//! on-demand `lowest-price`. Instance types are grouped into one launch template per
//! (AMI, max pods), since the AMI and the kubelet's max pods live in the template.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_ec2::types::{
    CapacityReservationPreference, CapacityReservationTarget,
    ConnectionTrackingSpecificationRequest, DefaultTargetCapacityType,
    FleetLaunchTemplateConfigRequest, FleetLaunchTemplateOverridesRequest,
    FleetLaunchTemplateSpecificationRequest, FleetOnDemandAllocationStrategy, FleetType,
    InstanceType as Ec2InstanceType, LaunchTemplateBlockDeviceMappingRequest,
    LaunchTemplateCapacityReservationSpecificationRequest, LaunchTemplateCpuOptionsRequest,
    LaunchTemplateEbsBlockDeviceRequest, LaunchTemplateHttpTokensState,
    LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataEndpointState, LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateInstanceMetadataProtocolIpv6,
    LaunchTemplateInstanceNetworkInterfaceSpecificationRequest, LaunchTemplatePlacementRequest,
    LaunchTemplateTagSpecificationRequest, LaunchTemplatesMonitoringRequest,
    NestedVirtualizationSpecification, OnDemandOptionsRequest, RequestLaunchTemplateData,
    ResourceType, SpotAllocationStrategy, SpotOptionsRequest, Tag, TagSpecification,
    TargetCapacitySpecificationRequest, VolumeType,
};
use karp_core::cloud::{CloudError, InstanceType, LaunchRequest, UnavailableOffering};
use karp_core::labels;
use karp_core::taints::{Effect, Taint};

use crate::allocatable::AmiFamily;
use crate::error::{AwsError, ErrorKind};
use crate::nodeclass::{interface_type, BlockDevice, BlockDeviceMapping, QuantityString};
use crate::quantity;
use crate::resolve::{fnv1a, ResolvedNodeClass};
use crate::sdk::{AwsClients, AwsSettings};
use crate::userdata::{self, Bootstrap};

/// CreateFleet accepts at most this many overrides per request (Karpenter's cap).
pub const MAX_OVERRIDES: usize = 60;

/// Tag keys karp puts on what it launches.
pub mod tags {
    /// NodePool name.
    pub const NODEPOOL: &str = "karpenter.sh/nodepool";
    /// NodeClaim name.
    pub const NODECLAIM: &str = "karpenter.sh/nodeclaim";
    /// EC2NodeClass name.
    pub const NODECLASS: &str = "karpenter.k8s.aws/ec2nodeclass";
    /// Hash of the node class spec at launch (static drift).
    pub const NODECLASS_HASH: &str = "karpenter.k8s.aws/ec2nodeclass-hash";
    /// EKS cluster name.
    pub const EKS_CLUSTER_NAME: &str = "eks:eks-cluster-name";
    /// Karpenter's managed-by tag on launch templates.
    pub const CLUSTER: &str = "karpenter.k8s.aws/cluster";
}

/// The taint every node registers with until karp has synced it.
#[must_use]
pub fn unregistered_taint() -> Taint {
    Taint::new("karpenter.sh/unregistered", "", Effect::NoExecute)
}

/// One (instance type, subnet) a fleet may launch.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetOverride {
    /// Instance type.
    pub instance_type: String,
    /// Subnet id.
    pub subnet_id: String,
    /// Zone of the subnet.
    pub zone: String,
    /// Price of the offering (USD/h).
    pub price: f64,
    /// The capacity reservation it launches into (reserved launches only).
    pub reservation_id: Option<String>,
}

/// A launch template a fleet uses, with its overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplatePlan {
    /// Template name (`karpenter.k8s.aws/<hash>`), derived from its content.
    pub name: String,
    /// AMI id.
    pub image_id: String,
    /// Max pods written into the user data.
    pub max_pods: i64,
    /// Base64 user data.
    pub user_data: String,
    /// Overrides launched with this template.
    pub overrides: Vec<FleetOverride>,
    /// The capacity reservation the template targets (one template per reservation, as
    /// Karpenter does: the target lives in the launch template).
    pub capacity_reservation_id: Option<String>,
}

/// Everything one CreateFleet call needs, decided without IO.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetPlan {
    /// `reserved`, `spot` or `on-demand`.
    pub capacity_type: String,
    /// Launch templates and their overrides (all overrides, cheapest first across templates, ≤ 60).
    pub templates: Vec<TemplatePlan>,
    /// Tags for the instance, its volumes and the fleet.
    pub tags: BTreeMap<String, String>,
    /// Security groups (for the templates).
    pub security_group_ids: Vec<String>,
    /// Instance profile (for the templates).
    pub instance_profile: Option<String>,
}

impl FleetPlan {
    /// Every override across templates.
    pub fn overrides(&self) -> impl Iterator<Item = &FleetOverride> {
        self.templates.iter().flat_map(|t| t.overrides.iter())
    }

    /// CreateFleet's idempotency token: the same for the same claim and the same request, so a
    /// retried call (an SDK retry after a lost response) cannot launch a second instance; a
    /// request with other overrides gets another token (EC2 would refuse it as a mismatch).
    #[must_use]
    pub fn client_token(&self) -> String {
        let mut key = format!(
            "{}|{}",
            self.tags.get(tags::NODECLAIM).map_or("", String::as_str),
            self.capacity_type
        );
        for t in &self.templates {
            key.push('|');
            key.push_str(&t.name);
            for o in &t.overrides {
                key.push_str(&format!(",{}/{}/{}", o.instance_type, o.subnet_id, o.zone));
            }
        }
        format!("karp-{:016x}", fnv1a(key.as_bytes()))
    }
}

/// The tags of instances launched for `request` (user tags, then karp's, which win).
#[must_use]
pub fn instance_tags(
    settings: &AwsSettings,
    resolved: &ResolvedNodeClass,
    request: &LaunchRequest,
) -> BTreeMap<String, String> {
    let mut t = resolved.node_class.spec.tags.clone();
    t.insert(settings.cluster_tag_key(), "owned".into());
    t.insert(tags::EKS_CLUSTER_NAME.into(), settings.cluster_name.clone());
    t.insert(tags::NODEPOOL.into(), request.nodepool.clone());
    t.insert(tags::NODECLAIM.into(), request.nodeclaim.clone());
    t.insert(tags::NODECLASS.into(), resolved.name().to_string());
    t.insert(tags::NODECLASS_HASH.into(), resolved.spec_hash());
    t
}

/// Plans a launch: picks the capacity type and the overrides among `instance_types` (already
/// filtered by the node class and with availability applied).
///
/// # Errors
/// [`CloudError::InsufficientCapacity`] when no available offering satisfies the request.
pub fn plan_fleet(
    settings: &AwsSettings,
    resolved: &ResolvedNodeClass,
    request: &LaunchRequest,
    instance_types: &[Arc<InstanceType>],
) -> Result<FleetPlan, CloudError> {
    // Candidate (type, offering) pairs.
    let mut candidates: Vec<(&InstanceType, &karp_core::cloud::Offering)> = Vec::new();
    for it in instance_types {
        if !it.requirements.intersects(&request.requirements)
            || !request.requests.fits_in(it.allocatable())
        {
            continue;
        }
        for o in &it.offerings {
            if o.available
                && o.compatible(&request.requirements)
                && resolved.subnet_for_zone(&o.zone).is_some()
            {
                candidates.push((it, o));
            }
        }
    }
    // Karpenter's preference: reserved capacity (paid for already), then spot, then on-demand.
    let capacity_type = if candidates
        .iter()
        .any(|(_, o)| o.capacity_type == labels::CAPACITY_RESERVED && o.reservation.is_some())
    {
        labels::CAPACITY_RESERVED
    } else if candidates.iter().any(|(_, o)| o.capacity_type == "spot") {
        "spot"
    } else if candidates
        .iter()
        .any(|(_, o)| o.capacity_type == "on-demand")
    {
        "on-demand"
    } else {
        return Err(CloudError::InsufficientCapacity {
            offerings: Vec::new(),
        });
    };
    candidates.retain(|(_, o)| o.capacity_type == capacity_type);
    candidates.sort_by(|(a, ao), (b, bo)| {
        ao.price
            .total_cmp(&bo.price)
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| ao.zone.cmp(&bo.zone))
    });
    // A cluster placement group lives in one zone: the fleet gets the cheapest offering's zone only.
    if resolved
        .placement_group
        .as_ref()
        .is_some_and(|pg| pg.strategy == "cluster")
    {
        if let Some(zone) = candidates.first().map(|(_, o)| o.zone.clone()) {
            candidates.retain(|(_, o)| o.zone == zone);
        }
    }
    type GroupKey = (String, i64, Option<String>);
    let mut groups: BTreeMap<GroupKey, Vec<FleetOverride>> = BTreeMap::new();
    let mut taken = 0;
    for (it, o) in candidates {
        if taken == MAX_OVERRIDES {
            break;
        }
        let Some(ami) = resolved.ami_for(&it.requirements) else {
            continue;
        };
        let Some(subnet) = resolved.subnet_for_zone(&o.zone) else {
            continue;
        };
        let reservation_id = o.reservation.as_ref().map(|r| r.id.clone());
        groups
            .entry((ami.id.clone(), it.capacity.pods, reservation_id.clone()))
            .or_default()
            .push(FleetOverride {
                instance_type: it.name.clone(),
                subnet_id: subnet.id.clone(),
                zone: o.zone.clone(),
                price: o.price,
                reservation_id,
            });
        taken += 1;
    }
    if groups.is_empty() {
        return Err(CloudError::InsufficientCapacity {
            offerings: Vec::new(),
        });
    }
    let family = resolved.settings.ami_family;
    let spec = &resolved.node_class.spec;
    let mut taints = request.taints.clone();
    taints.extend(request.startup_taints.iter().cloned());
    taints.push(unregistered_taint());
    let mut labels = request.labels.clone();
    labels.insert(labels::NODEPOOL.to_string(), request.nodepool.clone());
    let security_group_ids: Vec<String> = resolved
        .security_groups
        .iter()
        .map(|g| g.id.clone())
        .collect();
    // The template holding the cheapest override first: EC2 weighs every override by price, but
    // simpler fleets (moto among them) launch the first template's first override.
    let mut groups: Vec<(GroupKey, Vec<FleetOverride>)> = groups.into_iter().collect();
    groups.sort_by(|(ka, a), (kb, b)| a[0].price.total_cmp(&b[0].price).then_with(|| ka.cmp(kb)));
    let templates = groups
        .into_iter()
        .map(
            |((image_id, max_pods, capacity_reservation_id), overrides)| {
                let bootstrap = Bootstrap {
                    cluster_name: settings.cluster_name.clone(),
                    cluster_endpoint: settings.cluster_endpoint.clone(),
                    ca_bundle: settings.cluster_ca_bundle.clone(),
                    cluster_cidr: settings.cluster_cidr.clone(),
                    cluster_dns: spec
                        .kubelet
                        .as_ref()
                        .map(|k| k.cluster_dns.clone())
                        .unwrap_or_default(),
                    labels: labels.clone(),
                    taints: taints.clone(),
                    max_pods: Some(max_pods),
                    custom: spec.user_data.clone(),
                };
                let user_data = userdata::encode(&userdata::user_data(family, &bootstrap));
                let name = template_name(
                    settings,
                    resolved,
                    &image_id,
                    &user_data,
                    &security_group_ids,
                    capacity_reservation_id.as_deref(),
                );
                TemplatePlan {
                    name,
                    image_id,
                    max_pods,
                    user_data,
                    overrides,
                    capacity_reservation_id,
                }
            },
        )
        .collect();
    Ok(FleetPlan {
        capacity_type: capacity_type.to_string(),
        templates,
        tags: instance_tags(settings, resolved, request),
        security_group_ids,
        instance_profile: resolved.instance_profile.clone(),
    })
}

/// The name of the launch template for this content: equal content, equal name (so templates are
/// shared across launches and recreated only when something changes).
#[must_use]
pub fn template_name(
    settings: &AwsSettings,
    resolved: &ResolvedNodeClass,
    image_id: &str,
    user_data: &str,
    security_group_ids: &[String],
    capacity_reservation_id: Option<&str>,
) -> String {
    let mut key = serde_json::json!({
        "cluster": settings.cluster_name,
        "image": image_id,
        "userData": user_data,
        "securityGroups": security_group_ids,
        "instanceProfile": resolved.instance_profile,
        "spec": resolved.spec_hash(),
    });
    // Template content that is not in the spec hash, added only when present so that templates
    // of node classes without it keep their names.
    if let Some(fields) = key.as_object_mut() {
        if let Some(n) = resolved.node_class.spec.ip_prefix_count {
            fields.insert("ipPrefixCount".into(), serde_json::json!(n));
        }
        if let Some(pg) = &resolved.placement_group {
            fields.insert("placementGroup".into(), serde_json::json!(pg.id));
        }
        if let Some(id) = capacity_reservation_id {
            fields.insert("capacityReservation".into(), serde_json::json!(id));
        }
        if !resolved
            .node_class
            .spec
            .capacity_reservation_selector_terms
            .is_empty()
        {
            fields.insert(
                "capacityReservationPreference".into(),
                serde_json::json!("none"),
            );
        }
    }
    format!(
        "karpenter.k8s.aws/{:016x}",
        fnv1a(key.to_string().as_bytes())
    )
}

fn sdk_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn block_device(m: &BlockDeviceMapping) -> LaunchTemplateBlockDeviceMappingRequest {
    let mut ebs = LaunchTemplateEbsBlockDeviceRequest::builder();
    if let Some(e) = &m.ebs {
        if let Some(size) = &e.volume_size {
            if let Ok(bytes) = quantity::parse_value(&size.0) {
                // EC2 takes GiB, rounded up.
                let gib = (bytes + (1 << 30) - 1) >> 30;
                ebs = ebs.volume_size(i32::try_from(gib).unwrap_or(i32::MAX));
            }
        }
        if let Some(t) = &e.volume_type {
            ebs = ebs.volume_type(VolumeType::from(t.as_str()));
        }
        ebs = ebs
            .set_encrypted(e.encrypted)
            .set_delete_on_termination(e.delete_on_termination)
            .set_iops(e.iops.and_then(|v| i32::try_from(v).ok()))
            .set_throughput(e.throughput.and_then(|v| i32::try_from(v).ok()))
            .set_kms_key_id(e.kms_key_id.clone())
            .set_snapshot_id(e.snapshot_id.clone());
    }
    LaunchTemplateBlockDeviceMappingRequest::builder()
        .set_device_name(m.device_name.clone())
        .ebs(ebs.build())
        .build()
}

/// Karpenter's block devices for an AMI family when the EC2NodeClass sets none: an encrypted
/// 20Gi gp3 root volume (`/dev/xvda`); Bottlerocket a 4Gi OS volume plus a 20Gi data volume
/// (`/dev/xvdb`); Windows a 50Gi `/dev/sda1`; a custom AMI keeps the image's own mappings.
#[must_use]
pub fn default_block_devices(family: AmiFamily) -> Vec<BlockDeviceMapping> {
    let gp3 = |device: &str, gib: i64| BlockDeviceMapping {
        device_name: Some(device.to_string()),
        ebs: Some(BlockDevice {
            volume_size: Some(QuantityString(format!("{gib}Gi"))),
            volume_type: Some("gp3".into()),
            encrypted: Some(true),
            ..BlockDevice::default()
        }),
        root_volume: false,
    };
    match family {
        AmiFamily::Custom => Vec::new(),
        AmiFamily::Bottlerocket => vec![gp3("/dev/xvda", 4), gp3("/dev/xvdb", 20)],
        AmiFamily::Windows2019 | AmiFamily::Windows2022 | AmiFamily::Windows2025 => {
            vec![gp3("/dev/sda1", 50)]
        }
        AmiFamily::AL2 | AmiFamily::AL2023 => vec![gp3("/dev/xvda", 20)],
    }
}

/// The launch template data of one template plan.
#[must_use]
pub fn launch_template_data(
    resolved: &ResolvedNodeClass,
    plan: &FleetPlan,
    template: &TemplatePlan,
) -> RequestLaunchTemplateData {
    let spec = &resolved.node_class.spec;
    let md = spec.metadata_options.clone().unwrap_or_default();
    // Karpenter's defaults: IMDS enabled, IMDSv2 required, hop limit 1, IPv6 endpoint disabled.
    let metadata = LaunchTemplateInstanceMetadataOptionsRequest::builder()
        .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::from(
            md.http_endpoint.as_deref().unwrap_or("enabled"),
        ))
        .http_tokens(LaunchTemplateHttpTokensState::from(
            md.http_tokens.as_deref().unwrap_or("required"),
        ))
        .http_put_response_hop_limit(
            md.http_put_response_hop_limit
                .and_then(|v| i32::try_from(v).ok())
                .unwrap_or(1),
        )
        .http_protocol_ipv6(LaunchTemplateInstanceMetadataProtocolIpv6::from(
            md.http_protocol_ipv6.as_deref().unwrap_or("disabled"),
        ))
        .build();
    let mut data = RequestLaunchTemplateData::builder()
        .image_id(&template.image_id)
        .user_data(&template.user_data)
        .metadata_options(metadata)
        .set_block_device_mappings({
            let mappings = if spec.block_device_mappings.is_empty() {
                default_block_devices(resolved.settings.ami_family)
            } else {
                spec.block_device_mappings.clone()
            };
            (!mappings.is_empty()).then(|| mappings.iter().map(block_device).collect())
        })
        .monitoring(
            LaunchTemplatesMonitoringRequest::builder()
                .enabled(spec.detailed_monitoring.unwrap_or(false))
                .build(),
        )
        .tag_specifications(
            LaunchTemplateTagSpecificationRequest::builder()
                .resource_type(ResourceType::Instance)
                .set_tags(Some(sdk_tags(&plan.tags)))
                .build(),
        );
    if let Some(nv) = spec
        .cpu_options
        .as_ref()
        .and_then(|c| c.nested_virtualization.as_deref())
    {
        data = data.cpu_options(
            LaunchTemplateCpuOptionsRequest::builder()
                .nested_virtualization(NestedVirtualizationSpecification::from(nv))
                .build(),
        );
    }
    if let Some(pg) = &resolved.placement_group {
        data = data.placement(
            LaunchTemplatePlacementRequest::builder()
                .group_id(&pg.id)
                .build(),
        );
    }
    // A reserved template targets its reservation; the other templates of a node class that
    // selects reservations opt out of open reservations, so EC2 never puts an instance in one
    // karp did not choose (Karpenter's rule: it would drift, relaunch, and land there again).
    if let Some(id) = &template.capacity_reservation_id {
        data = data.capacity_reservation_specification(
            LaunchTemplateCapacityReservationSpecificationRequest::builder()
                .capacity_reservation_target(
                    CapacityReservationTarget::builder()
                        .capacity_reservation_id(id)
                        .build(),
                )
                .build(),
        );
    } else if !spec.capacity_reservation_selector_terms.is_empty() {
        data = data.capacity_reservation_specification(
            LaunchTemplateCapacityReservationSpecificationRequest::builder()
                .capacity_reservation_preference(CapacityReservationPreference::None)
                .build(),
        );
    }
    if let Some(profile) = &plan.instance_profile {
        data = data.iam_instance_profile(
            LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .name(profile)
                .build(),
        );
    }
    // With network interfaces in the template, the security groups go on the interfaces.
    data = match network_interfaces(resolved, plan) {
        Some(nics) => data.set_network_interfaces(Some(nics)),
        None => data.set_security_group_ids(Some(plan.security_group_ids.clone())),
    };
    data.build()
}

/// The launch template's network interfaces, or `None` for EC2's default primary interface.
///
/// `spec.networkInterfaces` gives the layout (each interface with its card, device index and
/// type, and the node class's security groups). Without it, a primary interface (device 0) is
/// written only when `associatePublicIPAddress`, `ipPrefixCount` or `connectionTracking` needs
/// one. The primary interface carries `AssociatePublicIpAddress` and `Ipv4PrefixCount`; every
/// `interface`-type interface carries the connection-tracking timeouts (`efa-only` interfaces
/// have no IP traffic to track).
#[must_use]
pub fn network_interfaces(
    resolved: &ResolvedNodeClass,
    plan: &FleetPlan,
) -> Option<Vec<LaunchTemplateInstanceNetworkInterfaceSpecificationRequest>> {
    let spec = &resolved.node_class.spec;
    let layout: Vec<(i64, i64, Option<&str>)> = if spec.network_interfaces.is_empty() {
        if spec.associate_public_ip_address.is_none()
            && spec.ip_prefix_count.is_none()
            && spec.connection_tracking.is_none()
        {
            return None;
        }
        vec![(0, 0, None)]
    } else {
        spec.network_interfaces
            .iter()
            .map(|n| {
                (
                    n.network_card_index,
                    n.device_index,
                    Some(n.interface_type.as_str()),
                )
            })
            .collect()
    };
    let tracking = spec.connection_tracking.as_ref().map(|ct| {
        let secs = |v: Option<i64>| v.and_then(|v| i32::try_from(v).ok());
        ConnectionTrackingSpecificationRequest::builder()
            .set_tcp_established_timeout(secs(ct.tcp_established_timeout))
            .set_udp_stream_timeout(secs(ct.udp_stream_timeout))
            .set_udp_timeout(secs(ct.udp_timeout))
            .build()
    });
    let nics = layout
        .into_iter()
        .map(|(card, device, kind)| {
            let primary = card == 0 && device == 0;
            let mut nic = LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                .device_index(i32::try_from(device).unwrap_or(i32::MAX))
                .set_groups(Some(plan.security_group_ids.clone()))
                .set_interface_type(kind.map(str::to_string));
            if kind.is_some() {
                nic = nic.network_card_index(i32::try_from(card).unwrap_or(i32::MAX));
            }
            if primary {
                nic = nic
                    .set_associate_public_ip_address(spec.associate_public_ip_address)
                    .set_ipv4_prefix_count(
                        spec.ip_prefix_count.and_then(|n| i32::try_from(n).ok()),
                    );
            }
            if kind != Some(interface_type::EFA_ONLY) {
                nic = nic.set_connection_tracking_specification(tracking.clone());
            }
            nic.build()
        })
        .collect();
    Some(nics)
}

/// Creates the template unless it exists (a concurrent creator winning is success).
///
/// # Errors
/// [`AwsError`] when the call fails otherwise.
pub async fn ensure_launch_template(
    clients: &AwsClients,
    settings: &AwsSettings,
    resolved: &ResolvedNodeClass,
    plan: &FleetPlan,
    template: &TemplatePlan,
) -> Result<(), AwsError> {
    let exists = clients
        .ec2
        .describe_launch_templates()
        .launch_template_names(&template.name)
        .send()
        .await;
    match exists {
        Ok(out) if !out.launch_templates().is_empty() => return Ok(()),
        Ok(_) => {}
        Err(e) => {
            let err = AwsError::from_sdk("DescribeLaunchTemplates", &e);
            if err.kind() != ErrorKind::NotFound {
                return Err(err);
            }
        }
    }
    let lt_tags = BTreeMap::from([
        (settings.cluster_tag_key(), "owned".to_string()),
        (tags::CLUSTER.to_string(), settings.cluster_name.clone()),
        (tags::NODECLASS.to_string(), resolved.name().to_string()),
    ]);
    let created = clients
        .ec2
        .create_launch_template()
        .launch_template_name(&template.name)
        .launch_template_data(launch_template_data(resolved, plan, template))
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::LaunchTemplate)
                .set_tags(Some(sdk_tags(&lt_tags)))
                .build(),
        )
        .send()
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(e) => {
            let err = AwsError::from_sdk("CreateLaunchTemplate", &e);
            if err.kind() == ErrorKind::AlreadyExists {
                Ok(())
            } else {
                Err(err)
            }
        }
    }
}

/// The CreateFleet request of a plan.
#[must_use]
pub fn create_fleet_request(
    clients: &AwsClients,
    plan: &FleetPlan,
) -> aws_sdk_ec2::operation::create_fleet::builders::CreateFleetFluentBuilder {
    let spot = plan.capacity_type == "spot";
    let mut req = clients
        .ec2
        .create_fleet()
        .r#type(FleetType::Instant)
        .client_token(plan.client_token())
        .target_capacity_specification(
            TargetCapacitySpecificationRequest::builder()
                .total_target_capacity(1)
                .default_target_capacity_type(if spot {
                    DefaultTargetCapacityType::Spot
                } else {
                    DefaultTargetCapacityType::OnDemand
                })
                .build(),
        );
    req = if spot {
        req.spot_options(
            SpotOptionsRequest::builder()
                .allocation_strategy(SpotAllocationStrategy::PriceCapacityOptimized)
                .build(),
        )
    } else {
        req.on_demand_options(
            OnDemandOptionsRequest::builder()
                .allocation_strategy(FleetOnDemandAllocationStrategy::LowestPrice)
                .build(),
        )
    };
    for t in &plan.templates {
        let overrides = t
            .overrides
            .iter()
            .map(|o| {
                FleetLaunchTemplateOverridesRequest::builder()
                    .instance_type(Ec2InstanceType::from(o.instance_type.as_str()))
                    .subnet_id(&o.subnet_id)
                    .availability_zone(&o.zone)
                    .build()
            })
            .collect();
        req = req.launch_template_configs(
            FleetLaunchTemplateConfigRequest::builder()
                .launch_template_specification(
                    FleetLaunchTemplateSpecificationRequest::builder()
                        .launch_template_name(&t.name)
                        .version("$Latest")
                        .build(),
                )
                .set_overrides(Some(overrides))
                .build(),
        );
    }
    for rt in [
        ResourceType::Instance,
        ResourceType::Volume,
        ResourceType::Fleet,
    ] {
        req = req.tag_specifications(
            TagSpecification::builder()
                .resource_type(rt)
                .set_tags(Some(sdk_tags(&plan.tags)))
                .build(),
        );
    }
    req
}

/// What CreateFleet returned, reduced to what karp acts on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FleetOutcome {
    /// Launched instances: (instance id, instance type, zone).
    pub launched: Vec<(String, String, String)>,
    /// Offerings that failed for capacity reasons.
    pub unavailable: Vec<UnavailableOffering>,
    /// Whether an account-wide capacity error hit the whole capacity type.
    pub capacity_type_exhausted: bool,
    /// Other errors (code, message).
    pub errors: Vec<(String, String)>,
}

/// Reduces a CreateFleet output.
#[must_use]
pub fn fleet_outcome(
    plan: &FleetPlan,
    out: &aws_sdk_ec2::operation::create_fleet::CreateFleetOutput,
) -> FleetOutcome {
    let zone_of_subnet: BTreeMap<&str, &str> = plan
        .overrides()
        .map(|o| (o.subnet_id.as_str(), o.zone.as_str()))
        .collect();
    let mut outcome = FleetOutcome::default();
    for inst in out.instances() {
        let ov = inst
            .launch_template_and_overrides()
            .and_then(|l| l.overrides());
        let itype = inst
            .instance_type()
            .map(|t| t.as_str().to_string())
            .or_else(|| {
                ov.and_then(|o| o.instance_type())
                    .map(|t| t.as_str().to_string())
            })
            .unwrap_or_default();
        let zone = ov
            .and_then(|o| o.availability_zone().map(str::to_string))
            .or_else(|| {
                ov.and_then(|o| o.subnet_id())
                    .and_then(|s| zone_of_subnet.get(s))
                    .map(|z| (*z).to_string())
            })
            .unwrap_or_default();
        for id in inst.instance_ids() {
            outcome
                .launched
                .push((id.clone(), itype.clone(), zone.clone()));
        }
    }
    for e in out.errors() {
        let code = e.error_code().unwrap_or_default().to_string();
        let message = e.error_message().unwrap_or_default().to_string();
        if crate::error::classify(&code) == ErrorKind::InsufficientCapacity {
            if crate::error::is_account_wide(&code) {
                outcome.capacity_type_exhausted = true;
            }
            let ov = e
                .launch_template_and_overrides()
                .and_then(|l| l.overrides());
            if let Some(ov) = ov {
                let zone = ov
                    .availability_zone()
                    .or_else(|| ov.subnet_id().and_then(|s| zone_of_subnet.get(s).copied()));
                if let (Some(t), Some(zone)) = (ov.instance_type(), zone) {
                    outcome.unavailable.push(UnavailableOffering {
                        instance_type: t.as_str().to_string(),
                        zone: zone.to_string(),
                        capacity_type: plan.capacity_type.clone(),
                    });
                }
            }
        } else {
            outcome.errors.push((code, message));
        }
    }
    outcome.unavailable.sort();
    outcome.unavailable.dedup();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_classes_without_block_devices_get_karpenters_encrypted_gp3_defaults() {
        let devices = |f: AmiFamily| -> Vec<(String, String, bool)> {
            default_block_devices(f)
                .into_iter()
                .map(|m| {
                    let ebs = m.ebs.unwrap_or_default();
                    (
                        m.device_name.unwrap_or_default(),
                        ebs.volume_size.map(|q| q.0).unwrap_or_default(),
                        ebs.encrypted == Some(true) && ebs.volume_type.as_deref() == Some("gp3"),
                    )
                })
                .collect()
        };
        let d = |n: &str, s: &str| (n.to_string(), s.to_string(), true);
        assert_eq!(devices(AmiFamily::AL2023), [d("/dev/xvda", "20Gi")]);
        assert_eq!(devices(AmiFamily::AL2), [d("/dev/xvda", "20Gi")]);
        assert_eq!(
            devices(AmiFamily::Bottlerocket),
            [d("/dev/xvda", "4Gi"), d("/dev/xvdb", "20Gi")]
        );
        assert_eq!(devices(AmiFamily::Windows2022), [d("/dev/sda1", "50Gi")]);
        assert!(devices(AmiFamily::Custom).is_empty());
    }
}
