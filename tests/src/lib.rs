//! Shared helpers of the cross-crate tests.

pub mod grads;

use ndarray::{Array, Dimension};
use proptest::test_runner::TestCaseError;

/// Fails naming the tensor, how many of its values are NaN or infinite and the index of the
/// first ([`ssd_verify::finite::message`]); passes when every value is finite.
pub fn finite<T: Copy + Into<f64>, D: Dimension>(
    name: &str,
    a: &Array<T, D>,
) -> Result<(), TestCaseError> {
    match ssd_verify::finite::message("", name, name, a) {
        Some(m) => Err(TestCaseError::fail(m)),
        None => Ok(()),
    }
}

/// Path of a file under `tests/data/`: in the source tree the tests were built from, or, for
/// test executables carried to another machine (`gpu-bundle`), relative to the repository root
/// they run from.
pub fn data_path(rel: &str) -> std::path::PathBuf {
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(rel);
    if built.exists() {
        built
    } else {
        std::path::Path::new("tests/data").join(rel)
    }
}

/// proptest config with `cases` by default, raised by `PROPTEST_CASES`.
pub fn cases(default: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}
