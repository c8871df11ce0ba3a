fn main() {
    flick_trainer::cli::main();
}
