//! Which core does what. The server under test runs alone on one core and the
//! generator on the other, so the server's CPU time is its own and the generator never
//! steals from it.

/// The cores this process may run on, lowest first.
fn allowed_cores() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills the one we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| libc::CPU_ISSET(cpu, &set)).collect()
    }
}

/// The server's core and the generator's: the first two this process may use, or
/// `None` with fewer than two (then nothing is pinned and the figures share a core).
pub fn server_and_generator_cores() -> Option<(usize, usize)> {
    static CORES: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| match allowed_cores()[..] {
        [server, generator, ..] => Some((server, generator)),
        _ => None,
    })
}

/// Pins the calling thread, and every thread it starts afterwards, to `core` (when
/// there are cores to share out).
pub fn pin_current_thread(core: Option<usize>) {
    let Some(core) = core else { return };
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!(
                "could not pin to core {core}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// CPU time the calling thread has used, in seconds.
pub fn thread_cpu_seconds() -> f64 {
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe {
        let mut now: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now);
        now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
    }
}

/// CPU time this whole process has used, user and system, in seconds: the generator
/// reports its own load, since a saturated generator would make any server look slow.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes one rusage we own.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}
