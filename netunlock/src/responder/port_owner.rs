//! Who holds a UDP port: /proc/net/udp{,6} gives the socket inode, /proc/<pid>/fd the process. Only
//! used to word the start-up error when a DHCP port is taken; without the privilege to read other
//! processes' descriptors it says so and names the command that can tell.

use std::path::Path;

/// "netunlockd (pid 1234)", or `None` when the owner cannot be learned.
pub(crate) fn udp_port_owner(port: u16, v6: bool) -> Option<String> {
    let table = std::fs::read_to_string(if v6 {
        "/proc/net/udp6"
    } else {
        "/proc/net/udp"
    })
    .ok()?;
    let inodes = socket_inodes(&table, port);
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(inode) = socket_inode(&target)
                && inodes.contains(&inode)
            {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                let name = comm.trim();
                return Some(if name.is_empty() {
                    format!("pid {pid}")
                } else {
                    format!("{name} (pid {pid})")
                });
            }
        }
    }
    None
}

/// Inodes of the sockets bound to local `port` in a /proc/net/udp{,6} table.
fn socket_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            let local_port = u16::from_str_radix(local_port, 16).ok()?;
            let inode = fields.get(9)?.parse::<u64>().ok()?;
            (local_port == port && inode != 0).then_some(inode)
        })
        .collect()
}

fn socket_inode(link: &Path) -> Option<u64> {
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_proc_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                     \x20 12: 00000000:0043 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 48213 2 0000000000000000 0\n\
                     \x20 13: 0100007F:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 48214 2 0000000000000000 0\n";
        assert_eq!(socket_inodes(table, 67), vec![48213]);
        assert_eq!(socket_inodes(table, 68), vec![48214]);
        assert!(socket_inodes(table, 547).is_empty());
        assert_eq!(socket_inode(Path::new("socket:[48213]")), Some(48213));
        assert_eq!(socket_inode(Path::new("/dev/null")), None);
    }

    #[test]
    fn finds_our_own_socket() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        let owner = udp_port_owner(port, false).expect("our own process is readable");
        assert!(
            owner.contains(&format!("pid {}", std::process::id())),
            "{owner}"
        );
    }
}
