//! The few bpf(2) commands cpumapd needs, as raw system calls: create a map,
//! update and look up an element, load a program, attach an XDP program to
//! an interface with a BPF link. Used by the AF_XDP port (its redirect
//! program) and by the kernel-cpumap benchmark peer.
//!
//! Context: control thread at open time; nothing here runs per packet.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub use crate::bpf_abi::PROG_TYPE_XDP;
use crate::bpf_abi::{attach, cmd, pseudo, xdp_flags};

#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// An instruction: opcode, dst and src registers, offset, immediate.
pub const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

impl Insn {
    /// The instruction with offset `off` (a jump's, once known).
    pub const fn with_off(mut self, off: i16) -> Self {
        self.off = off;
        self
    }

    /// Its opcode.
    pub const fn code(&self) -> u8 {
        self.code
    }

    /// Its offset.
    pub const fn off(&self) -> i16 {
        self.off
    }
}

/// `ld_imm64 dst, map` (two instruction slots).
pub fn ld_map_fd(dst: u8, map: &OwnedFd) -> [Insn; 2] {
    [
        insn(0x18, dst, pseudo::MAP_FD, 0, map.as_raw_fd()),
        insn(0, 0, 0, 0, 0),
    ]
}

/// bpf(2) with one attribute struct; the kernel zero-extends the rest.
fn sys<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<i64> {
    // SAFETY: attr is a live, initialised bpf_attr prefix of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

fn fd(r: i64) -> OwnedFd {
    // SAFETY: the commands that call this return a new fd we own.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

/// `BPF_MAP_CREATE`: a map of `map_type` with the given sizes.
pub fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> io::Result<OwnedFd> {
    let mut a = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
    };
    sys(cmd::MAP_CREATE, &mut a).map(fd)
}

fn elem(cmd: libc::c_int, map: &OwnedFd, key: &[u8], value: *const u8) -> io::Result<()> {
    let mut a = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value as u64,
        flags: 0,
    };
    sys(cmd, &mut a).map(drop)
}

/// The caller passes key and value of the map's sizes.
pub fn map_update(map: &OwnedFd, key: &[u8], value: &[u8]) -> io::Result<()> {
    elem(cmd::MAP_UPDATE_ELEM, map, key, value.as_ptr())
}

/// The caller passes key and value of the map's sizes.
pub fn map_lookup(map: &OwnedFd, key: &[u8], value: &mut [u8]) -> io::Result<()> {
    elem(cmd::MAP_LOOKUP_ELEM, map, key, value.as_mut_ptr())
}

/// Loads a GPL program; a refusal carries the kernel verifier's log.
pub fn prog_load(
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[Insn],
    name: &str,
) -> io::Result<OwnedFd> {
    prog_load_flags(prog_type, expected_attach_type, insns, name, 0)
}

/// `BPF_F_XDP_HAS_FRAGS`: an XDP program that handles multi-buffer frames
/// (the kernel then attaches it to devices whose MTU exceeds a page).
pub const F_XDP_HAS_FRAGS: u32 = 1 << 5;

/// [`prog_load`] with `prog_flags` (e.g. [`F_XDP_HAS_FRAGS`]).
pub fn prog_load_flags(
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[Insn],
    name: &str,
    prog_flags: u32,
) -> io::Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; 16 * 1024];
    let mut a = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        expected_attach_type,
        prog_flags,
        ..Default::default()
    };
    for (d, s) in a.prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    sys(cmd::PROG_LOAD, &mut a).map(fd).map_err(|e| {
        let msg = String::from_utf8_lossy(&log);
        io::Error::new(
            e.kind(),
            format!("{e}: {}", msg.trim_end_matches('\0').trim()),
        )
    })
}

/// A BPF link of `prog` to `ifindex` as `attach_type` (e.g. tcx ingress).
/// Closing the link's fd detaches it.
pub fn link_create(
    prog: &OwnedFd,
    ifindex: u32,
    attach_type: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    let mut a = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type,
        flags,
    };
    sys(cmd::LINK_CREATE, &mut a).map(fd)
}

/// Attaches an XDP program to `ifindex` with a BPF link: native mode, else
/// generic. Closing the link's fd (also at exit or crash) detaches it.
pub fn link_xdp(prog: &OwnedFd, ifindex: u32) -> io::Result<(OwnedFd, &'static str)> {
    let mut last = None;
    for (flags, mode) in [
        (xdp_flags::DRV_MODE, "native"),
        (xdp_flags::SKB_MODE, "generic"),
    ] {
        let mut a = LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: attach::XDP,
            flags,
        };
        match sys(cmd::LINK_CREATE, &mut a) {
            Ok(r) => return Ok((fd(r), mode)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("two attempts"))
}
