//! The generic Gardener extension reconciler for ContainerRuntime objects: operation annotation,
//! operation type, status, finalizer and the migrate/restore/delete dispatch. It knows nothing
//! about kata; the kata specifics live behind [`Actuator`].

pub mod actuator;
pub mod controller;
pub mod operation;
pub mod predicate;
pub mod readiness;
pub mod reconciler;
pub mod status;

pub use actuator::{Actuator, ActuatorError};
pub use controller::{ControllerOptions, run_controller};
pub use status::truncate_for_status;

/// The finalizer of every ContainerRuntime controller.
pub const FINALIZER: &str = "extensions.gardener.cloud/containerruntime";

/// Non-retryable: the user must change the Shoot.
pub const ERR_CONFIGURATION_PROBLEM: &str = "ERR_CONFIGURATION_PROBLEM";
