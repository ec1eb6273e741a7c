//! The platform's per-device service state: what the thing model, the shadow and OTA keep of
//! each device, and the results of downlinks the devices answered.
//!
//! A [`DeviceState`] (from `aliot-services`) per device that has used a service, found by its
//! identity. Like the session table, it is the narrow interface the hub goes through, so that
//! a durable store can keep its copy behind it. It has no deadlines.

use alloc::collections::VecDeque;

use aliot_auth::DeviceIdentity;
use aliot_services::{DeviceState, DownlinkResult};
use hashbrown::HashMap;

/// Downlink results kept for the server side to read (ours), the oldest dropped first: the
/// server-side subscription forwards them; until it reads them, the latest are kept.
pub const MAX_DOWNLINK_RESULTS: usize = 1024;

/// Every device's service state, and the latest downlink results.
#[derive(Default)]
pub(super) struct DeviceTable {
    states: HashMap<DeviceIdentity, DeviceState>,
    results: VecDeque<(DeviceIdentity, DownlinkResult)>,
}

impl DeviceTable {
    /// The device's state, if it has used a service or been sent one.
    pub(super) fn get(&self, device: &DeviceIdentity) -> Option<&DeviceState> {
        self.states.get(device)
    }

    /// The device's state, made empty the first time.
    pub(super) fn state_mut(&mut self, device: &DeviceIdentity) -> &mut DeviceState {
        self.states
            .entry_ref(device)
            .or_insert_with(|| DeviceState::new(&device.product_key, &device.device_name))
    }

    /// Keeps a downlink result; returns whether an older one was dropped to make room.
    pub(super) fn push_result(&mut self, device: DeviceIdentity, result: DownlinkResult) -> bool {
        let full = self.results.len() >= MAX_DOWNLINK_RESULTS;
        if full {
            self.results.pop_front();
        }
        self.results.push_back((device, result));
        full
    }

    /// The downlink results kept, oldest first.
    pub(super) fn results(&self) -> impl Iterator<Item = &(DeviceIdentity, DownlinkResult)> {
        self.results.iter()
    }

    /// Devices with service state.
    pub(super) fn len(&self) -> usize {
        self.states.len()
    }
}
