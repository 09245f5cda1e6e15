/*
 * buffstreams — stream discrete, length-framed messages over TCP and Unix
 * sockets, and pull them from queues by connection id.
 *
 * Model
 *   I/O threads own every socket (epoll, non-blocking). They turn byte
 *   streams into whole messages and push three kinds of events into
 *   lock-free queues: open, data and close. Application threads — any
 *   number, any thread — pull them with bs_recv_open / bs_recv_data /
 *   bs_recv_close and write with bs_send_* by connection id. No callbacks.
 *
 * Conventions
 *   - Every call that can fail returns 0 (or a count) on success and a
 *     negative BS_E* code on failure. A call that fails leaves no trace.
 *   - "Any thread" means the call is safe from any number of threads at
 *     once, including concurrently with the I/O threads.
 *   - The library never prints, aborts or exits; it reports through return
 *     codes, close events, bs_stats() and the optional log hook.
 *
 * Licensed under the Apache License, Version 2.0.
 */
#ifndef BUFFSTREAMS_H
#define BUFFSTREAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BS_VERSION_MAJOR 0
#define BS_VERSION_MINOR 1
#define BS_VERSION_PATCH 0

/* ------------------------------------------------------------------------
 * Errors
 *
 * One list makes the enum, bs_strerror() and bs_err_name(). Codes are
 * negative; 0 is success. BS_EOF is not a failure of a call: it is the
 * reason in the close event of a connection the peer closed.
 */
#define BS_ERRNO_MAP(X)                                                      \
	X(EINVAL, -1, "invalid argument")                                    \
	X(ENOMEM, -2, "out of memory")                                       \
	X(ESTALE, -3, "connection id is unknown, closed or from another instance") \
	X(EAGAIN, -4, "resource temporarily unavailable (queue full or empty)") \
	X(ETIMEDOUT, -5, "timed out")                                        \
	X(ESHUTDOWN, -6, "library is shutting down and the queue is drained") \
	X(EMSGSIZE, -7, "message larger than max_message_size")             \
	X(EPROTO, -8, "malformed frame")                                     \
	X(EADDR, -9, "bad or unsupported address")                           \
	X(ESYS, -10, "system call failed (see sys_errno / errno)")           \
	X(EOF, -11, "peer closed the connection")                            \
	X(ECLOSED, -12, "closed locally by bs_send_close")                   \
	X(ECONNREFUSED, -13, "connection refused")                           \
	X(ELIMIT, -14, "connection limit reached")                           \
	X(EDISABLED, -15, "these events are turned off in the configuration") \
	X(EDROPPED, -16, "dropped: the connection's send queue is full (drop policy)") \
	X(ESLOW, -17, "slow consumer: its send queue filled up and it was disconnected") \
	X(EDOWN, -18, "not connected: the dial is reconnecting and refuses sends while down")

typedef enum bs_err {
	BS_OK = 0,
#define BS_ERR_ENUM_(name, code, text) BS_##name = (code),
	BS_ERRNO_MAP(BS_ERR_ENUM_)
#undef BS_ERR_ENUM_
} bs_err_t;

/* Human-readable text for a code ("unknown error" for anything else). Any thread. */
const char *bs_strerror(int err);
/* The code's name without prefix, e.g. "ESTALE". Any thread. */
const char *bs_err_name(int err);

/* ------------------------------------------------------------------------
 * Connection ids
 *
 * A connection id is a plain uint64_t, never 0, that an application may
 * store, print, parse and send elsewhere. Ids are stale-safe: once a
 * connection has closed its id is dead forever, and using it (or an id of
 * another library instance or an earlier run) fails with BS_ESTALE — it is
 * never delivered to another connection, even when the file descriptor or
 * internal slot has been reused. Layout (informative; treat ids as opaque):
 *   bits 63..48 node number (bs_config_t.node), 47..24 generation,
 *   23..0 slot.
 */
typedef uint64_t bs_id_t;

#define BS_ID_STRLEN 17 /* 16 hex digits and the terminating NUL */

/* Writes id as 16 lowercase hex digits into buf[BS_ID_STRLEN]. Returns buf. */
char *bs_id_format(bs_id_t id, char buf[BS_ID_STRLEN]);
/* Parses what bs_id_format wrote (1–16 hex digits, either case). Returns 0
 * and sets *id, or BS_EINVAL (text or id NULL, no digit, more than 16, or
 * anything that is not a hex digit; *id is left alone). */
int bs_id_parse(const char *text, bs_id_t *id);
/* The node number embedded in an id. */
uint16_t bs_id_node(bs_id_t id);

/* ------------------------------------------------------------------------
 * Framing (how a byte stream is cut into messages)
 *
 * Wire formats, exactly:
 *   BS_FRAMING_FIXED        [len: width bytes, big- or little-endian][payload]
 *                           width 1..8 (default 4, big-endian, as Netty's
 *                           LengthFieldPrepender and tokio's
 *                           LengthDelimitedCodec).
 *   BS_FRAMING_VARINT       [len: unsigned LEB128, 1..10 bytes][payload], as
 *                           protobuf writeDelimitedTo / parseDelimitedFrom.
 *                           Rejected (BS_EPROTO): more than 10 bytes, a value
 *                           beyond 64 bits, and non-minimal encodings (a final
 *                           0x00 byte after a continuation byte, e.g. 80 00),
 *                           which no protobuf writer produces.
 *   BS_FRAMING_BUFFSTREAMS  Go BuffStreams v2: an H-byte header, H =
 *                           ceil(bits(max)/8) + 1, holding the length as a
 *                           zig-zag signed varint at offset 0, the remaining
 *                           header bytes zero. Negative lengths are rejected
 *                           (the Go reader crashes on them). Only H must
 *                           agree between peers: set max_message_size to the
 *                           Go peer's MaxMessageSize, and to 4096 where the Go
 *                           side leaves it 0 (its default), since 0 here means
 *                           BS_DEFAULT_MAX_MESSAGE_SIZE and a wider header.
 *   BS_FRAMING_DELIM        [payload][delim byte], as Flamingo's
 *                           BufferTillDelim. On send the delimiter is
 *                           appended and the payload must not contain it.
 *                           On receive the delimiter is part of the message
 *                           only when keep_delim is true (Flamingo's
 *                           behaviour); max_message_size never counts it.
 */
