//! Which user a loopback peer belongs to: the owner of the socket at the other end of an
//! accepted connection. Any local user can connect to a loopback port; the endpoints serve the
//! user who runs xero-auth, and close a connection from anyone else's process at once, so that
//! another user cannot hold their connections open and starve them.
//!
//! On Linux the kernel says who created each TCP socket. The peer's socket is the one whose own
//! (local) end is the peer's address and port and whose remote end is ours; it is looked up by
//! that exact pair through the socket-diagnostics netlink interface (`sock_diag(7)`), one
//! request and one answer whatever the number of sockets on the machine. Where that interface
//! is not usable (a sandbox may refuse netlink), `/proc/net/tcp` and `/proc/net/tcp6` are read
//! instead; they list every TCP socket with its `uid`, but reading them walks the kernel's whole
//! socket table (milliseconds on a large machine), hence the netlink first.
//!
//! Other platforms have no such lookup: [`owner`] answers [`Owner::Unknown`] there, and the
//! endpoint relies on its key and on the cap on idle connections (see docs/security.md).
#![cfg_attr(
    not(target_os = "linux"),
    allow(dead_code, reason = "a peer's user is found on Linux only; elsewhere the endpoint key alone guards it")
)]

use std::net::{IpAddr, SocketAddr};

/// Who owns the socket at the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The socket was found; its owner's user id.
    Uid(u32),
    /// The lookup works here, but no live socket matches: the peer has already gone (or the
    /// connection was not made from this machine's ordinary TCP stack).
    NotFound,
    /// This platform or sandbox gives no way to tell.
    Unknown,
}

/// The owner of the peer socket of a connection whose ends are `local` (ours) and `peer`.
pub fn owner(local: SocketAddr, peer: SocketAddr) -> Owner {
    platform::owner(local, peer)
}

/// The process that holds the socket at the other end of a connection whose ends are `local`
/// (ours) and `peer`, for the audit log: the socket's inode from `/proc/net/tcp{,6}`, then the
/// first process of this user with a descriptor on it. Linux only; `None` elsewhere, when the
/// peer has gone, or when the socket is another user's (their `/proc/PID/fd` is closed to us).
pub fn pid_of(local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        let inode = ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|file| {
            let listing = std::fs::read_to_string(file).ok()?;
            inode_in_proc_net_tcp(&listing, peer, local)
        })?;
        let wanted = format!("socket:[{inode}]");
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == wanted.as_str()) {
                    return Some(pid);
                }
            }
        }
        None
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (local, peer);
        None
    }
}

/// The inode of the socket in `listing` (as `/proc/net/tcp` prints it) whose own end is `local`
/// and remote end is `remote`.
pub fn inode_in_proc_net_tcp(listing: &str, local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    listing.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let line_local = parse_proc_endpoint(fields.get(1)?)?;
        let line_remote = parse_proc_endpoint(fields.get(2)?)?;
        let same = |a: SocketAddr, b: SocketAddr| {
            a.port() == b.port()
                && (a.ip() == b.ip()
                    || a.ip() == as_family(b.ip(), a.is_ipv6())
                    || b.ip() == as_family(a.ip(), b.is_ipv6()))
        };
        let inode = fields.get(9)?.parse::<u64>().ok()?;
        (inode != 0 && same(line_local, local) && same(line_remote, remote)).then_some(inode)
    })
}

/// The user id this process runs as, where there is one.
pub fn current_uid() -> Option<u32> {
    platform::current_uid()
}

/// The address as the kernel keeps it for a socket of family `v6`: an IPv4 address in an IPv6
/// socket is IPv4-mapped (`::ffff:a.b.c.d`).
fn as_family(ip: IpAddr, v6: bool) -> IpAddr {
    match (ip, v6) {
        (IpAddr::V4(v4), true) => IpAddr::V6(v4.to_ipv6_mapped()),
        (IpAddr::V6(v6), false) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        (ip, _) => ip,
    }
}

