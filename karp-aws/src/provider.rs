//! [`AwsCloudProvider`]: karp-core's [`CloudProvider`] on EC2.
//!
//! It keeps the account's instance types and offerings (refreshed by the operator on a timer),
//! prices, the insufficient-capacity cache and the resolved node classes, and acts through
//! CreateFleet / DescribeInstances / TerminateInstances (the last two batched).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, InstanceLifecycleType, LocationType};
use karp_core::cloud::{CloudError, CloudProvider, Instance, InstanceType, LaunchRequest};
use karp_core::labels;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::allocatable::{self, NodeClassSettings};
use crate::batcher::{BatchFn, Batcher};
use crate::catalog::{self, CatalogEntry, CatalogOffering, TypeFacts};
use crate::describe::{self, tag};
use crate::error::AwsError;
use crate::launch::{self, tags};
use crate::nodeclass::{EC2NodeClass, EC2NodeClassStatus};
use crate::pricing::{builtin_on_demand_prices, PriceTable};
use crate::resolve::{resolve_node_class, ResolvedNodeClass};
use crate::sdk::{AwsClients, AwsSettings};
use crate::unavailable::UnavailableOfferings;

/// The provider-ID scheme: `aws:///<zone>/<instance-id>`.
#[must_use]
pub fn provider_id(zone: &str, instance_id: &str) -> String {
    format!("aws:///{zone}/{instance_id}")
}

/// The instance id of a provider ID (`aws:///us-east-1a/i-0abc` → `i-0abc`).
#[must_use]
pub fn instance_id(provider_id: &str) -> Option<&str> {
    let rest = provider_id.strip_prefix("aws://")?;
    let id = rest.rsplit('/').next()?;
    id.starts_with("i-").then_some(id)
}

/// A `reserved` offering costs the on-demand price divided by this: the reservation is paid for
/// whether used or not, so the scheduler prefers it to any other offering.
pub const RESERVED_PRICE_DIVISOR: f64 = 10_000_000.0;

/// The label naming the capacity reservation a node runs in (Karpenter's).
pub const CAPACITY_RESERVATION_ID: &str = "karpenter.k8s.aws/capacity-reservation-id";

/// The account's instance types and where they are offered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountCatalog {
    /// Facts per type, sorted by name.
    pub types: Vec<TypeFacts>,
    /// Zones per type.
    pub zones: BTreeMap<String, Vec<String>>,
}

/// Catalog entries (labels, capacity, overhead, priced offerings) for `settings`, restricted to
/// `zones` when given. Types without a price or an offering are left out.
///
/// # Errors
/// [`allocatable::AllocatableError`] when the settings are invalid.
pub fn catalog_entries(
    account: &AccountCatalog,
    prices: &PriceTable,
    settings: &NodeClassSettings,
    region: &str,
    zones: Option<&BTreeSet<String>>,
    unavailable: &UnavailableOfferings,
    now: Instant,
) -> Result<Vec<CatalogEntry>, allocatable::AllocatableError> {
    settings.validate()?;
    let mut out = Vec::new();
    for facts in &account.types {
        let Some(labels) = catalog::type_labels(facts, settings.ami_family, Some(region)) else {
            continue;
        };
        let mut offerings = Vec::new();
        for zone in account.zones.get(&facts.name).into_iter().flatten() {
            if zones.is_some_and(|z| !z.contains(zone)) {
                continue;
            }
            for ct in &facts.usage_classes {
                let Some(price) = prices.price(&facts.name, zone, ct) else {
                    continue;
                };
                offerings.push(CatalogOffering {
                    zone: zone.clone(),
                    capacity_type: ct.clone(),
                    price,
                    available: !unavailable.is_unavailable(&facts.name, zone, ct, now),
                });
            }
        }
        if offerings.is_empty() {
            continue;
        }
        offerings.sort_by(|a, b| (&a.zone, &a.capacity_type).cmp(&(&b.zone, &b.capacity_type)));
        let (capacity, overhead) = allocatable::compute(&catalog::instance_facts(facts), settings)?;
        out.push(CatalogEntry {
            name: facts.name.clone(),
            labels,
            capacity,
            overhead,
            offerings,
        });
    }
    Ok(out)
}