typedef enum bs_framing_kind {
	BS_FRAMING_FIXED = 0,
	BS_FRAMING_VARINT,
	BS_FRAMING_BUFFSTREAMS,
	BS_FRAMING_DELIM,
} bs_framing_kind_t;

typedef struct bs_framing {
	bs_framing_kind_t kind;
	uint8_t width;          /* FIXED: header bytes, 1..8 */
	bool little_endian;     /* FIXED: byte order of the header */
	uint8_t delim;          /* DELIM: the delimiter byte */
	bool keep_delim;        /* DELIM: include the delimiter in received messages */
	size_t max_message_size; /* payload bytes; 0 = BS_DEFAULT_MAX_MESSAGE_SIZE;
	                            at most SIZE_MAX - 17 */
} bs_framing_t;

/* The default max_message_size: 8 MiB, as tokio's LengthDelimitedCodec. */
#define BS_DEFAULT_MAX_MESSAGE_SIZE ((size_t)8 * 1024 * 1024)

/* The longest header any framing writes. */
#define BS_FRAME_HEADER_MAX 16

/* What bs_frame_decode found at the start of a buffer. */
typedef struct bs_frame {
	size_t header_len;  /* bytes before the payload */
	size_t payload_len; /* the message */
	size_t trailer_len; /* bytes after the payload (a dropped delimiter) */
} bs_frame_t;

/* Default framing: 4-byte big-endian length, 8 MiB max. */
void bs_framing_default(bs_framing_t *f);
/* Checks a framing's fields. 0, or BS_EINVAL: f NULL, an unknown kind, a
 * FIXED width outside 1..8, or max_message_size above SIZE_MAX - 17. */
int bs_framing_check(const bs_framing_t *f);

/*
 * Pure, incremental frame decoder: no I/O, no allocation, no state. Looks
 * at buf[0..len) and returns
 *    1  a whole frame starts at buf; *out describes it (frame bytes =
 *       header_len + payload_len + trailer_len);
 *    0  more bytes are needed. If out->header_len != 0 the header is
 *       complete and out->payload_len is the announced size (the frame
 *       is then header_len + payload_len + trailer_len bytes); otherwise
 *       the size is not known yet;
 *   <0  BS_EMSGSIZE (announced size > max_message_size, detected from the
 *       header alone, before anything is allocated; for DELIM, more than
 *       max_message_size bytes without a delimiter), BS_EPROTO (a
 *       malformed header, as listed above), or BS_EINVAL (out NULL, f NULL
 *       or failing bs_framing_check, buf NULL with len > 0).
 * Nothing else.
 * DELIM keeps no state, so it rescans buf from the start on every call.
 * Any split of a stream gives the same frames. Any thread.
 */
int bs_frame_decode(const bs_framing_t *f, const void *buf, size_t len,
		    bs_frame_t *out);

/*
 * Encodes the header for a payload of len bytes into hdr (at least
 * BS_FRAME_HEADER_MAX bytes) and returns its length (>= 0, 0 for DELIM),
 * or BS_EMSGSIZE (len > max_message_size, or more than the header can
 * express: a narrow FIXED width, a BuffStreams header) or BS_EINVAL (hdr
 * NULL, f NULL or failing bs_framing_check, trailer_len NULL for DELIM).
 * *trailer_len (may be NULL when the framing has none) receives 1 for
 * DELIM (the trailer byte is f->delim), else 0.
 * For DELIM, callers must also check the payload does not contain the
 * delimiter (bs_frame_check_payload). Any thread.
 */
int bs_frame_encode(const bs_framing_t *f, size_t len,
		    uint8_t hdr[BS_FRAME_HEADER_MAX], size_t *trailer_len);

/* 0 if payload may be sent with this framing, else BS_EMSGSIZE (too long,
 * as for bs_frame_encode), BS_EPROTO (DELIM: the payload holds the
 * delimiter) or BS_EINVAL (f NULL or failing bs_framing_check, payload
 * NULL with len > 0). Any thread. */
int bs_frame_check_payload(const bs_framing_t *f, const void *payload,
			   size_t len);

/* ------------------------------------------------------------------------
 * Configuration
 */
enum bs_log_level { BS_LOG_ERROR = 0, BS_LOG_WARN, BS_LOG_INFO, BS_LOG_DEBUG };

/* What a send does when the connection's queue is full (see Sending). */
enum bs_slow_policy {
	BS_SLOW_REFUSE = 0,   /* fail with BS_EAGAIN (or wait, with a timeout) */
	BS_SLOW_DROP,         /* drop this message, count it, BS_EDROPPED */
	BS_SLOW_DISCONNECT,   /* close the connection: its queue is dropped
	                         (counted as unsent), close reason BS_ESLOW */
};

/* Log hook. Called from any library thread; must not call back into bs_*. */
typedef void (*bs_log_fn)(void *arg, int level, const char *message);

