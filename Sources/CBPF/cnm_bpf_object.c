/* The linked eBPF object, as bytes. `make bpf` (run by `make build`) compiles bpf/ and writes
 * embedded_object.h; a plain `swift build` without it gives an agent that runs eBPF-less only. */
#include <stddef.h>

#if __has_include("embedded_object.h")
#include "embedded_object.h"
#else
const unsigned char cnm_bpf_object_bytes[1] = {0};
const size_t cnm_bpf_object_length = 0;
#endif
