//! OTA (PLATFORM-PROTOCOLS §6): devices report each module's version and how an upgrade goes;
//! the platform pushes an upgrade job at once, or when the device next comes online, and
//! answers a device that pulls it.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Downlink;
use crate::alink::to_bytes;

/// The longest module name, version and progress description a device reports, in bytes
/// (ours): a report with a longer one is dropped and counted malformed.
const MAX_OTA_TEXT_LEN: usize = 64;
/// The longest progress description kept, in bytes (ours); a longer one is cut.
const MAX_OTA_DESC_LEN: usize = 256;

/// The module a report or job is about when it names none (the SDKs' default).
pub const DEFAULT_MODULE: &str = "default";

/// How the firmware's digest is computed, spelled as the SDKs accept it (§6: the C SDK 4.x
/// takes `Md5`, `SHA256`; the Python SDK `Md5`, `SHA256`).
///
/// Stored (serde) as `"md5"` or `"sha256"`; that is not the spelling on the wire
/// ([`as_str`](OtaSignMethod::as_str)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtaSignMethod {
    /// MD5, 32 hex digits; sent as `"signMethod":"Md5"` with the digest in `md5` and `sign`.
    #[serde(rename = "md5")]
    Md5,
    /// SHA-256, 64 hex digits; sent as `"signMethod":"SHA256"`.
    #[serde(rename = "sha256")]
    Sha256,
}

impl OtaSignMethod {
    /// The name the push carries.
    pub fn as_str(self) -> &'static str {
        match self {
            OtaSignMethod::Md5 => "Md5",
            OtaSignMethod::Sha256 => "SHA256",
        }
    }

    fn digest_len(self) -> usize {
        match self {
            OtaSignMethod::Md5 => 32,
            OtaSignMethod::Sha256 => 64,
        }
    }

    /// Reads `md5`, `Md5`, `MD5`, `sha256`, `SHA256`, `Sha256`.
    pub fn parse(text: &str) -> Option<Self> {
        if text.eq_ignore_ascii_case("md5") {
            Some(OtaSignMethod::Md5)
        } else if text.eq_ignore_ascii_case("sha256") {
            Some(OtaSignMethod::Sha256)
        } else {
            None
        }
    }
}

/// An upgrade for one module of one device.
///
/// Stored (serde) as `{"id":…,"mod":…,"ver":…,"url":…,"size":…,"sm":…,"sign":…}`, every
/// field required.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtaJob {
    /// The job's id, sent as the push's `id` (a number).
    pub id: u64,
    /// The module (`default` when none is named).
    #[serde(rename = "mod")]
    pub module: String,
    /// The version the device upgrades to.
    #[serde(rename = "ver")]
    pub version: String,
    /// Where the firmware is downloaded from.
    pub url: String,
    /// Its size in bytes.
    pub size: u64,
    /// How its digest was computed.
    #[serde(rename = "sm")]
    pub sign_method: OtaSignMethod,
    /// Its digest, lowercase hex.
    pub sign: String,
}

/// Why a job cannot be pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OtaJobError {
    /// The digest is not hex of the sign method's length.
    BadDigest {
        /// The length it must have.
        expected_len: usize,
    },
    /// The URL or version is empty.
    Missing(&'static str),
}

impl core::fmt::Display for OtaJobError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OtaJobError::BadDigest { expected_len } => {
                write!(f, "the digest must be {expected_len} hex digits")
            }
            OtaJobError::Missing(what) => write!(f, "{what} must not be empty"),
        }
    }
}

impl OtaJob {
    /// Checks what the SDKs check before they download (§6): a digest of the right length in
    /// hex, a URL, a version. The digest is kept in lowercase.
    pub fn validated(mut self) -> Result<Self, OtaJobError> {
        let expected_len = self.sign_method.digest_len();
        if self.sign.len() != expected_len || !self.sign.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(OtaJobError::BadDigest { expected_len });
        }
        self.sign.make_ascii_lowercase();
        if self.url.is_empty() {
            return Err(OtaJobError::Missing("url"));
        }
        if self.version.is_empty() {
            return Err(OtaJobError::Missing("version"));
        }
        if self.module.is_empty() {
            DEFAULT_MODULE.clone_into(&mut self.module);
        }
        Ok(self)
    }

    /// The job's `data` object: what the push carries and the firmware pull answers.
    pub(crate) fn data(&self) -> Value {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Data<'a> {
            size: u64,
            version: &'a str,
            url: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            md5: Option<&'a str>,
            sign: &'a str,
            sign_method: &'a str,
            module: &'a str,
        }
        serde_json::to_value(Data {
            size: self.size,
            version: &self.version,
            url: &self.url,
            md5: (self.sign_method == OtaSignMethod::Md5).then_some(self.sign.as_str()),
            sign: &self.sign,
            sign_method: self.sign_method.as_str(),
            module: &self.module,
        })
        .unwrap_or(Value::Null)
    }

    /// The push on `/ota/device/upgrade/{pk}/{dn}`:
    /// `{"code":"1000","data":{…},"id":…,"message":"success"}` (the doc's form, `code` a
    /// string there).
    pub(crate) fn push(&self, product_key: &str, device_name: &str) -> Downlink {
        #[derive(Serialize)]
        struct Push<'a> {
            code: &'a str,
            data: Value,
            id: u64,
            message: &'a str,
        }
        Downlink {
            topic: ota_upgrade_topic(product_key, device_name),
            payload: to_bytes(&Push {
                code: "1000",
                data: self.data(),
                id: self.id,
                message: "success",
            }),
        }
    }
}