typedef struct bs_config {
	unsigned io_threads;          /* I/O threads; 0 = one per CPU */
	uint16_t node;                /* node number embedded in every id */
	uint32_t max_connections;     /* live connections (incl. those whose
	                                 close event is queued); default 65536 */
	size_t recv_backlog_bytes;    /* per connection: received bytes not yet
	                                 given to the application beyond which
	                                 that connection alone is not read (TCP
	                                 pushes back on its peer); reading
	                                 resumes below half; default 1 MiB */
	size_t send_queue_bytes;      /* per-connection bound on queued outgoing
	                                 bytes; default 4 MiB */
	int slow_policy;              /* what a send to a full queue does, per
	                                 connection (bs_conn_set_slow changes
	                                 it): BS_SLOW_REFUSE (default) */
	bs_framing_t framing;         /* default for listeners and dials */
	bool open_events;             /* deliver open events; default true */
	bool close_events;            /* deliver close events; default true */
	uint32_t hold_batch;          /* most messages of one connection that one
	                                 receive takes (fairness: a busy
	                                 connection then goes to the back of the
	                                 line); default 64 */
	uint32_t hold_warn_ms;        /* a hold longer than this is logged and
	                                 counted (holds_stuck); 0 = never;
	                                 default 1000 */
	uint32_t send_more_us;        /* how long a thread's BS_SEND_MORE
	                                 frames may wait while its receives keep
	                                 finding work (see Sending); 0 = written
	                                 at its next receive; default 10000,
	                                 at most 1000000 */
	uint32_t idle_timeout_ms;     /* close after this long without reads,
	                                 writes or sends; 0 = never (default) */
	uint32_t shutdown_timeout_ms; /* bs_destroy's flush deadline; default 5000 */
	uint32_t io_poll_us;          /* after a turn with events, an I/O thread
	                                 looks again for up to this long
	                                 (yielding the CPU) before it sleeps,
	                                 less while traffic is sparse; saves
	                                 wake-ups, costs CPU; 0 = sleep at once;
	                                 default 100, at most 10000 */
	uint32_t recv_poll_us;        /* the same for a bs_recv_* call that would
	                                 wait: it looks again for up to this
	                                 long (yielding the CPU) before it
	                                 sleeps, less while events are sparse;
	                                 a reply then costs no wake-up of the
	                                 receiving thread; 0 = sleep at once;
	                                 default 100, at most 10000 */
	bool tcp_nodelay;             /* default true */
	bool tcp_keepalive;           /* default false */
	int sndbuf, rcvbuf;           /* socket buffer sizes; 0 = kernel default */
	int backlog;                  /* listen backlog; default 1024 */
	bool reuseaddr;               /* SO_REUSEADDR on listeners; default true */
	bool reuseport;               /* SO_REUSEPORT on TCP listeners, so that
	                                 several processes (each with its own
	                                 node number) share one port and the
	                                 kernel spreads connections over them;
	                                 default false */
	bs_log_fn log;                /* NULL = silent (default) */
	void *log_arg;
	int log_level;                /* highest level passed to log; default WARN */
} bs_config_t;

/* Fills *cfg with the defaults above. */
void bs_config_init(bs_config_t *cfg);

/* ------------------------------------------------------------------------
 * Lifecycle
 */
typedef struct bs bs_t;

/*
 * Creates an instance and starts its I/O threads. cfg may be NULL for the
 * defaults; it is copied. Returns 0 and sets *out, or
 *   BS_EINVAL  out NULL, cfg->framing fails bs_framing_check,
 *              max_connections above 2^24 - 1, slow_policy not a
 *              bs_slow_policy;
 *   BS_ENOMEM  out of memory;
 *   BS_ESYS    an epoll set, eventfd or thread could not be made (e.g. no
 *              file descriptor left).
 * On failure nothing is left running and *out is not touched. Any thread.
 */
int bs_create(const bs_config_t *cfg, bs_t **out);

/*
 * Begins a graceful shutdown and returns at once: listeners close, every
 * connection sends what was queued before this call and then closes (each
 * with its close event), and once a queue is empty the bs_recv_* calls on
 * it return BS_ESHUTDOWN instead of blocking. Idempotent. Any thread.
 */
void bs_shutdown(bs_t *bs);

/*
 * bs_shutdown(), then waits for queued sends to flush (at most
 * shutdown_timeout_ms, after which connections are closed anyway), wakes
 * every blocked bs_recv_* call with BS_ESHUTDOWN, waits for those calls to
 * return, joins the I/O threads and frees everything, including messages
 * still queued. Messages the application still holds remain valid until it
 * releases them. bs_destroy(NULL) is a no-op. Call once, from a thread that
 * is not inside a bs_* call; no bs_* call on bs may start after it began.
 * Threads that loop on bs_recv_* should therefore stop at BS_ESHUTDOWN and
 * be joined before bs_destroy: bs_shutdown(); join them; bs_destroy().
 */
void bs_destroy(bs_t *bs);

/* ------------------------------------------------------------------------
 * Listening and dialling
 *
 * Addresses: "host:port" (IPv4 "127.0.0.1:5031", IPv6 "[::1]:5031",
 * a name resolved with getaddrinfo in the calling thread, or ":5031" for
 * every interface) and "unix:/path/to/socket". Port 0 picks a free port.
 */

/*
 * Listens on addr. framing NULL = the configured default. Accepted
 * connections are spread over the I/O threads. Returns 0 and sets
 * *listener, or
 *   BS_EINVAL     bs, addr or listener NULL, or framing fails
 *                 bs_framing_check;
 *   BS_EADDR      malformed or unresolvable address;
 *   BS_ESYS       socket, bind or listen failed, or the I/O threads could
 *                 not watch the socket: errno says why (e.g. EADDRINUSE);
 *   BS_ENOMEM     out of memory;
 *   BS_ELIMIT     64 listeners open already (one being closed counts
 *                 until its socket is closed), or the instance has handed
 *                 out 2^26 - 1 listener ids;
 *   BS_ESHUTDOWN  bs_shutdown has begun.
 * On failure *listener is not touched and nothing stays bound.
 *
 * Listener ids are stale-safe like connection ids: a uint32_t, never 0,
 * that no other listener of the instance is ever given; once its listener
 * is closed (by bs_listen_close or bs_shutdown) the id fails with
 * BS_ESTALE for ever, as does an id from another instance. Any thread.
 */
