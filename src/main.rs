//! The `xivo-ha` executable: a thin shell over the library (see `xivo_ha::cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    xivo_ha::cli::main(std::env::args_os().collect())
}
