//! TLS on the broker's listeners: rustls runs the handshake, this module the record layer after
//! it, so that an idle TLS connection keeps its keys and nothing else.
//!
//! rustls's buffered `ServerConnection` keeps, for the connection's life, its whole state
//! machine, a record encrypter and decrypter with their expanded keys, and a 4 KiB buffer to
//! read records into: about 8 KiB per idle connection, three times what the connection itself
//! costs. Here rustls's unbuffered connection runs the handshake in buffers of this module's
//! own, freed once it is done, and then hands over the keys and sequence numbers (the API
//! rustls offers for kernel TLS, `dangerous_into_kernel_connection`). Its `KernelConnection`,
//! which could derive the keys of a TLS 1.3 key update, is not kept: it is 560 bytes (plus a
//! boxed key schedule) for about 100 bytes of secrets. The two application traffic secrets
//! come from rustls's key log instead (a [`KeyLog`] of the connection's own, given only those two), are checked
//! against the keys rustls handed over, and key updates are derived from them here
//! (RFC 8446 §7.2, HKDF-Expand-Label with ring). The records are sealed and opened here with
//! ring's AEADs, from the raw keys: the expanded keys are built for each read or write and
//! dropped after it, records are read into the caller's buffer (the thread's scratch buffer,
//! for MQTT) and opened in place, and a buffer is kept only for a partial record or for output
//! the socket has not taken yet.
//!
//! The record layer is RFC 8446 §5 (TLS 1.3) and RFC 5246 §6.2 with RFC 5288 and RFC 7905
//! (TLS 1.2 with AES-GCM and ChaCha20-Poly1305: the only suites the listeners offer). After the
//! handshake a TLS 1.3 peer may send application data, alerts and `KeyUpdate`; a TLS 1.2 peer
//! application data and alerts, and a renegotiation attempt is refused with a
//! `no_renegotiation` warning, as rustls does. Anything else ends the connection with the fatal
//! alert RFC 8446 names. The sending keys are updated (TLS 1.3) or the connection closed
//! (TLS 1.2) before the cipher suite's confidentiality limit, as rustls would.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use futures_io::{AsyncRead, AsyncWrite};
use futures_util::io::{AsyncReadExt as _, AsyncWriteExt as _};

use ring::{aead, hkdf};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{ConnectionTrafficSecrets, KeyLog, ProtocolVersion};

/// A record's header: content type, legacy version, length.
const HEADER: usize = 5;
/// The most plaintext a record may carry (RFC 8446 §5.1, RFC 5246 §6.2.1).
const MAX_PLAINTEXT: usize = 1 << 14;
/// The most a protected record's body may be: RFC 8446 §5.2 allows 2^14 + 256; TLS 1.2's
/// limit (2^14 + 2048) is wider, but none of its AEAD suites adds more than 24 bytes.
const MAX_BODY: usize = MAX_PLAINTEXT + 256;
/// The AEAD tag, for every suite offered.
const TAG: usize = 16;
/// TLS 1.2 AES-GCM's explicit nonce, sent before each record's ciphertext (RFC 5288 §3).
const EXPLICIT_NONCE: usize = 8;
/// The most plaintext one write seals before it hands the records to the socket; a larger
/// write is taken in parts.
const WRITE_BATCH: usize = 4 * MAX_PLAINTEXT;
/// A handshake's buffers may grow to this (a client hello with many extensions, a
/// certificate chain); a peer that needs more is refused.
const HANDSHAKE_LIMIT: usize = 64 * 1024 + HEADER + MAX_BODY;

/// Content types (RFC 8446 §5.1).
const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;

/// Alert descriptions this layer sends or reads (RFC 8446 §6).
const CLOSE_NOTIFY: u8 = 0;
const UNEXPECTED_MESSAGE: u8 = 10;
const BAD_RECORD_MAC: u8 = 20;
const RECORD_OVERFLOW: u8 = 22;
const DECODE_ERROR: u8 = 50;
const USER_CANCELED: u8 = 90;
const NO_RENEGOTIATION: u8 = 100;
/// Alert levels (RFC 5246 §7.2; TLS 1.3 ignores them but still sends them).
const WARNING: u8 = 1;
const FATAL: u8 = 2;

/// Key updates a peer may send in a row, without application data between them (rustls's
/// own limit).
const KEY_UPDATES_WITHOUT_DATA: u8 = 32;

/// Handshake message types read after the handshake.
const KEY_UPDATE: u8 = 24;
const CLIENT_HELLO: u8 = 1;

