//! gardener-extension-runtime-kata: Kata Containers as a container runtime for Gardener shoots.

pub mod api;
pub mod certs;
pub mod testenv;
