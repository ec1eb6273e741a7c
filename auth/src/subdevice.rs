//! The proof a gateway sends for a sub-device it adds to its topology or logs in
//! (PLATFORM-PROTOCOLS §4.3): the hex HMAC, with the sub-device's own secret, of
//! `clientId${clientId}deviceName${dn}productKey${pk}timestamp${timestamp}` — every parameter
//! but `sign`, `signMethod` and `cleanSession`, sorted by name, each name followed by its value.
//!
//! The SDKs differ in everything around that string, and all of it is accepted: the method name
//! in any case (`hmacSha256`, `hmacsha1`, `hmacMd5`), the hex in either case, the client id as
//! sent (with its `|…|` extension when it has one), and a timestamp that is a JSON number (the
//! Node SDK) or a string (C 3.x sends its uptime, so it is not checked for freshness).

use alloc::string::String;

use subtle::ConstantTimeEq;

use crate::SignMethod;
use crate::identity::DeviceIdentity;
use crate::sign::{content, decode_hex_into, hmac_digest, sign_content};

/// Why a sub-device's proof could not even be checked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubDeviceProofError {
    /// The sign method is none of HMAC-SHA1, HMAC-SHA256, HMAC-MD5 (ours: the platform's keyless
    /// `Sha256` is UNCONFIRMED and refused).
    #[error("sign method {0:?} is not hmacSha1, hmacSha256 or hmacMd5")]
    UnknownSignMethod(String),
    /// The sign is not the method's digest in hex.
    #[error("the sign is not a {0} digest in hex")]
    SignNotHex(SignMethod),
}

/// A sub-device's proof, read from a `thing/topo/add` entry or a `combine/login` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubDeviceProof {
    identity: DeviceIdentity,
    client_id: String,
    timestamp: String,
    method: SignMethod,
    sign: [u8; 32],
}

impl SubDeviceProof {
    /// Reads a proof: the sub-device, the `clientId` and `timestamp` exactly as sent (a number
    /// in decimal), the `signMethod` in any case, and the `sign` in hex of either case.
    ///
    /// ```
    /// use aliot_auth::{DeviceIdentity, SignMethod, SubDeviceProof, subdevice_sign};
    ///
    /// let sub = DeviceIdentity::new("a1Sub", "sensor-1");
    /// let sign = subdevice_sign(b"sub-secret", &sub, "a1Sub&sensor-1", "1581417203000", SignMethod::HmacSha1);
    /// let proof = SubDeviceProof::new(sub, "a1Sub&sensor-1", "1581417203000", "hmacSha1", &sign.to_uppercase())?;
    /// assert!(proof.matches(b"sub-secret"));
    /// assert!(!proof.matches(b"another secret"));
    /// # Ok::<(), aliot_auth::SubDeviceProofError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`SubDeviceProofError`] when the method is unknown or the sign is not its digest in hex.
    pub fn new(
        identity: DeviceIdentity,
        client_id: impl Into<String>,
        timestamp: impl Into<String>,
        sign_method: &str,
        sign: &str,
    ) -> Result<Self, SubDeviceProofError> {
        let method = SignMethod::ALL
            .into_iter()
            .find(|method| method.as_str().eq_ignore_ascii_case(sign_method))
            .ok_or_else(|| SubDeviceProofError::UnknownSignMethod(sign_method.into()))?;
        let mut decoded = [0u8; 32];
        let digest = decoded
            .get_mut(..method.digest_len())
            .ok_or(SubDeviceProofError::SignNotHex(method))?;
        decode_hex_into(sign.as_bytes(), digest).ok_or(SubDeviceProofError::SignNotHex(method))?;
        Ok(SubDeviceProof {
            identity,
            client_id: client_id.into(),
            timestamp: timestamp.into(),
            method,
            sign: decoded,
        })
    }

    /// The sub-device the proof is for.
    pub fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    /// The client id the proof was made with.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Whether the proof was made with `device_secret`, compared in constant time.
    pub fn matches(&self, device_secret: &[u8]) -> bool {
        let signed = content(&self.client_id, &self.identity, Some(&self.timestamp));
        let expected = hmac_digest(self.method, device_secret, signed.as_bytes());
        let sent = self
            .sign
            .get(..self.method.digest_len())
            .unwrap_or_default();
        bool::from(expected.as_slice().ct_eq(sent))
    }
}

