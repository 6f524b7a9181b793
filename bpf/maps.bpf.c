/* The shared maps' one definition, and the license the helpers used here require. */
#define CNM_MAP_STORAGE
#include "maps.h"

char LICENSE[] SEC("license") = "GPL";
