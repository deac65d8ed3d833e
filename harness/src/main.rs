fn main() {
    std::process::exit(idlelab::cli::main());
}
