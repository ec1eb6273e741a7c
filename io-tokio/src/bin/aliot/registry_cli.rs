//! `aliot product ...` and `aliot device ...`: the registry of a running broker, through its
//! HTTP API (the JSON endpoints named after the platform's actions), printed as tables or, with
//! `--json`, as the API's answer.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// How long a call to the API may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the broker's API is and how to call it.
#[derive(Args)]
pub struct ApiArgs {
    /// The broker's HTTP API.
    #[arg(
        long,
        value_name = "URL",
        env = "ALIOT_API",
        default_value = "http://127.0.0.1:8080"
    )]
    api: String,
    /// The API's bearer token, if it has one.
    #[arg(long, value_name = "TOKEN", env = "ALIOT_API_TOKEN")]
    token: Option<String>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// `aliot product ...`.
#[derive(Subcommand)]
pub enum ProductCommand {
    /// Make a product (its key is generated).
    Create {
        /// Its name.
        name: String,
        /// Its description.
        #[arg(long)]
        description: Option<String>,
    },
    /// List the products.
    List,
    /// Show one product.
    Show {
        /// Its key.
        product_key: String,
    },
    /// Delete a product without devices.
    Delete {
        /// Its key.
        product_key: String,
    },
}

/// `aliot device ...`.
#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Register a device (its secret is generated; its name too, when not given).
    Add {
        /// Its product.
        product_key: String,
        /// Its name (4–32 characters).
        device_name: Option<String>,
        /// A nickname.
        #[arg(long)]
        nickname: Option<String>,
    },
    /// List a product's devices.
    List {
        /// The product.
        product_key: String,
    },
    /// Show one device, its secret and status.
    Show {
        /// Its product.
        product_key: String,
        /// Its name.
        device_name: String,
    },
    /// Disable a device: disconnected, and refused at CONNECT until enabled.
    Disable {
        /// Its product.
        product_key: String,
        /// Its name.
        device_name: String,
    },
    /// Enable a disabled device.
    Enable {
        /// Its product.
        product_key: String,
        /// Its name.
        device_name: String,
    },
    /// Make a device inactive again (it may register itself again).
    Reset {
        /// Its product.
        product_key: String,
        /// Its name.
        device_name: String,
    },
    /// Delete a device (and its session).
    Delete {
        /// Its product.
        product_key: String,
        /// Its name.
        device_name: String,
    },
}

/// A failed call, for the exit code and the message.
struct Failed(String);

/// `POST {api}/{action}` with a JSON body; the JSON answer of a 200, else the API's message.
fn call(api: &ApiArgs, action: &str, body: &Value) -> Result<Value, Failed> {
    let rest = api
        .api
        .strip_prefix("http://")
        .ok_or_else(|| Failed(format!("--api {}: only http:// URLs are served", api.api)))?;
    let authority = rest.trim_end_matches('/');
    let addr = authority
        .to_socket_addrs()
        .map_err(|error| Failed(format!("--api {}: {error}", api.api)))?
        .next()
        .ok_or_else(|| Failed(format!("--api {}: no address", api.api)))?;
    let mut stream = TcpStream::connect_timeout(&addr, CALL_TIMEOUT)
        .map_err(|error| Failed(format!("cannot reach the API at {addr}: {error}")))?;
    let _ = stream.set_read_timeout(Some(CALL_TIMEOUT));
    let body = body.to_string();
    let mut request = format!(
        "POST /{action} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = &api.token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream
        .write_all(request.as_bytes())
        .map_err(|error| Failed(format!("sending to the API: {error}")))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|error| Failed(format!("reading the API's answer: {error}")))?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| Failed("the API's answer is not HTTP".into()))?;
    let status = head.split(' ').nth(1).unwrap_or_default();
    let value: Value = serde_json::from_str(body)
        .map_err(|_| Failed(format!("the API answered {status}: {body}")))?;
    if status != "200" {
        let code = value["Code"].as_str().unwrap_or("?");
        let message = value["Message"].as_str().unwrap_or_default();
        return Err(Failed(format!("{action}: {code}: {message}")));
    }
    Ok(value)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Prints rows as a table: a header, then each row, columns padded.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Prints `key: value` lines of an object's fields.
fn fields(object: &Value, keys: &[&str]) {
    for key in keys {
        println!("{key}: {}", text(&object[*key]));
    }
}

