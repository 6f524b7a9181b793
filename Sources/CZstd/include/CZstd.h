#ifndef CNM_CZSTD_H
#define CNM_CZSTD_H

// One-shot zstd compression and decompression over libzstd, so Swift never sees ZSTD types.
// Each call is independent and thread-safe.

#include <stddef.h>

/// The most bytes compressing `length` bytes can produce.
size_t cnm_zstd_compress_bound(size_t length);

/// Compresses `source` into one zstd frame that records its content size. Returns the frame's
/// length, or 0 when it fails (destination too small, memory); zstd's reason is then in *error.
size_t cnm_zstd_compress(void *destination, size_t capacity, const void *source, size_t length, int level,
                         const char **error);

/// The content size a frame records; -1 when it records none, -2 when the bytes are not a frame.
long long cnm_zstd_frame_content_size(const void *frame, size_t length);

/// Decompresses every frame in `source`. Returns the decompressed length, or (size_t)-1 when it fails
/// (corrupt input, destination too small); zstd's reason is then in *error.
size_t cnm_zstd_decompress(void *destination, size_t capacity, const void *source, size_t length,
                           const char **error);

#endif
