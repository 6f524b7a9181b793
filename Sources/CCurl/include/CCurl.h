#ifndef CNM_CCURL_H
#define CNM_CCURL_H

// A small, opaque API over libcurl's easy interface, so Swift never sees CURL types or the
// variadic curl_easy_setopt. One handle makes one request at a time and must not be used from two
// threads at once, cnm_curl_cancel excepted; reusing it keeps its connections open between
// requests.

#include <stddef.h>
#include <stdint.h>

/// One libcurl easy handle with its request state and response buffer.
typedef struct cnm_curl cnm_curl;

/// How a request ended. Anything but CNM_CURL_OK leaves curl's text in cnm_curl_error_text().
typedef enum cnm_curl_result {
    CNM_CURL_OK = 0,
    /// No connection could be made; cnm_curl_os_errno() says why (ENOENT, ECONNREFUSED, EACCES...).
    CNM_CURL_CONNECT_FAILED = 1,
    CNM_CURL_TIMED_OUT = 2,
    /// The peer closed or reset the connection before a whole response arrived.
    CNM_CURL_CONNECTION_CLOSED = 3,
    /// What came back is not a well-formed HTTP response.
    CNM_CURL_BAD_RESPONSE = 4,
    /// The body grew past the limit set with cnm_curl_set_max_response_bytes().
    CNM_CURL_TOO_LARGE = 5,
    CNM_CURL_FAILED = 6,
    /// cnm_curl_cancel() stopped the transfer.
    CNM_CURL_CANCELLED = 7,
} cnm_curl_result;

/// A new handle, or NULL when libcurl cannot be initialised or memory is short. The first call
/// also runs curl_global_init, exactly once per process.
cnm_curl *cnm_curl_create(void);
void cnm_curl_destroy(cnm_curl *handle);

/// Forgets every option of the previous request (back to a GET with no headers), keeping the open
/// connections and the response size limit.
void cnm_curl_reset(cnm_curl *handle);

// The setters copy what they are given and return 0, or -1 when libcurl refuses the option or
// memory is short.
int cnm_curl_set_url(cnm_curl *handle, const char *url);
/// Connects to this AF_UNIX socket instead of the URL's host; NULL goes back to TCP.
int cnm_curl_set_unix_socket_path(cnm_curl *handle, const char *path);
/// 0 for either means libcurl's default (300 s to connect, no total limit).
int cnm_curl_set_timeouts_ms(cnm_curl *handle, long connect_ms, long total_ms);
/// Fails the transfer once nothing has come or gone for about `seconds` (0: never).
int cnm_curl_set_idle_timeout_s(cnm_curl *handle, long seconds);
/// One request header line, "Name: value".
int cnm_curl_add_header(cnm_curl *handle, const char *line);
/// Makes the request a POST of these bytes (length may be 0).
int cnm_curl_set_post_body(cnm_curl *handle, const void *body, size_t length);
/// 0 turns off verification of the server's certificate and host name (on by default).
int cnm_curl_set_tls_verify(cnm_curl *handle, int verify);
/// Sends the request through this proxy ("http://host:port"); NULL leaves libcurl's own choice, which
/// follows the http_proxy / https_proxy / no_proxy variables.
int cnm_curl_set_proxy(cnm_curl *handle, const char *proxy);
/// The largest body kept; a longer response ends the request with CNM_CURL_TOO_LARGE.
void cnm_curl_set_max_response_bytes(cnm_curl *handle, size_t max_bytes);

/// Receives the status once the response head is complete (interim 1xx heads are not reported).
typedef void (*cnm_curl_head_fn)(void *context, long http_status);
/// Receives each piece of the body as it arrives.
typedef void (*cnm_curl_body_fn)(void *context, const uint8_t *bytes, size_t length);

/// Hands the response to these callbacks, called on the thread running the transfer, instead of
/// keeping the body: the size limit does not apply and cnm_curl_response_body() stays empty. Also
/// turns on TCP keepalive, since a streamed response may stay silent for a long time. Cleared by
/// cnm_curl_reset().
int cnm_curl_set_stream(cnm_curl *handle, cnm_curl_head_fn on_head, cnm_curl_body_fn on_body, void *context);

/// Runs the request. On CNM_CURL_OK *http_status holds the response status (any status, 4xx and
/// 5xx included) and the body is in cnm_curl_response_body().
cnm_curl_result cnm_curl_perform(cnm_curl *handle, long *http_status);

/// Like cnm_curl_perform, but cnm_curl_cancel() from another thread ends it within milliseconds,
/// with CNM_CURL_CANCELLED.
cnm_curl_result cnm_curl_perform_cancellable(cnm_curl *handle, long *http_status);
/// Safe from any thread while the handle lives. Stops the running cancellable perform and every
/// later one on this handle: the flag is never cleared, so a cancel that comes before the transfer
/// starts is not lost.
void cnm_curl_cancel(cnm_curl *handle);

/// The last response's body, valid until the next perform, reset or destroy.
const uint8_t *cnm_curl_response_body(const cnm_curl *handle, size_t *length);
/// curl's description of the last failure, "" after a success.
const char *cnm_curl_error_text(const cnm_curl *handle);
/// errno of the last failed system call inside libcurl (CURLINFO_OS_ERRNO), 0 when none.
int cnm_curl_os_errno(const cnm_curl *handle);

#endif