int bs_listen(bs_t *bs, const char *addr, const bs_framing_t *framing,
	      uint32_t *listener);

/* Longest text bs_listener_addr writes, with its NUL. */
#define BS_ADDR_STRLEN 128

/* Writes the bound address of a listener ("127.0.0.1:40123", "[::1]:5031",
 * "unix:/p") into buf (BS_ADDR_STRLEN bytes always suffice). 0, or
 * BS_EINVAL (bs or buf NULL), BS_ESTALE (listener unknown, closed or from
 * another instance) or BS_EMSGSIZE (buf shorter than the text and its
 * NUL). Any thread. */
int bs_listener_addr(bs_t *bs, uint32_t listener, char *buf, size_t len);

/* Stops accepting on a listener and closes its socket (a unix socket's path
 * is unlinked); waits until the I/O threads have closed it, so the address
 * may be bound again on return. Accepted connections are unaffected.
 * Returns 0, or
 *   BS_EINVAL     bs NULL;
 *   BS_ESTALE     listener unknown, closed already (bs_shutdown closes
 *                 every listener) or from another instance;
 *   BS_ETIMEDOUT  an I/O thread did not get to it within 5 s (it is busy,
 *                 e.g. blocked in the log hook): the listener is closed
 *                 all the same — its id is stale and it accepts nothing
 *                 more — but its socket is closed only once that thread
 *                 gets to it.
 * Any thread. */
int bs_listen_close(bs_t *bs, uint32_t listener);

/*
 * Starts a non-blocking connect and returns its id at once, so the caller
 * may queue sends before the connection is up. Success gives an open event
 * (dialled); failure gives only a close event whose reason says why
 * (BS_ECONNREFUSED, BS_ETIMEDOUT, BS_ESYS with sys_errno). Returns 0 and
 * sets *id, or BS_EADDR / BS_ELIMIT (max_connections in use) / BS_ESYS /
 * BS_EINVAL / BS_ENOMEM / BS_ESHUTDOWN. framing NULL = default.
 * bs_dial is bs_dial_ex with the options of bs_dial_opts_init: no
 * reconnect, a 20 s connect timeout. Any thread.
 */
int bs_dial(bs_t *bs, const char *addr, const bs_framing_t *framing,
	    bs_id_t *id);

/* ------------------------------------------------------------------------
 * Reconnecting dials
 *
 * bs_dial_ex with opts.reconnect keeps one id across every connection it
 * makes to addr: ids stored elsewhere stay valid, and sends to the id go
 * to whichever connection is up.
 *
 * When the connection breaks (the peer closed or reset it, or sent a bad
 * frame) or an attempt fails (refused, connect timeout), the dial waits and
 * tries again. The n-th retry in a row waits
 *     min(backoff_initial_ms * backoff_multiplier^(n-1), backoff_max_ms),
 * moved at random by up to backoff_jitter of itself either way, so that
 * clients that lost one server do not all come back in the same
 * millisecond (gRPC's connection backoff, with its defaults: 1 s, 1.6,
 * 120 s, 20 %). The first retry after a break waits too. The count starts
 * again only once a connection has stayed up stable_ms: a peer that
 * accepts and drops at once meets a growing delay. After max_retries
 * failed retries in a row (0: never) the dial closes for good, with the
 * last failure as its close reason. bs_redial retries at once. The timers
 * run in the I/O threads, no thread sleeps for them; a name in addr is
 * resolved once, by bs_dial_ex.
 *
 * Events (with open events on, the default) come through bs_recv_open,
 * under the same holds and in order with the id's messages:
 *   BS_OPEN_FIRST  up for the first time;
 *   BS_OPEN_DOWN   the connection broke, or an attempt failed: reason and
 *                  sys_errno say why, attempt is the number of the retry
 *                  that follows and delay_ms when, maybe_lost_msgs counts
 *                  what the break may have lost (below). Every message
 *                  read from the broken connection comes before it. A
 *                  failed attempt whose DOWN finds the previous DOWN not
 *                  taken yet is merged into it (latest attempt, delay and
 *                  reason; counts summed). A dial whose first attempt
 *                  fails starts with a DOWN;
 *   BS_OPEN_AGAIN  up again; every message read from the new connection
 *                  comes after it;
 * and at the end the close event, once, the last event of the id. A dial
 * whose events are not taken stops retrying while more than six wait,
 * and goes on when they are taken: they cannot pile up.
 *
 * Sends: while no connection is up, sends join the queue (bounded by
 * send_queue_bytes, as always) when opts.queue_while_down, else fail at
 * once with BS_EDOWN. What is queued goes out, in order, as soon as the
 * next connection is up (before its AGAIN event is taken: a protocol that
 * needs a greeting first turns queue_while_down off). A message that was
 * partly written when the connection broke is written again from its first
 * byte; a message written whole is never written again, so the peer never
 * receives one twice.
 *
 * What a break may lose. "Written" means handed to the kernel. When a
 * connection breaks, the messages written to it whose bytes had not all
 * reached the peer may be lost. maybe_lost_msgs counts them, an upper
 * bound: over TCP, the messages that end in the bytes the kernel still
 * held unacknowledged (SIOCOUTQ) when the break was seen; over a Unix
 * socket, whose kernel forgets unread bytes when the peer closes, the
 * messages that end in the last SO_SNDBUF bytes written. TCP cannot tell
 * which bytes the peer's kernel acknowledged but its application never
 * read (it crashed, or closed with bytes unread): those are lost and
 * counted nowhere. Only an answer from the peer's application can tell;
 * a protocol that must lose nothing acknowledges end to end.
 *
 * Hand-back: with opts.hand_back, a dial that closes for good with messages
 * still queued (never written, or cut off in the middle) hands them back
 * in its close event (returned, nreturned), in the order they were sent,
 * so that the application can send them elsewhere; bs_close_event_release
 * frees what it does not keep. Without hand_back, or with close events
 * off, they are dropped and counted (unsent_msgs). Every message a send
 * accepted for a dial thus ends in exactly one of written_msgs, returned
 * or unsent_msgs of its close event.
 *
 * Closing for good: bs_send_close on a dial that is up or connecting sends
 * the queue first, as always, and if that connection breaks the dial
 * closes without a retry; on a dial that is down it closes at once. An
 * idle timeout, a slow-consumer disconnect and bs_shutdown close a dial
 * for good too.
 */
