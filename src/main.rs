fn main() {
    // Arguments must be text; a password that is not (Latin-1 typed in a UTF-8 shell) is
    // refused with a way out rather than mangled.
    let mut argv = Vec::new();
    for (i, arg) in std::env::args_os().enumerate() {
        match arg.into_string() {
            Ok(arg) => argv.push(arg),
            Err(_) => {
                eprintln!(
                    "imapferry: argument {i} is not UTF-8; give such a password with --passfile1/--passfile2 \
                     or IMAPSYNC_PASSWORD1/IMAPSYNC_PASSWORD2 (read byte for byte)"
                );
                std::process::exit(64);
            }
        }
    }
    std::process::exit(imapferry::cli::main_with_args(argv))
}
