pub fn child_main() {} pub struct ProcessPool; pub struct ProcessPoolBuilder;
