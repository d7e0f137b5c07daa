//! Prices: on-demand from the built-in table (Karpenter's generated fallback prices), refreshed from
//! the Pricing API when reachable; spot from `DescribeSpotPriceHistory` (latest per type and zone).
//! Until a spot price is known, the spot offering costs the on-demand price.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::SystemTime;

use aws_sdk_pricing::types::{Filter, FilterType};
use aws_smithy_types::DateTime;

use crate::catalog::{builtin_offerings, DataError};
use crate::describe::latest_spot_prices;
use crate::error::AwsError;
use crate::sdk::AwsClients;

/// The built-in on-demand prices (USD per hour) per instance type.
///
/// # Errors
/// [`DataError`] only if the embedded data is corrupted.
pub fn builtin_on_demand_prices() -> Result<BTreeMap<String, f64>, DataError> {
    Ok(builtin_offerings()?
        .into_iter()
        .filter_map(|(name, offerings)| {
            offerings
                .iter()
                .find(|o| o.capacity_type == "on-demand")
                .map(|o| (name, o.price))
        })
        .collect())
}

/// The on-demand price in one Pricing API `PriceList` entry: (instance type, USD per hour).
/// `None` for entries that are not a single positive hourly USD price.
#[must_use]
pub fn parse_price_list_entry(json: &str) -> Option<(String, f64)> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let instance_type = v
        .pointer("/product/attributes/instanceType")?
        .as_str()?
        .to_string();
    let on_demand = v.pointer("/terms/OnDemand")?.as_object()?;
    let mut price = None;
    for term in on_demand.values() {
        for dim in term.get("priceDimensions")?.as_object()?.values() {
            let usd: f64 = dim.pointer("/pricePerUnit/USD")?.as_str()?.parse().ok()?;
            if usd.is_finite() && usd > 0.0 {
                price = Some(price.map_or(usd, |p: f64| p.min(usd)));
            }
        }
    }
    Some((instance_type, price?))
}

/// Current prices. Readers get consistent snapshots; refreshes replace whole maps.
#[derive(Debug, Default)]
pub struct PriceTable {
    on_demand: RwLock<BTreeMap<String, f64>>,
    spot: RwLock<BTreeMap<(String, String), f64>>,
}

impl PriceTable {
    /// A table with the given on-demand prices and no spot prices.
    #[must_use]
    pub fn new(on_demand: BTreeMap<String, f64>) -> Self {
        PriceTable {
            on_demand: RwLock::new(on_demand),
            spot: RwLock::default(),
        }
    }

    /// The on-demand price of a type.
    #[must_use]
    pub fn on_demand(&self, instance_type: &str) -> Option<f64> {
        read(&self.on_demand).get(instance_type).copied()
    }

    /// The spot price of a type in a zone; the on-demand price until a spot price is known.
    #[must_use]
    pub fn spot(&self, instance_type: &str, zone: &str) -> Option<f64> {
        read(&self.spot)
            .get(&(instance_type.to_string(), zone.to_string()))
            .copied()
            .or_else(|| self.on_demand(instance_type))
    }

    /// The price of an offering.
    #[must_use]
    pub fn price(&self, instance_type: &str, zone: &str, capacity_type: &str) -> Option<f64> {
        match capacity_type {
            "spot" => self.spot(instance_type, zone),
            _ => self.on_demand(instance_type),
        }
    }

    /// Replaces the spot prices (types and zones absent from `prices` fall back to on-demand).
    pub fn set_spot(&self, prices: BTreeMap<(String, String), f64>) {
        *write(&self.spot) = prices;
    }

    /// Merges on-demand prices into the table (types the update does not mention keep theirs).
    pub fn merge_on_demand(&self, prices: BTreeMap<String, f64>) {
        write(&self.on_demand).extend(prices);
    }

    /// Number of known spot prices.
    #[must_use]
    pub fn spot_len(&self) -> usize {
        read(&self.spot).len()
    }

    /// Refreshes spot prices from `DescribeSpotPriceHistory` (Linux/UNIX, latest per type and zone).
    ///
    /// # Errors
    /// [`AwsError`] when the call fails; the table is left unchanged.
    pub async fn refresh_spot(&self, clients: &AwsClients) -> Result<usize, AwsError> {
        let rows = clients
            .ec2
            .describe_spot_price_history()
            .product_descriptions("Linux/UNIX")
            .product_descriptions("Linux/UNIX (Amazon VPC)")
            .start_time(DateTime::from(SystemTime::now()))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeSpotPriceHistory", &e))?;
        let prices = latest_spot_prices(&rows);
        let n = prices.len();
        self.set_spot(prices);
        Ok(n)
    }

    /// Refreshes on-demand prices from the Pricing API, when the clients have it.
    ///
    /// # Errors
    /// [`AwsError`] when the call fails; the table is left unchanged.
    pub async fn refresh_on_demand(
        &self,
        clients: &AwsClients,
        region: &str,
    ) -> Result<usize, AwsError> {
        let Some(pricing) = &clients.pricing else {
            return Ok(0);
        };
        let term = |field: &str, value: &str| {
            Filter::builder()
                .field(field)
                .r#type(FilterType::TermMatch)
                .value(value)
                .build()
                .map_err(|e| AwsError::invalid_response("GetProducts", e.to_string()))
        };
        let filters = vec![
            term("regionCode", region)?,
            term("serviceCode", "AmazonEC2")?,
            term("preInstalledSw", "NA")?,
            term("operatingSystem", "Linux")?,
            term("capacitystatus", "Used")?,
            term("marketoption", "OnDemand")?,
            term("tenancy", "Shared")?,
        ];
        let mut prices = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let out = pricing
                .get_products()
                .service_code("AmazonEC2")
                .set_filters(Some(filters.clone()))
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("GetProducts", &e))?;
            for entry in out.price_list() {
                if let Some((t, p)) = parse_price_list_entry(entry) {
                    prices.insert(t, p);
                }
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let n = prices.len();
        self.merge_on_demand(prices);
        Ok(n)
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_list_entries_parse() {
        let entry = r#"{"product":{"attributes":{"instanceType":"m5.large","regionCode":"us-east-1"}},
            "terms":{"OnDemand":{"A.B":{"priceDimensions":{"A.B.C":{"unit":"Hrs","pricePerUnit":{"USD":"0.0960000000"}}}}}}}"#;
        assert_eq!(
            parse_price_list_entry(entry),
            Some(("m5.large".into(), 0.096))
        );
        let zero = entry.replace("0.0960000000", "0.0000000000");
        assert_eq!(parse_price_list_entry(&zero), None);
        assert_eq!(parse_price_list_entry("not json"), None);
        assert_eq!(parse_price_list_entry(r#"{"product":{}}"#), None);
    }

    #[test]
    fn spot_defaults_to_on_demand_until_known() {
        let table = PriceTable::new(builtin_on_demand_prices().unwrap());
        let od = table.on_demand("m5.large").unwrap();
        assert!((od - 0.096).abs() < 1e-9, "m5.large on-demand {od}");
        assert_eq!(table.spot("m5.large", "us-east-1a"), Some(od));
        table.set_spot(BTreeMap::from([(
            ("m5.large".to_string(), "us-east-1a".to_string()),
            0.035,
        )]));
        assert_eq!(table.spot("m5.large", "us-east-1a"), Some(0.035));
        assert_eq!(table.spot("m5.large", "us-east-1b"), Some(od));
        assert_eq!(table.price("m5.large", "us-east-1a", "on-demand"), Some(od));
        assert_eq!(table.on_demand("zz9.mega"), None);
    }
}
