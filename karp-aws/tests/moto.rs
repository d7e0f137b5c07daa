//! karp-aws against a real EC2 / SSM HTTP API: moto_server on a free loopback port, driven through
//! aws-sdk-ec2 / aws-sdk-ssm exactly as in production (only the endpoint differs).
//!
//! moto lacks EKS's public SSM AMI parameters (and `/aws/` names are reserved), so these tests
//! point `ssm_parameter_prefix` at a prefix they write.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use aws_sdk_ec2::types::Filter;
use karp_aws::catalog::{builtin_type_facts, TypeFacts};
use karp_aws::launch::tags;
use karp_aws::moto::MotoServer;
use karp_aws::nodeclass::EC2NodeClass;
use karp_aws::provider::{fetch_account_catalog, AccountCatalog};
use karp_aws::{AwsClients, AwsCloudProvider, AwsSettings};
use karp_core::cloud::{CloudProvider, LaunchRequest};
use karp_core::labels;
use karp_core::requirements::{Requirement, Requirements};
use karp_core::resources::Resources;
use tokio::sync::OnceCell;

const REGION: &str = "us-east-1";

fn server() -> &'static MotoServer {
    static SERVER: OnceLock<MotoServer> = OnceLock::new();
    SERVER.get_or_init(|| MotoServer::start().unwrap_or_else(|e| panic!("{e}")))
}

/// DescribeInstanceTypes costs ~4 s on moto: fetch it once per test binary.
async fn account_catalog() -> Arc<AccountCatalog> {
    static CATALOG: OnceCell<Arc<AccountCatalog>> = OnceCell::const_new();
    CATALOG
        .get_or_init(|| async {
            let clients = AwsClients::load(&settings("catalog")).await;
            Arc::new(fetch_account_catalog(&clients).await.unwrap())
        })
        .await
        .clone()
}

fn settings(cluster: &str) -> AwsSettings {
    let mut s = AwsSettings::for_moto(REGION, cluster, &server().url());
    s.ssm_parameter_prefix = format!("/karp-test/{cluster}");
    s.cluster_endpoint = "https://api.example".into();
    s.cluster_ca_bundle = "Q0E=".into();
    s
}

async fn seed(clients: &AwsClients, settings: &AwsSettings, octet: u8) -> String {
    karp_aws::moto::seed_cluster(clients, settings, octet)
        .await
        .unwrap()
}

async fn publish_ami(clients: &AwsClients, settings: &AwsSettings, ami: &str) {
    karp_aws::moto::publish_al2023_ami(clients, settings, ami)
        .await
        .unwrap();
}

fn node_class(cluster: &str, discovery: &str) -> EC2NodeClass {
    serde_yaml::from_str(&format!(
        r"
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata:
  name: default
spec:
  role: KarpenterNodeRole-{cluster}
  amiSelectorTerms:
    - alias: al2023@latest
  subnetSelectorTerms:
    - tags:
        karpenter.sh/discovery: {discovery}
  securityGroupSelectorTerms:
    - tags:
        karpenter.sh/discovery: {discovery}
  tags:
    team: infra
"
    ))
    .unwrap()
}

async fn provider(cluster: &str, octet: u8) -> (AwsCloudProvider, String) {
    let settings = settings(cluster);
    let clients = AwsClients::load(&settings).await;
    let ami = seed(&clients, &settings, octet).await;
    let provider = AwsCloudProvider::new(clients, settings);
    provider.set_account_catalog(account_catalog().await);
    let status = provider
        .resolve_node_class(&node_class(cluster, cluster))
        .await
        .unwrap();
    assert!(
        status.conditions.iter().all(|c| c.status == "True"),
        "{:?}",
        status.conditions
    );
    (provider, ami)
}

fn request(nodeclaim: &str, types: &[&str], capacity_type: &str) -> LaunchRequest {
    LaunchRequest {
        nodeclaim: nodeclaim.into(),
        nodepool: "default".into(),
        node_class: Some("default".into()),
        requirements: Requirements::from_iter([
            Requirement::in_values(labels::INSTANCE_TYPE, types.iter().copied()),
            Requirement::in_values(labels::CAPACITY_TYPE, [capacity_type]),
        ]),
        requests: Resources::from_pairs([("cpu", "1"), ("memory", "1Gi")]).unwrap(),
        labels: BTreeMap::from([("team".to_string(), "a".to_string())]),
        taints: Vec::new(),
        startup_taints: Vec::new(),
    }
}

