// A replacement of malloc that fails chosen allocations, for tests of the
// std::bad_alloc paths (glibc: it forwards to __libc_malloc).  Include it in
// one translation unit of an executable.  Under AddressSanitizer, which
// replaces malloc itself, CONTRASTIVE_TEST_FAIL_MALLOC is 0 and nothing is
// replaced: a test then says it did not run.
#pragma once

#include <atomic>
#include <cstddef>
#include <limits>

#if defined(__SANITIZE_ADDRESS__)
#define CONTRASTIVE_TEST_FAIL_MALLOC 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CONTRASTIVE_TEST_FAIL_MALLOC 0
#endif
#endif
#if !defined(CONTRASTIVE_TEST_FAIL_MALLOC) && defined(__GLIBC__)
#define CONTRASTIVE_TEST_FAIL_MALLOC 1
#endif
#ifndef CONTRASTIVE_TEST_FAIL_MALLOC
#define CONTRASTIVE_TEST_FAIL_MALLOC 0
#endif

#if CONTRASTIVE_TEST_FAIL_MALLOC
namespace fail_malloc {
// While armed, allocations of [smallest, largest] bytes are counted; the one
// numbered `fail_at` returns null.  (Others, e.g. the OpenMP or MPI
// runtime's small ones and the exception's own, always succeed.)
inline std::atomic<bool> armed{false};
inline std::atomic<std::size_t> smallest{16 * 1024};
inline std::atomic<std::size_t> largest{std::numeric_limits<std::size_t>::max()};
inline std::atomic<long> seen{0};
inline std::atomic<long> fail_at{-1};
// With `this_thread_only`, only the arming thread's allocations count (not,
// e.g., an MPI progress thread's of the same size).
inline std::atomic<bool> owner_only{false};
inline thread_local bool is_owner = false;

/// Arms it: the k-th allocation (from 0) of [lo, hi] bytes fails (of any
/// thread, or of this thread only).
inline void arm(long k, std::size_t lo, std::size_t hi = std::numeric_limits<std::size_t>::max(),
                bool this_thread_only = false) {
  smallest = lo;
  largest = hi;
  seen = 0;
  fail_at = k;
  owner_only = this_thread_only;
  is_owner = true;
  armed = true;
}
}  // namespace fail_malloc

extern "C" void* __libc_malloc(std::size_t bytes);
extern "C" void* malloc(std::size_t bytes) noexcept {
  if (fail_malloc::armed.load(std::memory_order_relaxed) &&
      (!fail_malloc::owner_only.load(std::memory_order_relaxed) || fail_malloc::is_owner) &&
      bytes >= fail_malloc::smallest.load(std::memory_order_relaxed) &&
      bytes <= fail_malloc::largest.load(std::memory_order_relaxed) &&
      fail_malloc::seen.fetch_add(1) == fail_malloc::fail_at.load(std::memory_order_relaxed))
    return nullptr;
  return __libc_malloc(bytes);
}
#endif
