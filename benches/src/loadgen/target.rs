//! Where the generator connects, and from where: loopback only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::LoadError;
use super::transport::Transport;

/// The broker under test: a loopback address and port, and the transport to it (TCP unless
/// [`with_transport`](Self::with_transport) says otherwise).
///
/// Building one is the only way to give the generator an address, and it refuses anything
/// that is not loopback, so a run never leaves the machine.
///
/// ```
/// use aliot_benches::loadgen::target::Target;
///
/// let target = Target::new("localhost", 1883)?;
/// assert_eq!(target.addr().to_string(), "127.0.0.1:1883");
/// assert!(Target::new("192.0.2.1", 1883).is_err());
/// # Ok::<(), aliot_benches::loadgen::LoadError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Target {
    addr: SocketAddr,
    transport: Transport,
}

impl Target {
    /// The broker at `host` (an IP address or `localhost`) and `port`.
    ///
    /// # Errors
    ///
    /// [`LoadError::UnknownHost`] for a host name other than `localhost` (nothing is
    /// resolved), [`LoadError::NotLoopback`] for an address outside 127.0.0.0/8 and `::1`.
    pub fn new(host: &str, port: u16) -> Result<Target, LoadError> {
        let ip = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse::<IpAddr>()
                .map_err(|_| LoadError::UnknownHost(host.to_owned()))?
        };
        Target::from_addr(SocketAddr::new(ip, port))
    }

    /// The broker at `addr`.
    ///
    /// # Errors
    ///
    /// [`LoadError::NotLoopback`] when `addr` is not a loopback address.
    pub fn from_addr(addr: SocketAddr) -> Result<Target, LoadError> {
        if addr.ip().is_loopback() {
            Ok(Target {
                addr,
                transport: Transport::Tcp,
            })
        } else {
            Err(LoadError::NotLoopback(addr.ip()))
        }
    }

    /// The broker's address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The same broker over `transport`.
    #[must_use]
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The transport to it.
    #[must_use]
    pub fn transport(&self) -> &Transport {
        &self.transport
    }
}

/// Spreads many connections over several loopback source addresses (127.0.0.2, 127.0.0.3, …)
/// so that no address runs out of ephemeral ports.
///
/// ```
/// use aliot_benches::loadgen::target::SourceAddresses;
///
/// let sources = SourceAddresses::new("127.0.0.2".parse()?, 5_000, 20_000)?;
/// assert_eq!(sources.for_connection(0).to_string(), "127.0.0.2");
/// assert_eq!(sources.for_connection(4_999).to_string(), "127.0.0.2");
/// assert_eq!(sources.for_connection(5_000).to_string(), "127.0.0.3");
/// assert_eq!(sources.count(), 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceAddresses {
    first: Ipv4Addr,
    per_source: usize,
    count: usize,
}

impl SourceAddresses {
    /// Addresses from `first` on, `per_source` connections each, enough for `connections`.
    ///
    /// # Errors
    ///
    /// [`LoadError::NotLoopback`] when `first` is not in 127.0.0.0/8,
    /// [`LoadError::SourceAddresses`] when the addresses needed would leave 127.0.0.0/8 (or
    /// reach its broadcast address), [`LoadError::Parameter`] when `per_source` is 0.
    pub fn new(
        first: Ipv4Addr,
        per_source: usize,
        connections: usize,
    ) -> Result<SourceAddresses, LoadError> {
        if !first.is_loopback() {
            return Err(LoadError::NotLoopback(IpAddr::V4(first)));
        }
        if per_source == 0 {
            return Err(LoadError::Parameter(
                "connections per source address must be at least 1".to_owned(),
            ));
        }
        let count = connections.div_ceil(per_source).max(1);
        // The last usable address of 127.0.0.0/8 is 127.255.255.254.
        let last = u32::from(Ipv4Addr::new(127, 255, 255, 254));
        let available = usize::try_from(last - u32::from(first) + 1).unwrap_or(usize::MAX);
        if count > available {
            return Err(LoadError::SourceAddresses {
                requested: connections,
                per_source,
                available,
            });
        }
        Ok(SourceAddresses {
            first,
            per_source,
            count,
        })
    }

    /// How many source addresses are used.
    #[must_use]
    pub fn count(&self) -> usize {
        self.count
    }

    /// The source address of connection `index` (0-based). Indexes past the planned
    /// connections stay on the last address.
    #[must_use]
    pub fn for_connection(&self, index: usize) -> IpAddr {
        let slot = (index / self.per_source).min(self.count.saturating_sub(1));
        let offset = u32::try_from(slot).unwrap_or(u32::MAX);
        IpAddr::V4(Ipv4Addr::from(u32::from(self.first).saturating_add(offset)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_loopback_is_a_target_and_other_addresses_are_not() {
        assert!(Target::new("::1", 1).is_ok());
        assert!(Target::new("127.9.9.9", 1).is_ok());
        assert!(matches!(
            Target::new("0.0.0.0", 1),
            Err(LoadError::NotLoopback(_))
        ));
        assert!(matches!(
            Target::new("example.com", 1),
            Err(LoadError::UnknownHost(_))
        ));
    }

    #[test]
    fn source_addresses_must_be_loopback_and_fit_in_127_slash_8() {
        assert!(matches!(
            SourceAddresses::new(Ipv4Addr::new(10, 0, 0, 1), 1, 1),
            Err(LoadError::NotLoopback(_))
        ));
        assert!(matches!(
            SourceAddresses::new(Ipv4Addr::new(127, 255, 255, 254), 1, 2),
            Err(LoadError::SourceAddresses { .. })
        ));
        assert!(matches!(
            SourceAddresses::new(Ipv4Addr::new(127, 0, 0, 2), 0, 2),
            Err(LoadError::Parameter(_))
        ));
    }

    #[test]
    fn connections_past_the_plan_stay_on_the_last_address() {
        let sources =
            SourceAddresses::new(Ipv4Addr::new(127, 0, 0, 2), 10, 25).expect("three addresses fit");
        assert_eq!(sources.count(), 3);
        assert_eq!(
            sources.for_connection(1_000),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4))
        );
    }
}