/// Runs the server side of a TLS handshake on `stream` with rustls, then hands the connection
/// to the record layer. `config` must allow secret extraction
/// (`enable_secret_extraction`, as the listeners' configuration does).
///
/// # Errors
///
/// rustls's error (inside an [`io::Error`] of kind `InvalidData`) when the handshake failed,
/// after rustls's alert for it was sent as far as the socket took it at once; the socket's
/// error; `UnexpectedEof` when the client left during the handshake.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    config: Arc<rustls::ServerConfig>,
    mut stream: S,
) -> io::Result<TlsRecordStream<S>> {
    // The listener's configuration with a key log of this connection's own.
    let captured = Arc::new(CapturedSecrets::default());
    let mut config = rustls::ServerConfig::clone(&config);
    config.key_log = captured.clone();
    let mut conn = UnbufferedServerConnection::new(Arc::new(config)).map_err(invalid)?;
    let mut incoming = vec![0; 4096];
    let mut filled = 0;
    let mut outgoing = Vec::new();
    let mut plaintext = Vec::new();
    loop {
        let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut incoming[..filled]);
        let mut transmit = false;
        let mut read = false;
        let mut done = false;
        match state {
            Err(error) => {
                // rustls queued an alert for the error: send it on a best-effort basis.
                let mut alert = Vec::new();
                for _ in 0..4 {
                    let Ok(ConnectionState::EncodeTlsData(mut data)) =
                        conn.process_tls_records(&mut []).state
                    else {
                        break;
                    };
                    let _ = encode_into(&mut alert, |buf| data.encode(buf));
                }
                if !alert.is_empty() {
                    let _ = futures_util::future::poll_immediate(stream.write_all(&alert)).await;
                }
                return Err(invalid(error));
            }
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                // Application data that came with the client's Finished (a CONNECT, say).
                while let Some(record) = traffic.next_record() {
                    plaintext.extend_from_slice(record.map_err(invalid)?.payload);
                }
            }
            Ok(ConnectionState::EncodeTlsData(mut data)) => {
                encode_into(&mut outgoing, |buf| data.encode(buf))?;
            }
            Ok(ConnectionState::TransmitTlsData(data)) => {
                // Written below, before rustls is asked for anything more.
                data.done();
                transmit = true;
            }
            Ok(ConnectionState::BlockedHandshake) => read = true,
            // Done, unless rustls lets us write before the client's Finished (it does not with
            // `send_half_rtt_data` off, the default): then wait for the Finished.
            Ok(ConnectionState::WriteTraffic(_)) => done = true,
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection during the TLS handshake",
                ));
            }
            Ok(other) => {
                return Err(invalid(format!("unexpected TLS handshake state {other:?}")));
            }
        }
        incoming.copy_within(discard..filled, 0);
        filled -= discard;
        if done && conn.is_handshaking() {
            done = false;
            read = true;
        }
        // TLS 1.3's session tickets, made once the client's Finished is in, wait for the
        // connection's first write (the CONNACK) and leave with it: a system call less per
        // connection. Everything before them goes at once, and so does TLS 1.2's last flight,
        // which the client waits for before it sends anything.
        let tickets_only =
            !conn.is_handshaking() && conn.protocol_version() == Some(ProtocolVersion::TLSv1_3);
        if transmit && !tickets_only {
            stream.write_all(&outgoing).await?;
            stream.flush().await?;
            outgoing.clear();
        }
        if done {
            break;
        }
        if read {
            if filled == incoming.len() {
                if incoming.len() >= HANDSHAKE_LIMIT {
                    return Err(invalid("TLS handshake message too large"));
                }
                incoming.resize((incoming.len() * 2).min(HANDSHAKE_LIMIT), 0);
            }
            let n = stream.read(&mut incoming[filled..]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection during the TLS handshake",
                ));
            }
            filled += n;
        }
    }
    let (secrets, kernel) = conn.dangerous_into_kernel_connection().map_err(invalid)?;
    // TLS 1.3 suites name the hash of their key schedule; TLS 1.2 has no key update.
    let (hash, limit) = match kernel.negotiated_cipher_suite() {
        rustls::SupportedCipherSuite::Tls12(suite) => (None, suite.common.confidentiality_limit),
        rustls::SupportedCipherSuite::Tls13(suite) => (
            Some(suite.common.hash_provider.algorithm()),
            suite.common.confidentiality_limit,
        ),
    };
    drop(kernel);
    let (mut client_secret, mut server_secret) = (None, None);
    if hash.is_some() {
        let hash = match hash {
            Some(rustls::crypto::hash::HashAlgorithm::SHA256) => Hash::Sha256,
            Some(rustls::crypto::hash::HashAlgorithm::SHA384) => Hash::Sha384,
            _ => {
                return Err(invalid(
                    "the negotiated cipher suite's hash is not supported",
                ));
            }
        };
        let mut captured = captured
            .0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let (Some(client), Some(server)) = (captured.client.take(), captured.server.take()) else {
            return Err(invalid("rustls did not hand over the traffic secrets"));
        };
        client_secret = Some(TrafficSecret::new(hash, &client)?);
        server_secret = Some(TrafficSecret::new(hash, &server)?);
    }
    incoming.truncate(filled);
    Ok(TlsRecordStream {
        stream,
        receiving: Protection::new(secrets.rx.1, secrets.rx.0, client_secret)?,
        sending: Protection::new(secrets.tx.1, secrets.tx.0, server_secret)?,
        send_limit: limit,
        incoming: if filled == 0 { Vec::new() } else { incoming },
        plaintext: PendingPlaintext {
            bytes: plaintext,
            read: 0,
        },
        outgoing: Outgoing {
            bytes: outgoing,
            written: 0,
        },
        peer_closed: false,
        failed: None,
        close_notify_sent: false,
        key_updates_received: 0,
        refused_renegotiation: false,
        answered_key_update: false,
    })
}

/// Log labels of the TLS 1.3 application traffic secrets (the NSS key log format's).
const CLIENT_TRAFFIC_SECRET: &str = "CLIENT_TRAFFIC_SECRET_0";
const SERVER_TRAFFIC_SECRET: &str = "SERVER_TRAFFIC_SECRET_0";

/// One handshake's TLS 1.3 application traffic secrets, as rustls logs them; nothing else is
/// asked for.
#[derive(Debug, Default)]
struct CapturedSecrets(Mutex<Captured>);

#[derive(Debug, Default)]
struct Captured {
    client: Option<Vec<u8>>,
    server: Option<Vec<u8>>,
}

impl KeyLog for CapturedSecrets {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        let mut captured = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        match label {
            CLIENT_TRAFFIC_SECRET => captured.client = Some(secret.to_vec()),
            SERVER_TRAFFIC_SECRET => captured.server = Some(secret.to_vec()),
            _ => {}
        }
    }

    fn will_log(&self, label: &str) -> bool {
        label == CLIENT_TRAFFIC_SECRET || label == SERVER_TRAFFIC_SECRET
    }
}

/// The hash of a TLS 1.3 suite's key schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
}

impl Hash {
    fn len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
        }
    }

    fn hkdf(self) -> hkdf::Algorithm {
        match self {
            Self::Sha256 => hkdf::HKDF_SHA256,
            Self::Sha384 => hkdf::HKDF_SHA384,
        }
    }
}

/// A TLS 1.3 application traffic secret (RFC 8446 §7.1), for the next key update.
struct TrafficSecret {
    hash: Hash,
    bytes: [u8; 48],
}

impl TrafficSecret {
    fn new(hash: Hash, secret: &[u8]) -> io::Result<Self> {
        if secret.len() != hash.len() {
            return Err(invalid("a traffic secret of the wrong length"));
        }
        let mut bytes = [0; 48];
        bytes[..secret.len()].copy_from_slice(secret);
        Ok(Self { hash, bytes })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.hash.len()]
    }

    /// HKDF-Expand-Label(secret, label, "", out.len()) (RFC 8446 §7.1).
    fn expand_label(&self, label: &[u8], out: &mut [u8]) {
        /// An output length, for ring's HKDF.
        struct Len(usize);
        impl hkdf::KeyType for Len {
            fn len(&self) -> usize {
                self.0
            }
        }
        let length = u16::try_from(out.len())
            .expect("a key, an IV or a secret")
            .to_be_bytes();
        let label_len = [u8::try_from(b"tls13 ".len() + label.len()).expect("a short label")];
        let info: [&[u8]; 5] = [&length, &label_len, b"tls13 ", label, &[0]];
        hkdf::Prk::new_less_safe(self.hash.hkdf(), self.as_bytes())
            .expand(&info, Len(out.len()))
            .and_then(|okm| okm.fill(out))
            .expect("HKDF output of at most 255 hash lengths");
    }

    /// The key and IV this secret makes for `cipher` (RFC 8446 §7.3).
    fn traffic_keys(&self, cipher: Cipher) -> ([u8; 32], [u8; 12]) {
        let mut key = [0; 32];
        let mut iv = [0; 12];
        self.expand_label(b"key", &mut key[..cipher.key_len()]);
        self.expand_label(b"iv", &mut iv);
        (key, iv)
    }

    /// The next generation of this secret (RFC 8446 §7.2).
    fn next(&self) -> Self {
        let mut next = Self {
            hash: self.hash,
            bytes: [0; 48],
        };
        self.expand_label(b"traffic upd", &mut next.bytes[..self.hash.len()]);
        next
    }
}

