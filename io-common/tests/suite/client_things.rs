//! The device services on the client (`post_properties`, `on_property_set`, `on_service`,
//! `ntp_sync`, the shadow, OTA) against the broker's side of them: the client announces
//! `_ss=1` and `ext=1`, so it subscribes to nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aliot_core::codec::QoS;
use aliot_core::hub::{DeviceDelivery, RrpcOutcome};
use aliot_io::Runtime;
use aliot_io::broker::BrokerHandle;
use aliot_io::client::{Client, ThingAnswer, ThingError};
use aliot_io::runtime::sleep;
use aliot_services::{DownlinkResult, OtaJob, OtaSignMethod, RrpcForm, ShadowRequest};
use serde_json::{Value, json};

use crate::support::*;

/// Device `n`'s client, connected with the default options (no SUBSCRIBE).
async fn thing_device<R: Runtime>(addr: std::net::SocketAddr, n: u8) -> Client<R> {
    Client::<R>::connect(device_options(addr, n)).await.unwrap()
}

/// The broker's latest downlink result of device `n` that `matches`, within [`WAIT`].
async fn downlink_result<R: Runtime>(
    handle: &BrokerHandle,
    n: u8,
    matches: impl Fn(&DownlinkResult) -> bool,
) -> DownlinkResult {
    let (identity, _) = device(n);
    within::<R, _>("the device's answer as a downlink result", async {
        loop {
            let results = handle.downlink_results().await.unwrap();
            if let Some((_, result)) = results
                .into_iter()
                .rev()
                .find(|(device, result)| *device == identity && matches(result))
            {
                return result;
            }
            // A short pause between two questions to the hub.
            sleep(&R::default(), Duration::from_millis(5)).await;
        }
    })
    .await
}

pub async fn post_properties_resolves_with_the_platforms_reply<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = thing_device::<R>(addr, 1).await;
    let reply = within::<R, _>(
        "the property post reply",
        client.post_properties(json!({"Power":1,"Temp":21.5})),
    )
    .await
    .unwrap();
    assert!(reply.is_success(), "{reply:?}");
    assert_eq!(reply.code, 200);
    let (identity, _) = device(1);
    let state = broker
        .handle()
        .device_state(&identity)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.property("Power").unwrap().value, 1);
    assert_eq!(state.property("Temp").unwrap().value, 21.5);
    // Successive posts get their own replies.
    for power in 2..5 {
        let reply = client
            .post_properties(json!({ "Power": power }))
            .await
            .unwrap();
        assert_eq!(reply.code, 200);
    }
    let state = broker
        .handle()
        .device_state(&identity)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.property("Power").unwrap().value, 4);
    drop(client);
    broker.shutdown().await;
}

pub async fn post_event_resolves_and_a_bad_identifier_is_refused<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = thing_device::<R>(addr, 2).await;
    let reply = within::<R, _>(
        "the event post reply",
        client.post_event("alarm", json!({"level":2})),
    )
    .await
    .unwrap();
    assert_eq!(reply.code, 200);
    assert_eq!(
        reply.method,
        aliot_services::AlinkMethod::EventPost("alarm".into())
    );
    assert_eq!(
        client.post_event("a/b", json!({})).await,
        Err(ThingError::InvalidIdentifier("a/b".into()))
    );
    drop(client);
    broker.shutdown().await;
}

pub async fn without_auto_subscription_no_reply_comes_and_the_call_times_out<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let mut options = device_options(addr, 3);
    options.announce_features = false;
    options.reply_timeout = Duration::from_millis(300);
    let client = Client::<R>::connect(options).await.unwrap();
    let result = within::<R, _>("the timeout", client.post_properties(json!({"a":1}))).await;
    assert_eq!(result, Err(ThingError::Timeout(Duration::from_millis(300))));
    drop(client);
    broker.shutdown().await;
}

pub async fn on_property_set_answers_and_the_platform_gets_the_result<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = thing_device::<R>(addr, 1).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sets = Arc::clone(&seen);
    client.on_property_set(move |set| {
        sets.lock().unwrap().push(set.params.clone());
        ThingAnswer::done()
    });
    let (identity, _) = device(1);
    let (id, delivery) = broker
        .handle()
        .set_device_property(&identity, json!({"Light":1}))
        .await
        .unwrap();
    assert_eq!(delivery, DeviceDelivery::Sent);
    let result = downlink_result::<R>(&broker.handle(), 1, |result| {
        result.request_id == Some(id.0)
    })
    .await;
    assert_eq!(result.code, 200);
    assert!(result.topic.ends_with("/thing/service/property/set"));
    assert_eq!(*seen.lock().unwrap(), [json!({"Light":1})]);
    drop(client);
    broker.shutdown().await;
}

