//! Gardener's `DefaultStatus` of extension objects (extensions.gardener.cloud/v1alpha1).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

/// The kind of operation an extension object last went through.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationType {
    Create,
    Reconcile,
    Delete,
    Migrate,
    Restore,
}

impl OperationType {
    /// The verb Gardener puts into descriptions ("Reconciling the ContainerRuntime").
    pub fn progressive(self) -> &'static str {
        match self {
            Self::Create | Self::Reconcile => "Reconciling",
            Self::Delete => "Deleting",
            Self::Migrate => "Migrating",
            Self::Restore => "Restoring",
        }
    }

    /// The past tense for success descriptions ("ContainerRuntime successfully reconciled").
    pub fn past(self) -> &'static str {
        match self {
            Self::Create | Self::Reconcile => "reconciled",
            Self::Delete => "deleted",
            Self::Migrate => "migrated",
            Self::Restore => "restored",
        }
    }
}

/// The state of the last operation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationState {
    Processing,
    Succeeded,
    Error,
    Failed,
    Pending,
    Aborted,
}

/// A Gardener enum value as stored: known values typed, any other string kept verbatim. The
/// CRDs allow any string, and one object with a value we do not know (a newer Gardener's, or a
/// hand-written one) must never make the whole list of objects undecodable.
#[derive(Clone, PartialEq, Eq)]
pub enum Lenient<T> {
    Known(T),
    Other(String),
}

/// Shows the value itself (`Succeeded`, or an unknown `"Upgrade"`), as it reads in the object.
impl<T: std::fmt::Debug> std::fmt::Debug for Lenient<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lenient::Known(t) => t.fmt(f),
            Lenient::Other(s) => s.fmt(f),
        }
    }
}

impl<T: Copy> Lenient<T> {
    pub fn known(&self) -> Option<T> {
        match self {
            Lenient::Known(t) => Some(*t),
            Lenient::Other(_) => None,
        }
    }
}

impl<T> From<T> for Lenient<T> {
    fn from(t: T) -> Self {
        Lenient::Known(t)
    }
}

impl<T: PartialEq> PartialEq<T> for Lenient<T> {
    fn eq(&self, other: &T) -> bool {
        matches!(self, Lenient::Known(t) if t == other)
    }
}

impl<T: Serialize> Serialize for Lenient<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Lenient::Known(t) => t.serialize(s),
            Lenient::Other(v) => v.serialize(s),
        }
    }
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Ok(serde_json::from_value(serde_json::Value::String(raw.clone())).map_or(Lenient::Other(raw), Lenient::Known))
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastOperation {
    #[serde(rename = "type")]
    pub type_: Lenient<OperationType>,
    pub state: Lenient<OperationState>,
    pub progress: i32,
    pub description: String,
    pub last_update_time: Time,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    pub description: String,
    #[serde(rename = "taskID", default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
}

/// A Gardener condition (gardencorev1beta1.Condition).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub last_transition_time: Time,
    pub last_update_time: Time,
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<String>,
}

/// A resource referenced by an extension object and migrated together with its state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamedResourceReference {
    pub name: String,
    pub resource_ref: CrossVersionObjectReference,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CrossVersionObjectReference {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

/// `DefaultStatus` shared by every extension kind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DefaultStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_status: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_operation: Option<LastOperation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<NamedResourceReference>,
}