/// Calls rustls's `encode` into the spare end of `out`, growing it as asked.
fn encode_into(
    out: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> io::Result<()> {
    let start = out.len();
    out.resize(start + 1024, 0);
    loop {
        match encode(&mut out[start..]) {
            Ok(written) => {
                out.truncate(start + written);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(needed)) => {
                out.resize(start + needed.required_size, 0);
            }
            Err(error) => {
                out.truncate(start);
                return Err(invalid(error));
            }
        }
    }
}

fn invalid(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// The AEAD a negotiated suite uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    ChaCha20Poly1305,
}

impl Cipher {
    fn key_len(self) -> usize {
        match self {
            Self::Aes128Gcm => 16,
            Self::Aes256Gcm | Self::ChaCha20Poly1305 => 32,
        }
    }
}

/// One direction's protection: the suite's key and IV as the key schedule made them, the
/// sequence number of the next record, and (TLS 1.3) the traffic secret they came from.
struct Protection {
    cipher: Cipher,
    key: [u8; 32],
    iv: [u8; 12],
    seq: u64,
    /// TLS 1.3's traffic secret; `None` on TLS 1.2.
    secret: Option<TrafficSecret>,
}

impl Protection {
    /// The protection rustls handed over, at sequence number `seq`. On TLS 1.3, `secret` must
    /// be what made the keys: checked, so that a key update derives the peer's next keys.
    fn new(
        secrets: ConnectionTrafficSecrets,
        seq: u64,
        secret: Option<TrafficSecret>,
    ) -> io::Result<Self> {
        let (cipher, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Cipher::Aes128Gcm, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Cipher::Aes256Gcm, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (Cipher::ChaCha20Poly1305, key, iv)
            }
            _ => return Err(invalid("the negotiated cipher suite is not supported")),
        };
        let key = key.as_ref();
        if key.len() != cipher.key_len() {
            return Err(invalid("a traffic key of the wrong length"));
        }
        let mut protection = Self {
            cipher,
            key: [0; 32],
            iv: iv
                .as_ref()
                .try_into()
                .map_err(|_| invalid("an IV of the wrong length"))?,
            seq,
            secret: None,
        };
        protection.key[..key.len()].copy_from_slice(key);
        if let Some(mut secret) = secret {
            // The first application traffic secret, or a later one when the client updated
            // its keys already in the flight of its Finished (rustls followed that update
            // within the handshake's records).
            let mut generation = 0;
            while secret.traffic_keys(cipher) != (protection.key, protection.iv) {
                generation += 1;
                if generation > KEY_UPDATES_WITHOUT_DATA {
                    return Err(invalid(
                        "the logged traffic secret does not make the handshake's keys",
                    ));
                }
                secret = secret.next();
            }
            protection.secret = Some(secret);
        }
        Ok(protection)
    }

    fn tls13(&self) -> bool {
        self.secret.is_some()
    }

    /// The protection after a key update (TLS 1.3): the next secret's keys, from sequence
    /// number 0.
    fn updated(&self) -> Option<Self> {
        let next = self.secret.as_ref()?.next();
        let (key, iv) = next.traffic_keys(self.cipher);
        Some(Self {
            cipher: self.cipher,
            key,
            iv,
            seq: 0,
            secret: Some(next),
        })
    }

    /// The nonce of the record with sequence number `seq`: the IV XOR the number
    /// (RFC 8446 §5.3; TLS 1.2's ChaCha20-Poly1305 and AES-GCM's explicit nonces alike).
    fn nonce(&self, seq: u64) -> [u8; 12] {
        let mut nonce = self.iv;
        for (byte, seq_byte) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
            *byte ^= seq_byte;
        }
        nonce
    }

    /// The expanded key, for one read's or one write's records.
    fn expand(&self) -> aead::LessSafeKey {
        let algorithm = match self.cipher {
            Cipher::Aes128Gcm => &aead::AES_128_GCM,
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        };
        // `new` checked the key's length against the suite.
        let key = aead::UnboundKey::new(algorithm, &self.key[..self.cipher.key_len()])
            .expect("a traffic key of the negotiated suite's length");
        aead::LessSafeKey::new(key)
    }

    /// A record's additional data: its header on TLS 1.3 (RFC 8446 §5.2); sequence number,
    /// type, version and plaintext length on TLS 1.2 (RFC 5246 §6.2.3.3).
    fn additional_data(
        &self,
        header: [u8; HEADER],
        seq: u64,
        content_type: u8,
        plain_len: usize,
    ) -> AdditionalData {
        if self.tls13() {
            let mut bytes = [0; 13];
            bytes[..HEADER].copy_from_slice(&header);
            AdditionalData { bytes, len: HEADER }
        } else {
            AdditionalData {
                bytes: tls12_aad(seq, content_type, plain_len),
                len: 13,
            }
        }
    }

    /// Whether records carry TLS 1.2 AES-GCM's explicit nonce.
    fn explicit_nonce(&self) -> bool {
        !self.tls13() && self.cipher != Cipher::ChaCha20Poly1305
    }

    /// What sealing adds to `len` bytes of plaintext (the TLS 1.3 inner content type counted).
    fn overhead(&self) -> usize {
        TAG + if self.tls13() {
            1
        } else if self.explicit_nonce() {
            EXPLICIT_NONCE
        } else {
            0
        }
    }

    /// The next record's sequence number, or an error when there is none.
    fn next_seq(&mut self) -> Result<u64, Alert> {
        let seq = self.seq;
        self.seq = seq.checked_add(1).ok_or(Alert::fatal(
            UNEXPECTED_MESSAGE,
            "the record sequence number is exhausted",
        ))?;
        Ok(seq)
    }

    /// Seals `plaintext` of `content_type` as one record appended to `out`.
    fn seal(
        &mut self,
        key: &aead::LessSafeKey,
        content_type: u8,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Alert> {
        debug_assert!(plaintext.len() <= MAX_PLAINTEXT);
        let seq = self.next_seq()?;
        let nonce = self.nonce(seq);
        let body_len = plaintext.len() + self.overhead();
        let outer_type = if self.tls13() {
            APPLICATION_DATA
        } else {
            content_type
        };
        let start = out.len();
        let header = record_header(outer_type, body_len);
        out.extend_from_slice(&header);
        let aad = self.additional_data(header, seq, content_type, plaintext.len());
        if self.explicit_nonce() {
            out.extend_from_slice(&nonce[4..]);
        }
        let sealed_from = out.len();
        out.extend_from_slice(plaintext);
        if self.tls13() {
            out.push(content_type);
        }
        let tag = key
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad.as_slice()),
                &mut out[sealed_from..],
            )
            .map_err(|_| Alert::fatal(UNEXPECTED_MESSAGE, "a record could not be sealed"))?;
        out.extend_from_slice(tag.as_ref());
        debug_assert_eq!(out.len() - start, HEADER + body_len);
        Ok(())
    }

    /// Opens the record `record` (header included) in place: its content type and where its
    /// plaintext is within `record`.
    fn open(
        &mut self,
        key: &aead::LessSafeKey,
        record: &mut [u8],
    ) -> Result<(u8, std::ops::Range<usize>), Alert> {
        let outer_type = record[0];
        let header: [u8; HEADER] = record[..HEADER].try_into().expect("a whole header");
        let body_len = record.len() - HEADER;
        if self.tls13() && outer_type != APPLICATION_DATA {
            return Err(Alert::fatal(
                UNEXPECTED_MESSAGE,
                "an unprotected record after the handshake",
            ));
        }
        if body_len < self.overhead() {
            return Err(Alert::fatal(
                BAD_RECORD_MAC,
                "a record too short for its tag",
            ));
        }
        let seq = self.next_seq()?;
        let (nonce, sealed_from) = if self.explicit_nonce() {
            let mut nonce = [0; 12];
            nonce[..4].copy_from_slice(&self.iv[..4]);
            nonce[4..].copy_from_slice(&record[HEADER..HEADER + EXPLICIT_NONCE]);
            (nonce, HEADER + EXPLICIT_NONCE)
        } else {
            (self.nonce(seq), HEADER)
        };
        let plain_len = record.len() - sealed_from - TAG;
        let aad = self.additional_data(header, seq, outer_type, plain_len);
        let opened = key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad.as_slice()),
                &mut record[sealed_from..],
            )
            .map_err(|_| Alert::fatal(BAD_RECORD_MAC, "a record failed its integrity check"))?;
        let mut len = opened.len();
        // TLS 1.3's inner plaintext, padding included, is at most 2^14 + 1 bytes (§5.4).
        if self.tls13() && len > MAX_PLAINTEXT + 1 {
            return Err(Alert::fatal(
                RECORD_OVERFLOW,
                "a record's plaintext is too long",
            ));
        }
        let content_type = if self.tls13() {
            // TLSInnerPlaintext: content, the content type, then zeros (RFC 8446 §5.4).
            let Some(last) = opened.iter().rposition(|&byte| byte != 0) else {
                return Err(Alert::fatal(
                    UNEXPECTED_MESSAGE,
                    "a record without a content type",
                ));
            };
            len = last;
            opened[last]
        } else {
            outer_type
        };
        if len > MAX_PLAINTEXT {
            return Err(Alert::fatal(
                RECORD_OVERFLOW,
                "a record's plaintext is too long",
            ));
        }
        Ok((content_type, sealed_from..sealed_from + len))
    }
}

