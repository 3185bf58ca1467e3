//! Limits on connections, and who a client is for the limits that count per client.
//!
//! The accept loop asks [`Admission`] before it serves a connection: over the total or the
//! per-client limit the connection is closed at once (the client sees it reset or closed and
//! retries later), so the loop never waits on a refused client and never accepts past the
//! limit. Each refusal is logged at debug level, and a warning at most every
//! [`WARN_EVERY`] counts them.
//!
//! A client is its address, except that IPv6 addresses count per /64 (one host commonly has a
//! whole /64, so a per-address cap would not hold it back) and IPv4-mapped IPv6 addresses as
//! the IPv4 address. Behind a proxy every connection comes from the proxy, and one proxy
//! connection carries requests of many clients in turn: a per-client *connection* cap cannot
//! tell clients apart there, so it does not apply (the proxy should limit its clients). Limits
//! that count per request ([`creator`]) use the address the proxy forwards instead.

use crate::auth::Auth;
use axum::http::request::Parts;
use resumable_core::Owner;
use resumable_proto::forwarded::{ForwardedFor, parse_forwarded_for};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// How often, at most, refused connections are reported as a warning.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// How many connections may be open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections in all; `None` for no limit.
    pub max_connections: Option<usize>,
    /// Open connections per client address (IPv6: per /64); `None` for no limit. Not applied
    /// behind a proxy (see [`crate::ServerConfig::behind_proxy`]).
    pub max_per_client: Option<usize>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: Some(10_000),
            max_per_client: Some(256),
        }
    }
}

/// The address a peer counts as: IPv6 per /64, IPv4-mapped IPv6 as IPv4.
pub(crate) fn client_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// The peer of a request's connection, a request extension (absent in in-process tests).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// Whom a creation counts against for the creations-per-minute limit: the owner when
/// requests authenticate (a client cannot escape it by changing address, and many users
/// behind one NAT do not share it), else the client's address, behind a proxy the one it
/// forwards; `None` when nothing names the client (no connection, as in in-process tests).
pub(crate) fn creator(
    parts: &Parts,
    auth: &Auth,
    owner: &Owner,
    behind_proxy: bool,
) -> Option<String> {
    if !matches!(auth, Auth::None) {
        return Some(format!("owner {}", owner.as_str()));
    }
    let peer = parts.extensions.get::<Peer>().map(|peer| peer.0.ip());
    if behind_proxy {
        let text = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
        };
        match parse_forwarded_for(text("forwarded"), text("x-forwarded-for")) {
            Some(ForwardedFor::Address(address)) => {
                return Some(format!("client {}", client_of(address)));
            }
            Some(ForwardedFor::Token(token)) => return Some(format!("client {token}")),
            // The proxy named nobody: all its clients share its address's allowance.
            None => {}
        }
    }
    peer.map(|address| format!("client {}", client_of(address)))
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The server has its maximum of open connections.
    Total,
    /// This client has its maximum.
    Client,
}

/// Counts open connections against [`ConnectionLimits`].
pub(crate) struct Admission {
    limits: ConnectionLimits,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    /// Only clients with an open connection (entries go at zero).
    per_client: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it lets the next one in.
pub(crate) struct Permit {
    admission: Arc<Admission>,
    client: Option<IpAddr>,
}

impl Admission {
    /// Limits as configured; the per-client one is dropped `behind_proxy`.
    pub(crate) fn new(mut limits: ConnectionLimits, behind_proxy: bool) -> Arc<Self> {
        if behind_proxy {
            limits.max_per_client = None;
        }
        Arc::new(Admission {
            limits,
            counts: Mutex::default(),
        })
    }

    /// Admits a connection from `peer`, or says which limit it is over.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Permit, Refusal> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if self
            .limits
            .max_connections
            .is_some_and(|max| counts.total >= max)
        {
            return Err(Refusal::Total);
        }
        let client = match self.limits.max_per_client {
            Some(max) => {
                let client = client_of(peer);
                let open = counts.per_client.entry(client).or_default();
                if *open >= max {
                    return Err(Refusal::Client);
                }
                *open += 1;
                Some(client)
            }
            None => None,
        };
        counts.total += 1;
        Ok(Permit {
            admission: self.clone(),
            client,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total -= 1;
        if let Some(client) = self.client
            && let Some(open) = counts.per_client.get_mut(&client)
        {
            *open -= 1;
            if *open == 0 {
                counts.per_client.remove(&client);
            }
        }
    }
}

/// Logs refused connections: each at debug level, and a count as a warning at most every
/// [`WARN_EVERY`], so a flood does not flood the log.
#[derive(Default)]
pub(crate) struct RefusalLog {
    last_warning: Option<Instant>,
    total: u64,
    client: u64,
}

impl RefusalLog {
    pub(crate) fn refused(
        &mut self,
        peer: SocketAddr,
        refusal: Refusal,
        limits: &ConnectionLimits,
    ) {
        match refusal {
            Refusal::Total => self.total += 1,
            Refusal::Client => self.client += 1,
        }
        tracing::debug!(%peer, ?refusal, "connection refused: over the limit");
        let now = Instant::now();
        if self
            .last_warning
            .is_some_and(|last| now.duration_since(last) < WARN_EVERY)
        {
            return;
        }
        tracing::warn!(
            over_max_connections = self.total,
            over_max_connections_per_client = self.client,
            max_connections = ?limits.max_connections,
            max_connections_per_client = ?limits.max_per_client,
            "connections refused (closed at once) since the last report",
        );
        *self = RefusalLog {
            last_warning: Some(now),
            ..RefusalLog::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(client_of(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(client_of(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(client_of(ip("192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn permits_count_until_dropped() {
        let limits = ConnectionLimits {
            max_connections: Some(3),
            max_per_client: Some(2),
        };
        let admission = Admission::new(limits, false);
        let a1 = admission.admit(ip("10.0.0.1")).unwrap();
        let _a2 = admission.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(admission.admit(ip("10.0.0.1")).err(), Some(Refusal::Client));
        let _b = admission.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(admission.admit(ip("10.0.0.3")).err(), Some(Refusal::Total));
        drop(a1);
        let _a3 = admission.admit(ip("10.0.0.1")).unwrap();
        // Behind a proxy every connection is the proxy's: only the total counts.
        let proxied = Admission::new(limits, true);
        let _held: Vec<_> = (0..3)
            .map(|_| proxied.admit(ip("10.0.0.9")).unwrap())
            .collect();
        assert_eq!(proxied.admit(ip("10.0.0.9")).err(), Some(Refusal::Total));
    }
}
