//! Quantity parsing: never panics; printing round-trips the exact value.
#![no_main]

use karp_core::resources::Quantity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(q) = text.parse::<Quantity>() else {
        return;
    };
    let _ = q.millis_ceil();
    let _ = q.value_ceil();
    let _ = q.as_f64();
    let printed = q.to_string();
    let back: Quantity = printed
        .parse()
        .unwrap_or_else(|e| panic!("{text:?} parsed to {q:?}, printed as {printed:?}, which does not parse: {e}"));
    assert_eq!(
        q.nanos(),
        back.nanos(),
        "{text:?} parsed to {q:?}, printed as {printed:?}, which parses back to {back:?}"
    );
    // Printing the re-parsed value is stable too.
    assert_eq!(back.to_string().parse::<Quantity>().map(|b| b.nanos()), Ok(q.nanos()));
});
