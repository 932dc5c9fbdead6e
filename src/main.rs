mod skel {
    include!(concat!(env!("OUT_DIR"), "/lethe.skel.rs"));
}
fn main() {}
