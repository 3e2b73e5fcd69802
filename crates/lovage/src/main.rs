//! The `lovage` command line.

mod cli;

fn main() -> std::process::ExitCode {
    // First, always: when a process pool starts this binary as its child, serve tasks here.
    lovage::init();
    cli::main()
}
