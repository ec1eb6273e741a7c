//! What a gateway asks for its sub-devices (PLATFORM-PROTOCOLS §4), parsed, and the replies.
//!
//! A gateway manages its topology on `/sys/{gw}/thing/topo/{add,delete,get}`, reports the
//! sub-devices it has found on `/sys/{gw}/thing/list/found`, registers
//! sub-devices on `/sys/{gw}/thing/sub/register` and
//! `/sys/{gw}/thing/proxy/provisioning/product_register`, and logs them in and out on
//! `/ext/session/{gw}/combine/{login,logout,batch_login,batch_logout}`. [`GatewayRequest::parse`]
//! turns such a PUBLISH into a [`GatewayOp`] with every sub-device's proof read
//! ([`SubDeviceProof`]), or the code its reply carries when it is malformed; deciding (the
//! topology, the registry, the limits) is the caller's, and [`GatewayRequest::reply`] builds the
//! answer.
//!
//! Replies follow the SDKs' narrow parsers: `{"id":…,"code":…,"message":…,"data":…}`, `code` a
//! number (the Node SDK compares it with `200`), `data` last, and for a login the sub-device's
//! `productKey` and `deviceName` in `data` (C 3.x finds the device by them).

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use aliot_auth::{DeviceIdentity, SubDeviceProof};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::Downlink;
use crate::alink::{AlinkCode, AlinkMethod, AlinkRequest, ReplyTo, echoable_id, zero_id};
use crate::request::own_rest;

/// Sub-devices one `thing/topo/add` may carry (PLATFORM-PROTOCOLS §4.1).
pub const MAX_TOPO_ADD: usize = 30;
/// Sub-devices one `combine/batch_login` or `batch_logout` may carry (§4.2).
pub const MAX_BATCH: usize = 50;
/// Sub-devices one `thing/list/found` may carry (ours: the platform documents no limit; a
/// batch's).
pub const MAX_FOUND: usize = MAX_BATCH;

/// The codes of the gateway's replies (§4.4), beside the thing model's.
impl AlinkCode {
    /// 429 (gateway): too many sub-device logins in a minute.
    pub const TOO_FAST: AlinkCode = AlinkCode {
        code: 429,
        message: "rate limit, too many subDeviceOnline msg in one minute",
    };
    /// 428: the gateway has as many sub-devices online as it may.
    pub const TOO_MANY_SUBDEVICES: AlinkCode = AlinkCode {
        code: 428,
        message: "too many subdevices under gateway",
    };
    /// 6401: the sub-device is not in the gateway's topology.
    pub const NOT_IN_TOPOLOGY: AlinkCode = AlinkCode {
        code: 6401,
        message: "topo relation not exist",
    };
    /// 6100: no such device.
    pub const NO_DEVICE: AlinkCode = AlinkCode {
        code: 6100,
        message: "device not found",
    };
    /// 522: the sub-device is disabled.
    pub const DISABLED: AlinkCode = AlinkCode {
        code: 522,
        message: "device forbidden",
    };
    /// 6287: the sub-device's proof is not its secret's.
    pub const BAD_SIGN: AlinkCode = AlinkCode {
        code: 6287,
        message: "invalid sign",
    };
    /// 6288 (ours: the platform documents no code for it): a sub-device's registration
    /// through its gateway refused, for a product that does not allow dynamic registration or
    /// a device already activated.
    pub const REGISTRATION_REFUSED: AlinkCode = AlinkCode {
        code: 6288,
        message: "sub-device registration not allowed",
    };
    /// 520: the sub-device is not logged in.
    pub const NO_SESSION: AlinkCode = AlinkCode {
        code: 520,
        message: "device no session",
    };
}

/// A sub-device's login: its proof and whether its offline messages are dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubDeviceLogin {
    /// The proof, made with the sub-device's own secret.
    pub proof: SubDeviceProof,
    /// `cleanSession` `"true"`: the sub-device's offline QoS 1 messages are dropped; `"false"`
    /// (and absent, ours): kept.
    pub clean_session: bool,
}

