// The promises at the edges: expressions evaluated once, bounded streaming
// memory, scalar gradients on near-collapsed batches, parameter ranges
// computed correctly (and rejected outside them), no integer overflow,
// aliased outputs, an enclosing OpenMP region.
#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "support.hpp"

using namespace testing;
using Catch::Matchers::Contains;

namespace {

/// A matrix expression whose coefficients count how often they are read.
struct CountingFunctor {
  const MatD* m;
  long* reads;
  double operator()(Eigen::Index i, Eigen::Index j) const {
    ++*reads;
    return (*m)(i, j);
  }
};
using Counting = Eigen::CwiseNullaryOp<CountingFunctor, MatD>;
Counting counting(const MatD& m, long& reads) { return MatD::NullaryExpr(m.rows(), m.cols(), CountingFunctor{&m, &reads}); }

/// The scalar gradients of one loss in float and in double on the same
/// (float-representable) inputs.
template <typename MakeLoss, typename Call>
void compare_scalar_gradients(const char* name, MakeLoss make, const MatD& za_in, const MatD& zb_in, Call call) {
  INFO(name);
  const MatF fa = za_in.cast<float>(), fb = zb_in.cast<float>();
  const MatD za = fa.cast<double>(), zb = fb.cast<double>();
  const auto rd = call(make(double{}), za, zb);
  const auto rf = call(make(float{}), fa, fb);
  REQUIRE(rd.size() == rf.size());
  for (std::size_t k = 0; k < rd.size(); ++k) {
    INFO("scalar gradient " << k << ": float " << rf[k] << " double " << rd[k]);
    CHECK(std::isfinite(rf[k]));
    CHECK(near(rf[k], rd[k], 1e-4));
  }
}

template <typename S, typename L>
std::vector<double> one_scalar(const L& loss, const Eigen::Matrix<S, -1, -1>& za, const Eigen::Matrix<S, -1, -1>& zb,
                               const contrastive::CallOptions<S>& call = {}) {
  Eigen::Matrix<S, -1, -1> ga(za.rows(), za.cols()), gb(za.rows(), za.cols());
  contrastive::Workspace<S> ws;
  S dt = 0;
  loss.value_and_grad(za, zb, ga, gb, &dt, ws, call);
  return {static_cast<double>(dt)};
}

}  // namespace

TEST_CASE("an input expression is evaluated once, not once per block of rows", "[reliability]") {
  std::mt19937_64 rng(91);
  const Eigen::Index n = 300, d = 6;
  const MatD a = uneven_rows(n, d, rng), zb = uneven_rows(n, d, rng);
  const MatD rot = MatD::Identity(d, d) + 0.1 * MatD::Ones(d, d);
  long reads = 0;
  const contrastive::NTXent<double> loss(0.3);
  const double v = loss.value(counting(a, reads) * rot, zb);
  CHECK(v == Approx(loss.value(MatD(a * rot), zb)).epsilon(1e-13));
  // The product is formed once (its left factor read once per coefficient);
  // one product per 32-row block would read it ceil(300 / 32) = 10 times.
  CHECK(reads <= 2 * n * d);
  reads = 0;
  contrastive::MemoryBank<double> bank(1000, d);
  bank.enqueue(counting(a, reads) * rot);
  CHECK(bank.size() == n);
  CHECK(reads <= 2 * n * d);
  CHECK(near(bank.keys(), MatD(a * rot), 1e-15));
}

TEST_CASE("streaming memory does not grow with threads x n x d", "[reliability][engine]") {
  std::mt19937_64 rng(92);
  const Eigen::Index n = 600, d = 8;
  const MatD za = uneven_rows(n, d, rng), zb = uneven_rows(n, d, rng);
  const auto N = static_cast<std::size_t>(n), D = static_cast<std::size_t>(d);
  for (int threads : {1, 3}) {
    INFO("threads " << threads);
    contrastive::EngineOptions o;
    o.tile_size = 32;
    o.num_threads = threads;
    o.parallel_threshold = 0;
    o.memory_budget_bytes = 64 * 1024;
    contrastive::Workspace<double> ws;
    MatD ga(n, d), gb(n, d);
    contrastive::NTXent<double>(0.5, o).value_and_grad(za, zb, ga, gb, nullptr, ws);
    REQUIRE(ws.last_call_streamed());
    const std::size_t nb = (N + 31) / 32, chunk = 32, k = 2, ntiles = 3 * nb * nb;
    const auto T = static_cast<std::size_t>(threads);
    // The README's formula: one shared dW, per-thread memory of a tile and
    // its GEMM packing buffers.
    const std::size_t bound =
        sizeof(double) * (2 * (2 * N * D) + 2 * N * (1 + k + 1 + 4) +
                          T * (chunk * chunk + (4 + 2 * k + 2) * chunk + chunk * (std::max(chunk, D) + D))) +
        2 * N +
        ntiles * (sizeof(contrastive::detail::Tile) + 2 * sizeof(std::uint32_t) + 1 + sizeof(contrastive::detail::PairSums));
    CHECK(ws.bytes() <= bound);  // (a private 2n x d accumulator per extra thread would exceed it)
  }
}