typedef struct bs_dial_opts {
	bool reconnect;              /* reconnect after a break; default false */
	uint32_t backoff_initial_ms; /* the first retry's delay; default 1000,
	                                at least 1 */
	double backoff_multiplier;   /* growth per retry; default 1.6, >= 1 */
	uint32_t backoff_max_ms;     /* largest delay before the jitter;
	                                default 120000, >= backoff_initial_ms */
	double backoff_jitter;       /* fraction of the delay added or taken at
	                                random; default 0.2, in [0, 1) */
	uint32_t max_retries;        /* failed retries in a row before the dial
	                                closes for good; 0 = never (default) */
	uint32_t stable_ms;          /* up this long, a connection resets the
	                                retry count; default 5000 */
	uint32_t connect_timeout_ms; /* an attempt not up by then fails with
	                                BS_ETIMEDOUT; default 20000; 0 = the
	                                kernel's own (minutes) */
	bool queue_while_down;       /* sends queue while no connection is up;
	                                false: BS_EDOWN; default true */
	bool hand_back;              /* hand what is left queued back in the
	                                close event; default false */
	void *user;                  /* the user value from the start (as
	                                bs_set_user); default NULL */
} bs_dial_opts_t;

/* Every millisecond field above is at most this (one day). */
#define BS_DIAL_MAX_MS 86400000u

/* Fills *opts with the defaults above. */
void bs_dial_opts_init(bs_dial_opts_t *opts);

/*
 * bs_dial with options (opts NULL: bs_dial_opts_init's). Returns 0 and sets
 * *id, or what bs_dial returns; BS_EINVAL also for an option outside the
 * ranges above. Any thread.
 */
int bs_dial_ex(bs_t *bs, const char *addr, const bs_framing_t *framing,
	       const bs_dial_opts_t *opts, bs_id_t *id);

/*
 * A reconnecting dial that is down, waiting for its next retry, retries at
 * once, and its retry count starts again (as after a stable connection).
 * 0, or BS_EINVAL (bs NULL, or id is not a reconnecting dial), BS_ESTALE
 * (id unknown, closed or closing), BS_EAGAIN (a connection is up or an
 * attempt is under way: nothing to retry), BS_ESHUTDOWN. Any thread.
 */
int bs_redial(bs_t *bs, bs_id_t id);

/* ------------------------------------------------------------------------
 * Messages
 *
 * A bs_msg_t is a reference-counted buffer. Received messages are slices
 * of pooled read buffers (no copy after the socket read); the bs_data_t that
 * carries one owns one reference. Release it with bs_msg_release, or hand it
 * to bs_send_msg, which takes it over. Messages outlive bs_destroy.
 */
typedef struct bs_msg bs_msg_t;

/* Allocates a message buffer of len bytes for zero-copy sending; *data
 * receives its start. Returns NULL when out of memory. Any thread. */
bs_msg_t *bs_msg_alloc(size_t len, void **data);
/* Adds a reference (for sending one buffer to many ids). Returns msg. */
bs_msg_t *bs_msg_ref(bs_msg_t *msg);
/* Drops a reference; the last one frees the buffer. NULL is a no-op. */
void bs_msg_release(bs_msg_t *msg);

struct bs_data;
/* bs_msg_release of ev[0..n).msg, with one atomic step per run of messages
 * that share a buffer (messages read together usually do). Any thread. */
void bs_data_release(struct bs_data *ev, size_t n);

/* ------------------------------------------------------------------------
 * Events and holds
 *
 * Per connection the application *processes* — not just receives — exactly
 * one open event, then every message in wire order, then exactly one close
 * event, one thread at a time, however many threads receive:
 *   - A thread that receives an event of connection X (open or data)
 *     *holds* X until its next bs_recv_* call, bs_release, or its exit.
 *     Meanwhile no other thread receives an event of X, and everything the
 *     holder did to X's state happens before the next holder's work. So
 *     per-connection state needs no lock of its own.
 *   - A held connection never delays another connection's events. Threads
 *     that find only held connections wait for the next free one.
 *   - One hold takes at most hold_batch messages of a connection; a
 *     connection with more then goes to the back of the line, so a flooding
 *     connection cannot starve light ones.
 *   - A connection whose undelivered messages pass recv_backlog_bytes stops
 *     being read, alone; TCP pushes back on that peer.
 *   - The close event is the last event of an id and carries the user
 *     value: free per-connection state there. Receiving it ends the
 *     connection (there is nothing left to hold).
 *   - A hold longer than hold_warn_ms is logged and counted (holds_stuck).
 * With open_events or close_events turned off, nothing waits for them.
 *
 * timeout_ms: -1 waits for ever, 0 only tries (BS_EAGAIN when empty), > 0
 * waits at most that long (BS_ETIMEDOUT). Once shutdown has begun and the
 * queue is drained the calls return BS_ESHUTDOWN. bs_recv_open and
 * bs_recv_close return BS_EDISABLED at once when those events are turned
 * off; every call returns BS_EINVAL for a NULL argument. Any thread.
 */
/* What an open event says (see Reconnecting dials). */
enum bs_open_kind {
	BS_OPEN_FIRST = 0,  /* the connection is up: every connection's first */
	BS_OPEN_AGAIN,      /* a reconnecting dial is up again */
	BS_OPEN_DOWN,       /* a reconnecting dial is down and will retry */
};