/// A sub-device registering through its gateway with its product's secret
/// (`product_register`): the proof is the one of dynamic registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxiedRegistration {
    /// The sub-device.
    pub identity: DeviceIdentity,
    /// Its `random`.
    pub random: String,
    /// Its `signMethod`, as sent.
    pub sign_method: String,
    /// Its `sign`, as sent.
    pub sign: String,
}

/// What a gateway asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayOp {
    /// `thing/topo/add`: add these sub-devices to the topology (each proved).
    TopoAdd(Vec<SubDeviceProof>),
    /// `thing/topo/delete`: remove these.
    TopoDelete(Vec<DeviceIdentity>),
    /// `thing/topo/get`: list the topology.
    TopoGet,
    /// `thing/list/found`: the gateway found these sub-devices (registered or not); the
    /// platform tells the applications, which may then add them to its topology.
    ListFound(Vec<DeviceIdentity>),
    /// `thing/sub/register`: register these (the gateway is trusted with their secrets).
    SubRegister(Vec<DeviceIdentity>),
    /// `thing/proxy/provisioning/product_register`: register these with their product's secret.
    ProductRegister(Vec<ProxiedRegistration>),
    /// `combine/login`.
    Login(SubDeviceLogin),
    /// `combine/batch_login`: all or none.
    BatchLogin(Vec<SubDeviceLogin>),
    /// `combine/logout`.
    Logout(DeviceIdentity),
    /// `combine/batch_logout`.
    BatchLogout(Vec<DeviceIdentity>),
}

/// Which gateway request a topic names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    TopoAdd,
    TopoDelete,
    TopoGet,
    ListFound,
    SubRegister,
    ProductRegister,
    Login,
    BatchLogin,
    Logout,
    BatchLogout,
}

/// A gateway's request, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayRequest {
    /// What it asks, or the code its reply carries when it is malformed.
    pub op: Result<GatewayOp, AlinkCode>,
    /// Where the reply goes (the request topic + `_reply`) and the `id` it echoes verbatim
    /// (`"0"` when the request had none that can be). Every gateway request is answered.
    pub reply_to: ReplyTo,
}

/// The JSON body of a request, as far as it is read: `method` and `version` are not (the SDKs
/// disagree on them; the topic says what is asked).
#[derive(serde::Deserialize)]
struct Body<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    params: Option<Value>,
}

impl GatewayRequest {
    /// The request a PUBLISH of the gateway `product_key`/`device_name` on `topic` makes, if the
    /// topic is one of its gateway topics; `None` for any other.
    ///
    /// ```
    /// use aliot_services::gateway::{GatewayOp, GatewayRequest};
    ///
    /// let topic = "/ext/session/a1Gw/gw-1/combine/logout";
    /// let payload = br#"{"id":123,"params":{"productKey":"a1Sub","deviceName":"s-1"}}"#;
    /// let request = GatewayRequest::parse(topic, payload, "a1Gw", "gw-1").unwrap();
    /// let Ok(GatewayOp::Logout(sub)) = &request.op else { panic!() };
    /// assert_eq!(sub.device_name, "s-1");
    /// ```
    pub fn parse(
        topic: &str,
        payload: &[u8],
        product_key: &str,
        device_name: &str,
    ) -> Option<GatewayRequest> {
        let kind = kind_of(topic, product_key, device_name)?;
        let reply_to = |id: Option<Box<RawValue>>| ReplyTo {
            topic: format!("{topic}_reply"),
            id: id.unwrap_or_else(zero_id),
            ack: true,
        };
        let is_object = payload.trim_ascii_start().first() == Some(&b'{');
        let body: Option<Body<'_>> = serde_json::from_slice(payload).ok().filter(|_| is_object);
        let Some(body) = body else {
            return Some(GatewayRequest {
                op: Err(AlinkCode::NOT_JSON),
                reply_to: reply_to(None),
            });
        };
        let echoed = echoable_id(body.id);
        let op = match (&echoed, body.params) {
            (None, _) if body.id.is_some() => Err(AlinkCode::BAD_PARAMS),
            (_, params) => read_op(kind, params),
        };
        Some(GatewayRequest {
            op,
            reply_to: reply_to(echoed),
        })
    }