TEST_CASE("results are bitwise the same for every thread count", "[reliability][engine]") {
  std::mt19937_64 rng(93);
  const MatD za = uneven_rows(300, 16, rng), zb = uneven_rows(300, 16, rng);
  for (std::size_t budget : {std::size_t(0), std::size_t(1) << 30}) {
    contrastive::EngineOptions o;
    o.tile_size = 40;
    o.parallel_threshold = 0;
    o.memory_budget_bytes = budget;
    // Both passes hand tiles to whichever thread is free and order each row
    // block's additions by a counter: NT-Xent (diagonal tiles among full
    // ones) and CLIP (8 rounds of 8 tiles), streamed (budget 0) and cached.
    for (bool clip : {false, true}) {
      const auto call = [&](int threads) {
        o.num_threads = threads;
        return clip ? contrastive::CLIP<double>(0.2, o).value_and_grad(za, zb)
                    : contrastive::NTXent<double>(0.2, o).value_and_grad(za, zb);
      };
      const auto r1 = call(1);
      // (repeated: an ordering fault shows only when the threads' timing
      // lets a later tile reach a row block first)
      for (int rep = 0; rep < 24; ++rep)
        for (int threads : {2, 3, 4}) {
          const auto r = call(threads);
          CHECK(r.value == r1.value);
          CHECK(r.grad_a == r1.grad_a);
          CHECK(r.grad_b == r1.grad_b);
          CHECK(r.grad_temperature == r1.grad_temperature);
        }
    }
  }
}

TEST_CASE("scalar gradients of near-collapsed batches keep float precision at tau = 0.01", "[reliability][float]") {
  std::mt19937_64 rng(94);
  for (double spread : {0.0025, 0.025}) {  // mean cosine ~0.9999 and ~0.993
    INFO("spread " << spread);
    const Eigen::Index n = 64, d = 32;
    const MatD za = collapsed(n, d, spread, rng);
    const MatD zb = za + 0.3 * spread * uneven_rows(n, d, rng, 0.0);
    for (Preset p : kPresets)
      compare_scalar_gradients(
          preset_name(p), [&](auto s) { return make_loss<decltype(s)>(p, 0.01); }, za, zb,
          [](const auto& loss, const auto& a, const auto& b) { return one_scalar(loss, a, b); });
    std::vector<Eigen::Index> labels(static_cast<std::size_t>(n));
    for (Eigen::Index i = 0; i < n; ++i) labels[static_cast<std::size_t>(i)] = i % 5;
    compare_scalar_gradients(
        "SupCon", [](auto s) { return contrastive::SupCon<decltype(s)>(0.01); }, za, zb,
        [&](const auto& loss, const auto& a, const auto& b) {
          using S = typename std::decay_t<decltype(a)>::Scalar;
          return one_scalar(loss, a, b, contrastive::CallOptions<S>{}.with_labels(labels));
        });
    compare_scalar_gradients(
        "WithVRNS", [](auto s) { return contrastive::WithVRNS<decltype(s)>(contrastive::NTXent<decltype(s)>(0.01), {1000}, 30.0); },
        za, zb, [](const auto& loss, const auto& a, const auto& b) { return one_scalar(loss, a, b); });
    compare_scalar_gradients(
        "SampledNegatives",
        [](auto s) {
          using S = decltype(s);
          return contrastive::SampledNegatives<S>(contrastive::CLIP<S>(0.01).params(), {16, false, 5});
        },
        za, zb, [](const auto& loss, const auto& a, const auto& b) { return one_scalar(loss, a, b); });
    compare_scalar_gradients(
        "SigLIP", [](auto s) { return contrastive::SigLIP<decltype(s)>(100.0, -10.0); }, za, zb,
        [](const auto& loss, const auto& a, const auto& b) {
          using M = std::decay_t<decltype(a)>;
          using S = typename M::Scalar;
          M ga(a.rows(), a.cols()), gb(a.rows(), a.cols());
          contrastive::Workspace<S> ws;
          S dt = 0, db = 0;
          loss.value_and_grad(a, b, ga, gb, &dt, &db, ws);
          return std::vector<double>{static_cast<double>(dt), static_cast<double>(db)};
        });
    compare_scalar_gradients(
        "InfoNCEWithNegatives",
        [](auto s) { return contrastive::InfoNCEWithNegatives<decltype(s)>({0.01, contrastive::NegativeMode::Shared}); },
        za, zb, [](const auto& loss, const auto& a, const auto& b) {
          using M = std::decay_t<decltype(a)>;
          using S = typename M::Scalar;
          M ga(a.rows(), a.cols()), gb(a.rows(), a.cols());
          contrastive::Workspace<S> ws;
          S dt = 0;
          loss.value_and_grad(a, b, M(b.reverse()), ga, gb, nullptr, &dt, ws);
          return std::vector<double>{static_cast<double>(dt)};
        });
  }
}

