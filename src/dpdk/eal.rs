//! The Environment Abstraction Layer: init from the user's arguments, lcore
//! facts, launching work on worker lcores, cleanup.
//!
//! Context: control thread (the EAL main lcore). `rte_eal_init` runs once
//! per process; every other call here needs it to have succeeded, which
//! owning an [`Eal`] proves.

use std::ffi::{CStr, CString, c_int, c_uint, c_void};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{DpdkError, ffi, rte_error};
use crate::ids::LcoreId;

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// Proof that the EAL is up. Not `Clone`: one per process.
#[derive(Debug)]
pub struct Eal {
    main: LcoreId,
    memory: Memory,
}

/// How the EAL's memory was asked for (what another process can map).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// `--no-huge`: anonymous memory, which no other process can map.
    pub no_huge: bool,
    /// `--single-file-segments`: one file (or memfd) per segment list.
    pub single_file_segments: bool,
}

impl Memory {
    fn of(args: &[String]) -> Self {
        let has = |o: &str| {
            args.iter()
                .any(|a| a == o || a.starts_with(&format!("{o}=")))
        };
        Memory {
            no_huge: has("--no-huge"),
            single_file_segments: has("--single-file-segments"),
        }
    }

    /// Why a vhost-user backend cannot map this memory (None: it can).
    /// vhost-user shares memory as file descriptors, at most 8 regions.
    pub fn vhost_user_problem(&self) -> Option<&'static str> {
        if self.no_huge {
            Some(
                "--no-huge memory cannot be shared with the vhost-user backend; use hugepages (echo 512 > /proc/sys/vm/nr_hugepages) with --in-memory --single-file-segments",
            )
        } else if !self.single_file_segments {
            Some(
                "vhost-user shares at most 8 memory regions and each 2 MB hugepage is one without --single-file-segments; add --single-file-segments to the EAL arguments",
            )
        } else {
            None
        }
    }
}

