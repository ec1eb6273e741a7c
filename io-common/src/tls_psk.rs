//! The device side of TLS-PSK (PLATFORM-PROTOCOLS §7) through OpenSSL (feature `openssl`):
//! what [`ClientOptions::with_tls_psk`](crate::client::ClientOptions::with_tls_psk) dials, for
//! any futures-io stream.

use std::io;
use std::pin::Pin;

use aliot_auth::{DeviceIdentity, DeviceSecret, PskIdentity};
use async_openssl::SslStream;
use futures_io::{AsyncRead, AsyncWrite};
use openssl::ssl::{Ssl, SslContextBuilder, SslMethod, SslMode, SslVersion};

use crate::broker::wall_clock_ms;

/// The one cipher suite of the platform's PSK level, `TLS_PSK_WITH_AES_128_CBC_SHA` (0x008C),
/// in OpenSSL's name; the broker's PSK listeners take it alone too.
pub const PSK_CIPHER: &str = "PSK-AES128-CBC-SHA";

/// The PSK handshake on `stream` as `device`: the identity with the current time, the key
/// derived from `secret`, TLS 1.2 with `TLS_PSK_WITH_AES_128_CBC_SHA` only.
///
/// # Errors
///
/// The handshake's failure: the broker refused the identity (`unknown psk identity`) or the
/// keys differ (`bad record mac`), or the stream failed.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    device: &DeviceIdentity,
    secret: &DeviceSecret,
) -> io::Result<SslStream<S>> {
    let timestamp = wall_clock_ms().unwrap_or(0).to_string();
    let identity = PskIdentity::new(device.clone(), timestamp);
    let key = identity.key(secret);
    let identity = identity.to_string();
    let mut builder = SslContextBuilder::new(SslMethod::tls_client()).map_err(io::Error::other)?;
    // Idle, the connection gives its record buffers back.
    builder.set_mode(SslMode::RELEASE_BUFFERS);
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(io::Error::other)?;
    builder
        .set_max_proto_version(Some(SslVersion::TLS1_2))
        .map_err(io::Error::other)?;
    builder
        .set_cipher_list(PSK_CIPHER)
        .map_err(io::Error::other)?;
    builder.set_psk_client_callback(move |_ssl, _hint, identity_out, key_out| {
        // The identity goes out NUL-terminated.
        let fits = identity.len() < identity_out.len() && key.as_bytes().len() <= key_out.len();
        if !fits {
            return Ok(0);
        }
        identity_out[..identity.len()].copy_from_slice(identity.as_bytes());
        identity_out[identity.len()] = 0;
        key_out[..key.as_bytes().len()].copy_from_slice(key.as_bytes());
        Ok(key.as_bytes().len())
    });
    let context = builder.build();
    let ssl = Ssl::new(&context).map_err(io::Error::other)?;
    let mut stream = SslStream::new(ssl, stream).map_err(io::Error::other)?;
    Pin::new(&mut stream)
        .connect()
        .await
        .map_err(|error| match error.into_io_error() {
            Ok(error) => error,
            Err(error) => io::Error::new(io::ErrorKind::ConnectionRefused, error.to_string()),
        })?;
    Ok(stream)
}