TEST_CASE("parameters are computed correctly at the ends of their ranges and rejected beyond", "[reliability][bad-input]") {
  std::mt19937_64 rng(95);
  const MatD za = uneven_rows(20, 8, rng), zb = uneven_rows(20, 8, rng);
  // Temperature: float [1e-3, 1e4], double [1e-6, 1e4].
  for (double tau : {1e-3, 1e4}) {
    INFO("float tau " << tau);
    const auto rf = contrastive::NTXent<float>(tau).value_and_grad(za.cast<float>(), zb.cast<float>());
    const auto rd = contrastive::NTXent<double>(tau).value_and_grad(MatD(za.cast<float>().cast<double>()),
                                                                    MatD(zb.cast<float>().cast<double>()));
    REQUIRE(std::isfinite(rf.value));
    REQUIRE(rf.grad_a.allFinite());
    REQUIRE(std::isfinite(rf.grad_temperature));
    // At 1e-3 a float logit carries ~1e-3 absolute error (README): values
    // and gradients to 1e-2 of their scale; at 1e4 to 1e-4.
    const double tol = tau < 1 ? 1e-2 : 1e-4;
    CHECK(near(rf.value, rd.value, tol));
    CHECK(near(rf.grad_a, rd.grad_a, tol, 1e-300));
    CHECK(near(rf.grad_temperature, rd.grad_temperature, tol, 1e-300));
  }
  for (double tau : {1e-6, 1e4}) {
    const auto rd = contrastive::NTXent<double>(tau).value_and_grad(za, zb);
    CHECK(std::isfinite(rd.value));
    CHECK(rd.grad_a.allFinite());
    CHECK(std::isfinite(rd.grad_temperature));
  }
  for (double tau : {9e-4, 1e-8, 1e-10, 2e4, 1e40}) CHECK_THROWS_WITH(contrastive::NTXent<float>(tau), Contains("'temperature'"));
  for (double tau : {9e-7, 1e-18, 1e-21, 2e4}) CHECK_THROWS_WITH(contrastive::NTXent<double>(tau), Contains("'temperature'"));
  CHECK_THROWS_WITH(contrastive::WithVRNS<float>(contrastive::NTXent<float>(0.5), {100}, 1e308), Contains("'lambda'"));
  CHECK_THROWS_WITH(contrastive::SupCon<float>(1e-5), Contains("'temperature'"));
  CHECK_THROWS_WITH(contrastive::InfoNCEWithNegatives<float>({1e-5}), Contains("'temperature'"));
  CHECK_THROWS_WITH(contrastive::SampledNegatives<float>(contrastive::InfoNCEFamilyParams{1e-5}, {}), Contains("'temperature'"));
  contrastive::NTXent<float> settable(0.5);
  CHECK_THROWS_WITH(settable.set_temperature(1e-4), Contains("'temperature'"));
  // SigLIP: t in [1e-4, 1e3] (float), |b| <= 1e4.
  CHECK_NOTHROW(contrastive::SigLIP<float>(1e3, 1e4));
  CHECK_THROWS_WITH(contrastive::SigLIP<float>(2e3, 0.0), Contains("'logit_scale'"));
  CHECK_THROWS_WITH(contrastive::SigLIP<double>(10.0, 1e300), Contains("'logit_bias'"));
  {
    const auto r = contrastive::SigLIP<float>(1e3, -1e4).value_and_grad(za.cast<float>(), zb.cast<float>());
    CHECK(std::isfinite(r.value));
    CHECK(r.grad_a.allFinite());
    CHECK(std::isfinite(r.grad_logit_scale));
  }
  // VRNS: target a similarity in [-1, 1], power in [1, 64].
  CHECK_THROWS_WITH(contrastive::VRNS<double>(contrastive::VRNSParams{0, 1e200, 2.0}), Contains("'target'"));
  CHECK_THROWS_WITH(contrastive::VRNS<double>(contrastive::VRNSParams{100, std::numeric_limits<double>::quiet_NaN(), 2000.0}),
                    Contains("'power'"));
  {
    const auto r = contrastive::VRNS<float>(contrastive::VRNSParams{0, -1.0, 64.0}).value_and_grad(za.cast<float>(), zb.cast<float>());
    CHECK(std::isfinite(r.value));
    CHECK(r.grad_a.allFinite());
  }
  // Weights: 0 or in [1e-6, 1e6]; anchor weights in [0, 1e12].
  contrastive::InfoNCEFamilyParams fp;
  fp.cross_weight = 1e308;
  CHECK_THROWS_WITH(fp.check(), Contains("'cross_weight'"));
  fp.cross_weight = 1e-9;
  CHECK_THROWS_WITH(fp.check(), Contains("'cross_weight'"));
  fp.cross_weight = 1e6;
  fp.within_weight = 1e-6;
  {
    const auto r = contrastive::InfoNCEFamily<float>(fp).value_and_grad(za.cast<float>(), zb.cast<float>());
    CHECK(std::isfinite(r.value));
    CHECK(r.grad_a.allFinite());
  }
  std::vector<double> w(40, 1.0);
  w[3] = 1e308;
  CHECK_THROWS_WITH(contrastive::NTXent<double>(0.5).value(za, zb, contrastive::CallOptions<double>{}.with_weights(w)),
                    Contains("'call.anchor_weights'"));
}

