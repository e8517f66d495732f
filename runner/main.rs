use clap::Parser;

fn main() -> std::process::ExitCode {
    restore_sigpipe();
    pin_thread_count();
    rfmx::alloc::tune();
    rfmx::commands::main(rfmx::cli::Cli::parse())
}

/// candle 0.11 sizes every CPU matmul from `RAYON_NUM_THREADS`, and when it is unset it counts the
/// physical cores by reading /proc/cpuinfo — on every matmul (≈1500 reads for a 0.5 s generation;
/// a fifth of a tiny-model run's time went to the kernel formatting cpuinfo). Setting the variable
/// once to the count candle would pick keeps its choice and makes the lookup a parse. Rayon's global
/// pool, which would also read it, keeps its own default (every logical CPU).
fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        // SAFETY: called first thing in main, before any thread exists.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
        let logical = std::thread::available_parallelism().map_or(n, |c| c.get());
        // Fails only if a pool already exists, which then keeps its size.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(logical)
            .build_global();
    }
}

/// Rust starts programs with SIGPIPE ignored, so `rfmx plan SPEC | head` met a closed pipe as an
/// error inside `println!` — a panic with a backtrace. Command-line tools end quietly there: restore
/// the default action. Killed mid-run this way, a run loses nothing (outputs are written to temp
/// and renamed; the next run resumes), as after any other signal.
#[cfg(unix)]
fn restore_sigpipe() {
    unsafe extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
    }
    const SIGPIPE: i32 = 13;
    const SIG_DFL: usize = 0;
    // SAFETY: resets one signal's disposition to the default before any thread starts.
    unsafe {
        signal(SIGPIPE, SIG_DFL);
    }
}

#[cfg(not(unix))]
fn restore_sigpipe() {}
