fn main() {
    eprintln!("hatch: not yet wired");
    std::process::exit(2);
}