/// Fetches the account's instance types and per-zone offerings. Branch-ENI counts (not in the
/// API) come from Karpenter's table in the built-in catalog.
///
/// # Errors
/// [`AwsError`] when DescribeInstanceTypes or DescribeInstanceTypeOfferings fails.
pub async fn fetch_account_catalog(clients: &AwsClients) -> Result<AccountCatalog, AwsError> {
    let infos = clients
        .ec2
        .describe_instance_types()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| AwsError::from_sdk("DescribeInstanceTypes", &e))?;
    let offerings = clients
        .ec2
        .describe_instance_type_offerings()
        .location_type(LocationType::AvailabilityZone)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| AwsError::from_sdk("DescribeInstanceTypeOfferings", &e))?;
    let pod_enis: BTreeMap<String, i64> = catalog::builtin_type_facts()
        .map(|facts| {
            facts
                .into_iter()
                .map(|f| {
                    let n = f
                        .extended
                        .get(catalog::resources::POD_ENI)
                        .copied()
                        .unwrap_or(0);
                    (f.name, n)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut types: Vec<TypeFacts> = infos
        .iter()
        .filter_map(|info| {
            let name = info.instance_type()?.as_str();
            describe::type_facts(info, pod_enis.get(name).copied().unwrap_or(0))
        })
        .collect();
    types.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(AccountCatalog {
        types,
        zones: describe::zones_by_type(&offerings),
    })
}

/// The EC2 cloud provider.
pub struct AwsCloudProvider {
    clients: AwsClients,
    settings: AwsSettings,
    account: RwLock<Arc<AccountCatalog>>,
    prices: PriceTable,
    unavailable: UnavailableOfferings,
    node_classes: RwLock<BTreeMap<String, Arc<ResolvedNodeClass>>>,
    describe: Batcher<aws_sdk_ec2::types::Instance>,
    terminate: Batcher<()>,
}

impl std::fmt::Debug for AwsCloudProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCloudProvider")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Batch windows (Karpenter: 100 ms idle, 1 s at most).
const BATCH_IDLE: Duration = Duration::from_millis(100);
const BATCH_MAX_WAIT: Duration = Duration::from_secs(1);
/// DescribeInstances filters by `instance-id`, and EC2 takes at most 200 values per filter.
const DESCRIBE_MAX_IDS: usize = 200;
/// TerminateInstances ids per call (Karpenter's batch size).
const TERMINATE_MAX_IDS: usize = 500;

impl AwsCloudProvider {
    /// The cluster's live instances (not terminated) that also match `filter`, sorted by
    /// provider ID: one paginated DescribeInstances.
    async fn describe_owned(&self, filter: Filter) -> Result<Vec<Instance>, AwsError> {
        let reservations = self
            .clients
            .ec2
            .describe_instances()
            .filters(filter)
            .filters(
                Filter::builder()
                    .name(format!("tag:{}", self.settings.cluster_tag_key()))
                    .values("owned")
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .values("stopping")
                    .values("stopped")
                    .values("shutting-down")
                    .build(),
            )
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeInstances", &e))?;
        let mut out: Vec<Instance> = reservations
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| !i.instance_state_terminated())
            .filter_map(|i| self.to_instance(i))
            .collect();
        out.sort_by(|a, b| a.provider_id.cmp(&b.provider_id));
        Ok(out)
    }

    /// A provider with the built-in on-demand prices and no instance types yet (call
    /// [`AwsCloudProvider::refresh_instance_types`]).
    #[must_use]
    pub fn new(clients: AwsClients, settings: AwsSettings) -> Self {
        let ec2 = clients.ec2.clone();
        let describe_call: BatchFn<aws_sdk_ec2::types::Instance> = Arc::new(move |ids| {
            let ec2 = ec2.clone();
            Box::pin(async move { describe_instances_by_id(&ec2, ids).await })
        });
        let ec2 = clients.ec2.clone();
        let terminate_call: BatchFn<()> = Arc::new(move |ids| {
            let ec2 = ec2.clone();
            Box::pin(async move {
                let out = ec2
                    .terminate_instances()
                    .set_instance_ids(Some(ids))
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("TerminateInstances", &e))?;
                Ok(out
                    .terminating_instances()
                    .iter()
                    .filter_map(|c| c.instance_id().map(|id| (id.to_string(), ())))
                    .collect())
            })
        });
        AwsCloudProvider {
            clients,
            settings,
            account: RwLock::default(),
            prices: PriceTable::new(builtin_on_demand_prices().unwrap_or_default()),
            unavailable: UnavailableOfferings::new(),
            node_classes: RwLock::default(),
            describe: Batcher::new(describe_call, BATCH_IDLE, BATCH_MAX_WAIT, DESCRIBE_MAX_IDS),
            terminate: Batcher::new(
                terminate_call,
                BATCH_IDLE,
                BATCH_MAX_WAIT,
                TERMINATE_MAX_IDS,
            ),
        }
    }

    /// The settings.
    #[must_use]
    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    /// The prices in use.
    #[must_use]
    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// The insufficient-capacity cache.
    #[must_use]
    pub fn unavailable_offerings(&self) -> &UnavailableOfferings {
        &self.unavailable
    }

    /// The account catalog currently in use.
    #[must_use]
    pub fn account_catalog(&self) -> Arc<AccountCatalog> {
        Arc::clone(&read(&self.account))
    }

    /// Uses an already fetched account catalog (shared between providers, or from a cache).
    pub fn set_account_catalog(&self, catalog: Arc<AccountCatalog>) {
        *write(&self.account) = catalog;
    }

    /// The SDK clients.
    #[must_use]
    pub fn clients(&self) -> &AwsClients {
        &self.clients
    }

    /// Refreshes instance types and offerings from the API.
    ///
    /// # Errors
    /// [`AwsError`] when a call fails; the previous catalog stays in use.
    pub async fn refresh_instance_types(&self) -> Result<usize, AwsError> {
        let catalog = fetch_account_catalog(&self.clients)
            .instrument(info_span!("refresh_instance_types"))
            .await?;
        let n = catalog.types.len();
        *write(&self.account) = Arc::new(catalog);
        info!(types = n, "instance types refreshed");
        Ok(n)
    }

    /// Refreshes spot prices, and on-demand prices when the Pricing API is enabled.
    ///
    /// # Errors
    /// [`AwsError`] of the first failing call; prices already fetched are kept.
    pub async fn refresh_prices(&self) -> Result<(), AwsError> {
        let spot = self.prices.refresh_spot(&self.clients).await?;
        let od = self
            .prices
            .refresh_on_demand(&self.clients, &self.settings.region)
            .await?;
        info!(spot, on_demand = od, "prices refreshed");
        Ok(())
    }

    /// Handles a spot interruption warning for offerings: the reclaimed (type, zone) is short of
    /// spot capacity, so it is marked unavailable (Karpenter does the same).
    pub fn mark_spot_interrupted(&self, instance_type: &str, zone: &str) {
        self.unavailable.mark(
            karp_core::cloud::UnavailableOffering {
                instance_type: instance_type.to_string(),
                zone: zone.to_string(),
                capacity_type: "spot".into(),
            },
            Instant::now(),
        );
    }

    /// Refreshes instance types every `types_every` and prices every `prices_every` until
    /// `shutdown` resolves; failures are logged and retried at the next tick (the previous data
    /// stays in use). The first refresh happens immediately.
    pub async fn refresh_periodically(
        self: Arc<Self>,
        types_every: Duration,
        prices_every: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut types_tick = tokio::time::interval(types_every);
        let mut prices_tick = tokio::time::interval(prices_every);
        types_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        prices_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = types_tick.tick() => {
                    if let Err(e) = self.refresh_instance_types().await {
                        warn!(error = %e, "instance type refresh failed");
                    }
                }
                _ = prices_tick.tick() => {
                    if let Err(e) = self.refresh_prices().await {
                        warn!(error = %e, "price refresh failed");
                    }
                }
            }
        }
    }

    /// Resolves a node class and keeps it for launches when Ready; returns the status to write.
    ///
    /// # Errors
    /// [`AwsError`] when a call fails (the previous resolution stays in use).
    pub async fn resolve_node_class(
        &self,
        node_class: &EC2NodeClass,
    ) -> Result<EC2NodeClassStatus, AwsError> {
        let name = node_class.metadata.name.clone().unwrap_or_default();
        let resolution = resolve_node_class(&self.clients, &self.settings, node_class)
            .instrument(info_span!("resolve_node_class", nodeclass = %name))
            .await?;
        let mut classes = write(&self.node_classes);
        match resolution.resolved {
            Ok(r) => {
                classes.insert(name, Arc::new(r));
            }
            Err(why) => {
                warn!(nodeclass = %name, reason = %why, "node class not ready");
                classes.remove(&name);
            }
        }
        Ok(resolution.status)
    }

    /// Forgets a deleted node class and deletes what karp created for it: its launch templates and
    /// the instance profile for its role.
    ///
    /// # Errors
    /// [`AwsError`] when IAM fails; the node class is forgotten either way.
    pub async fn delete_node_class(&self, node_class: &EC2NodeClass) -> Result<(), AwsError> {
        let name = node_class.metadata.name.clone().unwrap_or_default();
        write(&self.node_classes).remove(&name);
        // Its launch templates go too (karp tags them with the cluster and the node class).
        let templates = self
            .clients
            .ec2
            .describe_launch_templates()
            .filters(
                Filter::builder()
                    .name(format!("tag:{}", self.settings.cluster_tag_key()))
                    .values("owned")
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name(format!("tag:{}", tags::NODECLASS))
                    .values(&name)
                    .build(),
            )
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeLaunchTemplates", &e))?;
        for t in templates {
            let Some(id) = t.launch_template_id() else {
                continue;
            };
            if let Err(e) = self
                .clients
                .ec2
                .delete_launch_template()
                .launch_template_id(id)
                .send()
                .await
            {
                let err = AwsError::from_sdk("DeleteLaunchTemplate", &e);
                if err.kind() != crate::error::ErrorKind::NotFound {
                    return Err(err);
                }
            }
        }
        match (&node_class.spec.role, &node_class.spec.instance_profile) {
            (Some(_), None) => {
                crate::resolve::delete_instance_profile(&self.clients, &self.settings, &name).await
            }
            _ => Ok(()),
        }
    }

    /// The resolved node class.
    ///
    /// # Errors
    /// [`CloudError::NodeClassNotReady`] when it is unknown or not Ready.
    pub fn resolved_node_class(&self, name: &str) -> Result<Arc<ResolvedNodeClass>, CloudError> {
        read(&self.node_classes)
            .get(name)
            .cloned()
            .ok_or_else(|| CloudError::NodeClassNotReady {
                name: name.to_string(),
                reason: "not resolved (missing, or a condition is False)".into(),
            })
    }

    /// Instance types for a resolved node class (zones of its subnets, types its AMIs serve).
    ///
    /// # Errors
    /// [`CloudError::NodeClassNotReady`] when the settings derived from the spec are invalid.
    pub fn instance_types_for(
        &self,
        resolved: &ResolvedNodeClass,
    ) -> Result<Vec<Arc<InstanceType>>, CloudError> {
        let zones = resolved.zones();
        let entries = catalog_entries(
            &self.account_catalog(),
            &self.prices,
            &resolved.settings,
            &self.settings.region,
            Some(&zones),
            &self.unavailable,
            Instant::now(),
        )
        .map_err(|e| CloudError::NodeClassNotReady {
            name: resolved.name().to_string(),
            reason: e.to_string(),
        })?;
        let now = Instant::now();
        Ok(entries
            .iter()
            .map(|e| e.to_instance_type_with(self.reserved_offerings(resolved, &zones, e, now)))
            .filter(|it| resolved.ami_for(&it.requirements).is_some())
            .map(Arc::new)
            .collect())
    }

    /// The `reserved` offerings of `entry` from the node class's capacity reservations: one per
    /// zone, backed by the reservation with the most room there (CreateFleet takes one launch
    /// template per type and zone), priced at the on-demand price / [`RESERVED_PRICE_DIVISOR`]
    /// (paid for already, so preferred to anything else), unavailable while full or while a
    /// launch into it failed for lack of capacity.
    fn reserved_offerings(
        &self,
        resolved: &ResolvedNodeClass,
        zones: &BTreeSet<String>,
        entry: &CatalogEntry,
        now: Instant,
    ) -> Vec<karp_core::cloud::Offering> {
        let mut out = Vec::new();
        if resolved.capacity_reservations.is_empty() {
            return out;
        }
        for zone in zones {
            let Some(best) = resolved
                .reservations_for(&entry.name, zone)
                .into_iter()
                .filter(|r| r.reservation.state == "active")
                .max_by(|a, b| {
                    a.available_instances
                        .cmp(&b.available_instances)
                        .then_with(|| b.reservation.id.cmp(&a.reservation.id))
                })
            else {
                continue;
            };
            let on_demand = entry
                .offerings
                .iter()
                .find(|o| o.zone == *zone && o.capacity_type == labels::CAPACITY_ON_DEMAND)
                .or_else(|| entry.offerings.iter().find(|o| o.zone == *zone))
                .map_or(0.0, |o| o.price);
            let available = u32::try_from(best.available_instances.max(0)).unwrap_or(u32::MAX);
            let mut o = karp_core::cloud::Offering::reserved(
                zone.clone(),
                on_demand / RESERVED_PRICE_DIVISOR,
                best.reservation.id.clone(),
                available,
            );
            if self
                .unavailable
                .is_unavailable(&entry.name, zone, labels::CAPACITY_RESERVED, now)
            {
                o.available = false;
            }
            out.push(o);
        }
        out
    }

    fn to_instance(&self, inst: &aws_sdk_ec2::types::Instance) -> Option<Instance> {
        let id = inst.instance_id()?;
        let zone = inst
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default();
        let reservation = inst.capacity_reservation_id().filter(|id| !id.is_empty());
        let capacity_type = if inst.instance_lifecycle() == Some(&InstanceLifecycleType::Spot) {
            "spot"
        } else if reservation.is_some() {
            labels::CAPACITY_RESERVED
        } else {
            "on-demand"
        };
        let instance_type = inst
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default();
        let mut labels = BTreeMap::from([
            (labels::INSTANCE_TYPE.to_string(), instance_type.clone()),
            (labels::ZONE.to_string(), zone.to_string()),
            (labels::CAPACITY_TYPE.to_string(), capacity_type.to_string()),
            (
                catalog::labels::REGION.to_string(),
                self.settings.region.clone(),
            ),
        ]);
        if let Some(id) = reservation {
            labels.insert(CAPACITY_RESERVATION_ID.to_string(), id.to_string());
        }
        Some(Instance {
            provider_id: provider_id(zone, id),
            nodeclaim: tag(inst.tags(), tags::NODECLAIM).map(str::to_string),
            instance_type,
            zone: zone.to_string(),
            capacity_type: capacity_type.to_string(),
            labels,
        })
    }

    async fn describe_one(
        &self,
        provider_id: &str,
    ) -> Result<aws_sdk_ec2::types::Instance, CloudError> {
        let not_found = || CloudError::NotFound {
            provider_id: provider_id.to_string(),
        };
        let id = instance_id(provider_id).ok_or_else(not_found)?;
        match self.describe.get(id).await? {
            Some(inst) if inst.instance_state_terminated() => Err(not_found()),
            Some(inst) => Ok(inst),
            None => Err(not_found()),
        }
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<Instance, CloudError> {
        let class_name = request.node_class.clone().unwrap_or_default();
        let resolved = self.resolved_node_class(&class_name)?;
        let types = self.instance_types_for(&resolved)?;
        let plan = launch::plan_fleet(&self.settings, &resolved, request, &types)?;
        debug!(
            capacity_type = %plan.capacity_type,
            overrides = plan.overrides().count(),
            templates = plan.templates.len(),
            "fleet planned"
        );
        for t in &plan.templates {
            launch::ensure_launch_template(&self.clients, &self.settings, &resolved, &plan, t)
                .await?;
        }
        let out = launch::create_fleet_request(&self.clients, &plan)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("CreateFleet", &e))?;
        let outcome = launch::fleet_outcome(&plan, &out);
        let now = Instant::now();
        if outcome.capacity_type_exhausted {
            self.unavailable
                .mark_capacity_type(&plan.capacity_type, now);
        }
        for o in &outcome.unavailable {
            self.unavailable.mark(o.clone(), now);
        }
        let mut launched = outcome.launched.into_iter();
        let Some((id, itype, zone)) = launched.next() else {
            if outcome.errors.is_empty() {
                warn!(
                    offerings = outcome.unavailable.len(),
                    "insufficient capacity"
                );
                return Err(CloudError::InsufficientCapacity {
                    offerings: outcome.unavailable,
                });
            }
            let msg = outcome
                .errors
                .iter()
                .map(|(c, m)| format!("{c}: {m}"))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(AwsError {
                operation: "CreateFleet",
                code: outcome.errors.first().map(|(c, _)| c.clone()),
                message: msg,
            }
            .into());
        };
        // Capacity 1 launches one instance; anything extra would leak, so terminate it.
        let extra: Vec<String> = launched.map(|(id, _, _)| id).collect();
        if !extra.is_empty() {
            warn!(
                ?extra,
                "fleet launched more than one instance; terminating extras"
            );
            let _ = self
                .clients
                .ec2
                .terminate_instances()
                .set_instance_ids(Some(extra))
                .send()
                .await;
        }
        let mut labels = BTreeMap::from([
            (labels::INSTANCE_TYPE.to_string(), itype.clone()),
            (labels::ZONE.to_string(), zone.clone()),
            (
                labels::CAPACITY_TYPE.to_string(),
                plan.capacity_type.clone(),
            ),
            (
                catalog::labels::REGION.to_string(),
                self.settings.region.clone(),
            ),
        ]);
        // A reserved launch ran in the reservation of the override that launched.
        if let Some(id) = plan
            .overrides()
            .find(|o| o.instance_type == itype && o.zone == zone)
            .and_then(|o| o.reservation_id.clone())
        {
            labels.insert(CAPACITY_RESERVATION_ID.to_string(), id);
        }
        info!(instance = %id, instance_type = %itype, %zone, capacity_type = %plan.capacity_type, "launched");
        Ok(Instance {
            provider_id: provider_id(&zone, &id),
            nodeclaim: Some(request.nodeclaim.clone()),
            instance_type: itype,
            zone,
            capacity_type: plan.capacity_type,
            labels,
        })
    }
}

