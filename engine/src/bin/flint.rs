//! `flint`: the node (`serve`, `format`) and its management CLI.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(flint_engine::appliance::cli::main(&args));
}
