//! gardener-extension-runtime-kata: Kata Containers as a container runtime for Gardener shoots.

pub mod admission;
pub mod api;
pub mod app;
pub mod certs;
pub mod cli;
pub mod extension;
pub mod healthcheck;
pub mod imagevector;
pub mod kata;
pub mod managedresources;
pub mod node;
pub mod node_labeler;
pub mod render;
pub mod runtime;
#[cfg(feature = "testenv")]
pub mod testenv;
pub mod webhook;