    /// The reply: `{"id":…,"code":…,"message":…,"data":…}` on the reply topic.
    ///
    /// ```
    /// use aliot_services::AlinkCode;
    /// use aliot_services::gateway::GatewayRequest;
    ///
    /// let payload = br#"{"id":"5","params":{"productKey":"a1Sub","deviceName":"s-1"}}"#;
    /// let request =
    ///     GatewayRequest::parse("/ext/session/a1Gw/gw-1/combine/logout", payload, "a1Gw", "gw-1")
    ///         .unwrap();
    /// let data = serde_json::json!({"productKey": "a1Sub", "deviceName": "s-1"});
    /// let reply = request.reply(AlinkCode::NO_SESSION, &data);
    /// assert_eq!(reply.topic, "/ext/session/a1Gw/gw-1/combine/logout_reply");
    /// assert_eq!(
    ///     reply.payload,
    ///     br#"{"id":"5","code":520,"message":"device no session","data":{"deviceName":"s-1","productKey":"a1Sub"}}"#
    /// );
    /// ```
    pub fn reply(&self, code: AlinkCode, data: &Value) -> Downlink {
        #[derive(Serialize)]
        struct Reply<'a> {
            id: &'a RawValue,
            code: u32,
            message: &'a str,
            data: &'a Value,
        }
        let payload = serde_json::to_vec(&Reply {
            id: &self.reply_to.id,
            code: code.code,
            message: code.message,
            data,
        })
        .unwrap_or_default();
        Downlink {
            topic: self.reply_to.topic.clone(),
            payload,
        }
    }
}

/// How the fields of a sub-device's proof are spelt: in the gateway's MQTT requests
/// (`productKey`, `clientId`, `signMethod` or `signmethod`, …) or in the OpenAPI's `TopoInfo`
/// (`ProductKey`, `ClientId`, `SignMethod`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProofSpelling {
    /// camelCase, as the SDKs send it.
    Device,
    /// PascalCase, as `AddThingTopo` takes it.
    OpenApi,
}

impl ProofSpelling {
    fn name(self, camel: &'static str) -> String {
        match self {
            ProofSpelling::Device => camel.to_owned(),
            ProofSpelling::OpenApi => {
                let mut chars = camel.chars();
                chars
                    .next()
                    .map(|first| first.to_ascii_uppercase())
                    .into_iter()
                    .chain(chars)
                    .collect()
            }
        }
    }
}

/// A sub-device's proof (identity, `clientId`, `timestamp`, sign method and `sign`) read from
/// one JSON object: an entry of `thing/topo/add`, a login, or the OpenAPI's `TopoInfo`. Numbers
/// are read as their decimal text (the Node SDK's `timestamp`).
///
/// ```
/// use aliot_services::gateway::{ProofSpelling, read_proof};
///
/// let entry = serde_json::json!({"ProductKey": "a1Sub", "DeviceName": "s-1",
///     "ClientId": "a1Sub&s-1", "Timestamp": 1581417203000u64, "SignMethod": "hmacSha1",
///     "Sign": "ab".repeat(20)});
/// let proof = read_proof(&entry, ProofSpelling::OpenApi).unwrap();
/// assert_eq!(proof.identity().device_name, "s-1");
/// assert!(read_proof(&entry, ProofSpelling::Device).is_err());
/// ```
pub fn read_proof(entry: &Value, spelling: ProofSpelling) -> Result<SubDeviceProof, AlinkCode> {
    proof(entry, None, spelling)
}