/// The `uid` of the socket in a `/proc/net/tcp` or `/proc/net/tcp6` listing whose local end is
/// `local` and remote end is `remote`; `None` when no line matches. Lines that do not parse are
/// skipped; a socket in TIME_WAIT (state 06) has no owner left and does not count.
pub fn uid_in_proc_net_tcp(listing: &str, local: SocketAddr, remote: SocketAddr) -> Option<u32> {
    listing.lines().find_map(|line| {
        let mut fields = line.split_ascii_whitespace();
        let _slot = fields.next()?;
        let line_local = parse_proc_endpoint(fields.next()?)?;
        let line_remote = parse_proc_endpoint(fields.next()?)?;
        let state = fields.next()?;
        // tx_queue:rx_queue, tr:tm->when, retrnsmt, then the uid.
        let uid = fields.nth(3)?.parse::<u32>().ok()?;
        let same = |a: SocketAddr, b: SocketAddr| {
            a.port() == b.port()
                && (a.ip() == b.ip()
                    || a.ip() == as_family(b.ip(), a.is_ipv6())
                    || b.ip() == as_family(a.ip(), b.is_ipv6()))
        };
        (state != "06" && same(line_local, local) && same(line_remote, remote)).then_some(uid)
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): the address as the kernel's
/// 32-bit words printed in this machine's byte order, then the port in hex.
fn parse_proc_endpoint(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut octets = [0u8; 16];
    let words = addr.len() / 8;
    if !(words == 1 || words == 4) || addr.len() % 8 != 0 || !addr.is_ascii() {
        return None;
    }
    for (i, chunk) in octets.chunks_exact_mut(4).take(words).enumerate() {
        let word = addr.get(i * 8..i * 8 + 8)?;
        chunk.copy_from_slice(&u32::from_str_radix(word, 16).ok()?.to_ne_bytes());
    }
    let ip = if words == 1 {
        let [a, b, c, d, ..] = octets;
        IpAddr::from([a, b, c, d])
    } else {
        IpAddr::from(octets)
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod platform {
    use super::{Owner, as_family, uid_in_proc_net_tcp};
    use std::net::{IpAddr, SocketAddr};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    pub fn current_uid() -> Option<u32> {
        // SAFETY: geteuid cannot fail and touches no memory of ours.
        Some(unsafe { libc::geteuid() })
    }

    pub fn owner(local: SocketAddr, peer: SocketAddr) -> Owner {
        match by_netlink(local, peer) {
            Some(owner) => owner,
            None => by_proc(local, peer),
        }
    }

    /// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const TCP_TIME_WAIT: u8 = 6;
    /// nlmsghdr (16 bytes) + inet_diag_req_v2 (56 bytes).
    const REQUEST_LEN: usize = 16 + 56;

    /// The owner through sock_diag; `None` when netlink is not usable here.
    pub(super) fn by_netlink(local: SocketAddr, peer: SocketAddr) -> Option<Owner> {
        // SAFETY: plain system call; the descriptor is owned (and closed) by `socket` below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // The peer's socket may be an IPv6 one connected to an IPv4-mapped address: it is
        // found under AF_INET6 with mapped addresses when not under its own family.
        let mut answer = None;
        for v6 in [peer.is_ipv6(), !peer.is_ipv6()] {
            match ask(
                &socket,
                as_family(peer.ip(), v6),
                peer.port(),
                as_family(local.ip(), v6),
                local.port(),
            )? {
                Owner::NotFound => answer = Some(Owner::NotFound),
                found => return Some(found),
            }
        }
        answer
    }

    /// One exact lookup of the socket whose local end is `src`:`sport` and remote end is
    /// `dst`:`dport`. `None` when the kernel did not answer as expected.
    fn ask(socket: &OwnedFd, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Option<Owner> {
        let family = if src.is_ipv6() {
            libc::AF_INET6
        } else {
            libc::AF_INET
        };
        let mut req = Vec::with_capacity(REQUEST_LEN);
        // nlmsghdr: length, type, flags (a request, not a dump), sequence, port id 0.
        req.extend_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
        req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
        req.extend_from_slice(&1u32.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        // inet_diag_req_v2: family, protocol, extensions 0, pad, every state.
        req.extend_from_slice(&[family as u8, libc::IPPROTO_TCP as u8, 0, 0]);
        req.extend_from_slice(&u32::MAX.to_ne_bytes());
        // inet_diag_sockid: ports and addresses in network order, any interface, no cookie.
        req.extend_from_slice(&sport.to_be_bytes());
        req.extend_from_slice(&dport.to_be_bytes());
        put_addr(&mut req, src);
        put_addr(&mut req, dst);
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(&[0xff; 8]);

        // SAFETY: an all-zero sockaddr_nl is valid (the kernel's address).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: the buffer and the address are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent != REQUEST_LEN as isize {
            return None;
        }
        // The kernel answers a single-socket request while handling the send: the answer is
        // queued already, and not waiting for it keeps a misbehaving kernel from stalling us.
        let mut buf = [0u8; 1024];
        // SAFETY: the buffer is valid for its length.
        let got = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        let answer = buf.get(..usize::try_from(got).ok()?)?;
        parse_answer(answer)
    }

    /// An address as `__be32[4]`: an IPv4 one in the first word, the rest zero.
    fn put_addr(out: &mut Vec<u8>, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                out.extend_from_slice(&v4.octets());
                out.extend_from_slice(&[0; 12]);
            }
            IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
        }
    }

    /// The kernel's answer: an inet_diag_msg (state at byte 1, uid at byte 64 after the
    /// nlmsghdr) or an error (`ENOENT`: no such socket).
    pub(super) fn parse_answer(answer: &[u8]) -> Option<Owner> {
        let kind = u16::from_ne_bytes(answer.get(4..6)?.try_into().ok()?);
        let body = answer.get(16..)?;
        if kind == libc::NLMSG_ERROR as u16 {
            let errno = -i32::from_ne_bytes(body.get(0..4)?.try_into().ok()?);
            return (errno == libc::ENOENT).then_some(Owner::NotFound);
        }
        if kind != SOCK_DIAG_BY_FAMILY {
            return None;
        }
        let state = *body.get(1)?;
        let uid = u32::from_ne_bytes(body.get(64..68)?.try_into().ok()?);
        Some(if state == TCP_TIME_WAIT {
            Owner::NotFound
        } else {
            Owner::Uid(uid)
        })
    }

    /// The owner through `/proc/net/tcp` and `/proc/net/tcp6`.
    fn by_proc(local: SocketAddr, peer: SocketAddr) -> Owner {
        let mut readable = false;
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let Ok(listing) = std::fs::read_to_string(file) else {
                continue;
            };
            readable = true;
            if let Some(uid) = uid_in_proc_net_tcp(&listing, peer, local) {
                return Owner::Uid(uid);
            }
        }
        if readable {
            Owner::NotFound
        } else {
            Owner::Unknown
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod platform {
    use super::Owner;
    use std::net::SocketAddr;

    pub fn current_uid() -> Option<u32> {
        #[cfg(unix)]
        {
            // SAFETY: geteuid cannot fail and touches no memory of ours.
            Some(unsafe { libc::geteuid() })
        }
        #[cfg(not(unix))]
        {
            None
        }
    }

    pub fn owner(_local: SocketAddr, _peer: SocketAddr) -> Owner {
        Owner::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    // The kernel prints each 32-bit word of an address in the machine's byte order; these
    // samples are from a little-endian machine.
    #[cfg(target_endian = "little")]
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:8B3B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 40101 1 0000000000000000 100 0 0 10 0
   1: 0100007F:B1A8 0100007F:8B3B 01 00000000:00000000 00:00000000 00000000 65534        0 40233 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:8B3B 0100007F:B1A8 01 00000000:00000000 00:00000000 00000000     0        0 40234 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:B1AA 0100007F:8B3B 06 00000000:00000000 03:00000F2A 00000000     0        0 0 3 0000000000000000
   4: 0100007F:B1AC 0100007F:8B3B 01 00000000:00000000 00:00000000 00000000  1000        0 40300 1 0000000000000000 20 4 30 10 -1
";

    #[cfg(target_endian = "little")]
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:C350 0000000000000000FFFF00000100007F:8B3B 01 00000000:00000000 00:00000000 00000000  1001        0 51000 1 0000000000000000 20 4 30 10 -1
   1: 00000000000000000000000001000000:C351 00000000000000000000000001000000:1F90 01 00000000:00000000 00:00000000 00000000  1002        0 51001 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    #[cfg(target_endian = "little")]
    fn the_peer_sockets_inode_is_found_by_both_ends_and_never_a_time_wait_ones() {
        let ours = addr("127.0.0.1:35643");
        assert_eq!(
            inode_in_proc_net_tcp(TCP, addr("127.0.0.1:45480"), ours),
            Some(40233),
            "the peer's socket, not our accepted one (40234)"
        );
        assert_eq!(inode_in_proc_net_tcp(TCP, addr("127.0.0.1:45482"), ours), None);
        assert_eq!(
            inode_in_proc_net_tcp(TCP6, addr("127.0.0.1:50000"), ours),
            Some(51000)
        );
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn the_peer_socket_is_found_by_both_ends_and_its_uid_read() {
        let ours = addr("127.0.0.1:35643");
        // The peer's socket (local end = the peer), not our accepted one (uid 0 on line 2).
        assert_eq!(
            uid_in_proc_net_tcp(TCP, addr("127.0.0.1:45480"), ours),
            Some(65534)
        );
        assert_eq!(
            uid_in_proc_net_tcp(TCP, addr("127.0.0.1:45484"), ours),
            Some(1000)
        );
        // In TIME_WAIT the owner is gone (the kernel prints 0): not a match.
        assert_eq!(
            uid_in_proc_net_tcp(TCP, addr("127.0.0.1:45482"), ours),
            None
        );
        // The right port on another address, or a remote end that is not ours.
        assert_eq!(
            uid_in_proc_net_tcp(TCP, addr("127.0.0.2:45480"), ours),
            None
        );
        assert_eq!(
            uid_in_proc_net_tcp(TCP, addr("127.0.0.1:45480"), addr("127.0.0.1:80")),
            None
        );
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn ipv6_lines_and_ipv4_mapped_peers_are_understood() {
        // An IPv6 socket connected to 127.0.0.1 through a mapped address.
        assert_eq!(
            uid_in_proc_net_tcp(TCP6, addr("127.0.0.1:50000"), addr("127.0.0.1:35643")),
            Some(1001)
        );
        assert_eq!(
            uid_in_proc_net_tcp(TCP6, addr("[::1]:50001"), addr("[::1]:8080")),
            Some(1002)
        );
        assert_eq!(
            uid_in_proc_net_tcp(TCP6, addr("[::1]:50001"), addr("[::1]:8081")),
            None
        );
    }

    #[test]
    fn any_listing_is_parsed_without_panic() {
        let ours = addr("127.0.0.1:35643");
        for junk in [
            "",
            "\n\n",
            "0:",
            "0: 0100007F",
            "0: 0100007F:ZZZZ 0100007F:8B3B 01 a b c 0",
            "0: 0100007F:B1A8 0100007F:8B3B 01 a b c notanumber",
            "0: 0100007:B1A8 0100007F:8B3B 01 a b c 5",
            "0: 0100007F0:B1A8 0100007F:8B3B 01 a b c 5",
            "0: 0100007F:B1A8 0100007F:8B3B 01 a b c",
            "0: é100007F:B1A8 0100007F:8B3B 01 a b c 5",
            "0: 0100007F:1B1A8 0100007F:8B3B 01 a b c 5",
            "0: :B1A8 :8B3B 01 a b c 5",
            "0: 0100007F:B1A8 0100007F:8B3B 01 a b c 4294967296",
        ] {
            assert_eq!(
                uid_in_proc_net_tcp(junk, addr("127.0.0.1:45480"), ours),
                None,
                "{junk:?}"
            );
        }
    }

    #[test]
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn any_netlink_answer_is_parsed_without_panic() {
        for len in 0..100 {
            let _ = platform::parse_answer(&vec![0xAB; len]);
        }
        let mut error = vec![0u8; 36];
        error[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        error[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        assert_eq!(platform::parse_answer(&error), Some(Owner::NotFound));
        let mut found = vec![0u8; 88];
        found[4..6].copy_from_slice(&20u16.to_ne_bytes());
        found[17] = 1;
        found[80..84].copy_from_slice(&65534u32.to_ne_bytes());
        assert_eq!(platform::parse_answer(&found), Some(Owner::Uid(65534)));
        found[17] = 6;
        assert_eq!(platform::parse_answer(&found), Some(Owner::NotFound));
    }

    #[tokio::test]
    #[cfg(any(target_os = "linux", target_os = "android"))]
    async fn our_own_connection_is_ours() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let local = accepted.local_addr().unwrap();
        assert_eq!(owner(local, peer), Owner::Uid(current_uid().unwrap()));
        assert_eq!(
            platform::by_netlink(local, peer),
            Some(Owner::Uid(current_uid().unwrap())),
            "the netlink lookup, not only the fallback"
        );
        // The same lookup through /proc, the fallback.
        let listing = std::fs::read_to_string("/proc/net/tcp").unwrap();
        assert_eq!(uid_in_proc_net_tcp(&listing, peer, local), current_uid());
        drop(client);
        drop(accepted);
        assert_eq!(owner(local, addr("127.0.0.1:1")), Owner::NotFound);
    }
}
