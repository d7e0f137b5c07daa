//! The committed CRDs in `charts/karp/crds/` are exactly what `karp crds` prints.
//! Regenerate with `KARP_UPDATE_CRDS=1 cargo test --test crds`.

use std::path::Path;

#[test]
fn committed_crds_match_the_generated_ones() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/karp/crds");
    let update = std::env::var_os("KARP_UPDATE_CRDS").is_some();
    let mut expected_files = Vec::new();
    for crd in karp_operator::api::crds::all() {
        let name = karp_operator::api::crds::file_name(&crd);
        let text = karp_operator::api::crds::to_yaml(&crd);
        let path = dir.join(&name);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run KARP_UPDATE_CRDS=1 cargo test --test crds",
                path.display()
            )
        });
        assert_eq!(
            committed,
            text,
            "{} differs from `karp crds`; run KARP_UPDATE_CRDS=1 cargo test --test crds",
            path.display()
        );
        expected_files.push(name);
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(present, expected_files, "stale files in {}", dir.display());
}

#[test]
fn karp_crds_prints_every_crd() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_karp"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "nodepools.karpenter.sh",
            "nodeclaims.karpenter.sh",
            "ec2nodeclasses.karpenter.k8s.aws"
        ]
    );
}