/// Where a device's upgrades are pushed: `/ota/device/upgrade/{pk}/{dn}`.
pub fn ota_upgrade_topic(product_key: &str, device_name: &str) -> String {
    format!("/ota/device/upgrade/{product_key}/{device_name}")
}

/// A device's version report: `{"id":…,"params":{"version":"1.0.1","module":"MCU"}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtaReport {
    /// The module and version, or `None` when the report has no version string.
    pub module_version: Option<(String, String)>,
}

impl OtaReport {
    pub(crate) fn parse(payload: &[u8]) -> Self {
        let params = params_of(payload);
        let version = params
            .as_ref()
            .and_then(|params| params.get("version"))
            .and_then(Value::as_str)
            .filter(|version| !version.is_empty() && version.len() <= MAX_OTA_TEXT_LEN);
        let module = module_of(params.as_ref());
        OtaReport {
            module_version: version
                .zip(module)
                .map(|(version, module)| (module, version.to_owned())),
        }
    }
}

/// A device's upgrade progress: `{"id":…,"params":{"step":"45","desc":"","module":"MCU"}}`;
/// a step of 1–100 is a percentage, -1 to -4 a failure (upgrade, download, verify, flash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtaProgress {
    /// The module, the step and its description, or `None` when the step is not a number.
    pub step: Option<(String, i32, String)>,
}

impl OtaProgress {
    pub(crate) fn parse(payload: &[u8]) -> Self {
        let params = params_of(payload);
        let step = params
            .as_ref()
            .and_then(|params| params.get("step"))
            .and_then(|step| match step {
                Value::String(text) => text.trim().parse().ok(),
                other => other.as_i64().and_then(|step| i32::try_from(step).ok()),
            });
        let mut desc = params
            .as_ref()
            .and_then(|params| params.get("desc"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        crate::truncate_to(&mut desc, MAX_OTA_DESC_LEN);
        let module = module_of(params.as_ref());
        OtaProgress {
            step: step.zip(module).map(|(step, module)| (module, step, desc)),
        }
    }
}

fn params_of(payload: &[u8]) -> Option<Value> {
    let mut body: Value = serde_json::from_slice(payload).ok()?;
    body.get_mut("params").map(Value::take)
}

/// The module a report names (`default` when none), or `None` when its name is too long.
fn module_of(params: Option<&Value>) -> Option<String> {
    let module = params
        .and_then(|params| params.get("module"))
        .and_then(Value::as_str)
        .filter(|module| !module.is_empty())
        .unwrap_or(DEFAULT_MODULE);
    (module.len() <= MAX_OTA_TEXT_LEN).then(|| module.to_owned())
}

/// What the platform keeps of one module of a device.
///
/// Stored (serde) as `{"ver":…,"prog":[step,desc],"job":{…},"last":…}`, each field absent or
/// `null` when `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OtaModule {
    /// The version the device last reported.
    #[serde(rename = "ver", skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The last progress step and its description.
    #[serde(rename = "prog", skip_serializing_if = "Option::is_none")]
    pub progress: Option<(i32, String)>,
    /// The upgrade not yet done: pushed at once, pushed again each time the device comes
    /// online, until the device reports its version or a failed step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<OtaJob>,
    /// How the last job ended: `true` succeeded (the device reported its version), `false`
    /// failed (a negative step).
    #[serde(rename = "last", skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<bool>,
}

impl OtaModule {
    pub(crate) fn reported(&mut self, version: String) {
        if self.job.as_ref().is_some_and(|job| job.version == version) {
            self.job = None;
            self.last_outcome = Some(true);
            self.progress = None;
        }
        self.version = Some(version);
    }

    pub(crate) fn progressed(&mut self, step: i32, desc: String) {
        if step < 0 && self.job.take().is_some() {
            self.last_outcome = Some(false);
        }
        self.progress = Some((step, desc));
    }
}

/// Sorted module names to their state.
pub(crate) type OtaModules = alloc::collections::BTreeMap<String, OtaModule>;

/// The `data` of a firmware pull's reply: the pending job of the module asked for (any
/// module's when none is named), or `{}`.
pub(crate) fn pull_data(modules: &OtaModules, params: &Value) -> Value {
    let asked = params.get("module").and_then(Value::as_str);
    let job = match asked {
        Some(module) => modules.get(module).and_then(|state| state.job.as_ref()),
        None => modules.values().find_map(|state| state.job.as_ref()),
    };
    job.map_or_else(crate::alink::empty_object, OtaJob::data)
}

/// Every pending job's push, for a device that has just come online.
pub(crate) fn pending_pushes(
    modules: &OtaModules,
    product_key: &str,
    device_name: &str,
) -> Vec<Downlink> {
    modules
        .values()
        .filter_map(|state| state.job.as_ref())
        .map(|job| job.push(product_key, device_name))
        .collect()
}
