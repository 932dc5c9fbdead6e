fn main() {
    match lethe::dataplane::Dataplane::load() {
        Ok(_) => println!("loaded"),
        Err(e) => eprintln!("error: {e:#}"),
    }
}
