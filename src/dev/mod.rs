//! Development-only code: the mock rack used by tests, benchmarks and the
//! demo, the demo itself and its test identity provider. `serve` never
//! uses anything here.

pub mod demo;
pub(crate) mod idp;
pub mod mock_rack;