/// The 520 reply to a thing-model request a gateway made for a sub-device it has not logged in
/// (PLATFORM-PROTOCOLS §4.6, ours): `None` when `topic` is no thing-model request topic, or the
/// request asked for no reply.
///
/// ```
/// use aliot_services::gateway::not_logged_in_reply;
///
/// let topic = "/sys/a1Sub/s-1/thing/event/property/post";
/// let reply = not_logged_in_reply(topic, br#"{"id":"8","params":{}}"#).unwrap();
/// assert_eq!(reply.topic, "/sys/a1Sub/s-1/thing/event/property/post_reply");
/// assert!(reply.payload.starts_with(br#"{"id":"8","code":520"#));
/// assert!(not_logged_in_reply("/a1Sub/s-1/user/update", b"{}").is_none());
/// ```
pub fn not_logged_in_reply(topic: &str, payload: &[u8]) -> Option<Downlink> {
    let sys = topic.strip_prefix("/sys/")?;
    let (_product_key, rest) = sys.split_once('/')?;
    let (_device_name, rest) = rest.split_once('/')?;
    let method = AlinkMethod::from_topic_rest(rest)?;
    let request = AlinkRequest::parse(method, topic, payload);
    request.reply_to.reply(
        AlinkCode::NO_SESSION,
        &Value::Object(Default::default()),
        &request.method.name(),
    )
}

/// How a gateway's topology changed on the server side (`thing/topo/change`'s `status`;
/// PLATFORM-PROTOCOLS §4.1: the documents disagree on 2 and 8, ours follow the newer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopologyChange {
    /// 0: sub-devices added.
    Added = 0,
    /// 1: sub-devices removed.
    Removed = 1,
    /// 2: sub-devices enabled.
    Enabled = 2,
    /// 8: sub-devices disabled.
    Disabled = 8,
}

/// The push that tells a gateway its topology changed:
/// `/sys/{pk}/{dn}/thing/topo/change` with `{"id","version","params":{"status","subList"},
/// "method":"thing.topo.change"}`.
///
/// ```
/// use aliot_auth::DeviceIdentity;
/// use aliot_services::gateway::{TopologyChange, topology_change};
///
/// let gateway = DeviceIdentity::new("a1Gw", "gw-1");
/// let push = topology_change(&gateway, 7, TopologyChange::Removed, &[DeviceIdentity::new("a1Sub", "s-1")]);
/// assert_eq!(push.topic, "/sys/a1Gw/gw-1/thing/topo/change");
/// assert_eq!(
///     push.payload,
///     br#"{"id":"7","version":"1.0","params":{"status":1,"subList":[{"deviceName":"s-1","productKey":"a1Sub"}]},"method":"thing.topo.change"}"#
/// );
/// ```
pub fn topology_change(
    gateway: &DeviceIdentity,
    id: u64,
    change: TopologyChange,
    subs: &[DeviceIdentity],
) -> Downlink {
    #[derive(Serialize)]
    struct Params {
        status: u8,
        #[serde(rename = "subList")]
        sub_list: Value,
    }
    #[derive(Serialize)]
    struct Push<'a> {
        id: String,
        version: &'a str,
        params: Params,
        method: &'a str,
    }
    let payload = serde_json::to_vec(&Push {
        id: format!("{id}"),
        version: "1.0",
        params: Params {
            status: change as u8,
            sub_list: identities_data(subs),
        },
        method: "thing.topo.change",
    })
    .unwrap_or_default();
    Downlink {
        topic: format!(
            "/sys/{}/{}/thing/topo/change",
            gateway.product_key, gateway.device_name
        ),
        payload,
    }
}

/// The gateway request a topic names, if it is one of the gateway's.
fn kind_of(topic: &str, product_key: &str, device_name: &str) -> Option<Kind> {
    let rest = topic.strip_prefix('/')?;
    if let Some(sys) = rest.strip_prefix("sys/") {
        return match own_rest(sys, product_key, device_name)? {
            "thing/topo/add" => Some(Kind::TopoAdd),
            "thing/topo/delete" => Some(Kind::TopoDelete),
            "thing/topo/get" => Some(Kind::TopoGet),
            "thing/list/found" => Some(Kind::ListFound),
            "thing/sub/register" => Some(Kind::SubRegister),
            "thing/proxy/provisioning/product_register" => Some(Kind::ProductRegister),
            _ => None,
        };
    }
    let session = rest.strip_prefix("ext/session/")?;
    match own_rest(session, product_key, device_name)? {
        "combine/login" => Some(Kind::Login),
        "combine/batch_login" => Some(Kind::BatchLogin),
        "combine/logout" => Some(Kind::Logout),
        "combine/batch_logout" => Some(Kind::BatchLogout),
        _ => None,
    }
}

