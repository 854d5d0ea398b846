fn main() {
    std::process::exit(dartsif::cli::main());
}