fn finish(api: &ApiArgs, result: Result<Value, Failed>, show: impl FnOnce(&Value)) -> ExitCode {
    match result {
        Ok(value) if api.json => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Ok(value) => {
            show(&value);
            ExitCode::SUCCESS
        }
        Err(Failed(message)) => {
            eprintln!("aliot: {message}");
            ExitCode::from(1)
        }
    }
}

const PRODUCT_KEYS: [&str; 6] = [
    "ProductKey",
    "ProductName",
    "ProductSecret",
    "DeviceCount",
    "Description",
    "GmtCreate",
];

/// Runs `aliot product ...`.
pub fn product(api: &ApiArgs, command: ProductCommand) -> ExitCode {
    match command {
        ProductCommand::Create { name, description } => finish(
            api,
            call(
                api,
                "CreateProduct",
                &json!({"ProductName": name, "Description": description}),
            ),
            |answer| fields(&answer["Data"], &PRODUCT_KEYS),
        ),
        ProductCommand::List => finish(
            api,
            call(api, "QueryProductList", &json!({"PageSize": 200})),
            |answer| {
                let rows: Vec<Vec<String>> = answer["Data"]["List"]["ProductInfo"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|product| {
                        ["ProductKey", "ProductName", "DeviceCount"]
                            .iter()
                            .map(|key| text(&product[*key]))
                            .collect()
                    })
                    .collect();
                table(&["PRODUCT KEY", "NAME", "DEVICES"], &rows);
            },
        ),
        ProductCommand::Show { product_key } => finish(
            api,
            call(api, "QueryProduct", &json!({"ProductKey": product_key})),
            |answer| fields(&answer["Data"], &PRODUCT_KEYS),
        ),
        ProductCommand::Delete { product_key } => finish(
            api,
            call(api, "DeleteProduct", &json!({"ProductKey": product_key})),
            |_| println!("deleted product {product_key}"),
        ),
    }
}

const DEVICE_KEYS: [&str; 8] = [
    "ProductKey",
    "DeviceName",
    "DeviceSecret",
    "IotId",
    "Status",
    "Nickname",
    "UtcCreate",
    "UtcActive",
];

/// Runs `aliot device ...`.
pub fn device(api: &ApiArgs, command: DeviceCommand) -> ExitCode {
    let named = |pk: &str, dn: &str| json!({"ProductKey": pk, "DeviceName": dn});
    match command {
        DeviceCommand::Add {
            product_key,
            device_name,
            nickname,
        } => finish(
            api,
            call(
                api,
                "RegisterDevice",
                &json!({"ProductKey": product_key, "DeviceName": device_name, "Nickname": nickname}),
            ),
            |answer| {
                fields(
                    &answer["Data"],
                    &["ProductKey", "DeviceName", "DeviceSecret", "IotId"],
                )
            },
        ),
        DeviceCommand::List { product_key } => finish(
            api,
            call(
                api,
                "QueryDevice",
                &json!({"ProductKey": product_key, "PageSize": 200}),
            ),
            |answer| {
                let rows: Vec<Vec<String>> = answer["Data"]["DeviceInfo"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|device| {
                        ["DeviceName", "Status", "IotId", "UtcCreate"]
                            .iter()
                            .map(|key| text(&device[*key]))
                            .collect()
                    })
                    .collect();
                table(&["DEVICE NAME", "STATUS", "IOT ID", "CREATED"], &rows);
            },
        ),
        DeviceCommand::Show {
            product_key,
            device_name,
        } => finish(
            api,
            call(api, "QueryDeviceDetail", &named(&product_key, &device_name)),
            |answer| fields(&answer["Data"], &DEVICE_KEYS),
        ),
        DeviceCommand::Disable {
            product_key,
            device_name,
        } => finish(
            api,
            call(api, "DisableThing", &named(&product_key, &device_name)),
            |_| println!("disabled {product_key}/{device_name}"),
        ),
        DeviceCommand::Enable {
            product_key,
            device_name,
        } => finish(
            api,
            call(api, "EnableThing", &named(&product_key, &device_name)),
            |_| println!("enabled {product_key}/{device_name}"),
        ),
        DeviceCommand::Reset {
            product_key,
            device_name,
        } => finish(
            api,
            call(api, "ResetThing", &named(&product_key, &device_name)),
            |_| println!("reset {product_key}/{device_name}: inactive"),
        ),
        DeviceCommand::Delete {
            product_key,
            device_name,
        } => finish(
            api,
            call(api, "DeleteDevice", &named(&product_key, &device_name)),
            |_| println!("deleted {product_key}/{device_name}"),
        ),
    }
}