typedef struct bs_open_event {
	bs_id_t id;
	void *user;                     /* the user value (bs_set_user) */
	uint32_t listener;              /* accepting listener, 0 when dialled */
	bool dialled;
	socklen_t peer_len;
	struct sockaddr_storage peer;   /* peer address (AF_UNIX: unnamed; a
	                                   dial's: the address dialled) */
	int kind;                       /* enum bs_open_kind */
	int reason;                     /* DOWN: BS_EOF, BS_ECONNREFUSED,
	                                   BS_ETIMEDOUT (connect timeout),
	                                   BS_ESYS, BS_EPROTO, BS_EMSGSIZE */
	int sys_errno;                  /* DOWN: errno behind BS_ESYS, else 0 */
	uint32_t attempt;               /* DOWN: the retry that follows (1, 2,
	                                   ...); FIRST, AGAIN: the retries it
	                                   took */
	uint32_t delay_ms;              /* DOWN: how long until that retry */
	uint64_t maybe_lost_msgs;       /* DOWN: messages written to the broken
	                                   connection that may not have reached
	                                   the peer (an upper bound) */
} bs_open_event_t;

typedef struct bs_data {
	bs_id_t id;
	const uint8_t *data;  /* the message, without framing */
	size_t len;
	bs_msg_t *msg;        /* owner: bs_msg_release(msg) or bs_send_msg(..msg..) */
	void *user;           /* the connection's user value */
} bs_data_t;

typedef struct bs_close_event {
	bs_id_t id;
	void *user;            /* the connection's user value, for the last time */
	int reason;            /* BS_EOF, BS_ECLOSED, BS_ETIMEDOUT (idle, or
	                          a dial's connect timeout),
	                          BS_ESLOW (slow consumer),
	                          BS_EPROTO / BS_EMSGSIZE (bad frame),
	                          BS_ECONNREFUSED / BS_ESYS (dial or socket
	                          error), BS_ESHUTDOWN, BS_ENOMEM; a
	                          reconnecting dial that gave up: its last
	                          failure's */
	int sys_errno;         /* errno behind BS_ESYS, else 0 */
	uint64_t unsent_msgs;  /* queued outgoing messages never sent, dropped
	                          (not those handed back) */
	uint64_t unsent_bytes;  /* their payload bytes */
	uint64_t dropped_msgs;  /* messages dropped by BS_SLOW_DROP */
	uint64_t written_msgs;  /* messages written whole to a socket, over
	                           all of the id's connections */
	uint64_t maybe_lost_msgs; /* dials: of those, how many went to a
	                           connection that broke and may not have
	                           reached the peer (the DOWN events' counts
	                           and the last break's, summed) */
	uint32_t reconnects;   /* times a reconnecting dial came up again */
	bs_data_t *returned;   /* hand_back dials: the messages never written,
	                          in send order (msg owns each; data and len
	                          are the payload); the caller owns them:
	                          bs_close_event_release. NULL when none */
	size_t nreturned;
} bs_close_event_t;

int bs_recv_open(bs_t *bs, bs_open_event_t *ev, int timeout_ms);
/* On success the caller owns ev->msg. */
int bs_recv_data(bs_t *bs, bs_data_t *ev, int timeout_ms);
/* Up to max messages at once (at most BS_RECV_BATCH_MAX), possibly of
 * several connections, all of which the caller then holds; returns how
 * many (> 0) or a negative code. Waits only while nothing is available.
 * The caller owns every ev[i].msg. A smaller max spreads connections over
 * more threads. */
#define BS_RECV_BATCH_MAX 256
int bs_recv_data_batch(bs_t *bs, bs_data_t *ev, size_t max, int timeout_ms);
int bs_recv_close(bs_t *bs, bs_close_event_t *ev, int timeout_ms);

/* Releases the messages a close event hands back (ev->returned[i].msg that
 * are not NULL: set one to NULL to keep it) and frees the array; then
 * returned is NULL and nreturned 0. Does nothing for an event without
 * them; ev NULL is a no-op. Any thread. */
void bs_close_event_release(bs_close_event_t *ev);

/* Ends the calling thread's holds on bs now and writes everything it
 * deferred: its queued answers to the connections it held, and its
 * BS_SEND_MORE frames (which a bs_recv_* that finds work leaves waiting);
 * the connections go to other threads. A thread about to wait for
 * something other than bs_recv_* calls it first. 0 or BS_EINVAL. Any
 * thread. */
int bs_release(bs_t *bs);

/* Ends the calling thread's hold of one connection now, keeping the
 * others (a thread that must wait on one slow peer lets the rest of its
 * batch go first). 0, BS_EINVAL, or BS_ESTALE when this thread does not
 * hold id. */
int bs_release_id(bs_t *bs, bs_id_t id);

/* Sets the connection's user value, carried by its later events (pointer
 * sized; the library never looks at it). 0, BS_EINVAL, or BS_ESTALE once
 * the close event was delivered (or for an id that was never valid). Set it
 * while holding the open event, or right after bs_dial. Any thread. */
int bs_set_user(bs_t *bs, bs_id_t id, void *user);

