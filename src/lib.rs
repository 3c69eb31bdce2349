//! gardener-extension-runtime-kata: Kata Containers as a container runtime for Gardener shoots.

pub mod api;
pub mod certs;
pub mod extension;
pub mod kata;
pub mod managedresources;
pub mod node;
pub mod runtime;
pub mod testenv;
pub mod webhook;
