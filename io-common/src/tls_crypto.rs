//! The cryptography under every rustls configuration aliot builds, the listeners' and the
//! device client's: ring's provider, with its X25519 key exchange replaced by aws-lc-rs's when
//! the `aws-lc` feature is on.
//!
//! Why: the key exchange is the largest part of a TLS handshake's CPU. Measured on the
//! development machine (one core, same run), an X25519 key pair and its shared secret take
//! ring 0.17 about 55 µs and aws-lc-rs about 30 µs, most of it in making the key pair (23 µs
//! and 7 µs: aws-lc computes the public key with s2n-bignum's verified base-point code); that is
//! about a seventh of the broker's CPU per TLS connection. P-256 signatures cost both the same
//! (18 µs), so ring keeps everything else, including the record layer (`broker::tls_records`).
//!
//! The feature is off in `aliot-io` by default, because aws-lc is a C library that adds about
//! a minute to a clean build and needs a C compiler for the target; the `aliot` command
//! (`aliot-tokio`) turns it on.

use rustls::crypto::{CryptoProvider, SupportedKxGroup};

/// ring's provider, with X25519 from aws-lc-rs when the `aws-lc` feature is on; the key
/// exchange groups stay in ring's order (X25519, P-256, P-384).
///
/// ```
/// use rustls::NamedGroup;
///
/// let provider = aliot_io::tls_crypto::provider();
/// let groups: Vec<NamedGroup> = provider.kx_groups.iter().map(|group| group.name()).collect();
/// assert_eq!(groups, [NamedGroup::X25519, NamedGroup::secp256r1, NamedGroup::secp384r1]);
/// ```
pub fn provider() -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = key_exchange_groups();
    provider
}

fn key_exchange_groups() -> Vec<&'static dyn SupportedKxGroup> {
    use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1};
    #[cfg(feature = "aws-lc")]
    let x25519: &'static dyn SupportedKxGroup = &aws_lc::X25519;
    #[cfg(not(feature = "aws-lc"))]
    let x25519 = rustls::crypto::ring::kx_group::X25519;
    vec![x25519, SECP256R1, SECP384R1]
}

/// X25519 (RFC 7748) through aws-lc-rs, as a rustls key exchange group.
#[cfg(feature = "aws-lc")]
mod aws_lc {
    use aws_lc_rs::agreement::{self, EphemeralPrivateKey, PublicKey, UnparsedPublicKey};
    use aws_lc_rs::rand::SystemRandom;
    use rustls::crypto::{ActiveKeyExchange, SharedSecret, SupportedKxGroup};
    use rustls::{Error, NamedGroup, PeerMisbehaved};

    /// The group: each [`start`](SupportedKxGroup::start) makes a fresh key pair.
    #[derive(Debug)]
    pub(super) struct X25519;

    impl SupportedKxGroup for X25519 {
        fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
            let private = EphemeralPrivateKey::generate(&agreement::X25519, &SystemRandom::new())
                .map_err(|_| Error::FailedToGetRandomBytes)?;
            let public = private
                .compute_public_key()
                .map_err(|_| Error::General("X25519 public key".into()))?;
            Ok(Box::new(KeyPair { private, public }))
        }

        fn name(&self) -> NamedGroup {
            NamedGroup::X25519
        }
    }

    /// One handshake's key pair, used once.
    struct KeyPair {
        private: EphemeralPrivateKey,
        public: PublicKey,
    }

    impl ActiveKeyExchange for KeyPair {
        /// The shared secret with the peer's public key. A key of the wrong length, or one that
        /// gives the all-zero secret (a point of small order, RFC 7748 §6.1), is the peer's
        /// fault, as in rustls's own groups.
        fn complete(self: Box<Self>, peer_public_key: &[u8]) -> Result<SharedSecret, Error> {
            let peer = UnparsedPublicKey::new(&agreement::X25519, peer_public_key);
            agreement::agree_ephemeral(
                self.private,
                peer,
                Error::from(PeerMisbehaved::InvalidKeyShare),
                |secret| Ok(SharedSecret::from(secret)),
            )
        }

        fn pub_key(&self) -> &[u8] {
            self.public.as_ref()
        }

        fn group(&self) -> NamedGroup {
            NamedGroup::X25519
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Our side and ring's (rustls's own group) agree on the secret, whichever starts.
        #[test]
        fn our_x25519_and_rings_derive_the_same_secret() {
            for ours_first in [true, false] {
                let ours = X25519.start().unwrap();
                let ring_side = rustls::crypto::ring::kx_group::X25519.start().unwrap();
                let (ours_public, ring_public) =
                    (ours.pub_key().to_vec(), ring_side.pub_key().to_vec());
                assert_eq!(ours_public.len(), 32);
                let (from_ours, from_ring) = if ours_first {
                    (
                        ours.complete(&ring_public).unwrap(),
                        ring_side.complete(&ours_public).unwrap(),
                    )
                } else {
                    let from_ring = ring_side.complete(&ours_public).unwrap();
                    (ours.complete(&ring_public).unwrap(), from_ring)
                };
                assert_eq!(from_ours.secret_bytes(), from_ring.secret_bytes());
                assert_ne!(from_ours.secret_bytes(), [0; 32]);
            }
        }

        /// Two key pairs are never the same.
        #[test]
        fn every_start_makes_a_fresh_key_pair() {
            let (a, b) = (X25519.start().unwrap(), X25519.start().unwrap());
            assert_ne!(a.pub_key(), b.pub_key());
            assert_eq!(a.group(), NamedGroup::X25519);
        }

        #[test]
        fn a_key_share_of_small_order_or_the_wrong_length_is_the_peers_fault() {
            // The point of order 1 (u = 1 encodes to this), and a truncated key.
            let mut small_order = [0u8; 32];
            small_order[0] = 1;
            for peer in [&small_order[..], &[9u8; 31][..], &[][..]] {
                let Err(error) = X25519.start().unwrap().complete(peer) else {
                    panic!("a secret from the key share {peer:?}");
                };
                assert_eq!(error, Error::from(PeerMisbehaved::InvalidKeyShare));
            }
        }
    }
}
