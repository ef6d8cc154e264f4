//! Unit tests of the decision engine (see tests/it for the same rules
//! through the real server).
