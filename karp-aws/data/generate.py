#!/usr/bin/env python3
"""Build aid: regenerate karp-aws's built-in us-east-1 catalog from the shared data snapshot.

This script is NOT run at build time. Its outputs are committed next to it and embedded into the
crate with `include_str!` by `karp_aws::catalog`. Run it by hand after the shared data changes:

    python3 karp-aws/data/generate.py [SHARED_DATA_DIR]    # default: /work/shared/data

Inputs (see data/README.md for sources and licences):
  ec2_instance_types_raw.json          DescribeInstanceTypes snapshot (moto 5.2.1)
  ec2_instance_type_offerings.csv      type x AZ offerings, with AZ names and AZ IDs
  ec2_ondemand_prices_us-east-1.csv    Karpenter's built-in on-demand price table
  ec2_spot_prices_sample_2022-05-31.csv spot price-change events per AZ ID
  karpenter_vpc_limits.csv             Karpenter's VPC limits (trunking / branch ENIs)
  eni-max-pods.txt                     VPC CNI max-pods table (used only as a cross-check here)

Outputs (written next to this script, sorted, "\n" line endings, no quoting: no field contains a comma):
  us-east-1-instance-types.csv  one row per type: the raw facts that karp's label and allocatable code needs
  us-east-1-offerings.csv       one row per (type, zone, capacity type) with its price in USD/hour

Selection: types offered in us-east-1 whose architectures include x86_64 or arm64 (so no mac types), that
have an on-demand price, and that have at least one offering. Offerings follow Karpenter's
createOfferings: every offered zone x every supported usage class among on-demand / spot.
Spot price per (type, zone): the latest sample for that type in that zone's AZ ID, else the on-demand
price (Karpenter also seeds spot prices with on-demand prices before the first spot price refresh).
"""

import csv
import json
import os
import re
import sys

REGION = "us-east-1"
HERE = os.path.dirname(os.path.abspath(__file__))

TYPE_COLUMNS = [
    "name",
    "architectures",  # as DescribeInstanceTypes lists them, '|'-joined, order kept
    "vcpus",
    "memory_mib",
    "hypervisor",  # empty for bare metal
    "cpu_manufacturer",  # raw, e.g. "Intel", "AMD", "AWS"
    "sustained_clock_mhz",  # round(GHz * 1000); 0 when AWS gives none
    "ebs_max_bandwidth_mbps",  # only when EbsOptimizedSupport == default
    "network_bandwidth_mbps",  # empty when AWS describes it only vaguely (Low/Moderate/High)
    "encryption_in_transit",
    "local_storage_gb",  # InstanceStorageInfo.TotalSizeInGB, empty without instance storage
    "local_nvme_support",  # InstanceStorageInfo.NvmeSupport (required/supported/unsupported)
    "card0_max_enis",  # ENIs of the default network card
    "ipv4_per_eni",
    "gpu_name",  # only when GpuInfo has exactly one entry (as Karpenter labels it)
    "gpu_manufacturer",
    "gpu_count",
    "gpu_memory_mib",  # per GPU
    "nvidia_gpus",  # sum of counts by manufacturer, as Karpenter's capacity
    "amd_gpus",
    "habana_gaudis",
    "neuron_name",  # NeuronInfo with exactly one device entry
    "neuron_devices",  # sum of NeuronDevices counts
    "neuron_cores",  # devices[0].count * devices[0].cores
    "inference_accel_name",  # InferenceAcceleratorInfo with one entry and no NeuronInfo
    "inference_accel_manufacturer",
    "inference_accel_count",
    "efa_interfaces",
    "pod_enis",  # Karpenter Limits: branch ENIs when trunking compatible, else 0
    "usage_classes",
]

