//! Linux network-device queries and settings by interface name (the
//! SIOC*IF* ioctls), shared by the AF_PACKET port and the TAP exception path.
//!
//! Context: control thread at open time; none of this runs per packet.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The `iface=` of a port's vdev, checked: it exists, is up, and its MTU
/// fits `max_frame` bytes with an Ethernet header and two VLAN tags.
/// Returns the name and index. Errors name the interface and the fix.
pub(crate) fn port_iface(
    spec: &super::VdevSpec,
    max_frame: usize,
) -> Result<(String, u32), super::PortError> {
    let bad = |why: String| super::PortError::BadVdev {
        vdev: spec.name.clone(),
        why,
    };
    let iface = spec
        .get("iface")
        .ok_or_else(|| bad("iface=IFNAME is required".into()))?
        .to_string();
    check_name(&iface).map_err(bad)?;
    let ifindex = index(&iface).ok_or_else(|| {
        bad(format!(
            "interface {iface} does not exist (ip link show; create it or fix iface=)"
        ))
    })?;
    if !is_up(&iface).map_err(|e| bad(format!("{iface}: {e}")))? {
        return Err(bad(format!(
            "interface {iface} is down; bring it up: ip link set {iface} up"
        )));
    }
    let mtu = mtu(&iface).map_err(|e| bad(format!("{iface}: {e}")))? as usize;
    let biggest = mtu + 14 + 8;
    if biggest > max_frame {
        return Err(bad(format!(
            "interface {iface} has MTU {mtu}: frames up to {biggest} bytes do not fit cpumapd's {max_frame}-byte buffers; lower it (ip link set {iface} mtu 1500)"
        )));
    }
    Ok((iface, ifindex))
}

/// setsockopt(2) with a plain-data value `v` (AF_PACKET, AF_XDP options).
pub(crate) fn setsockopt<T>(fd: &OwnedFd, level: i32, opt: i32, v: &T) -> io::Result<()> {
    // SAFETY: `v` points at a live T of the size passed, for the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// getsockopt(2) into a plain-data `v` (statistics, ring offsets).
pub(crate) fn getsockopt<T>(fd: &OwnedFd, level: i32, opt: i32, v: &mut T) -> io::Result<()> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: v/len describe a writable T for the call.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), level, opt, (v as *mut T).cast(), &mut len) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Interface name limit, NUL included (IFNAMSIZ).
const IFNAMSIZ: usize = libc::IFNAMSIZ;

/// Checks a name the kernel would accept for an interface.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() >= IFNAMSIZ {
        return Err(format!(
            "interface name '{name}' must be 1 to {} bytes",
            IFNAMSIZ - 1
        ));
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace())
        || name == "."
        || name == ".."
    {
        return Err(format!("'{name}' is not a valid interface name"));
    }
    Ok(())
}

/// An `ifreq` for `name` (checked by [`check_name`]).
pub fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes().take(IFNAMSIZ - 1)) {
        *d = s as libc::c_char;
    }
    ifr
}

/// A datagram socket to issue interface ioctls on.
fn ctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor this function owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs one interface ioctl on `ifr`.
fn ioctl(req: libc::Ioctl, ifr: &mut libc::ifreq) -> io::Result<()> {
    let s = ctl_socket()?;
    // SAFETY: every request used here reads/writes one struct ifreq, which
    // `ifr` is, for the duration of the call.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), req, ifr as *mut libc::ifreq) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The interface index, or None if no such interface exists.
pub fn index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string for the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// True if interface `name` exists.
pub fn exists(name: &str) -> bool {
    index(name).is_some()
}

/// Interface flags (IFF_UP, IFF_RUNNING, ...).
pub fn flags(name: &str) -> io::Result<i32> {
    let mut ifr = ifreq(name);
    ioctl(libc::SIOCGIFFLAGS, &mut ifr)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    Ok(unsafe { ifr.ifr_ifru.ifru_flags } as i32)
}

/// True if interface `name` is up.
pub fn is_up(name: &str) -> io::Result<bool> {
    Ok(flags(name)? & libc::IFF_UP != 0)
}

/// Sets IFF_UP.
pub fn set_up(name: &str) -> io::Result<()> {
    let f = flags(name)?;
    let mut ifr = ifreq(name);
    ifr.ifr_ifru.ifru_flags = (f | libc::IFF_UP) as libc::c_short;
    ioctl(libc::SIOCSIFFLAGS, &mut ifr)
}

/// The MTU of interface `name`.
pub fn mtu(name: &str) -> io::Result<u32> {
    let mut ifr = ifreq(name);
    ioctl(libc::SIOCGIFMTU, &mut ifr)?;
    // SAFETY: SIOCGIFMTU filled the mtu member of the union.
    Ok(unsafe { ifr.ifr_ifru.ifru_mtu } as u32)
}

/// The MAC of interface `name`.
pub fn mac(name: &str) -> io::Result<[u8; 6]> {
    let mut ifr = ifreq(name);
    ioctl(libc::SIOCGIFHWADDR, &mut ifr)?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    let mut m = [0u8; 6];
    for (d, s) in m.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(m)
}

/// Sets the MAC of interface `name`.
pub fn set_mac(name: &str, mac: [u8; 6]) -> io::Result<()> {
    let mut ifr = ifreq(name);
    // SAFETY: writing the hwaddr member of a zeroed union is sound; the
    // kernel reads exactly that member for SIOCSIFHWADDR.
    unsafe {
        ifr.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
        for (d, s) in ifr.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
            *d = s as libc::c_char;
        }
    }
    ioctl(libc::SIOCSIFHWADDR, &mut ifr)
}

/// Parses `02:00:00:00:00:01`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad =
        || format!("'{s}' is not a MAC address (expected six hex bytes like 02:00:00:00:00:01)");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (d, p) in m.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 2 {
            return Err(bad());
        }
        *d = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if m[0] & 1 != 0 {
        return Err(format!(
            "{s} is a multicast address; an interface needs a unicast MAC"
        ));
    }
    Ok(m)
}

/// Formats a MAC as `02:00:00:00:00:01`.
pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// True when this process may administer interfaces (CAP_NET_ADMIN in its
/// effective set).
pub fn has_net_admin() -> bool {
    // /proc/self/status CapEff, bit 12 (CAP_NET_ADMIN).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs_are_checked() {
        assert!(check_name("tap0").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a-name-that-is-too-long").is_err());
        assert!(check_name("a/b").is_err());
        assert_eq!(parse_mac("02:00:00:00:00:0a").unwrap(), [2, 0, 0, 0, 0, 10]);
        assert!(
            parse_mac("01:00:5e:00:00:01")
                .unwrap_err()
                .contains("multicast")
        );
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00:zz").is_err());
        assert_eq!(fmt_mac([2, 0, 0, 0, 0, 10]), "02:00:00:00:00:0a");
    }

    #[test]
    fn loopback_is_visible() {
        assert!(index("lo").is_some());
        assert!(is_up("lo").unwrap());
        assert!(mtu("lo").unwrap() >= 1500);
        assert!(index("no-such-if0").is_none());
    }
}