TEST_CASE("sizes that would overflow are rejected before any arithmetic", "[reliability][bad-input]") {
  contrastive::EngineOptions o;
  o.tile_size = std::numeric_limits<Eigen::Index>::max();
  CHECK_THROWS_WITH(o.check(), Contains("'tile_size'"));
  CHECK_THROWS_WITH(contrastive::NTXent<double>(0.5, o), Contains("'tile_size'"));
  o.tile_size = 1;  // 20000 pairs in 1-row tiles: 1.2e9 tiles
  const MatF big = MatF::Random(20000, 2);
  CHECK_THROWS_WITH(contrastive::NTXent<float>(0.5, o).value(big, big), Contains("'tile_size'") && Contains("2^26"));
  const contrastive::SampledNegatives<double> s(contrastive::NTXent<double>(0.5).params(), {});
  CHECK_THROWS_WITH(s.negatives_of(0, Eigen::Index(1) << 62), Contains("'n'") && Contains("1099511627776"));
  CHECK_THROWS_WITH(s.negatives_of(-1, 10), Contains("'anchor'"));
  contrastive::SamplingParams sp;
  sp.num_negatives = Eigen::Index(1) << 40;
  CHECK_THROWS_WITH(sp.check(), Contains("'num_negatives'"));
  CHECK_THROWS_WITH(contrastive::MemoryBank<float>(std::numeric_limits<Eigen::Index>::min(), 4), Contains("'capacity'"));
}

TEST_CASE("the smaller edges: theory input, empty sums, aliased outputs, tile edges", "[reliability][bad-input]") {
  const double inf = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(contrastive::theory::minibatch_variance_bounds(inf, 4), Contains("'n'"));
  CHECK_THROWS_WITH(contrastive::theory::simplex_similarity(inf), Contains("'n'"));
  CHECK_THROWS_WITH(contrastive::theory::siglip_terms(8, -1.0, 0.0), Contains("'logit_scale'"));
  CHECK_THROWS_WITH(contrastive::Combined<double>(std::vector<contrastive::LossTerm>{}), Contains("'terms'"));
  // The same storage for both gradients: rejected, nothing written.
  std::mt19937_64 rng(96);
  const MatD za = uneven_rows(6, 3, rng), zb = uneven_rows(6, 3, rng);
  MatD g = MatD::Constant(6, 3, 7.0);
  contrastive::Workspace<double> ws;
  double dt = 5;
  CHECK_THROWS_WITH(contrastive::NTXent<double>(0.5).value_and_grad(za, zb, g, g, &dt, ws), Contains("'grad_b'") && Contains("'grad_a'"));
  MatD big = MatD::Constant(12, 3, 7.0);  // overlapping row blocks of one matrix
  CHECK_THROWS_WITH(contrastive::NTXent<double>(0.5).value_and_grad(za, zb, big.topRows(6), big.middleRows(3, 6), &dt, ws),
                    Contains("'grad_b'"));
  CHECK((g.array() == 7.0).all());
  CHECK((big.array() == 7.0).all());
  CHECK(dt == 5);
  CHECK_NOTHROW(contrastive::NTXent<double>(0.5).value_and_grad(za, zb, big.topRows(6), big.bottomRows(6), &dt, ws));
  const contrastive::InfoNCEWithNegatives<double> nk;
  MatD gq = MatD::Constant(6, 3, 1.0);
  CHECK_THROWS_WITH(nk.value_and_grad(za, zb, MatD(zb), gq, gq, nullptr, &dt, ws), Contains("'grad_positive_key'"));
  // No tile edge exceeds tile_size (n = 129 in tiles of 65 on two threads
  // once made 72-row tiles): the streamed workspace holds 65 x 65 tiles.
  const MatD a = uneven_rows(129, 4, rng), b = uneven_rows(129, 4, rng);
  contrastive::EngineOptions o;
  o.tile_size = 65;
  o.num_threads = 2;
  o.parallel_threshold = 0;
  o.memory_budget_bytes = 0;
  contrastive::Workspace<double> ws2;
  MatD ga(129, 4), gb(129, 4);
  contrastive::NTXent<double>(0.5, o).value_and_grad(a, b, ga, gb, nullptr, ws2);
  const auto& slots = contrastive::detail::buffers(ws2).slots;
  for (const auto& sl : slots) CHECK(sl.x.rows() <= 65);
}

