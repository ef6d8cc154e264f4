//! All integration tests in one binary (one link step on 2 cores). Each
//! test starts real servers on ephemeral loopback ports.

mod support;

mod flows;
