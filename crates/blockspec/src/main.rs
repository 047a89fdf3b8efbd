fn main() {
    std::process::exit(blockspec::cli::main());
}
