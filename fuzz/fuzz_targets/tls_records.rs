//! The broker's TLS record layer (`aliot_io::broker::tls_records`) after a real handshake with
//! rustls's client, in memory. The input is a script: the client writes data, updates its keys
//! or closes; bytes are forged into the wire or flipped on it; the server reads with buffers of
//! any size and writes. Whatever the script, the server never panics, reads only what the
//! client wrote, in order (all of it when the wire was not touched), and once a read or write
//! has failed, every later one fails too.
#![no_main]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use aliot_io::broker::tls_records::{TlsRecordStream, accept};
use futures_io::{AsyncRead, AsyncWrite};
use libfuzzer_sys::fuzz_target;
use rustls::pki_types::{PrivateKeyDer, ServerName};

/// The server's configuration as the listeners make it, and a client trusting it, for TLS 1.3
/// and for TLS 1.2.
struct Configs {
    server: Arc<rustls::ServerConfig>,
    tls13: Arc<rustls::ClientConfig>,
    tls12: Arc<rustls::ClientConfig>,
}

static CONFIGS: LazyLock<Configs> = LazyLock::new(|| {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = generated.cert.der().clone();
    let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der()).unwrap();
    let server = aliot_io::broker::tls_config(vec![cert.clone()], key).unwrap();
    let client = |version: &'static rustls::SupportedProtocolVersion| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    };
    Configs {
        server,
        tls13: client(&rustls::version::TLS13),
        tls12: client(&rustls::version::TLS12),
    }
});

/// The server's socket: what the client sent, and what the server wrote.
#[derive(Default)]
struct Wire {
    to_server: VecDeque<u8>,
    to_client: Vec<u8>,
    client_closed: bool,
}

struct ServerSocket(Rc<RefCell<Wire>>);

impl AsyncRead for ServerSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut wire = self.0.borrow_mut();
        if wire.to_server.is_empty() {
            return if wire.client_closed {
                Poll::Ready(Ok(0))
            } else {
                Poll::Pending
            };
        }
        let n = buf.len().min(wire.to_server.len());
        for (slot, byte) in buf.iter_mut().zip(wire.to_server.drain(..n)) {
            *slot = byte;
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for ServerSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.borrow_mut().to_client.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The script's bytes, read as it goes; zeros once it is over.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&first, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        first
    }

    fn u16(&mut self) -> usize {
        usize::from(u16::from_be_bytes([self.byte(), self.byte()]))
    }

    fn is_over(&self) -> bool {
        self.0.is_empty()
    }
}

/// Moves what the client has to send onto the wire.
fn client_sends(client: &mut rustls::ClientConnection, wire: &Rc<RefCell<Wire>>) {
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).unwrap();
    }
    wire.borrow_mut().to_server.extend(out);
}

/// Gives the client what the server wrote, and returns the data it read; the client's own
/// verdict on the records does not matter here. What the client could not take yet stays on
/// the wire.
fn client_receives(client: &mut rustls::ClientConnection, wire: &Rc<RefCell<Wire>>) -> Vec<u8> {
    let bytes = std::mem::take(&mut wire.borrow_mut().to_client);
    let mut reader = &bytes[..];
    let mut plaintext = Vec::new();
    let mut stuck = false;
    loop {
        let mut chunk = [0; 4096];
        while let Ok(n) = client.reader().read(&mut chunk) {
            if n == 0 {
                break;
            }
            plaintext.extend_from_slice(&chunk[..n]);
        }
        if reader.is_empty() {
            break;
        }
        match client.read_tls(&mut reader) {
            Ok(0) => break,
            Ok(_) => stuck = false,
            // Its plaintext buffer is full: read it, then try again, once.
            Err(_) if !stuck => {
                stuck = true;
                continue;
            }
            Err(_) => break,
        }
        if client.process_new_packets().is_err() {
            break;
        }
    }
    if !reader.is_empty() {
        let mut wire = wire.borrow_mut();
        let mut kept = reader.to_vec();
        kept.extend_from_slice(&wire.to_client);
        wire.to_client = kept;
    }
    plaintext
}

/// One read of the server with a buffer of `size` bytes: whether it read data.
fn server_read(
    server: &mut TlsRecordStream<ServerSocket>,
    cx: &mut Context<'_>,
    size: usize,
    outcome: &mut Outcome,
) -> bool {
    let mut buf = vec![0; size.max(1)];
    match Pin::new(server).poll_read(cx, &mut buf) {
        Poll::Ready(Ok(0)) => {
            assert!(!outcome.failed, "a failed stream never reads its end");
            outcome.ended = true;
            false
        }
        Poll::Ready(Ok(n)) => {
            assert!(!outcome.failed, "a failed stream never reads data");
            outcome.received.extend_from_slice(&buf[..n]);
            true
        }
        Poll::Ready(Err(_)) => {
            outcome.failed = true;
            false
        }
        Poll::Pending => false,
    }
}

