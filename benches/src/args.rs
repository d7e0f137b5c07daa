//! Flag parsing shared by the harness binaries (`solver-compare`, `disrupt-compare`, `replay`).

use std::process::ExitCode;

/// A comma-separated list of values for `flag` (empty items skipped).
///
/// # Errors
/// The first value that does not parse, prefixed with the flag.
pub fn list<T: std::str::FromStr>(flag: &str, v: &str) -> Result<Vec<T>, String>
where
    T::Err: std::fmt::Display,
{
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim().parse::<T>().map_err(|e| format!("{flag}: {e}")))
        .collect()
}

/// One value for `flag`.
///
/// # Errors
/// The value and why it does not parse, prefixed with the flag.
pub fn one<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.parse::<T>().map_err(|e| format!("{flag} {v:?}: {e}"))
}

/// The parsed arguments, or the exit status after printing the usage: an empty error means
/// `--help` (usage on stdout, success), any other error goes to stderr with exit status 2.
///
/// # Errors
/// The exit status to return from `main`.
pub fn or_usage<A>(program: &str, usage: &str, parsed: Result<A, String>) -> Result<A, ExitCode> {
    match parsed {
        Ok(a) => Ok(a),
        Err(e) if e.is_empty() => {
            println!("{usage}");
            Err(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{program}: {e}\n{usage}");
            Err(ExitCode::from(2))
        }
    }
}
