//! Which core does what. The server under test runs alone on one core and the
//! generator on the other, so the server's CPU time is its own and the generator never
//! steals from it.

/// The core every server under test is pinned to.
pub const SERVER_CORE: usize = 0;
/// The core the generator (and the loopback reader of the write floor) runs on.
pub const GENERATOR_CORE: usize = 1;

/// Pins the calling thread, and every thread it starts afterwards, to `core`.
pub fn pin_current_thread(core: usize) {
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