fn read_op(kind: Kind, params: Option<Value>) -> Result<GatewayOp, AlinkCode> {
    let bad = AlinkCode::BAD_PARAMS;
    // C 4.x sends `topo/get`'s params as the string "{}"; nothing in them is read.
    if kind == Kind::TopoGet {
        return Ok(GatewayOp::TopoGet);
    }
    let params = params.ok_or(bad)?;
    Ok(match kind {
        Kind::TopoAdd => {
            let entries = list(&params, MAX_TOPO_ADD)?;
            GatewayOp::TopoAdd(
                entries
                    .iter()
                    .map(|entry| proof(entry, None, ProofSpelling::Device))
                    .collect::<Result<_, _>>()?,
            )
        }
        Kind::TopoDelete => GatewayOp::TopoDelete(identities(&params, MAX_TOPO_ADD)?),
        Kind::TopoGet => GatewayOp::TopoGet,
        Kind::ListFound => GatewayOp::ListFound(identities(&params, MAX_FOUND)?),
        Kind::SubRegister => GatewayOp::SubRegister(identities(&params, MAX_TOPO_ADD)?),
        Kind::ProductRegister => {
            let proxieds = params.get("proxieds").ok_or(bad)?;
            let entries = list(proxieds, MAX_TOPO_ADD)?;
            GatewayOp::ProductRegister(
                entries
                    .iter()
                    .map(|entry| {
                        Ok(ProxiedRegistration {
                            identity: identity(entry)?,
                            random: text(entry, "random").ok_or(bad)?,
                            sign_method: sign_method(entry, None).ok_or(bad)?,
                            sign: text(entry, "sign").ok_or(bad)?,
                        })
                    })
                    .collect::<Result<_, AlinkCode>>()?,
            )
        }
        Kind::Login => GatewayOp::Login(login(&params, None)?),
        Kind::BatchLogin => {
            // The SDKs put `signMethod` beside `deviceList`; the docs put it in each entry.
            let shared = sign_method(&params, None);
            let entries = list(params.get("deviceList").ok_or(bad)?, MAX_BATCH)?;
            GatewayOp::BatchLogin(
                entries
                    .iter()
                    .map(|entry| login(entry, shared.as_deref()))
                    .collect::<Result<_, _>>()?,
            )
        }
        Kind::Logout => GatewayOp::Logout(identity(&params)?),
        Kind::BatchLogout => GatewayOp::BatchLogout(identities(&params, MAX_BATCH)?),
    })
}

/// A JSON array of 1 to `max` entries.
fn list(value: &Value, max: usize) -> Result<&[Value], AlinkCode> {
    match value.as_array() {
        Some(entries) if !entries.is_empty() && entries.len() <= max => Ok(entries),
        _ => Err(AlinkCode::BAD_PARAMS),
    }
}

fn identities(value: &Value, max: usize) -> Result<Vec<DeviceIdentity>, AlinkCode> {
    list(value, max)?.iter().map(identity).collect()
}

/// `productKey` and `deviceName`, both non-empty strings.
fn identity(entry: &Value) -> Result<DeviceIdentity, AlinkCode> {
    let product_key = text(entry, "productKey").filter(|text| !text.is_empty());
    let device_name = text(entry, "deviceName").filter(|text| !text.is_empty());
    match (product_key, device_name) {
        (Some(product_key), Some(device_name)) => Ok(DeviceIdentity {
            product_key,
            device_name,
        }),
        _ => Err(AlinkCode::BAD_PARAMS),
    }
}