/// What the server did with what it was sent.
#[derive(Default)]
struct Outcome {
    received: Vec<u8>,
    failed: bool,
    ended: bool,
}

fn pattern(from: usize, len: usize) -> Vec<u8> {
    (from..from + len).map(|i| (i % 251) as u8).collect()
}

fuzz_target!(|data: &[u8]| {
    let mut script = Script(data);
    let configs = &*CONFIGS;
    let client_config = if script.byte() & 1 == 0 {
        &configs.tls13
    } else {
        &configs.tls12
    };
    let wire = Rc::new(RefCell::new(Wire::default()));
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(Arc::clone(client_config), name).unwrap();
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);

    // The handshake.
    let mut handshake = Box::pin(accept(
        Arc::clone(&configs.server),
        ServerSocket(Rc::clone(&wire)),
    ));
    let mut server: Option<TlsRecordStream<ServerSocket>> = None;
    for _ in 0..16 {
        client_sends(&mut client, &wire);
        if let Poll::Ready(done) = handshake.as_mut().poll(&mut cx) {
            server = Some(done.expect("the handshake with rustls's client succeeds"));
            break;
        }
        client_receives(&mut client, &wire);
    }
    let mut server = server.expect("the handshake ends within 16 flights");
    let _ = client_receives(&mut client, &wire);
    assert!(!client.is_handshaking());

    client.set_buffer_limit(None);
    let mut sent = Vec::new(); // what the client wrote
    let mut outcome = Outcome::default();
    let mut server_sent = Vec::new();
    let mut client_got = Vec::new();
    let mut tampered = false;
    let mut notified = false;

    while !script.is_over() {
        match script.byte() % 8 {
            0 => {
                let len = script.u16() % 40_000;
                let bytes = pattern(sent.len(), len);
                if client.writer().write_all(&bytes).is_ok() {
                    sent.extend_from_slice(&bytes);
                }
                client_sends(&mut client, &wire);
            }
            1 => {
                let _ = client.refresh_traffic_keys();
                client_sends(&mut client, &wire);
            }
            2 => {
                let len = usize::from(script.byte());
                let forged: Vec<u8> = (0..len).map(|_| script.byte()).collect();
                wire.borrow_mut().to_server.extend(forged);
                tampered |= len > 0;
            }
            3 => {
                let at = script.u16();
                let bit = script.byte() % 8;
                let mut wire = wire.borrow_mut();
                let len = wire.to_server.len();
                if len > 0 {
                    wire.to_server[at % len] ^= 1 << bit;
                    tampered = true;
                }
            }
            4 => {
                let size = script.u16() % 20_000;
                server_read(&mut server, &mut cx, size, &mut outcome);
            }
            5 => {
                let len = script.u16() % 40_000;
                let bytes = pattern(server_sent.len(), len);
                match Pin::new(&mut server).poll_write(&mut cx, &bytes) {
                    Poll::Ready(Ok(n)) => {
                        assert!(!outcome.failed, "a failed stream never writes");
                        server_sent.extend_from_slice(&bytes[..n]);
                    }
                    Poll::Ready(Err(_)) => outcome.failed = true,
                    Poll::Pending => unreachable!("the wire takes every write"),
                }
                let _ = Pin::new(&mut server).poll_flush(&mut cx);
                client_got.extend(client_receives(&mut client, &wire));
            }
            6 => {
                client.send_close_notify();
                notified = true;
                client_sends(&mut client, &wire);
            }
            _ => {
                wire.borrow_mut().client_closed = true;
            }
        }
        // The client hears the server's answers (a key update, an alert).
        client_got.extend(client_receives(&mut client, &wire));
    }

    // Read what is left.
    while server_read(&mut server, &mut cx, 16 * 1024, &mut outcome) {}
    assert!(
        sent.starts_with(&outcome.received),
        "the server read only what the client wrote, in order"
    );
    if !tampered && !outcome.failed {
        if !notified {
            assert_eq!(
                outcome.received.len(),
                sent.len(),
                "the server read all the client wrote"
            );
        }
        let _ = Pin::new(&mut server).poll_flush(&mut cx);
        client_got.extend(client_receives(&mut client, &wire));
        assert!(
            client_got == server_sent,
            "the client read what the server wrote: {} of {} bytes, first difference at {:?}",
            client_got.len(),
            server_sent.len(),
            client_got
                .iter()
                .zip(&server_sent)
                .position(|(a, b)| a != b)
        );
    }
});
