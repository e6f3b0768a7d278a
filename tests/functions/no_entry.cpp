// A library that forgot NIMBUS_FUNCTION: loading it must fail with a clear error.
extern "C" __attribute__((visibility("default"))) int not_the_entry_point() { return 0; }
