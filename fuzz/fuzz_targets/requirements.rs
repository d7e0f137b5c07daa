//! The requirement algebra: three requirements on one key, built from the fuzz input through
//! `Requirement::new` (construction errors are skipped), must obey the set laws.
#![no_main]

use arbitrary::{Result, Unstructured};
use karp_core::requirements::{Operator, Requirement, RequirementError, Requirements};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "k";
/// Values the requirements are built from: integers (for Gt / Lt / Gte / Lte and their interplay
/// with In / NotIn) and plain strings.
const ALPHABET: [&str; 8] = ["0", "1", "2", "10", "-3", "a", "b", "x"];

/// Label states the laws are checked on: absent, every alphabet value, and a few integers just
/// around the alphabet's (bounds are off by one from Gt / Lt values).
const PROBES: [Option<&str>; 14] = [
    None,
    Some("0"),
    Some("1"),
    Some("2"),
    Some("10"),
    Some("-3"),
    Some("a"),
    Some("b"),
    Some("x"),
    Some("3"),
    Some("9"),
    Some("11"),
    Some("-2"),
    Some("-4"),
];

fn requirement(u: &mut Unstructured<'_>) -> Result<Option<Requirement>> {
    let op = Operator::ALL[usize::from(u.int_in_range(0u8..=7)?)];
    // Mostly the value count the operator wants, sometimes a wrong one (construction errors).
    let n = match (op, u.ratio(1u8, 16)?) {
        (_, true) => usize::from(u.int_in_range(0u8..=3)?),
        (Operator::In | Operator::NotIn, false) => usize::from(u.int_in_range(1u8..=4)?),
        (Operator::Exists | Operator::DoesNotExist, false) => 0,
        (_, false) => 1,
    };
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        values.push(*u.choose(&ALPHABET)?);
    }
    let min_values = if u.ratio(1u8, 4)? { Some(usize::from(u.int_in_range(1u8..=3)?)) } else { None };
    Ok(Requirement::new(KEY, op, values).ok().map(|r| match min_values {
        Some(m) => r.with_min_values(m),
        None => r,
    }))
}

fn one(r: &Requirement) -> Requirements {
    Requirements::from_iter([r.clone()])
}

fn check_pair(a: &Requirement, b: &Requirement) {
    let ab = a.intersect(b);
    assert_eq!(ab, b.intersect(a), "not commutative: {a:?} ∩ {b:?}");
    assert_eq!(a.intersects(b), !ab.is_empty(), "intersects disagrees with intersect: {a:?} ∩ {b:?} = {ab:?}");
    assert_eq!(
        one(a).compatible(&one(b), &|_| false).is_ok(),
        !ab.is_empty(),
        "compatible disagrees with intersect: node {a:?}, pod {b:?}, intersection {ab:?}"
    );
    for s in PROBES {
        assert_eq!(
            ab.matches(s),
            a.matches(s) && b.matches(s),
            "not set intersection on {s:?}: {a:?} ∩ {b:?} = {ab:?}"
        );
    }
    if a.is_subset_of(b) {
        assert_eq!(ab, *a, "{a:?} is_subset_of {b:?} but the intersection differs");
    }
}

fn check_round_trip(r: &Requirement) {
    if r.is_empty() {
        return; // the empty set has no manifest form
    }
    let selector = r.to_node_selector();
    let back = match Requirements::from_node_selector(&selector) {
        Ok(back) => back,
        Err((_, e)) => {
            // A minValues larger than the values an intersection left is not a valid manifest
            // (minValues is not part of `matches`); anything else is a bug.
            assert!(
                matches!(e, RequirementError::BadMinValues { .. })
                    && r.min_values().is_some_and(|m| r.len().is_some_and(|n| m > n)),
                "to_node_selector of {r:?} gives {selector:?}, which does not parse back: {e}"
            );
            return;
        }
    };
    let back = back.get(KEY).cloned().unwrap_or_else(|| Requirement::any(KEY));
    for s in PROBES {
        assert_eq!(
            back.matches(s),
            r.matches(s),
            "round trip changes {s:?}: {r:?} -> {selector:?} -> {back:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let (Ok(Some(a)), Ok(Some(b)), Ok(Some(c))) = (requirement(&mut u), requirement(&mut u), requirement(&mut u)) else {
        return;
    };
    for x in [&a, &b, &c] {
        assert_eq!(x.intersect(x), *x, "not idempotent: {x:?}");
        check_round_trip(x);
        for y in [&a, &b, &c] {
            check_pair(x, y);
            check_round_trip(&x.intersect(y));
        }
    }
    let left = a.intersect(&b).intersect(&c);
    let right = a.intersect(&b.intersect(&c));
    assert_eq!(left, right, "not associative: {a:?}, {b:?}, {c:?}");
    check_round_trip(&left);
    // Requirements on one key intersect as they are added.
    let all = Requirements::from_iter([a.clone(), b.clone(), c.clone()]);
    assert_eq!(all.get(KEY), Some(&left), "Requirements::from_iter differs from intersect");
});
