//! [`NatsGate`]: a node's authenticator that refuses new connections while NATS is unreachable
//! (`when_nats_down = "refuse"`).

use aliot_auth::{DeviceIdentity, PskIdentity, PskKey};
use aliot_core::authenticator::{
    AuthContext, Authenticated, Authenticator, ClientKey, Refusal, RefusalReason,
};
use aliot_core::codec::{Connect, ConnectReturnCode};
use aliot_topic::Acl;

/// Wraps a node's authenticator: while its NATS connection is down, a CONNECT is refused
/// with CONNACK 3 (server unavailable), so that the device tries another node; connections
/// already open stay. Everything else is the wrapped authenticator's.
pub struct NatsGate<A> {
    inner: A,
    nats: async_nats::Client,
}

impl<A> NatsGate<A> {
    /// Gates `inner` on the connection of `nats` (see [`Cluster::nats`](crate::Cluster::nats)).
    pub fn new(inner: A, nats: async_nats::Client) -> Self {
        NatsGate { inner, nats }
    }
}

impl<A: Authenticator> Authenticator for NatsGate<A> {
    fn authenticate(
        &self,
        connect: &Connect,
        context: &AuthContext,
    ) -> Result<Authenticated, Refusal> {
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Err(Refusal {
                code: ConnectReturnCode::ServerUnavailable,
                reason: RefusalReason::ClusterUnreachable,
            });
        }
        self.inner.authenticate(connect, context)
    }

    fn knows_device(&self, device: &DeviceIdentity) -> Option<bool> {
        self.inner.knows_device(device)
    }

    fn psk_key(&self, identity: &PskIdentity) -> Option<PskKey> {
        self.inner.psk_key(identity)
    }

    fn session_acl(&self, key: &ClientKey) -> Acl {
        self.inner.session_acl(key)
    }
}
