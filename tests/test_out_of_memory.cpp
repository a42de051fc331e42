// A failed allocation inside a call: std::bad_alloc reaches the caller (from
// the calling thread or from the engine's worker threads), the outputs are
// untouched, and the Workspace gives the right results on the next call and
// is destroyed cleanly.  Every allocation of the call is failed in turn by a
// replacement of malloc in this executable (glibc: it forwards to
// __libc_malloc).  Under AddressSanitizer, which replaces malloc itself, the
// test only says it did not run.
#include <catch2/catch.hpp>

#include <cstddef>
#include <new>

#include "fail_malloc.hpp"
#include "support.hpp"

#if CONTRASTIVE_TEST_FAIL_MALLOC
namespace {

/// Runs `call` with its k-th large allocation failing, for k = 0, 1, ...
/// until a call completes; returns how many calls failed (each must throw
/// std::bad_alloc).
template <typename Call>
long fail_each_allocation(const Call& call) {
  for (long k = 0;; ++k) {
    bool threw = false;
    fail_malloc::arm(k, 16 * 1024);
    try {
      call();
    } catch (const std::bad_alloc&) {
      threw = true;
    }
    fail_malloc::armed = false;
    if (!threw) {
      CHECK(fail_malloc::seen.load() <= k);  // it did not skip a failure
      return k;
    }
  }
}

}  // namespace
#endif

using namespace testing;

TEST_CASE("a failed allocation throws std::bad_alloc and leaves the outputs and the Workspace usable", "[reliability]") {
#if !CONTRASTIVE_TEST_FAIL_MALLOC
  WARN("not run: malloc cannot be replaced in this build (AddressSanitizer, or not glibc)");
#else
  std::mt19937_64 rng(7);
  const MatF small_a = uneven_rows(40, 8, rng).cast<float>(), small_b = uneven_rows(40, 8, rng).cast<float>();
  const MatF za = uneven_rows(300, 48, rng).cast<float>(), zb = uneven_rows(300, 48, rng).cast<float>();
  for (int threads : {1, 2})
    // Streamed, cached, and 600 kB: 70% of the 859 kB of tiles kept, the
    // others streamed (the cache and the scratch tiles).
    for (std::size_t budget : {std::size_t(0), std::size_t(1) << 30, std::size_t(600000)}) {
      contrastive::EngineOptions o;
      o.num_threads = threads;
      o.parallel_threshold = 0;
      o.tile_size = 128;
      o.memory_budget_bytes = budget;
      const contrastive::NTXent<float> loss(0.2, o);
      MatF ga_ref(300, 48), gb_ref(300, 48);
      float dt_ref = 0;
      contrastive::Workspace<float> fresh;
      const float v_ref = loss.value_and_grad(za, zb, ga_ref, gb_ref, &dt_ref, fresh);
      INFO(threads << " threads, budget " << budget);
      const Eigen::Index cached = cached_tile_entries(fresh);
      REQUIRE(fresh.last_call_streamed() == (budget != std::size_t(1) << 30));
      REQUIRE((cached > 0) == (budget != 0));
      // Each time: a Workspace sized by a smaller call (so the failing call
      // grows buffers that hold storage), the larger call with one
      // allocation failing, then the larger call again on the same Workspace.
      const long failures = fail_each_allocation(
          [&] {
            contrastive::Workspace<float> ws;
            MatF sa(40, 8), sb(40, 8);
            float st = 0;
            fail_malloc::armed = false;
            loss.value_and_grad(small_a, small_b, sa, sb, &st, ws);
            MatF ga = MatF::Constant(300, 48, 7.f), gb = ga;
            float dt = 7.f;
            fail_malloc::armed = true;
            try {
              loss.value_and_grad(za, zb, ga, gb, &dt, ws);
            } catch (const std::bad_alloc&) {
              fail_malloc::armed = false;
              const bool untouched = (ga.array() == 7.f).all() && (gb.array() == 7.f).all() && dt == 7.f;
              const float v = loss.value_and_grad(za, zb, ga, gb, &dt, ws);
              const bool same = v == v_ref && ga == ga_ref && gb == gb_ref && dt == dt_ref;
              const bool value_same = loss.value(za, zb, ws) == loss.value(za, zb, fresh);
              CHECK(untouched);
              CHECK(same);
              CHECK(value_same);
              throw;  // (the Workspace is destroyed on the way out)
            }
          });
      // Every allocation of 16 KiB or more of the call was made to fail once
      // (5 to 24 of them here): the rows loaded, dW, the tile cache or the
      // scratch tiles, and the threads' GEMM packing buffers, which grow
      // inside the parallel region.
      CHECK(failures >= 3);
    }
#endif
}