trait Terminated {
    fn instance_state_terminated(&self) -> bool;
}

impl Terminated for aws_sdk_ec2::types::Instance {
    fn instance_state_terminated(&self) -> bool {
        matches!(
            self.state().and_then(|s| s.name()),
            Some(aws_sdk_ec2::types::InstanceStateName::Terminated)
        )
    }
}

async fn describe_instances_by_id(
    ec2: &aws_sdk_ec2::Client,
    ids: Vec<String>,
) -> Result<BTreeMap<String, aws_sdk_ec2::types::Instance>, AwsError> {
    // Filtering by instance-id (instead of InstanceIds) makes unknown ids simply absent, where
    // InstanceIds fails the whole batch with InvalidInstanceID.NotFound.
    let reservations = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("instance-id")
                .set_values(Some(ids))
                .build(),
        )
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| AwsError::from_sdk("DescribeInstances", &e))?;
    Ok(reservations
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(|id| (id.to_string(), i.clone())))
        .collect())
}

/// Why an instance drifted from its resolved node class (Karpenter's reasons), if it did.
#[must_use]
pub fn drift_reason(
    inst: &aws_sdk_ec2::types::Instance,
    resolved: &ResolvedNodeClass,
) -> Option<&'static str> {
    if let Some(image) = inst.image_id() {
        if !resolved.amis.iter().any(|a| a.id == image) {
            return Some("AMIDrift");
        }
    }
    if let Some(subnet) = inst.subnet_id() {
        if !resolved.subnets.iter().any(|s| s.id == subnet) {
            return Some("SubnetDrift");
        }
    }
    let have: BTreeSet<&str> = inst
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id())
        .collect();
    let want: BTreeSet<&str> = resolved
        .security_groups
        .iter()
        .map(|g| g.id.as_str())
        .collect();
    if !have.is_empty() && have != want {
        return Some("SecurityGroupDrift");
    }
    if let Some(hash) = tag(inst.tags(), tags::NODECLASS_HASH) {
        if hash != resolved.spec_hash() {
            return Some("NodeClassDrift");
        }
    }
    // An instance in a capacity reservation the node class no longer selects (or that expired
    // and left the status) no longer has the capacity it was launched for.
    if let Some(id) = inst.capacity_reservation_id().filter(|id| !id.is_empty()) {
        if !resolved
            .capacity_reservations
            .iter()
            .any(|r| r.reservation.id == id)
        {
            return Some("CapacityReservationDrift");
        }
    }
    None
}