fn comparable(mut f: TypeFacts) -> TypeFacts {
    f.extended.remove(karp_aws::catalog::resources::POD_ENI);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_types_from_the_api_match_the_builtin_catalog() {
    let account = account_catalog().await;
    let builtin = builtin_type_facts().unwrap();
    let live: BTreeMap<&str, &TypeFacts> =
        account.types.iter().map(|f| (f.name.as_str(), f)).collect();
    let mut compared = 0;
    for b in &builtin {
        let l = live
            .get(b.name.as_str())
            .unwrap_or_else(|| panic!("{} missing from DescribeInstanceTypes", b.name));
        assert_eq!(
            comparable((*l).clone()),
            comparable(b.clone()),
            "{}",
            b.name
        );
        compared += 1;
    }
    assert_eq!(compared, builtin.len());
    assert!(compared > 1200, "only {compared} types");
    // Offerings per zone: us-east-1e offers far fewer types than us-east-1a.
    let in_zone = |z: &str| {
        account
            .zones
            .values()
            .filter(|zs| zs.iter().any(|x| x == z))
            .count()
    };
    assert!(in_zone("us-east-1a") > 500);
    assert!(in_zone("us-east-1e") < 100);
    assert!(account.zones["m5.large"].contains(&"us-east-1a".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_class_resolves_subnets_security_groups_and_amis() {
    let (provider, ami) = provider("resolve", 11).await;
    let resolved = provider.resolved_node_class("default").unwrap();
    let status = resolved.status();
    assert_eq!(status.subnets.len(), 3);
    let zones: Vec<&str> = status.subnets.iter().map(|s| s.zone.as_str()).collect();
    for z in ["us-east-1a", "us-east-1b", "us-east-1c"] {
        assert!(zones.contains(&z), "{zones:?}");
    }
    assert_eq!(status.security_groups.len(), 1);
    assert_eq!(
        status.security_groups[0].name.as_deref(),
        Some("resolve-nodes")
    );
    assert_eq!(status.amis.len(), 1);
    assert_eq!(status.amis[0].id, ami);
    // karp created the instance profile for the role.
    let profile = status.instance_profile.clone().unwrap();
    let got = provider
        .clients()
        .iam
        .get_instance_profile()
        .instance_profile_name(&profile)
        .send()
        .await
        .unwrap();
    let roles: Vec<&str> = got
        .instance_profile()
        .unwrap()
        .roles()
        .iter()
        .map(|r| r.role_name())
        .collect();
    assert_eq!(roles, vec!["KarpenterNodeRole-resolve"]);
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");

    // Instance types are limited to the subnets' zones and to types the AMI serves (x86, no GPU).
    let types = provider
        .instance_types("default", Some("default"))
        .await
        .unwrap();
    assert!(types.len() > 300, "{} types", types.len());
    for it in &types {
        assert_eq!(it.label(labels::ARCH), Some("amd64"), "{}", it.name);
        for o in &it.offerings {
            assert!(zones.contains(&o.zone.as_str()), "{} {}", it.name, o.zone);
        }
    }
    assert!(!types.iter().any(|t| t.name.starts_with("p4d")));

    // A node class whose selectors match nothing is not ready and has no instance types.
    let bad = provider
        .resolve_node_class(&node_class("resolve", "nobody"))
        .await
        .unwrap();
    let subnets = bad
        .conditions
        .iter()
        .find(|c| c.type_ == "SubnetsReady")
        .unwrap();
    assert_eq!(subnets.status, "False");
    assert_eq!(subnets.reason.as_deref(), Some("SubnetsNotFound"));
    let err = provider
        .instance_types("default", Some("default"))
        .await
        .unwrap_err();
    assert!(err.is_node_class_not_ready(), "{err:?}");

    // A role that does not exist: InstanceProfileReady is False.
    let mut missing_role = node_class("resolve", "resolve");
    missing_role.spec.role = Some("NoSuchRole".into());
    let st = provider.resolve_node_class(&missing_role).await.unwrap();
    let ip = st
        .conditions
        .iter()
        .find(|c| c.type_ == "InstanceProfileReady")
        .unwrap();
    assert_eq!(ip.status, "False", "{:?}", st.conditions);

    // Deleting the node class deletes the instance profile karp made.
    provider
        .delete_node_class(&node_class("resolve", "resolve"))
        .await
        .unwrap();
    let gone = provider
        .clients()
        .iam
        .get_instance_profile()
        .instance_profile_name(&profile)
        .send()
        .await;
    assert!(gone.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_list_get_delete_and_drift() {
    let (provider, ami) = provider("launch", 12).await;
    let inst = provider
        .create(&request(
            "nc-launch-1",
            &["m5.large", "m5.xlarge"],
            "on-demand",
        ))
        .await
        .unwrap();
    assert!(
        inst.provider_id.starts_with("aws:///us-east-1"),
        "{}",
        inst.provider_id
    );
    assert_eq!(inst.instance_type, "m5.large");
    assert_eq!(inst.capacity_type, "on-demand");
    assert_eq!(inst.nodeclaim.as_deref(), Some("nc-launch-1"));
    assert_eq!(inst.labels[labels::ZONE], inst.zone);

    // The instance carries karp's tags, the user's tags and the AMI; its template exists.
    let id = karp_aws::provider::instance_id(&inst.provider_id)
        .unwrap()
        .to_string();
    let ec2 = &provider.clients().ec2;
    let out = ec2
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap();
    let described = &out.reservations()[0].instances()[0];
    let t = |k: &str| karp_aws::describe::tag(described.tags(), k).map(str::to_string);
    assert_eq!(t(tags::NODECLAIM).as_deref(), Some("nc-launch-1"));
    assert_eq!(t(tags::NODEPOOL).as_deref(), Some("default"));
    assert_eq!(t(tags::NODECLASS).as_deref(), Some("default"));
    assert_eq!(t("kubernetes.io/cluster/launch").as_deref(), Some("owned"));
    assert_eq!(t(tags::EKS_CLUSTER_NAME).as_deref(), Some("launch"));
    assert_eq!(t("team").as_deref(), Some("infra"));
    assert_eq!(described.image_id(), Some(ami.as_str()));
    let lts = ec2
        .describe_launch_templates()
        .filters(
            Filter::builder()
                .name("tag:karpenter.k8s.aws/cluster")
                .values("launch")
                .build(),
        )
        .send()
        .await
        .unwrap();
    // One template per (AMI, max pods): m5.large (29 pods) and m5.xlarge (58 pods).
    assert_eq!(lts.launch_templates().len(), 2);
    for lt in lts.launch_templates() {
        let lt_name = lt.launch_template_name().unwrap();
        assert!(lt_name.starts_with("karpenter.k8s.aws/"), "{lt_name}");
        let version = ec2
            .describe_launch_template_versions()
            .launch_template_name(lt_name)
            .send()
            .await
            .unwrap();
        let data = version.launch_template_versions()[0]
            .launch_template_data()
            .unwrap();
        assert_eq!(
            data.metadata_options()
                .and_then(|m| m.http_tokens())
                .map(|t| t.as_str()),
            Some("required")
        );
        assert_eq!(data.image_id(), Some(ami.as_str()));
        // No blockDeviceMappings in the node class: Karpenter's encrypted 20Gi gp3 root volume.
        let root = data
            .block_device_mappings()
            .iter()
            .find(|m| m.device_name() == Some("/dev/xvda"))
            .and_then(|m| m.ebs())
            .expect("a root volume mapping");
        assert_eq!(root.volume_size(), Some(20));
        assert_eq!(root.encrypted(), Some(true));
        assert_eq!(root.volume_type().map(|t| t.as_str()), Some("gp3"));
        use base64::Engine as _;
        let user_data = base64::engine::general_purpose::STANDARD
            .decode(data.user_data().unwrap())
            .unwrap();
        let user_data = String::from_utf8(user_data).unwrap();
        assert!(user_data.contains("kind: NodeConfig"), "{user_data}");
        assert!(
            user_data.contains("karpenter.sh/unregistered"),
            "{user_data}"
        );
        assert!(user_data.contains("team=a"), "{user_data}");
    }

    // A second launch reuses the templates.
    let second = provider
        .create(&request("nc-launch-2", &["m5.large"], "on-demand"))
        .await
        .unwrap();
    let lts = ec2
        .describe_launch_templates()
        .filters(
            Filter::builder()
                .name("tag:karpenter.k8s.aws/cluster")
                .values("launch")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(lts.launch_templates().len(), 2);

    // List finds exactly this cluster's instances; Get finds each.
    let listed = provider.list().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|i| i.provider_id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&inst.provider_id.as_str()));
    assert!(ids.contains(&second.provider_id.as_str()));
    let got = provider.get(&inst.provider_id).await.unwrap();
    assert_eq!(got.instance_type, "m5.large");
    assert_eq!(got.nodeclaim.as_deref(), Some("nc-launch-1"));

    // Not drifted; then publish a new AMI: AMIDrift.
    assert_eq!(provider.is_drifted(&inst).await.unwrap(), None);
    let other_ami = ec2
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
        .unwrap()
        .images()
        .iter()
        .filter_map(|i| i.image_id())
        .find(|i| *i != ami)
        .expect("a second AL2023 AMI")
        .to_string();
    publish_ami(provider.clients(), provider.settings(), &other_ami).await;
    provider
        .resolve_node_class(&node_class("launch", "launch"))
        .await
        .unwrap();
    assert_eq!(
        provider.is_drifted(&inst).await.unwrap().as_deref(),
        Some("AMIDrift")
    );

    // Delete terminates; once gone, Get and Delete say NotFound.
    provider.delete(&inst.provider_id).await.unwrap();
    let mut gone = false;
    for _ in 0..20 {
        match provider.get(&inst.provider_id).await {
            Err(e) if e.is_not_found() => {
                gone = true;
                break;
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    assert!(gone, "instance never reported NotFound");
    assert!(provider
        .delete(&inst.provider_id)
        .await
        .unwrap_err()
        .is_not_found());
    let listed = provider.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].provider_id, second.provider_id);
    provider.delete(&second.provider_id).await.unwrap();
    // Deleting the node class removes its launch templates.
    provider
        .delete_node_class(&node_class("launch", "launch"))
        .await
        .unwrap();
    let lts = ec2
        .describe_launch_templates()
        .filters(
            Filter::builder()
                .name("tag:karpenter.k8s.aws/cluster")
                .values("launch")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(lts.launch_templates().len(), 0);
    // Unknown and malformed ids are NotFound too.
    assert!(provider
        .get("aws:///us-east-1a/i-0000000000000000f")
        .await
        .unwrap_err()
        .is_not_found());
    assert!(provider.get("garbage").await.unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_launches_take_the_cheapest_allowed_offering() {
    let (provider, _) = provider("spot", 13).await;
    let inst = provider
        .create(&request(
            "nc-spot",
            &["c5.large", "m5.large", "r5.large"],
            "spot",
        ))
        .await
        .unwrap();
    assert_eq!(inst.capacity_type, "spot");
    // moto launches the first override; karp orders them cheapest first (c5.large here).
    assert_eq!(inst.instance_type, "c5.large");
    // A request nothing can satisfy is InsufficientCapacity without launching.
    let err = provider
        .create(&request("nc-none", &["zz9.mega"], "spot"))
        .await
        .unwrap_err();
    assert!(err.is_insufficient_capacity(), "{err:?}");
    assert_eq!(provider.list().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interruption_messages_round_trip_through_sqs() {
    use karp_aws::interruption::{InterruptionAction, InterruptionKind, InterruptionQueue};
    let settings = settings("sqs");
    let clients = AwsClients::load(&settings).await;
    clients
        .sqs
        .create_queue()
        .queue_name("karp-interruption")
        .send()
        .await
        .unwrap();
    let queue = InterruptionQueue::open(&clients, "karp-interruption")
        .await
        .unwrap();
    let spot = r#"{"version":"0","id":"e1","detail-type":"EC2 Spot Instance Interruption Warning","source":"aws.ec2","region":"us-east-1","resources":["arn:aws:ec2:us-east-1a:instance/i-0abc"],"detail":{"instance-id":"i-0abc","instance-action":"terminate"}}"#;
    for body in [spot, "not json"] {
        clients
            .sqs
            .send_message()
            .queue_url(queue.url())
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let mut received = Vec::new();
    for _ in 0..5 {
        received.extend(queue.receive(1).await.unwrap());
        if received.len() == 2 {
            break;
        }
    }
    assert_eq!(received.len(), 2);
    let good = received.iter().find(|r| r.event.is_ok()).unwrap();
    let event = good.event.as_ref().unwrap();
    assert_eq!(event.kind, InterruptionKind::SpotInterruption);
    assert_eq!(event.instance_ids, vec!["i-0abc"]);
    assert_eq!(event.zone.as_deref(), Some("us-east-1a"));
    assert_eq!(event.action(), InterruptionAction::CordonAndDrain);
    assert!(received.iter().any(|r| r.event.is_err()));
    for r in &received {
        queue.delete(&r.receipt_handle).await.unwrap();
    }
    assert!(queue.receive(1).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_classes_sharing_a_role_get_their_own_instance_profiles() {
    let (provider, _) = provider("shared", 13).await;
    let a = node_class("shared", "shared");
    let mut b = node_class("shared", "shared");
    b.metadata.name = Some("other".into());
    let status_b = provider.resolve_node_class(&b).await.unwrap();
    let profile_a = provider
        .resolved_node_class("default")
        .unwrap()
        .status()
        .instance_profile
        .unwrap();
    let profile_b = status_b.instance_profile.clone().unwrap();
    assert_ne!(profile_a, profile_b, "one profile per node class");
    // Deleting one node class leaves the other's profile, and the other stays Ready.
    provider.delete_node_class(&a).await.unwrap();
    let iam = &provider.clients().iam;
    assert!(iam
        .get_instance_profile()
        .instance_profile_name(&profile_a)
        .send()
        .await
        .is_err());
    let kept = iam
        .get_instance_profile()
        .instance_profile_name(&profile_b)
        .send()
        .await
        .unwrap();
    let roles: Vec<&str> = kept
        .instance_profile()
        .unwrap()
        .roles()
        .iter()
        .map(|r| r.role_name())
        .collect();
    assert_eq!(roles, vec!["KarpenterNodeRole-shared"]);
    let again = provider.resolve_node_class(&b).await.unwrap();
    assert!(
        again.conditions.iter().all(|c| c.status == "True"),
        "{:?}",
        again.conditions
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn karpenter_1_14_fields_reach_the_launch_template_moto_stores() {
    let (provider, _) = provider("fields", 17).await;
    let mut nc = node_class("fields", "fields");
    nc.spec = serde_yaml::from_value(serde_yaml::Value::Mapping({
        let mut m = serde_yaml::to_value(&nc.spec)
            .unwrap()
            .as_mapping()
            .unwrap()
            .clone();
        let extra: serde_yaml::Mapping = serde_yaml::from_str(
            "ipPrefixCount: 1\nconnectionTracking: {tcpEstablishedTimeout: 300, udpTimeout: 60}\ncpuOptions: {nestedVirtualization: enabled}\nnetworkInterfaces: [{networkCardIndex: 0, deviceIndex: 0, interfaceType: interface}]\n",
        )
        .unwrap();
        m.extend(extra);
        m
    }))
    .unwrap();
    let status = provider.resolve_node_class(&nc).await.unwrap();
    assert!(status.conditions.iter().all(|c| c.status == "True"));
    provider
        .create(&request("nc-fields-1", &["m5.large"], "on-demand"))
        .await
        .unwrap();
    let ec2 = &provider.clients().ec2;
    let lts = ec2
        .describe_launch_templates()
        .filters(
            Filter::builder()
                .name("tag:karpenter.k8s.aws/cluster")
                .values("fields")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(lts.launch_templates().len(), 1);
    let name = lts.launch_templates()[0].launch_template_name().unwrap();
    let versions = ec2
        .describe_launch_template_versions()
        .launch_template_name(name)
        .send()
        .await
        .unwrap();
    let data = versions.launch_template_versions()[0]
        .launch_template_data()
        .unwrap();
    let nic = &data.network_interfaces()[0];
    assert_eq!(nic.device_index(), Some(0));
    assert_eq!(nic.network_card_index(), Some(0));
    assert_eq!(nic.interface_type(), Some("interface"));
    assert_eq!(nic.ipv4_prefix_count(), Some(1));
    assert!(!nic.groups().is_empty());
    let ct = nic.connection_tracking_specification().unwrap();
    assert_eq!(
        (ct.tcp_established_timeout(), ct.udp_timeout()),
        (Some(300), Some(60))
    );
    assert_eq!(
        data.cpu_options()
            .and_then(|c| c.nested_virtualization())
            .map(|n| n.as_str()),
        Some("enabled")
    );
}