/// A record's additional data, on the stack.
struct AdditionalData {
    bytes: [u8; 13],
    len: usize,
}

impl AdditionalData {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn record_header(content_type: u8, body_len: usize) -> [u8; HEADER] {
    let [high, low] = u16::try_from(body_len)
        .expect("a record's body fits its length field")
        .to_be_bytes();
    [content_type, 3, 3, high, low]
}

/// TLS 1.2's additional data: sequence number, type, version, plaintext length.
fn tls12_aad(seq: u64, content_type: u8, plain_len: usize) -> [u8; 13] {
    let mut aad = [0; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = content_type;
    aad[9] = 3;
    aad[10] = 3;
    aad[11..].copy_from_slice(
        &u16::try_from(plain_len)
            .expect("a record's plaintext fits its length field")
            .to_be_bytes(),
    );
    aad
}

/// The length of the record at the front of `bytes`, header included, once its header is
/// there.
fn record_len(bytes: &[u8]) -> Result<Option<usize>, Alert> {
    let Some(header) = bytes.get(..HEADER) else {
        return Ok(None);
    };
    let body_len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if body_len > MAX_BODY {
        return Err(Alert::fatal(RECORD_OVERFLOW, "a record is too long"));
    }
    Ok(Some(HEADER + body_len))
}

/// The length of the whole record at the front of `bytes` once it is all there; `Ok(None)`
/// while it is not.
fn complete_record(bytes: &[u8]) -> Result<Option<usize>, Alert> {
    Ok(record_len(bytes)?.filter(|&len| bytes.len() >= len))
}

/// Why a connection whose socket ended inside a record failed.
const TRUNCATED: &str = "the peer closed the connection in the middle of a record";

/// What ends a connection: the fatal alert to send the peer (none when the peer ended it),
/// and what to log.
#[derive(Debug, Clone)]
struct Alert {
    description: Option<u8>,
    reason: &'static str,
}

impl Alert {
    /// We end the connection, telling the peer why.
    const fn fatal(description: u8, reason: &'static str) -> Self {
        Self {
            description: Some(description),
            reason,
        }
    }

    /// The connection is over without an alert from us (the peer sent a fatal one, or we sent
    /// `close_notify` already).
    const fn quiet(reason: &'static str) -> Self {
        Self {
            description: None,
            reason,
        }
    }

    /// The socket ended inside a record.
    const fn truncated() -> Self {
        Self::quiet(TRUNCATED)
    }

    /// The error every read and write returns once the connection failed so.
    fn error(&self) -> io::Error {
        let kind = if self.reason == TRUNCATED {
            io::ErrorKind::UnexpectedEof
        } else {
            io::ErrorKind::InvalidData
        };
        io::Error::new(kind, format!("TLS: {}", self.reason))
    }
}

/// What an opened record asks of the connection.
enum Opened {
    /// Application data, at this range of the record.
    Data(std::ops::Range<usize>),
    /// Nothing for the reader (a warning alert, a key update, an empty record).
    Nothing,
    /// The peer's `close_notify`: no more data will come.
    Closed,
}

/// Decrypted application data the caller's buffer had no room for.
#[derive(Default)]
struct PendingPlaintext {
    bytes: Vec<u8>,
    read: usize,
}

/// Sealed records the socket has not taken yet.
#[derive(Default)]
struct Outgoing {
    bytes: Vec<u8>,
    written: usize,
}

impl Outgoing {
    fn is_empty(&self) -> bool {
        self.written == self.bytes.len()
    }

    /// Bytes not yet written.
    fn pending(&self) -> usize {
        self.bytes.len() - self.written
    }

    /// Writes what the socket takes now; `Ready(Ok)` once all is written, its buffer freed.
    fn poll_drain<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            let written =
                ready!(Pin::new(&mut *stream).poll_write(cx, &self.bytes[self.written..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += written;
        }
        // An idle connection keeps no output buffer.
        self.bytes = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

/// A TLS connection after its handshake: the socket, the keys of both directions, and only
/// the buffers a partial record or unsent output needs. Reads and writes as a byte stream
/// (`futures-io`), like rustls's own streams.
pub struct TlsRecordStream<S> {
    stream: S,
    receiving: Protection,
    sending: Protection,
    /// The records one sending key may seal (the suite's confidentiality limit).
    send_limit: u64,
    /// Received bytes that are not yet a whole record.
    incoming: Vec<u8>,
    plaintext: PendingPlaintext,
    outgoing: Outgoing,
    /// The peer sent `close_notify`: reads return the end of the stream.
    peer_closed: bool,
    /// Why the connection failed, once it did: every later read or write says it again.
    failed: Option<Alert>,
    close_notify_sent: bool,
    /// Key updates received since the last application data record that carried data.
    key_updates_received: u8,
    /// A TLS 1.2 renegotiation was refused with a warning already.
    refused_renegotiation: bool,
    /// A key update of ours answered the peer's request, and no data went since.
    answered_key_update: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsRecordStream<S> {
    /// Fails the connection with `alert`: queues it for the peer, tries to send it at once,
    /// and returns the error the caller reports.
    fn fail(&mut self, alert: Alert, cx: &mut Context<'_>) -> io::Error {
        if self.failed.is_none() {
            self.failed = Some(alert.clone());
            if let Some(description) = alert.description {
                let _ = self.queue_alert(FATAL, description);
            }
            let _ = self.outgoing.poll_drain(&mut self.stream, cx);
        }
        alert.error()
    }

    fn failure(&self) -> Option<io::Error> {
        self.failed.as_ref().map(Alert::error)
    }

    fn queue_alert(&mut self, level: u8, description: u8) -> Result<(), Alert> {
        let key = self.sending.expand();
        self.sending
            .seal(&key, ALERT, &[level, description], &mut self.outgoing.bytes)
    }

    /// Makes sure the sending key may seal `records` more records: updates it (TLS 1.3, after
    /// telling the peer) or refuses (TLS 1.2) once the suite's limit is near.
    fn ensure_send_budget(&mut self, records: u64) -> Result<(), Alert> {
        if self.sending.seq.saturating_add(records) < self.send_limit.saturating_sub(1) {
            return Ok(());
        }
        if !self.sending.tls13() {
            self.queue_alert(WARNING, CLOSE_NOTIFY)?;
            return Err(Alert::quiet(
                "the cipher suite's confidentiality limit is reached (TLS 1.2 has no key update)",
            ));
        }
        self.update_sending_key()
    }

    /// Sends `KeyUpdate(update_not_requested)` under the current key, then switches to the
    /// next one (RFC 8446 §4.6.3).
    fn update_sending_key(&mut self) -> Result<(), Alert> {
        let key = self.sending.expand();
        self.sending.seal(
            &key,
            HANDSHAKE,
            &[KEY_UPDATE, 0, 0, 1, 0],
            &mut self.outgoing.bytes,
        )?;
        self.sending = self.sending.updated().ok_or(Alert::fatal(
            UNEXPECTED_MESSAGE,
            "a key update on a connection without one",
        ))?;
        Ok(())
    }

    /// Acts on an opened record that is not application data.
    fn control(&mut self, content_type: u8, body: &[u8]) -> Result<Opened, Alert> {
        match content_type {
            APPLICATION_DATA => unreachable!("handled by the caller"),
            ALERT => {
                let &[level, description] = body else {
                    return Err(Alert::fatal(DECODE_ERROR, "a malformed alert"));
                };
                match description {
                    CLOSE_NOTIFY => Ok(Opened::Closed),
                    // TLS 1.3 ignores alert levels: only these two are not fatal (§6).
                    USER_CANCELED if self.receiving.tls13() => Ok(Opened::Nothing),
                    // TLS 1.2 warnings (no_renegotiation, say) do not end the connection.
                    _ if !self.receiving.tls13() && level == WARNING => Ok(Opened::Nothing),
                    _ => Err(Alert::quiet("the peer sent a fatal alert")),
                }
            }
            HANDSHAKE if self.receiving.tls13() => self.post_handshake(body),
            HANDSHAKE if body.first() == Some(&CLIENT_HELLO) && !self.refused_renegotiation => {
                // A TLS 1.2 renegotiation: refused with a warning, once, as rustls does; a
                // second attempt ends the connection (so that a peer that never reads cannot
                // make us queue warnings without end).
                self.refused_renegotiation = true;
                self.queue_alert(WARNING, NO_RENEGOTIATION)?;
                Ok(Opened::Nothing)
            }
            CHANGE_CIPHER_SPEC | HANDSHAKE => Err(Alert::fatal(
                UNEXPECTED_MESSAGE,
                "a handshake message after the handshake",
            )),
            _ => Err(Alert::fatal(
                UNEXPECTED_MESSAGE,
                "a record of an unknown content type",
            )),
        }
    }

    /// TLS 1.3 handshake messages after the handshake: only `KeyUpdate` is expected from a
    /// client (no post-handshake authentication is asked for), and it must end its record.
    fn post_handshake(&mut self, body: &[u8]) -> Result<Opened, Alert> {
        match body {
            [KEY_UPDATE, 0, 0, 1, request @ (0 | 1)] => {
                // A peer may update its keys as often as it likes, but not endlessly without
                // data between (rustls's limit): each one costs a key derivation here.
                self.key_updates_received += 1;
                if self.key_updates_received > KEY_UPDATES_WITHOUT_DATA {
                    return Err(Alert::fatal(
                        UNEXPECTED_MESSAGE,
                        "too many key updates without data between them",
                    ));
                }
                self.receiving = self.receiving.updated().ok_or(Alert::fatal(
                    UNEXPECTED_MESSAGE,
                    "a key update on a connection without one",
                ))?;
                // Answered with one update of our own before our next data; requests that come
                // while we have sent nothing since are answered by that one (RFC 8446 §4.6.3).
                if *request == 1 && !self.answered_key_update {
                    self.update_sending_key()?;
                    self.answered_key_update = true;
                }
                Ok(Opened::Nothing)
            }
            [KEY_UPDATE, 0, 0, 1, 0 | 1, _, ..] => Err(Alert::fatal(
                UNEXPECTED_MESSAGE,
                "a KeyUpdate not at the end of its record",
            )),
            [KEY_UPDATE, 0, 0, 1, _] => Err(Alert::fatal(DECODE_ERROR, "a malformed KeyUpdate")),
            // Legal, but no client splits a five-byte message across records: refused, said
            // so in the log.
            [KEY_UPDATE, ..] if body.len() < 5 => Err(Alert::fatal(
                UNEXPECTED_MESSAGE,
                "a KeyUpdate split across records (not supported)",
            )),
            [KEY_UPDATE, ..] => Err(Alert::fatal(DECODE_ERROR, "a malformed KeyUpdate")),
            _ => Err(Alert::fatal(
                UNEXPECTED_MESSAGE,
                "a handshake message the client may not send after the handshake",
            )),
        }
    }

    /// Opens the record `record` in place and acts on it.
    fn open_record(
        &mut self,
        key: &mut aead::LessSafeKey,
        record: &mut [u8],
    ) -> Result<Opened, Alert> {
        let (content_type, range) = self.receiving.open(key, record)?;
        if content_type == APPLICATION_DATA {
            if !range.is_empty() {
                self.key_updates_received = 0;
            }
            return Ok(if range.is_empty() {
                Opened::Nothing
            } else {
                Opened::Data(range)
            });
        }
        if content_type != HANDSHAKE && content_type != ALERT && range.is_empty() {
            return Err(Alert::fatal(UNEXPECTED_MESSAGE, "an empty record"));
        }
        let seq_before = self.receiving.seq;
        let opened = self.control(content_type, &record[range])?;
        if self.receiving.seq != seq_before {
            // The receiving key changed: the records that follow need the new one.
            *key = self.receiving.expand();
        }
        Ok(opened)
    }

    /// Opens the whole records in `buf[..len]` in place, moving their application data to the
    /// front; returns how much data there is and where the first incomplete record starts.
    fn open_in_place(&mut self, buf: &mut [u8], len: usize) -> Result<(usize, usize), Alert> {
        let mut key = self.receiving.expand();
        let mut data = 0;
        let mut at = 0;
        while let Some(record_len) = complete_record(&buf[at..len])? {
            let record = at..at + record_len;
            at += record_len;
            match self.open_record(&mut key, &mut buf[record.clone()])? {
                Opened::Data(range) => {
                    let from = record.start + range.start..record.start + range.end;
                    buf.copy_within(from, data);
                    data += range.len();
                }
                Opened::Nothing => {}
                Opened::Closed => {
                    self.peer_closed = true;
                    return Ok((data, len));
                }
            }
        }
        Ok((data, at))
    }

    /// Opens the whole records at the front of `self.incoming`, giving their data to `buf`
    /// (and what does not fit to `self.plaintext`); returns how much `buf` got.
    fn open_incoming(&mut self, buf: &mut [u8]) -> Result<usize, Alert> {
        let mut incoming = std::mem::take(&mut self.incoming);
        let mut key = self.receiving.expand();
        let mut given = 0;
        let mut at = 0;
        let result = loop {
            if given == buf.len() || !self.plaintext.bytes.is_empty() || self.peer_closed {
                break Ok(());
            }
            let record_len = match complete_record(&incoming[at..]) {
                Ok(Some(record_len)) => record_len,
                Ok(None) => break Ok(()),
                Err(alert) => break Err(alert),
            };
            let record = at..at + record_len;
            at += record_len;
            match self.open_record(&mut key, &mut incoming[record.clone()]) {
                Ok(Opened::Data(range)) => {
                    let data = &incoming[record.start + range.start..record.start + range.end];
                    let fits = data.len().min(buf.len() - given);
                    buf[given..given + fits].copy_from_slice(&data[..fits]);
                    given += fits;
                    if fits < data.len() {
                        self.plaintext.bytes = data[fits..].to_vec();
                    }
                }
                Ok(Opened::Nothing) => {}
                Ok(Opened::Closed) => self.peer_closed = true,
                Err(alert) => break Err(alert),
            }
        };
        if at < incoming.len() && !self.peer_closed {
            incoming.drain(..at);
            self.incoming = incoming;
        }
        result.map(|()| given)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsRecordStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            if let Some(error) = this.failure() {
                return Poll::Ready(Err(error));
            }
            // Data opened before that the caller had no room for.
            let pending = &mut this.plaintext;
            if pending.read < pending.bytes.len() {
                let rest = &pending.bytes[pending.read..];
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                pending.read += n;
                if pending.read == pending.bytes.len() {
                    *pending = PendingPlaintext::default();
                }
                return Poll::Ready(Ok(n));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(0));
            }
            // Whole records kept from before (the caller's buffer was full).
            if complete_record(&this.incoming).is_ok_and(|len| len.is_some()) {
                match this.open_incoming(buf) {
                    Ok(0) => continue,
                    Ok(n) => return Poll::Ready(Ok(n)),
                    Err(alert) => return Poll::Ready(Err(this.fail(alert, cx))),
                }
            }
            let kept = this.incoming.len();
            if kept + HEADER >= buf.len() {
                // The caller's buffer is too small for the partial record: read the rest of
                // it into the record's own buffer.
                let needed = match record_len(&this.incoming) {
                    Ok(len) => len.unwrap_or(HEADER),
                    Err(alert) => return Poll::Ready(Err(this.fail(alert, cx))),
                };
                this.incoming.resize(needed.max(kept + 1), 0);
                let read = Pin::new(&mut this.stream).poll_read(cx, &mut this.incoming[kept..]);
                let n = match read {
                    Poll::Ready(Ok(n)) => n,
                    other => {
                        this.incoming.truncate(kept);
                        return other;
                    }
                };
                this.incoming.truncate(kept + n);
                if n == 0 {
                    // As below: the end between records is an ordinary end.
                    return Poll::Ready(if kept > 0 {
                        Err(this.fail(Alert::truncated(), cx))
                    } else {
                        Ok(0)
                    });
                }
                continue;
            }
            // Read into the caller's buffer after room for the partial record (if any), then
            // open the records there in place.
            let n = ready!(Pin::new(&mut this.stream).poll_read(cx, &mut buf[kept..]))?;
            if n == 0 {
                if kept > 0 {
                    return Poll::Ready(Err(this.fail(Alert::truncated(), cx)));
                }
                // The end of the stream without close_notify: MQTT's own framing tells a
                // truncated packet, so this is an ordinary end, as on plain TCP.
                return Poll::Ready(Ok(0));
            }
            buf[..kept].copy_from_slice(&this.incoming);
            this.incoming = Vec::new();
            let queued = this.outgoing.bytes.len();
            match this.open_in_place(buf, kept + n) {
                Ok((data, complete)) => {
                    if complete < kept + n && !this.peer_closed {
                        this.incoming = buf[complete..kept + n].to_vec();
                    }
                    // Send what the records asked for (a warning alert, a key update) now,
                    // as far as the socket takes it; the rest goes with the next write.
                    if this.outgoing.bytes.len() > queued
                        && let Poll::Ready(Err(error)) =
                            this.outgoing.poll_drain(&mut this.stream, cx)
                    {
                        return Poll::Ready(Err(error));
                    }
                    if data > 0 {
                        return Poll::Ready(Ok(data));
                    }
                }
                Err(alert) => return Poll::Ready(Err(this.fail(alert, cx))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsRecordStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(error) = this.failure() {
            return Poll::Ready(Err(error));
        }
        if this.close_notify_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "TLS: written after close_notify",
            )));
        }
        // Earlier records first when there are many, so that output stays bounded by what the
        // socket takes; a few (session tickets, an alert) leave with this write's records, in
        // one system call.
        if this.outgoing.pending() >= WRITE_BATCH {
            ready!(this.outgoing.poll_drain(&mut this.stream, cx))?;
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let taken = &buf[..buf.len().min(WRITE_BATCH)];
        let records = taken.len().div_ceil(MAX_PLAINTEXT) as u64;
        if let Err(alert) = this.ensure_send_budget(records) {
            return Poll::Ready(Err(this.fail(alert, cx)));
        }
        let overhead = HEADER + this.sending.overhead();
        this.outgoing
            .bytes
            .reserve(taken.len() + records as usize * overhead);
        let key = this.sending.expand();
        this.answered_key_update = false;
        for chunk in taken.chunks(MAX_PLAINTEXT) {
            if let Err(alert) =
                this.sending
                    .seal(&key, APPLICATION_DATA, chunk, &mut this.outgoing.bytes)
            {
                return Poll::Ready(Err(this.fail(alert, cx)));
            }
        }
        // What the socket does not take now waits for the next write or the flush.
        if let Poll::Ready(Err(error)) = this.outgoing.poll_drain(&mut this.stream, cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(taken.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.outgoing.poll_drain(&mut this.stream, cx))?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_notify_sent && this.failed.is_none() {
            this.close_notify_sent = true;
            if let Err(alert) = this.queue_alert(WARNING, CLOSE_NOTIFY) {
                return Poll::Ready(Err(this.fail(alert, cx)));
            }
        }
        ready!(this.outgoing.poll_drain(&mut this.stream, cx))?;
        Pin::new(&mut this.stream).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    //! Whole connections over real sockets: rustls's own client (buffered, as devices use it)
    //! against [`accept`] and [`TlsRecordStream`].

    use std::net::SocketAddr;

    use futures_rustls::TlsConnector;
    use futures_rustls::client::TlsStream;
    use rustls::SupportedProtocolVersion;
    use rustls::crypto::ring::cipher_suite as suites;
    use rustls::pki_types::ServerName;
    use smol::net::{TcpListener, TcpStream};

    use super::*;

    type ServerStream = TlsRecordStream<TcpStream>;

    struct Pair {
        server: ServerStream,
        client: TlsStream<TcpStream>,
    }

    /// A handshake between rustls's client, offering only `suite` and `version`, and [`accept`]
    /// with the listeners' configuration.
    async fn pair(
        version: &'static SupportedProtocolVersion,
        suite: rustls::SupportedCipherSuite,
    ) -> Pair {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = generated.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::try_from(generated.signing_key.serialize_der())
            .unwrap();
        let server_config = super::super::tls::tls_config(vec![cert.clone()], key).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![suite];
        let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let server = async {
            let (socket, _) = listener.accept().await.unwrap();
            accept(server_config, socket).await.unwrap()
        };
        let client = async {
            let socket = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            TlsConnector::from(Arc::new(client_config))
                .connect(name, socket)
                .await
                .unwrap()
        };
        let (server, client) = futures_util::future::join(server, client).await;
        Pair { server, client }
    }

    /// Bytes that tell where they were cut.
    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// `len` bytes each way: through records of every size, partial reads on both sides, and
    /// (with a small `read_size`) a caller's buffer smaller than a record.
    async fn echo_both_ways(pair: &mut Pair, len: usize, read_size: usize) {
        let sent = payload(len);
        let client_writes = async {
            pair.client.write_all(&sent).await.unwrap();
            pair.client.flush().await.unwrap();
        };
        let server_reads = async {
            let mut got = Vec::new();
            let mut buf = vec![0; read_size];
            while got.len() < len {
                let n = pair.server.read(&mut buf).await.unwrap();
                assert!(n > 0, "the stream ended after {} bytes", got.len());
                got.extend_from_slice(&buf[..n]);
            }
            got
        };
        let ((), got) = futures_util::future::join(client_writes, server_reads).await;
        assert!(got == sent, "the server read what the client wrote");

        let server_writes = async {
            pair.server.write_all(&sent).await.unwrap();
            pair.server.flush().await.unwrap();
        };
        let client_reads = async {
            let mut got = vec![0; len];
            pair.client.read_exact(&mut got).await.unwrap();
            got
        };
        let ((), got) = futures_util::future::join(server_writes, client_reads).await;
        assert!(got == sent, "the client read what the server wrote");
    }

    #[test]
    fn every_offered_suite_carries_data_both_ways_and_closes_cleanly() {
        let cases = [
            (&rustls::version::TLS13, suites::TLS13_AES_128_GCM_SHA256),
            (&rustls::version::TLS13, suites::TLS13_AES_256_GCM_SHA384),
            (
                &rustls::version::TLS13,
                suites::TLS13_CHACHA20_POLY1305_SHA256,
            ),
            (
                &rustls::version::TLS12,
                suites::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ),
            (
                &rustls::version::TLS12,
                suites::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ),
            (
                &rustls::version::TLS12,
                suites::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            ),
        ];
        for (version, suite) in cases {
            smol::block_on(async {
                let mut pair = pair(version, suite).await;
                let expected = match suite.suite() {
                    rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                    | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => {
                        Cipher::Aes128Gcm
                    }
                    rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
                    | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => {
                        Cipher::Aes256Gcm
                    }
                    _ => Cipher::ChaCha20Poly1305,
                };
                assert_eq!(pair.server.sending.cipher, expected);
                assert_eq!(
                    pair.server.sending.tls13(),
                    version == &rustls::version::TLS13
                );
                echo_both_ways(&mut pair, 1, 16 * 1024).await;
                echo_both_ways(&mut pair, 300 * 1024 + 17, 16 * 1024).await;
                echo_both_ways(&mut pair, 40 * 1024 + 3, 7).await;
                // The client's close_notify ends the server's stream; the server's ends the
                // client's.
                pair.client.close().await.unwrap();
                let mut buf = [0; 64];
                assert_eq!(pair.server.read(&mut buf).await.unwrap(), 0, "{suite:?}");
                pair.server.close().await.unwrap();
                assert_eq!(pair.client.read(&mut buf).await.unwrap(), 0, "{suite:?}");
            });
        }
    }

    #[test]
    fn an_idle_connection_keeps_no_buffer() {
        smol::block_on(async {
            let mut pair = pair(&rustls::version::TLS13, suites::TLS13_AES_128_GCM_SHA256).await;
            echo_both_ways(&mut pair, 100 * 1024 + 1, 16 * 1024).await;
            assert_eq!(pair.server.incoming.capacity(), 0);
            assert_eq!(pair.server.outgoing.bytes.capacity(), 0);
            assert_eq!(pair.server.plaintext.bytes.capacity(), 0);
        });
    }

    #[test]
    fn a_key_update_from_the_client_is_followed_in_both_directions() {
        smol::block_on(async {
            let mut pair = pair(&rustls::version::TLS13, suites::TLS13_AES_128_GCM_SHA256).await;
            echo_both_ways(&mut pair, 1000, 16 * 1024).await;
            for round in 0..3 {
                // rustls's client asks for the server's keys to be updated too.
                pair.client.get_mut().1.refresh_traffic_keys().unwrap();
                echo_both_ways(&mut pair, 20 * 1024 + round, 16 * 1024).await;
            }
            assert_eq!(pair.server.receiving.seq, 2, "new receiving keys");
        });
    }

    #[test]
    fn a_forged_record_is_refused_with_bad_record_mac() {
        smol::block_on(async {
            let mut pair = pair(&rustls::version::TLS13, suites::TLS13_AES_128_GCM_SHA256).await;
            echo_both_ways(&mut pair, 10, 16 * 1024).await;
            let mut forged = vec![APPLICATION_DATA, 3, 3, 0, 40];
            forged.extend_from_slice(&[7; 40]);
            pair.client.get_mut().0.write_all(&forged).await.unwrap();
            let mut buf = [0; 64];
            let error = pair.server.read(&mut buf).await.unwrap_err();
            assert!(error.to_string().contains("integrity"), "{error}");
            // Every later read says so again.
            assert!(pair.server.read(&mut buf).await.is_err());
            let error = pair.client.read(&mut buf).await.unwrap_err();
            assert!(
                error.to_string().contains("BadRecordMac"),
                "the client hears why: {error}"
            );
        });
    }

    #[test]
    fn a_plaintext_change_cipher_spec_after_the_handshake_is_an_unexpected_message() {
        smol::block_on(async {
            let mut pair = pair(&rustls::version::TLS13, suites::TLS13_AES_128_GCM_SHA256).await;
            pair.client
                .get_mut()
                .0
                .write_all(&[CHANGE_CIPHER_SPEC, 3, 3, 0, 1, 1])
                .await
                .unwrap();
            let mut buf = [0; 64];
            let error = pair.server.read(&mut buf).await.unwrap_err();
            assert!(error.to_string().contains("unprotected"), "{error}");
            let error = pair.client.read(&mut buf).await.unwrap_err();
            assert!(error.to_string().contains("UnexpectedMessage"), "{error}");
        });
    }

    #[test]
    fn a_tls_1_2_renegotiation_is_refused_once_then_ends_the_connection() {
        smol::block_on(async {
            let mut pair = pair(
                &rustls::version::TLS12,
                suites::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            )
            .await;
            let hello = [CLIENT_HELLO, 0, 0, 0];
            assert!(matches!(
                pair.server.control(HANDSHAKE, &hello),
                Ok(Opened::Nothing)
            ));
            assert!(
                !pair.server.outgoing.is_empty(),
                "a no_renegotiation warning"
            );
            let Err(alert) = pair.server.control(HANDSHAKE, &hello) else {
                panic!("a second renegotiation is refused");
            };
            assert_eq!(alert.description, Some(UNEXPECTED_MESSAGE));
        });
    }

    #[test]
    fn an_oversized_record_is_refused_with_record_overflow() {
        smol::block_on(async {
            let mut pair = pair(
                &rustls::version::TLS12,
                suites::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            )
            .await;
            let [high, low] = u16::try_from(MAX_BODY + 1).unwrap().to_be_bytes();
            pair.client
                .get_mut()
                .0
                .write_all(&[APPLICATION_DATA, 3, 3, high, low])
                .await
                .unwrap();
            let mut buf = [0; 64];
            let error = pair.server.read(&mut buf).await.unwrap_err();
            assert!(error.to_string().contains("too long"), "{error}");
            let error = pair.client.read(&mut buf).await.unwrap_err();
            assert!(error.to_string().contains("RecordOverflow"), "{error}");
        });
    }

    #[test]
    fn the_end_of_the_socket_inside_a_record_is_an_error() {
        smol::block_on(async {
            let mut pair = pair(&rustls::version::TLS13, suites::TLS13_AES_128_GCM_SHA256).await;
            pair.client
                .get_mut()
                .0
                .write_all(&[APPLICATION_DATA, 3, 3, 0, 100, 1, 2, 3])
                .await
                .unwrap();
            pair.client
                .get_mut()
                .0
                .shutdown(std::net::Shutdown::Write)
                .unwrap();
            let mut buf = [0; 64];
            let error = pair.server.read(&mut buf).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        });
    }

    #[test]
    fn the_end_of_the_socket_between_records_is_the_end_of_the_stream() {
        for read_size in [1, 16 * 1024] {
            smol::block_on(async {
                let mut pair =
                    pair(&rustls::version::TLS13, suites::TLS13_AES_128_GCM_SHA256).await;
                echo_both_ways(&mut pair, 100, read_size).await;
                pair.client
                    .get_mut()
                    .0
                    .shutdown(std::net::Shutdown::Write)
                    .unwrap();
                let mut buf = vec![0; read_size];
                assert_eq!(pair.server.read(&mut buf).await.unwrap(), 0, "{read_size}");
            });
        }
    }

    #[test]
    fn a_client_that_speaks_no_tls_fails_the_handshake() {
        smol::block_on(async {
            let generated =
                rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
            let key =
                rustls::pki_types::PrivateKeyDer::try_from(generated.signing_key.serialize_der())
                    .unwrap();
            let config =
                super::super::tls::tls_config(vec![generated.cert.der().clone()], key).unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = async {
                let mut socket = TcpStream::connect(addr).await.unwrap();
                socket
                    .write_all(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
                    .await
                    .unwrap();
                let mut answer = Vec::new();
                let _ = socket.read_to_end(&mut answer).await;
                answer
            };
            let server = async {
                let (socket, _) = listener.accept().await.unwrap();
                accept(config, socket).await.err().unwrap()
            };
            let (answer, error) = futures_util::future::join(client, server).await;
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
            // rustls's alert reaches the client: a TLS alert record.
            assert_eq!(answer.first(), Some(&ALERT), "{answer:?}");
        });
    }
}