#[async_trait]
impl CloudProvider for AwsCloudProvider {
    fn name(&self) -> &str {
        "aws"
    }

    async fn create(&self, request: &LaunchRequest) -> Result<Instance, CloudError> {
        let span =
            info_span!("create", nodeclaim = %request.nodeclaim, nodepool = %request.nodepool);
        self.launch(request).instrument(span).await
    }

    async fn delete(&self, provider_id: &str) -> Result<(), CloudError> {
        let span = info_span!("delete", provider_id);
        async {
            let inst = self.describe_one(provider_id).await?;
            let id = inst.instance_id().unwrap_or_default().to_string();
            if describe::is_terminating(&inst) {
                debug!(instance = %id, "already shutting down");
                return Ok(());
            }
            match self.terminate.get(&id).await {
                Ok(_) => {
                    info!(instance = %id, "terminating");
                    Ok(())
                }
                Err(e) if e.kind() == crate::error::ErrorKind::NotFound => {
                    Err(CloudError::NotFound {
                        provider_id: provider_id.to_string(),
                    })
                }
                Err(e) => Err(e.into()),
            }
        }
        .instrument(span)
        .await
    }

    async fn get(&self, provider_id: &str) -> Result<Instance, CloudError> {
        let inst = self.describe_one(provider_id).await?;
        self.to_instance(&inst).ok_or_else(|| CloudError::NotFound {
            provider_id: provider_id.to_string(),
        })
    }

