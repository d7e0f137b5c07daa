//! `karp catalog`: the instance-type catalog of a real account (or of any EC2-compatible endpoint),
//! written in the catalog file format that `karp plan --catalog` reads.
//!
//! Types, per-zone offerings and spot prices come from the live API (DescribeInstanceTypes,
//! DescribeInstanceTypeOfferings, DescribeSpotPriceHistory); on-demand prices from the Pricing API
//! when reachable, else karp's built-in table. Capacity and overhead use Karpenter's AWS formula
//! with default node-class settings (AL2023).

use std::collections::BTreeSet;
use std::time::Instant;

use karp_aws::allocatable::NodeClassSettings;
use karp_aws::catalog_file;
use karp_aws::error::AwsError;
use karp_aws::pricing::{builtin_on_demand_prices, PriceTable};
use karp_aws::provider::{catalog_entries, fetch_account_catalog};
use karp_aws::unavailable::UnavailableOfferings;
use karp_aws::{AwsClients, AwsSettings};

/// Errors of `karp catalog`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogCommandError {
    /// An AWS call failed.
    #[error(transparent)]
    Fetch(#[from] AwsError),
    /// The default node-class settings were rejected (never expected).
    #[error("computing allocatable capacity failed: {0}")]
    Allocatable(String),
}

/// Options of `karp catalog`.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogOptions {
    /// Region.
    pub region: String,
    /// Endpoint override (moto_server, VPC endpoint).
    pub endpoint_url: Option<String>,
    /// Zones to keep (all when empty).
    pub zones: BTreeSet<String>,
    /// Use dummy credentials (for emulators that accept any).
    pub dummy_credentials: bool,
}

/// A fetched catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedCatalog {
    /// Catalog-file JSON.
    pub json: String,
    /// Number of instance types.
    pub types: usize,
    /// Things the user should know (e.g. the Pricing API was unreachable).
    pub warnings: Vec<String>,
}

/// Fetches the catalog and renders it as catalog-file JSON.
///
/// # Errors
/// [`CatalogCommandError::Fetch`] naming the AWS operation that failed.
pub async fn fetch_catalog_json(
    opts: &CatalogOptions,
) -> Result<FetchedCatalog, CatalogCommandError> {
    let mut settings = AwsSettings::new(&opts.region, "karp-catalog");
    if let Some(url) = &opts.endpoint_url {
        settings = settings.with_endpoint(url);
    }
    settings.dummy_credentials = opts.dummy_credentials;
    let clients = AwsClients::load(&settings).await;
    let account = fetch_account_catalog(&clients).await?;
    let prices = PriceTable::new(builtin_on_demand_prices().unwrap_or_default());
    prices.refresh_spot(&clients).await?;
    let mut warnings = Vec::new();
    if let Err(e) = prices.refresh_on_demand(&clients, &opts.region).await {
        // The Pricing API is optional: the built-in table stands in for it.
        warnings.push(format!(
            "Pricing API unavailable ({e}); using karp's built-in on-demand prices"
        ));
    }
    let zones = (!opts.zones.is_empty()).then_some(&opts.zones);
    let entries = catalog_entries(
        &account,
        &prices,
        &NodeClassSettings::default(),
        &opts.region,
        zones,
        &UnavailableOfferings::new(),
        Instant::now(),
    )
    .map_err(|e| CatalogCommandError::Allocatable(e.to_string()))?;
    Ok(FetchedCatalog {
        json: catalog_file::to_json(&entries),
        types: entries.len(),
        warnings,
    })
}
