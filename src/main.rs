//! The `coffer` binary: parse arguments, run, print the error chain, exit
//! with the documented code.

use std::process::ExitCode;

fn main() -> ExitCode {
    match coffer::cli::run() {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            // A closed pipe (`coffer schema | head`) is not an error.
            if err
                .chain()
                .filter_map(|c| c.downcast_ref::<std::io::Error>())
                .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(coffer::cli::EXIT_ERROR)
        }
    }
}
