fn main() -> std::process::ExitCode {
    hatch::cli::main()
}