/// A handler runs in the client's task: one that sets a handler must not wait for itself.
pub async fn a_handler_may_set_handlers<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = thing_device::<R>(addr, 1).await;
    let inner = client.clone();
    client.on_property_set(move |_| {
        // A service appears once the device is configured.
        inner.on_service("reboot", |_| {
            ThingAnswer::success(json!({"rebooted": true}))
        });
        ThingAnswer::done()
    });
    let (identity, _) = device(1);
    let handle = broker.handle();
    let (id, _) = handle
        .set_device_property(&identity, json!({"Mode":1}))
        .await
        .unwrap();
    downlink_result::<R>(&handle, 1, |result| result.request_id == Some(id.0)).await;
    let (call, _) = handle
        .invoke_service(&identity, "reboot", json!({}))
        .await
        .unwrap();
    let result = downlink_result::<R>(&handle, 1, |result| result.request_id == Some(call.0)).await;
    assert_eq!(result.data, json!({"rebooted": true}));
    // And the client still answers its own requests.
    let reply = within::<R, _>(
        "a property post reply",
        client.post_properties(json!({"a": 1})),
    )
    .await
    .unwrap();
    assert!(reply.is_success());
    drop(client);
    broker.shutdown().await;
}

pub async fn an_unhandled_property_set_goes_to_messages<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = thing_device::<R>(addr, 4).await;
    let messages = client.messages();
    let (identity, _) = device(4);
    broker
        .handle()
        .set_device_property(&identity, json!({"Light":0}))
        .await
        .unwrap();
    let message = next_message::<R>(&messages).await;
    assert!(
        message
            .topic
            .as_str()
            .ends_with("/thing/service/property/set")
    );
    drop(client);
    broker.shutdown().await;
}

pub async fn on_service_answers_async_calls_on_their_reply_topic<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = thing_device::<R>(addr, 2).await;
    client.on_service("add", |call| {
        assert_eq!(call.rrpc, None);
        let sum = call.params["a"].as_i64().unwrap_or(0) + call.params["b"].as_i64().unwrap_or(0);
        ThingAnswer::success(json!({ "sum": sum }))
    });
    let (identity, _) = device(2);
    let (id, delivery) = broker
        .handle()
        .invoke_service(&identity, "add", json!({"a":1,"b":2}))
        .await
        .unwrap();
    assert_eq!(delivery, DeviceDelivery::Sent);
    let result = downlink_result::<R>(&broker.handle(), 2, |result| {
        result.request_id == Some(id.0)
    })
    .await;
    assert_eq!((result.code, result.data), (200, json!({"sum":3})));
    drop(client);
    broker.shutdown().await;
}

pub async fn on_service_answers_sync_calls_over_rrpc<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = thing_device::<R>(addr, 3).await;
    let forms = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&forms);
    client.on_any_service(move |call| {
        seen.lock().unwrap().push((
            call.identifier.clone(),
            call.rrpc.as_ref().map(|rrpc| rrpc.form),
        ));
        ThingAnswer::success(json!({"echo": call.params.clone()}))
    });
    let (identity, _) = device(3);
    let reply = within::<R, _>(
        "the synchronous service's answer",
        broker
            .handle()
            .invoke_service_sync(&identity, "reboot", json!({"delay":5}), RRPC_TIMEOUT),
    )
    .await
    .unwrap();
    let RrpcOutcome::Success(payload) = reply.outcome else {
        panic!("{:?}", reply.outcome)
    };
    let answer: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(answer["code"], 200);
    assert_eq!(answer["data"], json!({"echo":{"delay":5}}));
    // `ext=1`: the call came in the `/ext/rrpc/…` form.
    assert_eq!(
        *forms.lock().unwrap(),
        [("reboot".to_owned(), Some(RrpcForm::Ext))]
    );
    drop(client);
    broker.shutdown().await;
}

pub async fn ntp_sync_gives_the_time_now<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = thing_device::<R>(addr, 1).await;
    let before = SystemTime::now();
    let synced = within::<R, _>("the NTP response", client.ntp_sync())
        .await
        .unwrap();
    let after = SystemTime::now();
    // The broker's clock is this machine's: the time lies within the call, give or take.
    let slack = Duration::from_millis(50);
    assert!(
        synced + slack >= before && synced <= after + slack,
        "{synced:?}"
    );
    drop(client);
    broker.shutdown().await;
}