/// A string field, or a number in decimal (the Node SDK's `timestamp`).
fn text(entry: &Value, name: &str) -> Option<String> {
    match entry.get(name)? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(format!("{number}")),
        _ => None,
    }
}

/// `signMethod`, or `signmethod` (C 4.x's topo add), or the batch's.
fn sign_method(entry: &Value, shared: Option<&str>) -> Option<String> {
    text(entry, "signMethod")
        .or_else(|| text(entry, "signmethod"))
        .or_else(|| shared.map(ToOwned::to_owned))
}

fn proof(
    entry: &Value,
    shared_method: Option<&str>,
    spelling: ProofSpelling,
) -> Result<SubDeviceProof, AlinkCode> {
    let bad = AlinkCode::BAD_PARAMS;
    let field = |camel: &'static str| text(entry, &spelling.name(camel)).ok_or(bad);
    let method = match spelling {
        ProofSpelling::Device => sign_method(entry, shared_method).ok_or(bad)?,
        ProofSpelling::OpenApi => field("signMethod")?,
    };
    let identity = DeviceIdentity::new(field("productKey")?, field("deviceName")?);
    if identity.product_key.is_empty() || identity.device_name.is_empty() {
        return Err(bad);
    }
    SubDeviceProof::new(
        identity,
        field("clientId")?,
        field("timestamp")?,
        &method,
        &field("sign")?,
    )
    .map_err(|_| bad)
}

fn login(entry: &Value, shared_method: Option<&str>) -> Result<SubDeviceLogin, AlinkCode> {
    let clean_session = match entry.get("cleanSession") {
        None => false,
        Some(Value::String(text)) if text == "true" => true,
        Some(Value::String(text)) if text == "false" => false,
        Some(Value::Bool(clean)) => *clean,
        Some(_) => return Err(AlinkCode::BAD_PARAMS),
    };
    Ok(SubDeviceLogin {
        proof: proof(entry, shared_method, ProofSpelling::Device)?,
        clean_session,
    })
}

/// `[{"productKey","deviceName"},…]`: the `data` of a topology or batch reply.
pub fn identities_data<'a>(identities: impl IntoIterator<Item = &'a DeviceIdentity>) -> Value {
    Value::Array(identities.into_iter().map(identity_data).collect())
}

