fn main() {
    println!("threatbeat");
}
