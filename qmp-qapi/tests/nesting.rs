//! Recursive types decode as deep as real QEMU nests them, and a deeper value is an error, not a
//! stack overflow, on a spawned thread's 2 MiB stack (debug builds included).

use qmp_qapi::{qmp, FromValue, MAX_NESTING};
use serde_json::{json, Value};

/// An `ImageInfo` with a backing chain of `n` images, built without recursion.
fn chain(n: usize) -> Value {
    let mut v = json!({"filename": "base", "format": "raw", "virtual-size": 1});
    for i in 0..n {
        v = json!({"filename": format!("overlay{i}"), "format": "qcow2", "virtual-size": 1, "backing-image": v});
    }
    v
}

fn decode_on_small_thread(v: Value) -> Result<qmp::ImageInfo, String> {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || qmp::ImageInfo::from_value(v).map_err(|e| e.to_string()))
        .expect("spawn")
        .join()
        .expect("no overflow")
}

#[test]
fn a_real_backing_chain_decodes_and_a_deeper_one_is_refused() {
    let info = decode_on_small_thread(chain(200)).expect("200 images, as QEMU sends");
    let mut depth = 0;
    let mut at = &info;
    while let Some(next) = &at.backing_image {
        depth += 1;
        at = next;
    }
    assert_eq!((depth, at.filename.as_str()), (200, "base"));
    let e = decode_on_small_thread(chain(MAX_NESTING as usize + 1)).unwrap_err();
    assert!(
        e.contains("nested deeper than 256 levels")
            && e.starts_with("at .backing-image.backing-image"),
        "{e}"
    );
    // Arrays count too: nested arrays where the schema nests them through a recursive type.
    let mut tree = json!({"id": "leaf"});
    for _ in 0..500 {
        tree = json!([tree]);
    }
    let e = qmp::XDbgBlockGraph::from_value(json!({"nodes": tree, "edges": []})).unwrap_err();
    assert!(!e.to_string().is_empty());
}
