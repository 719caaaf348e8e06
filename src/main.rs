fn main() {
    std::process::exit(imapferry::cli::main_with_args(std::env::args().collect()))
}
