//! Criterion benchmarks of the first level (filled in below).

fn main() {}
