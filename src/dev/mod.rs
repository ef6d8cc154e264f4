//! Development-only code: the mock rack used by tests, benchmarks and the
//! demo, and the demo itself. `serve` never uses anything here.

pub mod demo;
pub mod mock_rack;
