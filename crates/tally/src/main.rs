use clap::Parser;

/// jemalloc rather than glibc's malloc: under a many-threaded load glibc's per-thread arenas kept
/// growing the process (BENCHMARKS.md, "Mixed load": +9.6% over twenty minutes, flat with two
/// arenas but slower); jemalloc returns freed pages to the system on a timer.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = tally::cli::Cli::parse();
    match tally::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
