/*
 * ThreadSanitizer cannot see ck's atomics (inline assembly, or plain
 * volatile accesses under CK_USE_CC_BUILTINS), so it cannot see that a ck
 * ring hands its entries — and the bytes they point to — from producer to
 * consumer. These annotations state that edge: release before publishing
 * into a ring or stack, acquire after taking from it. They cost nothing in
 * other builds.
 */
#ifndef BS_TSAN_H
#define BS_TSAN_H

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BS_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define BS_TSAN 1
#endif

#ifdef BS_TSAN
#include <sanitizer/tsan_interface.h>
#define tsan_release(addr) __tsan_release((void *)(addr))
#define tsan_acquire(addr) __tsan_acquire((void *)(addr))
#else
#define tsan_release(addr) ((void)(addr))
#define tsan_acquire(addr) ((void)(addr))
#endif

#endif
