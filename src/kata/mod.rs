//! The kata actuator and the shoot manifests it deploys (pure builders of typed k8s-openapi
//! objects).

pub mod actuator;
pub mod defaults;
pub mod imagevector;
pub mod installer;
pub mod manifests;
pub mod names;
pub mod plan;
pub mod pools;
pub mod rbac;
pub mod requirements;
pub mod runtimeclasses;
pub mod shootwide;

pub use actuator::KataActuator;