pub async fn the_shadow_is_read_updated_and_controlled<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = thing_device::<R>(addr, 2).await;
    let reply = within::<R, _>(
        "the shadow update reply",
        client.update_shadow(json!({"color":"red"}), 1),
    )
    .await
    .unwrap();
    assert!(reply.is_success(), "{reply:?}");
    assert_eq!(reply.version, Some(1));
    let stale = client
        .update_shadow(json!({"color":"blue"}), 1)
        .await
        .unwrap();
    assert_eq!((stale.is_success(), stale.error_code), (false, Some(403)));
    let document = client.get_shadow().await.unwrap();
    assert_eq!(document.reported().unwrap()["color"], "red");
    assert_eq!(document.version, Some(1));

    let (control_sender, control) = tokio_sync::sync::oneshot::channel();
    let control_sender = Mutex::new(Some(control_sender));
    client.on_shadow_control(move |message| {
        if let Some(sender) = control_sender.lock().unwrap().take() {
            let _ = sender.send(message.clone());
        }
    });
    let (identity, _) = device(2);
    let request = ShadowRequest::parse(
        br#"{"method":"update","state":{"desired":{"color":"green"}},"version":2}"#,
    );
    let (version, delivery) = broker
        .handle()
        .update_device_shadow(&identity, request)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((version, delivery), (2, DeviceDelivery::Sent));
    let control = within::<R, _>("the control push", control).await.unwrap();
    assert!(control.is_control());
    assert_eq!(control.desired().unwrap()["color"], "green");
    // Applied: reported, then desired cleared.
    let applied = client
        .update_shadow(json!({"color":"green"}), 3)
        .await
        .unwrap();
    assert!(applied.is_success());
    assert!(client.clear_shadow_desired(4).await.unwrap().is_success());
    let state = broker
        .handle()
        .device_state(&identity)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.shadow().reported()["color"], "green");
    assert!(state.shadow().desired().is_empty());
    drop(client);
    broker.shutdown().await;
}

pub async fn report_version_and_on_upgrade_follow_an_ota_job<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = thing_device::<R>(addr, 3).await;
    within::<R, _>("the version report", client.report_version("MCU", "1.0.0"))
        .await
        .unwrap();
    let (identity, _) = device(3);
    let state = broker
        .handle()
        .device_state(&identity)
        .await
        .unwrap()
        .unwrap();
    let modules: Vec<_> = state
        .ota_modules()
        .map(|(name, module)| (name.to_owned(), module.clone()))
        .collect();
    assert_eq!(modules.len(), 1);
    assert_eq!(modules[0].0, "MCU");

    let (push_sender, push) = tokio_sync::sync::oneshot::channel();
    let push_sender = Mutex::new(Some(push_sender));
    client.on_upgrade(move |upgrade| {
        if let Some(sender) = push_sender.lock().unwrap().take() {
            let _ = sender.send(upgrade.clone());
        }
    });
    let job = OtaJob {
        id: 1626969597470,
        module: "MCU".into(),
        version: "2.0.0".into(),
        url: "https://example.com/fw.bin".into(),
        size: 432945,
        sign_method: OtaSignMethod::Md5,
        sign: "93230c3bde425a9d7984a594ac55ea1e".into(),
    }
    .validated()
    .unwrap();
    let delivery = broker.handle().start_ota(&identity, job).await.unwrap();
    assert_eq!(delivery, DeviceDelivery::Sent);
    let upgrade = within::<R, _>("the upgrade push", push).await.unwrap();
    assert_eq!(
        (
            upgrade.module.as_str(),
            upgrade.version.as_str(),
            upgrade.size
        ),
        ("MCU", "2.0.0", 432945)
    );
    assert_eq!(upgrade.sign_method, Some(OtaSignMethod::Md5));
    assert_eq!(upgrade.url, "https://example.com/fw.bin");
    client.report_progress("MCU", 100, "").await.unwrap();
    client.report_version("MCU", "2.0.0").await.unwrap();
    drop(client);
    broker.shutdown().await;
}

pub async fn without_ext_a_sync_call_comes_in_the_sys_form_and_is_answered_there<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let mut options = device_options(addr, 4);
    options.announce_features = false;
    let client = Client::<R>::connect(options).await.unwrap();
    client
        .subscribe(&[(filter(&rrpc_requests(4)), QoS::AtMostOnce)])
        .await
        .unwrap();
    client.on_service("add", |call| {
        assert_eq!(
            call.rrpc.as_ref().map(|rrpc| rrpc.form),
            Some(RrpcForm::Sys)
        );
        ThingAnswer::success(json!({"sum": 3}))
    });
    let (identity, _) = device(4);
    let reply = within::<R, _>(
        "the synchronous service's answer",
        broker
            .handle()
            .invoke_service_sync(&identity, "add", json!({"a":1,"b":2}), RRPC_TIMEOUT),
    )
    .await
    .unwrap();
    let RrpcOutcome::Success(payload) = reply.outcome else {
        panic!("{:?}", reply.outcome)
    };
    let answer: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        (answer["code"].clone(), answer["data"].clone()),
        (json!(200), json!({"sum":3}))
    );
    // A plain RRPC call on the same topic still goes to `on_rrpc`.
    client.on_rrpc(|_| "plain");
    rrpc_answered::<R>(&broker.handle(), 4, "hello", "plain").await;
    drop(client);
    broker.shutdown().await;
}