TEST_CASE("inside an enclosing OpenMP region the engine runs on the region's one thread", "[reliability][engine]") {
  std::mt19937_64 rng(97);
  const MatD za = uneven_rows(200, 16, rng), zb = uneven_rows(200, 16, rng);
  contrastive::EngineOptions o;
  o.num_threads = 2;
  o.parallel_threshold = 0;
  const contrastive::NTXent<double> loss(0.3, o);
  const auto ref = loss.value_and_grad(za, zb);
  int ok = 0, threads_seen = 0;
#ifdef _OPENMP
  const int saved = omp_get_max_active_levels();
  omp_set_max_active_levels(1);
#pragma omp parallel num_threads(2) reduction(+ : ok) reduction(max : threads_seen)
#endif
  {
    contrastive::Workspace<double> ws;  // one per concurrent caller
    MatD ga(200, 16), gb(200, 16);
    double dt = 0;
    const double v = loss.value_and_grad(za, zb, ga, gb, &dt, ws);
    ok += (near(v, ref.value, 1e-13) && near(ga, ref.grad_a, 1e-12) && near(gb, ref.grad_b, 1e-12)) ? 1 : 0;
    threads_seen = std::max(threads_seen, ws.last_call_threads());
  }
#ifdef _OPENMP
  omp_set_max_active_levels(saved);
  CHECK(ok == 2);
  CHECK(threads_seen == 1);
#else
  CHECK(ok == 1);
#endif
}

TEST_CASE("an exception inside the tile loop reaches the caller, and the workspace still works", "[reliability][engine]") {
  using contrastive::detail::Engine;
  std::mt19937_64 rng(101);
  const Eigen::Index n = 150;
  const MatD za = uneven_rows(n, 16, rng), zb = uneven_rows(n, 16, rng);
  contrastive::EngineOptions o;
  o.tile_size = 40;  // 4 row blocks per view: 36 tiles, 8 of them diagonal
  o.parallel_threshold = 0;
  const auto run = [&](const auto& kernel, contrastive::detail::Buffers<double>& b) {
    Engine<double>::load(b, za, zb, "test");
    return Engine<double>::run(kernel, b, o, true, "test");
  };
  for (std::size_t budget : {std::size_t(0), std::size_t(1) << 30}) {
    o.memory_budget_bytes = budget;
    o.num_threads = 1;
    contrastive::Workspace<double> fresh;
    const double v_ref = run(FailingKernel<double>(n, 0, -1), contrastive::detail::buffers(fresh));
    const MatD dw_ref = contrastive::detail::buffers(fresh).dw;
    for (int threads : {1, 2, 3})
      for (int pass : {1, 2})
        for (long at : {0L, 17L, 35L}) {
          INFO("budget " << budget << ", " << threads << " threads, pass " << pass << ", tile " << at);
          o.num_threads = threads;
          contrastive::Workspace<double> ws;
          auto& b = contrastive::detail::buffers(ws);
          // The same exception, not std::terminate, and no thread left
          // waiting for the failed tile's turn.
          CHECK_THROWS_AS(run(FailingKernel<double>(n, pass, at), b), InjectedFault);
          // The next call on the same workspace is the call of a fresh one.
          const double v = run(FailingKernel<double>(n, 0, -1), b);
          CHECK(v == v_ref);
          CHECK(b.dw == dw_ref);
        }
  }
}
