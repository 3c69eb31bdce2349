//! What the extension puts on kata-fc nodes through the OperatingSystemConfig: the devmapper
//! thin-pool setup script and its systemd unit. Pure text builders; the webhook decides where they go.

pub mod devmapper;