/* ------------------------------------------------------------------------
 * Sending (any thread; sends to one id are written in the order of the
 * calls that returned 0)
 *
 * Each call frames one message. When nothing is queued for the connection
 * the calling thread writes it to the socket at once; otherwise it joins
 * the connection's queue, which the I/O thread writes as the peer reads.
 *
 * Coalescing follows holds: sends by the thread that holds the connection
 * (see Events and holds) are queued and written in one system call when
 * the hold ends — at its next bs_recv_*, bs_release or exit — or earlier
 * once 64 KiB are queued. Sends from threads that do not hold it are
 * written at once, unless BS_SEND_MORE asks them to wait while the sender
 * has work, as a single-threaded server writes its clients only before it
 * sleeps: they stay queued across the sender's bs_recv_* calls as long as
 * those find events, and each connection's are written in one system call
 *   - by a bs_recv_* of the sender that finds nothing, before it waits or
 *     returns BS_EAGAIN, BS_ETIMEDOUT or BS_ESHUTDOWN;
 *   - by the first bs_recv_* of the sender once it has taken 1024 events,
 *     or send_more_us (bs_config_t) have passed, since its first frame
 *     still waiting, whichever comes first;
 *   - at the sender's bs_release, its exit, its first bs_recv_* on another
 *     instance, or a send of its that waits for room; at bs_flush of the
 *     id, bs_shutdown, bs_destroy, or a later send to the id without the
 *     flag (from any thread: it goes behind them);
 *   - at once when 64 KiB are queued for the connection, or when the
 *     sender cannot list more connections (max_connections, or memory).
 * A frame to a connection for which another thread's frames already wait
 * goes with those. A fan-out loop uses BS_SEND_MORE so that a subscriber
 * that receives many small messages costs few system calls. A holder that
 * wants an answer out at once calls bs_flush.
 *
 * A full queue (send_queue_bytes) is handled by the connection's slow
 * policy: BS_SLOW_REFUSE fails with BS_EAGAIN (or waits up to timeout_ms in
 * bs_send), BS_SLOW_DROP drops the message and counts it (BS_EDROPPED),
 * BS_SLOW_DISCONNECT closes the connection (BS_ESLOW; close reason
 * BS_ESLOW). Frames that only wait for a hold to end are written first.
 * Returns 0, or
 *   BS_EINVAL     NULL bs, or data NULL with len > 0;
 *   BS_ESTALE     the id is unknown, closed or closing;
 *   BS_ESHUTDOWN  bs_shutdown or bs_destroy has begun;
 *   BS_EAGAIN     the queue is full (refuse policy);
 *   BS_ETIMEDOUT  (bs_send with timeout_ms > 0) no room in time;
 *   BS_EDROPPED / BS_ESLOW  the queue is full (drop / disconnect policy);
 *   BS_EDOWN      a dial without queue_while_down has no connection up;
 *   BS_EMSGSIZE   len > max_message_size; BS_EPROTO payload holds the
 *                 delimiter (DELIM framing); BS_ENOMEM.
 */

/* Copies data. */
int bs_send_data(bs_t *bs, bs_id_t id, const void *data, size_t len);

/* Zero copy: sends data[0..len), which lies inside msg, and takes over one
 * reference of msg on success; on error the caller still owns it. */
int bs_send_msg(bs_t *bs, bs_id_t id, bs_msg_t *msg, const void *data,
		size_t len);

/* Send flags. */
#define BS_SEND_MORE 0x1u /* queue only; written once the sender runs
                             out of work: by its first bs_recv_* that
                             finds nothing, or after 1024 events or
                             send_more_us, or at its bs_release or exit
                             (see Sending); also from a thread that never
                             receives (then at bs_release or exit); a
                             thread that last received from another
                             instance writes at once */

/* The general form: msg NULL copies data; timeout_ms as for bs_recv_*
 * (0 = fail at once with BS_EAGAIN when the queue is full). */
int bs_send(bs_t *bs, bs_id_t id, const void *data, size_t len,
	    bs_msg_t *msg, unsigned flags, int timeout_ms);

/*
 * Fan-out: sends data[0..len), which lies inside msg, to each of ids[0..n)
 * from one shared buffer, framed once for each framing among the ids,
 * with no copy per id: each queue that keeps it takes a reference (a frame
 * up to 16 KiB is laid out whole once, in a buffer of its own; a larger
 * one references msg's payload). flags as for bs_send; never
 * waits. results[i] (NULL: not wanted) receives each id's code as bs_send
 * would return it. Takes over the caller's reference of msg in every case.
 * Returns how many ids took the message, or BS_EINVAL.
 */
int bs_send_many(bs_t *bs, const bs_id_t *ids, size_t n, bs_msg_t *msg, const void *data,
		 size_t len, unsigned flags, int *results);

/* Writes what is queued for id now. 0, BS_EINVAL, BS_ESTALE, BS_ESHUTDOWN,
 * or BS_ESYS when the socket failed (its close event follows). */
int bs_flush(bs_t *bs, bs_id_t id);

/* Sends everything queued before this call, then closes the connection
 * (close reason BS_ECLOSED). Later sends fail with BS_ESTALE. 0,
 * BS_EINVAL, BS_ESTALE or BS_ESHUTDOWN. */
int bs_send_close(bs_t *bs, bs_id_t id);

/* Sets id's slow-consumer policy (enum bs_slow_policy). 0, BS_EINVAL or
 * BS_ESTALE. Any thread. */
int bs_conn_set_slow(bs_t *bs, bs_id_t id, int policy);

/* One connection's queues. */
typedef struct bs_conn_info {
	uint64_t queued_bytes;    /* outgoing, not yet written (framed) */
	uint64_t queued_msgs;
	uint64_t dropped_msgs;    /* by BS_SLOW_DROP */
	uint64_t dropped_bytes;
	uint64_t unread_bytes;    /* received, not yet given to the application */
	int slow;                 /* its enum bs_slow_policy */
	bool reading_paused;      /* its backlog is over recv_backlog_bytes */
	bool connected;           /* a connection is up (not connecting, not
	                             down between two of a dial's connections) */
	uint64_t written_msgs;    /* messages written whole so far */
	uint32_t reconnects;      /* times a reconnecting dial came up again */
} bs_conn_info_t;

/* 0, BS_EINVAL or BS_ESTALE. Any thread. */
int bs_conn_info(bs_t *bs, bs_id_t id, bs_conn_info_t *out);

/* ------------------------------------------------------------------------
 * Statistics: counters since bs_create and current gauges. Any thread;
 * each field is read atomically, the set is not a snapshot.
 */
