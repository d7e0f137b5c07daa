//! Nodes → karp-core existing capacity (labels, allocatable, capacity, taints).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as corev1;
use karp_core::cluster::Node;
use karp_core::labels;
use karp_core::resources::Resources;

use super::pod::{set_resources, taint};
use super::{field_err, ConvertError, ObjectRef};

/// Convert a Node into existing capacity.
///
/// # Errors
/// [`ConvertError::ConvertField`] for a bad quantity or taint, or a node without allocatable or capacity.
pub fn convert_node(object: &ObjectRef, n: &corev1::Node) -> Result<Node, ConvertError> {
    let mut node_labels = BTreeMap::new();
    for (k, v) in n.metadata.labels.iter().flatten() {
        node_labels.insert(k.clone(), v.clone());
    }
    for (k, v) in n.metadata.labels.iter().flatten() {
        node_labels
            .entry(labels::normalize_key(k).to_string())
            .or_insert_with(|| v.clone());
    }
    let status = n.status.as_ref();
    let (alloc_field, alloc) = match (
        status.and_then(|s| s.allocatable.as_ref()),
        status.and_then(|s| s.capacity.as_ref()),
    ) {
        (Some(a), _) => ("status.allocatable", a),
        (None, Some(c)) => ("status.capacity", c),
        (None, None) => {
            return Err(field_err(
                object,
                "status.allocatable",
                "required (the resources the node offers to pods)",
            ))
        }
    };
    let mut allocatable = Resources::new();
    set_resources(object, alloc_field, &mut allocatable, Some(alloc), |_| {
        false
    })?;
    let mut capacity = Resources::new();
    match status.and_then(|s| s.capacity.as_ref()) {
        Some(c) => set_resources(object, "status.capacity", &mut capacity, Some(c), |_| false)?,
        None => capacity = allocatable.clone(),
    }
    let mut node = Node::new(object.name.clone(), node_labels, allocatable);
    node.capacity = capacity;
    let spec = n.spec.as_ref();
    for (i, t) in spec
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        node.taints.push(taint(
            object,
            &format!("spec.taints[{i}]"),
            &t.key,
            t.value.as_deref(),
            &t.effect,
        )?);
    }
    node.deleting =
        spec.and_then(|s| s.unschedulable) == Some(true) || n.metadata.deletion_timestamp.is_some();
    Ok(node)
}
