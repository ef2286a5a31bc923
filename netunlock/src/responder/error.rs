//! Errors of the socket layer. Messages tell the operator what to do.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ResponderError {
    /// Binding a privileged port without the privilege to do so.
    #[error(
        "binding UDP port {port} needs root or CAP_NET_BIND_SERVICE (e.g. run under the packaged systemd unit, \
         or `sudo setcap cap_net_bind_service=+ep $(command -v netunlockd)`)"
    )]
    Privilege { port: u16 },

    #[error(
        "UDP port {port} ({addr}) is already in use by {owner}: netunlockd needs the port to itself (a second \
         netunlockd, a DHCP server, WDS or dnsmasq on this host would take its traffic); stop the other one, or \
         run netunlockd on a host without a DHCP server"
    )]
    AddressInUse {
        addr: std::net::SocketAddr,
        port: u16,
        /// "netunlockd (pid 1234)", or how to find out.
        owner: String,
    },

    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },

    #[error("cannot set up the UDP socket for {addr} ({what}): {source}")]
    SocketOption {
        addr: std::net::SocketAddr,
        what: &'static str,
        #[source]
        source: io::Error,
    },

    #[error(transparent)]
    Interface(#[from] crate::netif::InterfaceError),

    #[error(
        "cannot join the DHCPv6 multicast group ff02::1:2 on interface `{interface}`: {source} \
         (is IPv6 enabled on it? `sysctl net.ipv6.conf.{interface}.disable_ipv6`)"
    )]
    JoinMulticast {
        interface: String,
        #[source]
        source: io::Error,
    },

    #[error("invalid responder configuration: {0}")]
    Config(String),

    #[error("cannot start the responder's worker threads: {0}")]
    Spawn(#[source] io::Error),

    #[error("the receive loop stopped: {0}")]
    Receive(#[source] io::Error),
}

impl ResponderError {
    /// Maps a bind error to the operator-facing variant.
    pub(crate) fn from_bind(addr: std::net::SocketAddr, err: io::Error) -> Self {
        let port = addr.port();
        match err.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) if port < 1024 => Self::Privilege { port },
            Some(libc::EADDRINUSE) => Self::AddressInUse {
                addr,
                port,
                owner: super::port_owner::udp_port_owner(port, addr.is_ipv6()).unwrap_or_else(|| {
                    format!(
                        "another process (run `ss -lunp 'sport = :{port}'` as root to see which)"
                    )
                }),
            },
            _ => Self::Bind { addr, source: err },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_errors_map_to_operator_messages() {
        let a: std::net::SocketAddr = "0.0.0.0:67".parse().unwrap();
        let e = ResponderError::from_bind(a, io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(e, ResponderError::Privilege { port: 67 }));
        assert!(e.to_string().contains("CAP_NET_BIND_SERVICE"));
        assert!(e.to_string().contains("setcap cap_net_bind_service=+ep"));
        let e = ResponderError::from_bind(a, io::Error::from_raw_os_error(libc::EADDRINUSE));
        assert!(e.to_string().contains("port 67"));
        assert!(e.to_string().contains("already in use by"));
        assert!(e.to_string().contains("dnsmasq"));
        // EACCES on a high port is not a privilege problem.
        let high: std::net::SocketAddr = "0.0.0.0:10067".parse().unwrap();
        let e = ResponderError::from_bind(high, io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(e, ResponderError::Bind { .. }));
    }
}