    async fn find_by_nodeclaim(&self, nodeclaim: &str) -> Result<Option<Instance>, CloudError> {
        // One filtered call instead of listing every instance of the cluster.
        let tag = Filter::builder()
            .name(format!("tag:{}", tags::NODECLAIM))
            .values(nodeclaim)
            .build();
        Ok(self.describe_owned(tag).await?.into_iter().next())
    }

    async fn list(&self) -> Result<Vec<Instance>, CloudError> {
        let karp_launched = Filter::builder()
            .name("tag-key")
            .values(tags::NODEPOOL)
            .build();
        Ok(self.describe_owned(karp_launched).await?)
    }

    async fn instance_types(
        &self,
        _nodepool: &str,
        node_class: Option<&str>,
    ) -> Result<Vec<Arc<InstanceType>>, CloudError> {
        let resolved = self.resolved_node_class(node_class.unwrap_or_default())?;
        self.instance_types_for(&resolved)
    }

    async fn is_drifted(&self, instance: &Instance) -> Result<Option<String>, CloudError> {
        let inst = self.describe_one(&instance.provider_id).await?;
        let Some(class) = tag(inst.tags(), tags::NODECLASS) else {
            return Ok(None);
        };
        let resolved = self.resolved_node_class(class)?;
        Ok(drift_reason(&inst, &resolved).map(str::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_in_a_reservation_the_node_class_no_longer_selects_drifts() {
        let mut resolved = crate::resolve::hash_pin::resolved(
            "metadata: {name: a}\nspec:\n  amiSelectorTerms: [{alias: al2023@latest}]\n  role: R\n",
        );
        let inst = aws_sdk_ec2::types::Instance::builder()
            .instance_id("i-1")
            .capacity_reservation_id("cr-1")
            .build();
        assert_eq!(
            drift_reason(&inst, &resolved),
            Some("CapacityReservationDrift")
        );
        resolved
            .capacity_reservations
            .push(crate::resolve::ResolvedCapacityReservation {
                reservation: crate::nodeclass::CapacityReservation {
                    id: "cr-1".into(),
                    ..Default::default()
                },
                available_instances: 0,
            });
        assert_eq!(drift_reason(&inst, &resolved), None);
        let plain = aws_sdk_ec2::types::Instance::builder()
            .instance_id("i-2")
            .build();
        assert_eq!(drift_reason(&plain, &resolved), None);
    }
}