typedef struct bs_stats {
	uint64_t conns_open;       /* gauge: connections alive */
	uint64_t conns_accepted;
	uint64_t conns_dialled;
	uint64_t conns_closed;
	uint64_t msgs_in, bytes_in;   /* payload received */
	uint64_t msgs_out, bytes_out; /* payload fully written to sockets */
	uint64_t open_queue_depth;    /* gauges: events waiting */
	uint64_t data_queue_depth;    /* messages received, not yet taken */
	uint64_t close_queue_depth;
	uint64_t ready_conns;         /* gauge: connections waiting for a thread */
	uint64_t paused_reads;        /* gauge: connections not read: backlog */
	uint64_t read_pauses;         /* times a connection's reading paused */
	uint64_t frames_rejected;     /* malformed or oversize frames */
	uint64_t idle_timeouts;
	uint64_t sends_refused;       /* BS_EAGAIN / BS_ETIMEDOUT on send */
	uint64_t sends_stale;         /* sends to dead ids */
	uint64_t send_writes;         /* socket writes that carried sends */
	uint64_t unsent_msgs;         /* dropped at close, also in close events */
	uint64_t msgs_dropped;        /* by BS_SLOW_DROP */
	uint64_t slow_disconnects;    /* by BS_SLOW_DISCONNECT */
	uint64_t holds_stuck;         /* holds longer than hold_warn_ms */
	uint64_t accept_errors;       /* EMFILE and friends, survived */
	uint64_t dial_retries;        /* connection attempts of reconnecting
	                                 dials after the first */
	uint64_t reconnects;          /* reconnecting dials up again */
	uint64_t msgs_maybe_lost;     /* written to connections that broke,
	                                 possibly not received (upper bound) */
	uint64_t msgs_returned;       /* handed back in close events */
} bs_stats_t;

void bs_stats(bs_t *bs, bs_stats_t *out);

/* ------------------------------------------------------------------------
 * The Manager: listeners and writers by address, as Go BuffStreams' Manager
 *
 * A manager keeps, on one instance, the listeners it opened and one
 * reconnecting dial ("writer") per address written to, so that an
 * application can work with addresses alone: bs_manager_write dials the
 * address the first time (lazily) and reuses that connection afterwards;
 * the close calls find the listener or writer by the address it was opened
 * with. Received messages and every event of the manager's connections
 * come through bs_recv_* on the instance as usual (turn open or close
 * events off in the configuration if nothing takes them; a closed
 * connection's slot is free only once its close event is taken).
 * Addresses are matched as text, as given; a listener on port 0 is found
 * by the address it was bound to (bs_manager_listen writes it).
 * Every call is safe from any number of threads at once; the writers'
 * table is read-locked only while an address is looked up.
 */
typedef struct bs_manager bs_manager_t;

/*
 * A manager on bs (which must outlive it). framing (NULL: the instance's
 * default) is used by its listeners and writers; opts (NULL:
 * bs_dial_opts_init with reconnect and hand_back on) by its writers.
 * 0 and *out, or BS_EINVAL (bs or out
 * NULL, framing or opts invalid) or BS_ENOMEM. Any thread.
 */
int bs_manager_create(bs_t *bs, const bs_framing_t *framing, const bs_dial_opts_t *opts,
		      bs_manager_t **out);

/* Closes every listener (as bs_manager_close_listener) and writer (as
 * bs_manager_close_writer) and frees the manager. NULL is a no-op. Any
 * thread, once no other call on the manager runs. */
void bs_manager_destroy(bs_manager_t *m);

/*
 * Listens on addr. bound (may be NULL) receives the bound address
 * (BS_ADDR_STRLEN bytes suffice), by which a port-0 listener is found.
 * 0, what bs_listen returns, BS_EINVAL (m or addr NULL, or this manager
 * listens on addr already), BS_ENOMEM, or BS_EMSGSIZE (bound shorter than
 * the address: the listener is open all the same). Any thread.
 */
int bs_manager_listen(bs_manager_t *m, const char *addr, char *bound, size_t len);

/*
 * The writer of addr: dials it (a reconnecting dial) unless there is one;
 * *id (may be NULL) receives its id. 0, or what bs_dial_ex returns. Any
 * thread.
 */
int bs_manager_dial(bs_manager_t *m, const char *addr, bs_id_t *id);

/*
 * Sends one message (copied) to addr's writer, dialling it first when
 * there is none; as bs_send_data otherwise (it queues while the writer is
 * connecting or reconnecting). A writer that has closed for good (it gave
 * up, or was closed) is replaced by a new dial, once per call. 0, or what
 * bs_manager_dial or bs_send_data return. Any thread.
 */
int bs_manager_write(bs_manager_t *m, const char *addr, const void *data, size_t len);

/* The id of addr's writer: 0 and *id, or BS_ESTALE (none) or BS_EINVAL. */
int bs_manager_writer(bs_manager_t *m, const char *addr, bs_id_t *id);

/*
 * Closes the listener opened with addr (or bound to it): its socket is
 * closed and the port free again when this returns (see bs_listen_close),
 * and the manager forgets it. 0, BS_ESTALE (no such listener), BS_EINVAL,
 * or BS_ETIMEDOUT as bs_listen_close. Any thread.
 */
int bs_manager_close_listener(bs_manager_t *m, const char *addr);

/*
 * Forgets addr's writer and closes it as bs_send_close does (what is
 * queued is sent first; the close event follows). A later write dials
 * anew. 0, BS_ESTALE (no such writer) or BS_EINVAL. Any thread.
 */
int bs_manager_close_writer(bs_manager_t *m, const char *addr);

/* How many listeners and writers the manager holds (either pointer may be
 * NULL). 0 or BS_EINVAL. Any thread. */
int bs_manager_count(bs_manager_t *m, size_t *listeners, size_t *writers);

#ifdef __cplusplus
}
#endif
#endif /* BUFFSTREAMS_H */
