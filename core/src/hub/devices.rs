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

/// Downlink results one device may have among the kept ones (ours): a device that answers
/// more (a reply nobody asked for is still a result) drops its own oldest, not others'.
pub const MAX_DOWNLINK_RESULTS_PER_DEVICE: usize = 64;

/// Every device's service state, and the latest downlink results.
#[derive(Default)]
pub(super) struct DeviceTable {
    states: HashMap<DeviceIdentity, DeviceState>,
    results: VecDeque<(DeviceIdentity, DownlinkResult)>,
    /// How many of `results` each device has.
    results_of: HashMap<DeviceIdentity, usize>,
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

    /// Keeps a downlink result; returns whether an older one was dropped to make room: the
    /// device's own oldest when it has its share, else the oldest of all.
    pub(super) fn push_result(&mut self, device: DeviceIdentity, result: DownlinkResult) -> bool {
        let own = self.results_of.get(&device).copied().unwrap_or(0);
        let dropped = if own >= MAX_DOWNLINK_RESULTS_PER_DEVICE {
            let oldest = self.results.iter().position(|(of, _)| *of == device);
            oldest.and_then(|at| self.results.remove(at))
        } else if self.results.len() >= MAX_DOWNLINK_RESULTS {
            self.results.pop_front()
        } else {
            None
        };
        if let Some((of, _)) = &dropped {
            self.forget_result_of(of);
        }
        *self.results_of.entry_ref(&device).or_insert(0) += 1;
        self.results.push_back((device, result));
        dropped.is_some()
    }

    fn forget_result_of(&mut self, device: &DeviceIdentity) {
        if let Some(count) = self.results_of.get_mut(device) {
            *count -= 1;
            if *count == 0 {
                self.results_of.remove(device);
            }
        }
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