/// `{"productKey","deviceName"}`: the `data` of a login or logout reply.
pub fn identity_data(identity: &DeviceIdentity) -> Value {
    let mut object = serde_json::Map::new();
    object.insert(
        "productKey".into(),
        Value::String(identity.product_key.clone()),
    );
    object.insert(
        "deviceName".into(),
        Value::String(identity.device_name.clone()),
    );
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aliot_auth::{SignMethod, subdevice_sign};
    use alloc::string::ToString;

    const GW: (&str, &str) = ("a1GwProd001", "gw-1");

    fn parse(topic: &str, payload: &str) -> GatewayRequest {
        GatewayRequest::parse(topic, payload.as_bytes(), GW.0, GW.1).expect("a gateway topic")
    }

    fn signed_entry(dn: &str, method: SignMethod, method_name: &str) -> Value {
        let sub = DeviceIdentity::new("a1SubProd01", dn);
        let client_id = format!("a1SubProd01.{dn}|_ss=1|");
        let sign = subdevice_sign(b"secret", &sub, &client_id, "1581417203000", method);
        serde_json::json!({
            "productKey": "a1SubProd01", "deviceName": dn, "clientId": client_id,
            "timestamp": "1581417203000", "signMethod": method_name, "sign": sign,
        })
    }

    #[test]
    fn only_the_gateways_own_topics_are_gateway_requests() {
        let payload = br#"{"id":"1","params":{}}"#;
        for topic in [
            "/sys/a1GwProd001/gw-2/thing/topo/get",
            "/ext/session/a1Other/gw-1/combine/login",
            "/sys/a1GwProd001/gw-1/thing/topo/get/more",
            "/sys/a1GwProd001/gw-1/thing/event/property/post",
            "/ext/session/a1GwProd001/gw-1/combine/login_reply",
        ] {
            assert_eq!(
                GatewayRequest::parse(topic, payload, GW.0, GW.1),
                None,
                "{topic}"
            );
        }
    }

    #[test]
    fn a_login_carries_the_sub_devices_proof_and_session_choice() {
        let mut entry = signed_entry("s-1", SignMethod::HmacSha256, "hmacSha256");
        entry["cleanSession"] = Value::String("true".into());
        let payload = serde_json::json!({"id": "123", "params": entry}).to_string();
        let request = parse("/ext/session/a1GwProd001/gw-1/combine/login", &payload);
        let Ok(GatewayOp::Login(login)) = &request.op else {
            panic!("{:?}", request.op)
        };
        assert!(login.clean_session);
        assert!(login.proof.matches(b"secret"));
        assert_eq!(
            login.proof.identity(),
            &DeviceIdentity::new("a1SubProd01", "s-1")
        );
        let reply = request.reply(AlinkCode::SUCCESS, &identity_data(login.proof.identity()));
        assert_eq!(
            reply.topic,
            "/ext/session/a1GwProd001/gw-1/combine/login_reply"
        );
        assert_eq!(
            core::str::from_utf8(&reply.payload).unwrap(),
            r#"{"id":"123","code":200,"message":"success","data":{"deviceName":"s-1","productKey":"a1SubProd01"}}"#
        );
    }

    #[test]
    fn the_node_sdks_topo_add_with_a_numeric_timestamp_is_read() {
        let sub = DeviceIdentity::new("a1SubProd01", "s-2");
        let sign = subdevice_sign(
            b"secret",
            &sub,
            "a1SubProd01&s-2",
            "1581417203000",
            SignMethod::HmacSha1,
        );
        let payload = serde_json::json!({"id": 7, "params": [{
            "productKey": "a1SubProd01", "deviceName": "s-2", "clientId": "a1SubProd01&s-2",
            "timestamp": 1581417203000u64, "signMethod": "hmacsha1", "sign": sign,
        }]})
        .to_string();
        let request = parse("/sys/a1GwProd001/gw-1/thing/topo/add", &payload);
        let Ok(GatewayOp::TopoAdd(proofs)) = &request.op else {
            panic!("{:?}", request.op)
        };
        assert_eq!(proofs.len(), 1);
        assert!(proofs[0].matches(b"secret"));
        let reply = request.reply(AlinkCode::SUCCESS, &identities_data([&sub]));
        assert!(reply.payload.starts_with(br#"{"id":7,"code":200"#));
    }

    #[test]
    fn a_batch_login_takes_the_shared_sign_method() {
        let mut first = signed_entry("s-1", SignMethod::HmacSha256, "unused");
        let mut second = signed_entry("s-2", SignMethod::HmacSha256, "unused");
        first.as_object_mut().unwrap().remove("signMethod");
        second.as_object_mut().unwrap().remove("signMethod");
        let payload = serde_json::json!({"id": "9", "version": "1.0", "params": {
            "signMethod": "hmacSha256", "deviceList": [first, second],
        }})
        .to_string();
        let request = parse(
            "/ext/session/a1GwProd001/gw-1/combine/batch_login",
            &payload,
        );
        let Ok(GatewayOp::BatchLogin(logins)) = &request.op else {
            panic!("{:?}", request.op)
        };
        assert_eq!(logins.len(), 2);
        assert!(logins.iter().all(|login| login.proof.matches(b"secret")));
        assert!(logins.iter().all(|login| !login.clean_session));
    }

    #[test]
    fn c_4x_topo_get_with_params_as_a_string_is_read() {
        let request = parse(
            "/sys/a1GwProd001/gw-1/thing/topo/get",
            r#"{"id":"3","params":"{}"}"#,
        );
        assert_eq!(request.op, Ok(GatewayOp::TopoGet));
    }

    #[test]
    fn found_sub_devices_are_read_as_the_docs_send_them() {
        let found = "/sys/a1GwProd001/gw-1/thing/list/found";
        let request = parse(
            found,
            r#"{"id":"8","version":"1.0","params":[{"productKey":"a13Npv1vjZ4","deviceName":"example1"}],"method":"thing.list.found"}"#,
        );
        assert_eq!(
            request.op,
            Ok(GatewayOp::ListFound(alloc::vec![DeviceIdentity::new(
                "a13Npv1vjZ4",
                "example1"
            )]))
        );
        assert_eq!(request.reply_to.topic, format!("{found}_reply"));
        // None, or more than a batch, or one without a name: refused.
        let bad = Err(AlinkCode::BAD_PARAMS);
        assert_eq!(parse(found, r#"{"id":"9","params":[]}"#).op, bad);
        let many: Vec<_> = (0..=MAX_FOUND)
            .map(|i| serde_json::json!({"productKey": "a1", "deviceName": format!("d{i}")}))
            .collect();
        let payload = serde_json::json!({"id": "10", "params": many}).to_string();
        assert_eq!(parse(found, &payload).op, bad);
        let nameless = r#"{"id":"11","params":[{"productKey":"a1"}]}"#;
        assert_eq!(parse(found, nameless).op, bad);
    }

    #[test]
    fn malformed_requests_get_the_platforms_codes() {
        let login = "/ext/session/a1GwProd001/gw-1/combine/login";
        assert_eq!(parse(login, "not json").op, Err(AlinkCode::NOT_JSON));
        assert_eq!(parse(login, "[1]").op, Err(AlinkCode::NOT_JSON));
        assert_eq!(parse(login, r#"{"id":"1"}"#).op, Err(AlinkCode::BAD_PARAMS));
        assert_eq!(
            parse(
                login,
                r#"{"id":"1","params":{"productKey":"a1SubProd01","deviceName":"s"}}"#
            )
            .op,
            Err(AlinkCode::BAD_PARAMS),
            "no proof"
        );
        let mut unknown = signed_entry("s-1", SignMethod::HmacSha256, "Sha256");
        unknown["cleanSession"] = Value::String("maybe".into());
        let payload = serde_json::json!({"id": "1", "params": unknown}).to_string();
        assert_eq!(parse(login, &payload).op, Err(AlinkCode::BAD_PARAMS));
        let too_many: Vec<Value> = (0..=MAX_BATCH)
            .map(|i| serde_json::json!({"productKey": "a1SubProd01", "deviceName": format!("s-{i}")}))
            .collect();
        let payload = serde_json::json!({"id": "1", "params": too_many}).to_string();
        assert_eq!(
            parse(
                "/ext/session/a1GwProd001/gw-1/combine/batch_logout",
                &payload
            )
            .op,
            Err(AlinkCode::BAD_PARAMS)
        );
        // An id that cannot be echoed: 460, answered with id "0".
        let request = parse(login, r#"{"id":{"x":1},"params":{}}"#);
        assert_eq!(request.op, Err(AlinkCode::BAD_PARAMS));
        assert!(
            request
                .reply(AlinkCode::BAD_PARAMS, &Value::Null)
                .payload
                .starts_with(br#"{"id":"0","code":460"#)
        );
    }

    #[test]
    fn product_register_reads_each_proxied_devices_proof() {
        let payload = r#"{"id":"4","params":{"proxieds":[{"productKey":"a1SubProd01","deviceName":"s-9","random":"abc","signMethod":"hmacSha256","sign":"00ff"}]}}"#;
        let request = parse(
            "/sys/a1GwProd001/gw-1/thing/proxy/provisioning/product_register",
            payload,
        );
        let Ok(GatewayOp::ProductRegister(proxieds)) = &request.op else {
            panic!("{:?}", request.op)
        };
        assert_eq!(
            proxieds[0].identity,
            DeviceIdentity::new("a1SubProd01", "s-9")
        );
        assert_eq!(proxieds[0].random, "abc");
    }
}
