#include "CCurl.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { CNM_CURL_INITIAL_BUFFER = 16 * 1024 };

struct cnm_curl {
    CURL *easy;
    /// Runs the cancellable transfers, whose poll cnm_curl_cancel can wake.
    CURLM *multi;
    atomic_int cancelled;
    cnm_curl_head_fn on_head;
    cnm_curl_body_fn on_body;
    void *stream_context;
    int head_reported;
    struct curl_slist *headers;
    uint8_t *body;
    size_t length;
    size_t capacity;
    size_t max_response;
    int too_large;
    int os_errno;
    char error[CURL_ERROR_SIZE];
};

static pthread_once_t cnm_curl_once = PTHREAD_ONCE_INIT;
static CURLcode cnm_curl_global_result = CURLE_FAILED_INIT;

static void cnm_curl_global_init(void) { cnm_curl_global_result = curl_global_init(CURL_GLOBAL_DEFAULT); }

/// Appends to the response buffer; returning less than given makes libcurl stop with
/// CURLE_WRITE_ERROR, which is how a body over the limit ends the transfer.
static size_t cnm_curl_write(char *data, size_t size, size_t count, void *user) {
    cnm_curl *handle = user;
    size_t n = size * count;
    if (n > handle->max_response - handle->length) {
        handle->too_large = 1;
        return 0;
    }
    size_t needed = handle->length + n;
    if (needed > handle->capacity) {
        size_t capacity = handle->capacity ? handle->capacity : CNM_CURL_INITIAL_BUFFER;
        while (capacity < needed) {
            capacity = capacity > SIZE_MAX / 2 ? needed : capacity * 2;
        }
        if (capacity > handle->max_response) {
            capacity = handle->max_response;
        }
        uint8_t *grown = realloc(handle->body, capacity);
        if (grown == NULL) {
            return 0;
        }
        handle->body = grown;
        handle->capacity = capacity;
    }
    memcpy(handle->body + handle->length, data, n);
    handle->length = needed;
    return n;
}

static size_t cnm_curl_stream_write(char *data, size_t size, size_t count, void *user) {
    cnm_curl *handle = user;
    if (atomic_load(&handle->cancelled)) {
        return 0;
    }
    size_t n = size * count;
    handle->on_body(handle->stream_context, (const uint8_t *)data, n);
    return n;
}

/// Reports the status at the blank line that ends a final (non-1xx) head.
static size_t cnm_curl_stream_header(char *data, size_t size, size_t count, void *user) {
    cnm_curl *handle = user;
    size_t n = size * count;
    int blank = (n == 2 && data[0] == '\r' && data[1] == '\n') || (n == 1 && data[0] == '\n');
    if (blank && !handle->head_reported) {
        long status = 0;
        curl_easy_getinfo(handle->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200) {
            handle->head_reported = 1;
            handle->on_head(handle->stream_context, status);
        }
    }
    return n;
}

/// The options every request starts from; curl_easy_reset clears them too.
static int cnm_curl_apply_defaults(cnm_curl *handle) {
    CURL *easy = handle->easy;
    int failed = curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, handle->error) != CURLE_OK;
    failed |= curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, cnm_curl_write) != CURLE_OK;
    failed |= curl_easy_setopt(easy, CURLOPT_WRITEDATA, handle) != CURLE_OK;
    // Timeouts must not use signals: the calling process has other threads.
    failed |= curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    return failed ? -1 : 0;
}

cnm_curl *cnm_curl_create(void) {
    pthread_once(&cnm_curl_once, cnm_curl_global_init);
    if (cnm_curl_global_result != CURLE_OK) {
        return NULL;
    }
    cnm_curl *handle = calloc(1, sizeof *handle);
    if (handle == NULL) {
        return NULL;
    }
    handle->max_response = 16 * 1024 * 1024;
    atomic_init(&handle->cancelled, 0);
    handle->easy = curl_easy_init();
    handle->multi = curl_multi_init();
    if (handle->easy == NULL || handle->multi == NULL || cnm_curl_apply_defaults(handle) != 0) {
        cnm_curl_destroy(handle);
        return NULL;
    }
    return handle;
}

void cnm_curl_destroy(cnm_curl *handle) {
    if (handle == NULL) {
        return;
    }
    if (handle->multi != NULL) {
        curl_multi_cleanup(handle->multi);
    }
    if (handle->easy != NULL) {
        curl_easy_cleanup(handle->easy);
    }
    curl_slist_free_all(handle->headers);
    free(handle->body);
    free(handle);
}

void cnm_curl_reset(cnm_curl *handle) {
    curl_easy_reset(handle->easy);
    curl_slist_free_all(handle->headers);
    handle->headers = NULL;
    handle->on_head = NULL;
    handle->on_body = NULL;
    handle->stream_context = NULL;
    // Cannot fail: these options only store pointers and flags.
    (void)cnm_curl_apply_defaults(handle);
}

