#include "CZstd.h"

#include <zstd.h>

size_t cnm_zstd_compress_bound(size_t length) { return ZSTD_compressBound(length); }

size_t cnm_zstd_compress(void *destination, size_t capacity, const void *source, size_t length, int level,
                         const char **error) {
    // ZSTD_compress writes the content size into the frame header, which lets a reader size its buffer.
    size_t written = ZSTD_compress(destination, capacity, source, length, level);
    if (ZSTD_isError(written)) {
        *error = ZSTD_getErrorName(written);
        return 0;
    }
    *error = NULL;
    return written;
}

long long cnm_zstd_frame_content_size(const void *frame, size_t length) {
    unsigned long long size = ZSTD_getFrameContentSize(frame, length);
    if (size == ZSTD_CONTENTSIZE_UNKNOWN) {
        return -1;
    }
    if (size == ZSTD_CONTENTSIZE_ERROR || size > (unsigned long long)(1ULL << 62)) {
        return -2;
    }
    return (long long)size;
}

size_t cnm_zstd_decompress(void *destination, size_t capacity, const void *source, size_t length,
                           const char **error) {
    size_t written = ZSTD_decompress(destination, capacity, source, length);
    if (ZSTD_isError(written)) {
        *error = ZSTD_getErrorName(written);
        return (size_t)-1;
    }
    *error = NULL;
    return written;
}