/// The lowercase hex proof a gateway sends for a sub-device (what [`SubDeviceProof::matches`]
/// checks): the HMAC with the sub-device's secret of
/// `clientId${client_id}deviceName${dn}productKey${pk}timestamp${timestamp}`.
///
/// ```
/// use aliot_auth::{DeviceIdentity, SignMethod, subdevice_sign};
///
/// // The platform's documented example content, signed with HMAC-MD5.
/// let sub = DeviceIdentity::new("al12345****", "device1234");
/// let sign = subdevice_sign(
///     b"secret",
///     &sub,
///     "al12345****&device1234",
///     "1581417203000",
///     SignMethod::HmacMd5,
/// );
/// assert_eq!(sign.len(), 32);
/// ```
pub fn subdevice_sign(
    device_secret: &[u8],
    identity: &DeviceIdentity,
    client_id: &str,
    timestamp: &str,
    method: SignMethod,
) -> String {
    sign_content(
        method,
        device_secret,
        &content(client_id, identity, Some(timestamp)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub() -> DeviceIdentity {
        DeviceIdentity::new("a1SubProd01", "sensor-1")
    }

    #[test]
    fn the_documented_content_is_what_is_signed() {
        // PLATFORM-PROTOCOLS §4.3: hmac_md5(deviceSecret,
        // clientIdal12345****&device1234deviceNamedevice1234productKeyal12345****timestamp1581417203000)
        let identity = DeviceIdentity::new("al12345****", "device1234");
        assert_eq!(
            content("al12345****&device1234", &identity, Some("1581417203000")),
            "clientIdal12345****&device1234deviceNamedevice1234productKeyal12345****timestamp1581417203000"
        );
    }

    #[test]
    fn every_sdks_method_name_and_hex_case_is_accepted() {
        for (name, method) in [
            ("hmacSha256", SignMethod::HmacSha256),
            ("hmacsha1", SignMethod::HmacSha1),
            ("hmacMd5", SignMethod::HmacMd5),
            ("HMACSHA256", SignMethod::HmacSha256),
        ] {
            let sign = subdevice_sign(
                b"s3cr3t",
                &sub(),
                "a1SubProd01.sensor-1|_ss=1|",
                "42",
                method,
            );
            for sent in [sign.clone(), sign.to_uppercase()] {
                let proof =
                    SubDeviceProof::new(sub(), "a1SubProd01.sensor-1|_ss=1|", "42", name, &sent)
                        .unwrap();
                assert!(proof.matches(b"s3cr3t"), "{name} {sent}");
                assert!(!proof.matches(b"s3cr3u"), "{name}: another secret");
            }
        }
    }

    #[test]
    fn the_client_id_and_timestamp_are_signed_as_sent() {
        let sign = subdevice_sign(
            b"k",
            &sub(),
            "a1SubProd01&sensor-1",
            "1",
            SignMethod::HmacSha1,
        );
        let moved =
            SubDeviceProof::new(sub(), "a1SubProd01&sensor-1", "2", "hmacsha1", &sign).unwrap();
        assert!(!moved.matches(b"k"), "another timestamp");
        let other =
            SubDeviceProof::new(sub(), "a1SubProd01.sensor-1", "1", "hmacsha1", &sign).unwrap();
        assert!(!other.matches(b"k"), "another client id");
        let another_device = DeviceIdentity::new("a1SubProd01", "sensor-2");
        let stolen = SubDeviceProof::new(
            another_device,
            "a1SubProd01&sensor-1",
            "1",
            "hmacsha1",
            &sign,
        )
        .unwrap();
        assert!(!stolen.matches(b"k"), "another device");
    }

    #[test]
    fn a_proof_that_cannot_be_checked_says_why() {
        assert_eq!(
            SubDeviceProof::new(sub(), "c", "1", "Sha256", "00"),
            Err(SubDeviceProofError::UnknownSignMethod("Sha256".into()))
        );
        let short = "ab".repeat(19);
        assert_eq!(
            SubDeviceProof::new(sub(), "c", "1", "hmacsha1", &short),
            Err(SubDeviceProofError::SignNotHex(SignMethod::HmacSha1))
        );
        let not_hex = "zz".repeat(20);
        assert_eq!(
            SubDeviceProof::new(sub(), "c", "1", "hmacsha1", &not_hex),
            Err(SubDeviceProofError::SignNotHex(SignMethod::HmacSha1))
        );
        // A sha256-long sign under sha1 is the wrong length, not a crash.
        let long = "ab".repeat(32);
        assert!(SubDeviceProof::new(sub(), "c", "1", "hmacsha1", &long).is_err());
    }
}