/// Takes http and https URLs only, checked here so that a wrong URL fails when it is set rather
/// than looking like a protocol error in the response.
int cnm_curl_set_url(cnm_curl *handle, const char *url) {
    CURLU *parsed = curl_url();
    if (parsed == NULL) {
        return -1;
    }
    char *scheme = NULL;
    int ok = curl_url_set(parsed, CURLUPART_URL, url, 0) == CURLUE_OK &&
             curl_url_get(parsed, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
             (strcasecmp(scheme, "http") == 0 || strcasecmp(scheme, "https") == 0);
    curl_free(scheme);
    curl_url_cleanup(parsed);
    if (!ok) {
        return -1;
    }
    return curl_easy_setopt(handle->easy, CURLOPT_URL, url) == CURLE_OK ? 0 : -1;
}

int cnm_curl_set_unix_socket_path(cnm_curl *handle, const char *path) {
    return curl_easy_setopt(handle->easy, CURLOPT_UNIX_SOCKET_PATH, path) == CURLE_OK ? 0 : -1;
}

int cnm_curl_set_timeouts_ms(cnm_curl *handle, long connect_ms, long total_ms) {
    if (connect_ms < 0 || total_ms < 0) {
        return -1;
    }
    int failed = curl_easy_setopt(handle->easy, CURLOPT_CONNECTTIMEOUT_MS, connect_ms) != CURLE_OK;
    failed |= curl_easy_setopt(handle->easy, CURLOPT_TIMEOUT_MS, total_ms) != CURLE_OK;
    return failed ? -1 : 0;
}

int cnm_curl_set_idle_timeout_s(cnm_curl *handle, long seconds) {
    if (seconds < 0) {
        return -1;
    }
    // Below 1 byte a second for that long (libcurl averages over its last few seconds) aborts
    // with CURLE_OPERATION_TIMEDOUT; 0 turns the check off.
    int failed = curl_easy_setopt(handle->easy, CURLOPT_LOW_SPEED_LIMIT, seconds > 0 ? 1L : 0L) != CURLE_OK;
    failed |= curl_easy_setopt(handle->easy, CURLOPT_LOW_SPEED_TIME, seconds) != CURLE_OK;
    return failed ? -1 : 0;
}

int cnm_curl_add_header(cnm_curl *handle, const char *line) {
    struct curl_slist *appended = curl_slist_append(handle->headers, line);
    if (appended == NULL) {
        return -1;
    }
    handle->headers = appended;
    return 0;
}

int cnm_curl_set_post_body(cnm_curl *handle, const void *body, size_t length) {
    int failed = curl_easy_setopt(handle->easy, CURLOPT_POST, 1L) != CURLE_OK;
    failed |= curl_easy_setopt(handle->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)length) != CURLE_OK;
    // COPYPOSTFIELDS copies the bytes now, so the caller's buffer need not outlive this call.
    failed |= curl_easy_setopt(handle->easy, CURLOPT_COPYPOSTFIELDS, length ? body : "") != CURLE_OK;
    return failed ? -1 : 0;
}

int cnm_curl_set_stream(cnm_curl *handle, cnm_curl_head_fn on_head, cnm_curl_body_fn on_body, void *context) {
    if (on_head == NULL || on_body == NULL) {
        return -1;
    }
    handle->on_head = on_head;
    handle->on_body = on_body;
    handle->stream_context = context;
    CURL *easy = handle->easy;
    int failed = curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, cnm_curl_stream_write) != CURLE_OK;
    failed |= curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, cnm_curl_stream_header) != CURLE_OK;
    failed |= curl_easy_setopt(easy, CURLOPT_HEADERDATA, handle) != CURLE_OK;
    failed |= curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
    return failed ? -1 : 0;
}

int cnm_curl_set_tls_verify(cnm_curl *handle, int verify) {
    long on = verify ? 1L : 0L;
    int failed = curl_easy_setopt(handle->easy, CURLOPT_SSL_VERIFYPEER, on) != CURLE_OK;
    // 2 is libcurl's "verify the name"; 1 is not a valid value.
    failed |= curl_easy_setopt(handle->easy, CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L) != CURLE_OK;
    return failed ? -1 : 0;
}

int cnm_curl_set_proxy(cnm_curl *handle, const char *proxy) {
    if (proxy == NULL) {
        return 0;
    }
    return curl_easy_setopt(handle->easy, CURLOPT_PROXY, proxy) == CURLE_OK ? 0 : -1;
}

void cnm_curl_set_max_response_bytes(cnm_curl *handle, size_t max_bytes) { handle->max_response = max_bytes; }