impl Eal {
    /// `rte_eal_init` with `args` exactly as the user gave them (everything
    /// before `--`); `argv[0]` is "cpumapd".
    pub fn init(args: &[String]) -> Result<Eal, DpdkError> {
        if INITIALISED.swap(true, Ordering::AcqRel) {
            return Err(DpdkError::Eal(
                "the EAL is already initialised in this process".into(),
            ));
        }
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("cpumapd").expect("no NUL"));
        for a in args {
            owned.push(
                CString::new(a.as_str()).map_err(|_| {
                    DpdkError::Eal(format!("EAL argument {a:?} contains a NUL byte"))
                })?,
            );
        }
        // EAL may keep pointers into argv (it reorders it and stores some
        // strings); the strings live for the rest of the process.
        let owned: &'static [CString] = Box::leak(owned.into_boxed_slice());
        let argv: &'static mut [*mut std::ffi::c_char] = Box::leak(
            owned
                .iter()
                .map(|c| c.as_ptr().cast_mut())
                .chain(std::iter::once(std::ptr::null_mut()))
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        // SAFETY: argv holds argc valid NUL-terminated strings followed by
        // NULL, all leaked above so they outlive the EAL.
        let rc = unsafe { ffi::rte_eal_init(owned.len() as c_int, argv.as_mut_ptr()) };
        if rc < 0 {
            return Err(DpdkError::Eal(format!(
                "rte_eal_init failed: {} (the EAL arguments are everything before `--`; see its messages above)",
                rte_error()
            )));
        }
        super::mbuf::register_dynfield()?;
        // SAFETY: EAL is initialised.
        let main = unsafe { ffi::rte_get_main_lcore() };
        Ok(Eal {
            main: LcoreId(main),
            memory: Memory::of(args),
        })
    }

    /// How the EAL's memory was asked for.
    pub fn memory(&self) -> Memory {
        self.memory
    }

    /// The lcore running `main` (the control thread).
    pub fn main_lcore(&self) -> LcoreId {
        self.main
    }

    /// True when `lcore` is in the EAL's lcore set (`-l` / `--lcores`).
    pub fn lcore_enabled(&self, lcore: LcoreId) -> bool {
        // SAFETY: EAL is initialised; any id is accepted (out of range is 0).
        lcore.0 < ffi::RTE_MAX_LCORE && unsafe { ffi::rte_lcore_is_enabled(lcore.0) } != 0
    }

    /// Every enabled lcore, main included.
    pub fn lcores(&self) -> Vec<LcoreId> {
        (0..ffi::RTE_MAX_LCORE)
            .map(LcoreId)
            .filter(|&l| self.lcore_enabled(l))
            .collect()
    }

    /// The CPUs the EAL pinned `lcore`'s thread to (`--lcores 1@(2,3)`:
    /// 2 and 3; `-l 1`: 1).
    pub fn cpus_of(&self, lcore: LcoreId) -> Vec<usize> {
        let mut cpus = [0u32; 64];
        // SAFETY: EAL is initialised; the shim writes at most `cpus.len()`
        // entries and reads the lcore's config (a disabled lcore's set is
        // empty).
        let n = unsafe { ffi::cpumapd_lcore_cpus(lcore.0, cpus.as_mut_ptr(), cpus.len() as i32) };
        cpus[..(n.max(0) as usize).min(cpus.len())]
            .iter()
            .map(|&c| c as usize)
            .collect()
    }

    /// NUMA socket of `lcore`.
    pub fn socket_of(&self, lcore: LcoreId) -> u32 {
        // SAFETY: EAL is initialised; the id was checked by the caller's
        // plan against lcore_enabled.
        unsafe { ffi::rte_lcore_to_socket_id(lcore.0) }
    }

    /// Runs `f` on worker lcore `lcore` (`rte_eal_remote_launch`). A panic
    /// inside `f` is caught and reported by [`Launched::join`].
    pub fn launch<T, F>(&self, lcore: LcoreId, f: F) -> Result<Launched<T>, DpdkError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if lcore == self.main {
            return Err(DpdkError::Eal(format!(
                "{lcore} is the EAL main lcore, which runs the control thread; give the pipeline worker lcores"
            )));
        }
        if !self.lcore_enabled(lcore) {
            return Err(DpdkError::Eal(format!(
                "{lcore} is not in the EAL lcore list (-l / --lcores)"
            )));
        }
        let slot: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
        let done = Arc::new(AtomicBool::new(false));
        let (s, d) = (slot.clone(), done.clone());
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            let r = panic::catch_unwind(AssertUnwindSafe(f));
            if let Ok(v) = r {
                *s.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
            }
            // D1: Release; pairs with D2 in Launched::is_finished.
            d.store(true, Ordering::Release);
        });
        let arg = Box::into_raw(Box::new(job));
        // SAFETY: trampoline takes back exactly this Box (one launch, one
        // call); the lcore is an enabled worker (checked above).
        let rc = unsafe { ffi::rte_eal_remote_launch(Some(trampoline), arg.cast(), lcore.0) };
        if rc != 0 {
            // SAFETY: the launch failed, so the trampoline never runs and
            // never takes the box: free it here.
            drop(unsafe { Box::from_raw(arg) });
            return Err(DpdkError::Eal(format!(
                "cannot launch on {lcore}: it is busy (rte_eal_remote_launch returned {rc})"
            )));
        }
        Ok(Launched {
            lcore,
            slot,
            done,
            joined: false,
        })
    }

    /// `rte_eal_cleanup`: releases hugepage memory and devices. Call once,
    /// after every port is closed and every launched lcore joined.
    pub fn cleanup(self) {
        // SAFETY: EAL is initialised and (caller's contract) no DPDK object
        // is in use any more.
        unsafe { ffi::rte_eal_cleanup() };
    }
}

extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: arg is the Box<Box<dyn FnOnce>> leaked by Eal::launch, taken
    // back exactly once here.
    let job = unsafe { Box::from_raw(arg.cast::<Box<dyn FnOnce() + Send>>()) };
    job();
    0
}

/// Work running on a worker lcore. Dropped unjoined, it waits for the lcore
/// (the launched function must end on its own: callers stop it with a flag
/// first), so no work outlives its handle.
pub struct Launched<T> {
    lcore: LcoreId,
    slot: Arc<Mutex<Option<T>>>,
    done: Arc<AtomicBool>,
    joined: bool,
}

impl<T> Launched<T> {
    /// The EAL lcore it runs on.
    pub fn lcore(&self) -> LcoreId {
        self.lcore
    }

    /// True once the lcore's function returned.
    pub fn is_finished(&self) -> bool {
        // D2: Acquire; pairs with D1 in the launched job.
        self.done.load(Ordering::Acquire)
    }

    /// Waits for the lcore; `None` when the function panicked.
    pub fn join(mut self) -> Option<T> {
        self.wait();
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn wait(&mut self) {
        if !self.joined {
            // SAFETY: the EAL is initialised (a Launched exists only after
            // a successful launch); waiting on a worker lcore is always valid.
            unsafe { ffi::rte_eal_wait_lcore(self.lcore.0 as c_uint) };
            self.joined = true;
        }
    }
}

impl<T> Drop for Launched<T> {
    fn drop(&mut self) {
        self.wait();
    }
}

/// `rte_strerror` for an errno value.
pub(super) fn strerror(e: c_int) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or per-lcore
    // buffer holding a NUL-terminated string.
    unsafe { CStr::from_ptr(ffi::rte_strerror(e)) }
        .to_string_lossy()
        .into_owned()
}
