//! lovage-mp with real child processes: this test binary is started again as the children, so
//! it has its own `main` (libtest-mimic) that calls `child_main` first.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::undocumented_unsafe_blocks
)] // tests panic to fail and print what they saw

mod objects;
mod process;
mod support;

use libtest_mimic::{Arguments, Trial};

macro_rules! trials {
    ($($m:ident :: $f:ident),* $(,)?) => {
        vec![$(Trial::test(concat!(stringify!($m), "::", stringify!($f)), || {
            $m::$f();
            Ok(())
        })),*]
    };
}

fn main() {
    lovage_mp::child_main();
    let args = Arguments::from_args();
    let trials = trials![
        process::exit_statuses_say_how_a_child_ended,
        process::join_timeout_terminate_and_kill,
        process::children_die_with_their_parent,
        process::spawning_an_unknown_task_is_an_error,
        objects::value_increments_from_two_processes_sum_exactly_under_the_lock,
        objects::value_atomics_and_types,
        objects::array_squares_filled_by_four_processes_in_claimed_ranges,
        objects::overlapping_claims_wait_for_each_other,
        objects::shared_memory_anonymous_and_named,
        objects::a_lock_whose_holder_is_killed_goes_to_the_next_with_owner_died,
        objects::rlock_is_recursive_and_robust,
        objects::bad_descriptors_are_clear_errors,
        objects::nothing_is_left_mapped_after_everything_is_killed,
    ];
    libtest_mimic::run(&args, trials).exit();
}