static cnm_curl_result cnm_curl_classify(const cnm_curl *handle, CURLcode code) {
    switch (code) {
    case CURLE_OK:
        return CNM_CURL_OK;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return CNM_CURL_CONNECT_FAILED;
    case CURLE_OPERATION_TIMEDOUT:
        return CNM_CURL_TIMED_OUT;
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
        return CNM_CURL_CONNECTION_CLOSED;
    // A reply that is not HTTP at all is taken for HTTP/0.9, which libcurl refuses with
    // CURLE_UNSUPPORTED_PROTOCOL; set_url already ruled out any other reason for that code.
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return CNM_CURL_BAD_RESPONSE;
    case CURLE_WRITE_ERROR:
        return handle->too_large ? CNM_CURL_TOO_LARGE : CNM_CURL_FAILED;
    default:
        return CNM_CURL_FAILED;
    }
}

/// Clears what the previous transfer left; -1 when the request cannot start.
static int cnm_curl_begin(cnm_curl *handle, long *http_status) {
    *http_status = 0;
    handle->length = 0;
    handle->too_large = 0;
    handle->head_reported = 0;
    handle->os_errno = 0;
    handle->error[0] = '\0';
    if (curl_easy_setopt(handle->easy, CURLOPT_HTTPHEADER, handle->headers) != CURLE_OK) {
        snprintf(handle->error, sizeof handle->error, "could not set the request headers");
        return -1;
    }
    return 0;
}

static cnm_curl_result cnm_curl_end(cnm_curl *handle, CURLcode code, long *http_status) {
    long os_errno = 0;
    if (curl_easy_getinfo(handle->easy, CURLINFO_OS_ERRNO, &os_errno) == CURLE_OK) {
        handle->os_errno = (int)os_errno;
    }
    if (code == CURLE_OK) {
        curl_easy_getinfo(handle->easy, CURLINFO_RESPONSE_CODE, http_status);
        return CNM_CURL_OK;
    }
    if (handle->error[0] == '\0') {
        snprintf(handle->error, sizeof handle->error, "%s", curl_easy_strerror(code));
    }
    if (handle->too_large) {
        snprintf(handle->error, sizeof handle->error, "response body larger than %zu bytes", handle->max_response);
    }
    return cnm_curl_classify(handle, code);
}

cnm_curl_result cnm_curl_perform(cnm_curl *handle, long *http_status) {
    if (cnm_curl_begin(handle, http_status) != 0) {
        return CNM_CURL_FAILED;
    }
    return cnm_curl_end(handle, curl_easy_perform(handle->easy), http_status);
}

cnm_curl_result cnm_curl_perform_cancellable(cnm_curl *handle, long *http_status) {
    if (cnm_curl_begin(handle, http_status) != 0) {
        return CNM_CURL_FAILED;
    }
    if (atomic_load(&handle->cancelled)) {
        snprintf(handle->error, sizeof handle->error, "cancelled");
        return CNM_CURL_CANCELLED;
    }
    CURLMcode failure = curl_multi_add_handle(handle->multi, handle->easy);
    CURLcode code = CURLE_OK;
    int running = failure == CURLM_OK;
    while (running && !atomic_load(&handle->cancelled)) {
        failure = curl_multi_perform(handle->multi, &running);
        if (failure == CURLM_OK && running) {
            // libcurl shortens the wait to its own next timeout; cnm_curl_cancel cuts it short too.
            failure = curl_multi_poll(handle->multi, NULL, 0, 1000, NULL);
        }
        if (failure != CURLM_OK) {
            break;
        }
    }
    int queued = 0;
    CURLMsg *message;
    while ((message = curl_multi_info_read(handle->multi, &queued)) != NULL) {
        if (message->msg == CURLMSG_DONE && message->easy_handle == handle->easy) {
            code = message->data.result;
        }
    }
    // Removing a transfer that is still running closes its connection.
    curl_multi_remove_handle(handle->multi, handle->easy);
    if (atomic_load(&handle->cancelled)) {
        snprintf(handle->error, sizeof handle->error, "cancelled");
        return CNM_CURL_CANCELLED;
    }
    if (failure != CURLM_OK) {
        snprintf(handle->error, sizeof handle->error, "%s", curl_multi_strerror(failure));
        return CNM_CURL_FAILED;
    }
    return cnm_curl_end(handle, code, http_status);
}

void cnm_curl_cancel(cnm_curl *handle) {
    atomic_store(&handle->cancelled, 1);
    curl_multi_wakeup(handle->multi);
}

const uint8_t *cnm_curl_response_body(const cnm_curl *handle, size_t *length) {
    *length = handle->length;
    return handle->body;
}

const char *cnm_curl_error_text(const cnm_curl *handle) { return handle->error; }

int cnm_curl_os_errno(const cnm_curl *handle) { return handle->os_errno; }
