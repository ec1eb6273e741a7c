//! Device `dev-001` of the demo product, against `aliot serve` (or the address given): it
//! answers RRPC calls, reports a property and prints what it receives until Ctrl-C.
use aliot_auth::{DeviceIdentity, DeviceSecret};
use aliot_core::codec::QoS;
use aliot_tokio::client::{Client, ClientOptions, Login};
use aliot_tokio::demo::{DEMO_DEVICES, DEMO_PRODUCT_KEY as PK};
use aliot_topic::{TopicFilter, TopicLimits, TopicName};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: std::net::SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or("127.0.0.1:1883".into())
        .parse()?;
    let (name, secret) = DEMO_DEVICES[0];
    let login = Login::device(DeviceIdentity::new(PK, name), DeviceSecret::new(secret));
    let client = Client::connect(ClientOptions::new(
        addr.ip().to_string(),
        addr.port(),
        login,
    ))
    .await?;
    client.on_rrpc(|request| [b"pong: ".as_slice(), &request.payload].concat());

    let limits = TopicLimits::default();
    let get = TopicFilter::new(&format!("/{PK}/{name}/user/get"), &limits)?;
    let rrpc = TopicFilter::new(&format!("/sys/{PK}/{name}/rrpc/request/+"), &limits)?;
    let codes = client
        .subscribe(&[(get, QoS::AtLeastOnce), (rrpc, QoS::AtMostOnce)])
        .await?;
    let update = TopicName::new(&format!("/{PK}/{name}/user/update"), &limits)?;
    let id = client
        .publish(update, r#"{"temperature":21.5}"#, QoS::AtLeastOnce)
        .await?;
    println!("{name} connected to {addr}: SUBACK {codes:?}, report acknowledged as {id:?}");

    let messages = client.messages();
    loop {
        tokio::select! {
            Some(message) = messages.recv() => println!("{} <- {:?}", message.topic, message.payload),
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.disconnect().await; // DISCONNECT, then close
    Ok(())
}