OFFERING_COLUMNS = ["name", "zone", "zone_id", "capacity_type", "price"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def b(v):
    return "true" if v else "false"


def network_bandwidth_mbps(info):
    """Karpenter's InstanceTypeBandwidthMegabits is scraped from the EC2 docs' bandwidth column: a number of
    Gbit/s, optionally "Nx" multiplied; types the docs describe vaguely (Low/Moderate/High) are left out.
    We approximate it from DescribeInstanceTypes: NetworkPerformance "[Nx ]M Gigabit" gives N*M*1000;
    for burstable "Up to M Gigabit" types (where the docs give the baseline) we sum the network cards'
    BaselineBandwidthInGbps; vague values give no label."""
    net = info["NetworkInfo"]
    perf = net.get("NetworkPerformance", "")
    if any(word in perf for word in ("Low", "Moderate", "High")):
        return ""
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)x )?(\d+(?:\.\d+)?) Gigabit", perf)
    if m:
        mult = float(m.group(1)) if m.group(1) else 1.0
        return str(int(float(m.group(2)) * 1000 * mult))
    cards = net.get("NetworkCards") or []
    gbps = [c.get("BaselineBandwidthInGbps") for c in cards]
    if not gbps or any(g is None for g in gbps):
        return ""
    return str(int(round(sum(gbps) * 1000)))


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data"
    raw = json.load(open(os.path.join(src, "ec2_instance_types_raw.json")))
    infos = {it["InstanceType"]: it for it in raw["InstanceTypes"]}

    offered = {}  # type -> {zone: zone_id}
    zone_ids = {}  # zone_id -> zone
    for row in read_csv(os.path.join(src, "ec2_instance_type_offerings.csv")):
        if row["region"] != REGION:
            continue
        offered.setdefault(row["instance_type"], {})[row["availability_zone"]] = row["availability_zone_id"]
        zone_ids[row["availability_zone_id"]] = row["availability_zone"]

    od = {}
    for row in read_csv(os.path.join(src, "ec2_ondemand_prices_us-east-1.csv")):
        if row["region"] == REGION:
            od[row["instance_type"]] = row["ondemand_usd_per_hour"]

    spot = {}  # (type, zone) -> (timestamp, price)
    for row in read_csv(os.path.join(src, "ec2_spot_prices_sample_2022-05-31.csv")):
        if row["region"] != REGION or row["product_description"] != "Linux/UNIX":
            continue
        zone = zone_ids.get(row["availability_zone_id"])
        if zone is None:
            continue
        key = (row["instance_type"], zone)
        if key not in spot or row["timestamp_utc"] > spot[key][0]:
            spot[key] = (row["timestamp_utc"], row["spot_usd_per_hour"])

    limits = {r["instance_type"]: r for r in read_csv(os.path.join(src, "karpenter_vpc_limits.csv"))}

    eni_max_pods = {}
    with open(os.path.join(src, "eni-max-pods.txt")) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and not line.startswith("#"):
                eni_max_pods[parts[0]] = int(parts[1])

    types_rows, offering_rows = [], []
    for name in sorted(offered):
        info = infos.get(name)
        if info is None or name not in od:
            continue
        archs = info["ProcessorInfo"]["SupportedArchitectures"]
        if not any(a in ("x86_64", "arm64") for a in archs):
            continue
        usage = [u for u in info.get("SupportedUsageClasses", []) if u in ("on-demand", "spot")]
        if not usage:
            continue
        net = info["NetworkInfo"]
        card0 = next(c for c in net["NetworkCards"] if c["NetworkCardIndex"] == net["DefaultNetworkCardIndex"])
        enis, ips = card0["MaximumNetworkInterfaces"], net["Ipv4AddressesPerInterface"]
        if name in eni_max_pods:
            assert enis * (ips - 1) + 2 == eni_max_pods[name], name
        gpus = (info.get("GpuInfo") or {}).get("Gpus") or []
        single_gpu = gpus[0] if len(gpus) == 1 else None
        neuron = (info.get("NeuronInfo") or {}).get("NeuronDevices") or []
        accels = (info.get("InferenceAcceleratorInfo") or {}).get("Accelerators") or []
        accel = accels[0] if len(accels) == 1 and not info.get("NeuronInfo") else None
        storage = info.get("InstanceStorageInfo")
        ebs = info.get("EbsInfo") or {}
        ebs_bw = ""
        if ebs.get("EbsOptimizedSupport") == "default" and ebs.get("EbsOptimizedInfo"):
            ebs_bw = str(ebs["EbsOptimizedInfo"]["MaximumBandwidthInMbps"])
        lim = limits.get(name)
        pod_enis = lim["branch_enis"] if lim and lim["is_trunking_compatible"] == "true" else "0"
        ghz = info["ProcessorInfo"].get("SustainedClockSpeedInGhz") or 0.0
        row = {
            "name": name,
            "architectures": "|".join(archs),
            "vcpus": info["VCpuInfo"]["DefaultVCpus"],
            "memory_mib": info["MemoryInfo"]["SizeInMiB"],
            "hypervisor": info.get("Hypervisor", ""),
            "cpu_manufacturer": info["ProcessorInfo"].get("Manufacturer", ""),
            "sustained_clock_mhz": int(round(ghz * 1000)),
            "ebs_max_bandwidth_mbps": ebs_bw,
            "network_bandwidth_mbps": network_bandwidth_mbps(info),
            "encryption_in_transit": b(net.get("EncryptionInTransitSupported", False)),
            "local_storage_gb": storage["TotalSizeInGB"] if storage and "TotalSizeInGB" in storage else "",
            "local_nvme_support": storage.get("NvmeSupport", "") if storage else "",
            "card0_max_enis": enis,
            "ipv4_per_eni": ips,
            "gpu_name": single_gpu["Name"] if single_gpu else "",
            "gpu_manufacturer": single_gpu["Manufacturer"] if single_gpu else "",
            "gpu_count": single_gpu["Count"] if single_gpu else "",
            "gpu_memory_mib": single_gpu["MemoryInfo"]["SizeInMiB"] if single_gpu else "",
            "nvidia_gpus": sum(g["Count"] for g in gpus if g["Manufacturer"] == "NVIDIA"),
            "amd_gpus": sum(g["Count"] for g in gpus if g["Manufacturer"] == "AMD"),
            "habana_gaudis": sum(g["Count"] for g in gpus if g["Manufacturer"] == "Habana"),
            "neuron_name": neuron[0]["Name"] if len(neuron) == 1 else "",
            "neuron_devices": sum(d["Count"] for d in neuron),
            "neuron_cores": neuron[0]["Count"] * neuron[0]["CoreInfo"]["Count"] if neuron else 0,
            "inference_accel_name": accel["Name"] if accel else "",
            "inference_accel_manufacturer": accel["Manufacturer"] if accel else "",
            "inference_accel_count": accel["Count"] if accel else "",
            "efa_interfaces": (net.get("EfaInfo") or {}).get("MaximumEfaInterfaces", 0),
            "pod_enis": pod_enis,
            "usage_classes": "|".join(usage),
        }
        for k, v in row.items():
            assert "," not in str(v) and "\n" not in str(v), (name, k, v)
        types_rows.append(row)
        for zone in sorted(offered[name]):
            for ct in sorted(usage):
                if ct == "on-demand":
                    price = od[name]
                else:
                    price = spot.get((name, zone), (None, od[name]))[1]
                offering_rows.append(
                    {"name": name, "zone": zone, "zone_id": offered[name][zone], "capacity_type": ct, "price": price}
                )

    def write(path, columns, rows):
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n", quoting=csv.QUOTE_NONE)
            w.writeheader()
            w.writerows(rows)

    write(os.path.join(HERE, "us-east-1-instance-types.csv"), TYPE_COLUMNS, types_rows)
    write(os.path.join(HERE, "us-east-1-offerings.csv"), OFFERING_COLUMNS, offering_rows)
    print(f"{len(types_rows)} instance types, {len(offering_rows)} offerings", file=sys.stderr)


if __name__ == "__main__":
    main()
