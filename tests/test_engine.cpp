// The engine: tiling, streaming, threads, workspace reuse, float range.
#include <catch2/catch.hpp>

#include <array>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "support.hpp"

using namespace testing;

TEST_CASE("materialised, streamed and threaded paths agree to round-off", "[engine]") {
  std::mt19937_64 rng(31);
  const MatD za = uneven_rows(53, 9, rng), zb = uneven_rows(53, 9, rng);  // 53: not a multiple of any tile
  for (Preset p : kPresets) {
    INFO(preset_name(p));
    contrastive::EngineOptions base;
    base.tile_size = 1000;  // one tile per block
    base.num_threads = 1;
    const auto ref = make_loss<double>(p, 0.2, base).value_and_grad(za, zb);
    for (Eigen::Index tile : {1, 7, 16, 52}) {
      for (std::size_t budget : {std::size_t(0), std::size_t(1) << 30}) {
        for (int threads : {1, 2, 3}) {
          INFO("tile " << tile << " budget " << budget << " threads " << threads);
          contrastive::EngineOptions o;
          o.tile_size = tile;
          o.memory_budget_bytes = budget;
          o.num_threads = threads;
          o.parallel_threshold = 0;  // thread even this small batch
          contrastive::Workspace<double> ws;
          MatD ga(53, 9), gb(53, 9);
          double gt = 0;
          const double v = make_loss<double>(p, 0.2, o).value_and_grad(za, zb, ga, gb, &gt, ws);
          CHECK(ws.last_call_streamed() == (budget == 0));
#ifdef _OPENMP
          CHECK(ws.last_call_threads() == threads);
#endif
          CHECK(near(v, ref.value, 1e-13));
          CHECK(near(ga, ref.grad_a, 1e-12));
          CHECK(near(gb, ref.grad_b, 1e-12));
          CHECK(near(gt, ref.grad_temperature, 1e-12));
        }
      }
    }
  }
}

TEST_CASE("a budget that holds part of the tiles keeps as many as fit and recomputes the others", "[engine]") {
  // The bytes of the tiles a fully cached call keeps, C: a budget of
  // 0.7 C keeps as many as fit (never more than the budget; with these
  // small tiles, more than half of C) and recomputes the rest; 0.49 C
  // (tiles of more than twice the budget) keeps none.  Every result equals the fully cached
  // call's to round-off, bitwise the same on 1, 2 and 3 threads, and a
  // value call on the same workspace uses the kept tiles.  SigLIP and
  // Combined keep a tile as its gradient H (pass 1 with keep), the InfoNCE
  // family as its exponentials.
  std::mt19937_64 rng(37);
  const Eigen::Index n = 61, d = 7;
  const MatD za = uneven_rows(n, d, rng), zb = uneven_rows(n, d, rng);
  const auto kept_bytes = [](const contrastive::Workspace<double>& ws) {
    return sizeof(double) * static_cast<std::size_t>(cached_tile_entries(ws));
  };
  // value_and_grad with every scalar gradient summed into gt.
  const auto call = [](const auto& loss, const MatD& a, const MatD& b, MatD& ga, MatD& gb, double& gt,
                       contrastive::Workspace<double>& ws) {
    double g[2] = {0, 0};
    const double v = value_and_grad_scalars(loss, a, b, ga, gb, g, ws);
    gt = g[0] + g[1];
    return v;
  };
  const auto check_loss = [&](const char* name, const auto& make) {
    INFO(name);
    contrastive::EngineOptions o;
    o.tile_size = 9;
    o.num_threads = 1;
    o.parallel_threshold = 0;
    contrastive::Workspace<double> full;
    MatD ga(n, d), gb(n, d);
    double gt = 0;
    const double v_ref = call(make(o), za, zb, ga, gb, gt, full);
    const MatD ga_ref = ga, gb_ref = gb;
    const double gt_ref = gt;
    REQUIRE_FALSE(full.last_call_streamed());
    const std::size_t all = kept_bytes(full);
    REQUIRE(all > 0);
    for (const double fraction : {0.7, 0.49}) {
      INFO("budget " << fraction << " of the tiles");
      o.memory_budget_bytes = static_cast<std::size_t>(fraction * static_cast<double>(all));
      MatD ga1, gb1;
      double v1 = 0, gt1 = 0;
      for (int threads : {1, 2, 3}) {
        INFO(threads << " threads");
        o.num_threads = threads;
        contrastive::Workspace<double> ws;
        const auto loss = make(o);
        const double v = call(loss, za, zb, ga, gb, gt, ws);
        CHECK(ws.last_call_streamed());
        const std::size_t kept = kept_bytes(ws);
        CHECK(kept <= o.memory_budget_bytes);
        if (fraction > 0.5) CHECK(kept > all / 2);
        else CHECK(kept == 0);
        CHECK(near(v, v_ref, 1e-13));
        CHECK(near(ga, ga_ref, 1e-12));
        CHECK(near(gb, gb_ref, 1e-12));
        CHECK(near(gt, gt_ref, 1e-12));
        if (threads == 1) {
          ga1 = ga, gb1 = gb, v1 = v, gt1 = gt;
        } else {
          CHECK(v == v1);
          CHECK(ga == ga1);
          CHECK(gb == gb1);
          CHECK(gt == gt1);
        }
        // A value call computes its tiles in the kept ones' cache and the
        // others' scratch: nothing grows.  (On several threads a thread's
        // packing buffers grow lazily with the shapes it happens to get.)
        const std::size_t bytes = ws.bytes();
        CHECK(near(loss.value(za, zb, ws), v_ref, 1e-13));
        if (threads == 1) CHECK(ws.bytes() == bytes);
        CHECK(kept_bytes(ws) == kept);
      }
    }
  };
  for (Preset p : kPresets)
    check_loss(preset_name(p), [&](const contrastive::EngineOptions& o) { return make_loss<double>(p, 0.2, o); });
  check_loss("SigLIP", [](const contrastive::EngineOptions& o) {
    return contrastive::SigLIP<double>(contrastive::SigLIPParams{7.0, -2.0, 0.5}, o);
  });
  check_loss("Combined", [](const contrastive::EngineOptions& o) {
    return contrastive::Combined<double>(contrastive::NTXent<double>(0.1, o),
                                         {contrastive::LossTerm::make_siglip({5.0, -1.0, 0.0}, 0.5),
                                          contrastive::LossTerm::make_spectral({1.0, 0.0}, 0.25)});
  });
}

TEST_CASE("diagonal tiles formed as triangles and mirrored agree with whole tiles", "[engine]") {
  // A diagonal tile of 64 rows or more is formed as its lower triangle
  // (Eigen's triangular product) and mirrored (Engine::similarity_tile):
  // one 150-row tile (mirrored in blocks of 64, the last one 22 wide), tiles
  // of 70 (and a 10-row tile formed whole), both cached and streamed, value
  // and gradient calls, against 7-row tiles, which are all formed whole.
  std::mt19937_64 rng(36);
  const MatD za = uneven_rows(150, 9, rng), zb = uneven_rows(150, 9, rng);
  for (Preset p : kPresets) {
    INFO(preset_name(p));
    contrastive::EngineOptions whole;
    whole.tile_size = 7;
    whole.num_threads = 1;
    const auto ref = make_loss<double>(p, 0.2, whole).value_and_grad(za, zb);
    for (Eigen::Index tile : {150, 70}) {
      for (std::size_t budget : {std::size_t(0), std::size_t(1) << 30}) {
        INFO("tile " << tile << " budget " << budget);
        contrastive::EngineOptions o;
        o.tile_size = tile;
        o.memory_budget_bytes = budget;
        o.num_threads = 1;
        const auto loss = make_loss<double>(p, 0.2, o);
        const auto r = loss.value_and_grad(za, zb);
        CHECK(near(r.value, ref.value, 1e-13));
        // A value call (and the streamed pass 1) reads only the lower
        // triangle of a diagonal tile (InfoNCEKernel::lower_diagonal).
        CHECK(near(loss.value(za, zb), ref.value, 1e-13));
        CHECK(near(r.grad_a, ref.grad_a, 1e-12));
        CHECK(near(r.grad_b, ref.grad_b, 1e-12));
        CHECK(near(r.grad_temperature, ref.grad_temperature, 1e-12));
      }
    }
  }
}

namespace {

/// Every entry of x uniform in [-1, 1].
template <typename M>
void fill_uniform(M& x, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  for (Eigen::Index j = 0; j < x.cols(); ++j)
    for (Eigen::Index i = 0; i < x.rows(); ++i) x(i, j) = static_cast<typename M::Scalar>(u(rng));
}

// c += alpha a b through one GemmSpace (buffers kept between products) and
// through Eigen's public product, for a, b and c as blocks of larger row- or
// column-major matrices (outer strides not equal to their extents), a and b
// also as transposed views; everything outside c's block stays as it was.
template <typename S>
void check_gemm_space(contrastive::detail::GemmSpace<S>& g, Eigen::Index m, Eigen::Index n, Eigen::Index k,
                      std::mt19937_64& rng, double tol) {
  using Col = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  using Row = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const auto fill = [&](auto& x) { fill_uniform(x, rng); };
  // Operands with 3 spare rows and columns around the block at (1, 2).
  Col ac(m + 3, k + 3), bc(k + 3, n + 3), atc(k + 3, m + 3), btc(n + 3, k + 3), cc(m + 3, n + 3);
  Row ar(m + 3, k + 3), br(k + 3, n + 3), atr(k + 3, m + 3), btr(n + 3, k + 3), cr(m + 3, n + 3);
  for (auto* x : {&ac, &bc, &atc, &btc, &cc}) fill(*x);
  for (auto* x : {&ar, &br, &atr, &btr, &cr}) fill(*x);
  const S alpha = S(0.75);
  const auto run = [&](auto& c, const auto& a, const auto& b) {
    INFO("m " << m << " n " << n << " k " << k << " c row-major " << bool(std::decay<decltype(c)>::type::IsRowMajor));
    auto expected = c;
    contrastive::detail::gemm_add_public(expected.block(1, 2, m, n), a, b, alpha);
    auto got = c;
    g.add(got.block(1, 2, m, n), a, b, alpha);
    CHECK(near(got, expected, tol));
    // assign overwrites (NaN in c's block must not survive).
    got.block(1, 2, m, n).setConstant(std::numeric_limits<S>::quiet_NaN());
    g.assign(got.block(1, 2, m, n), a, b, alpha);
    auto zero = c;
    zero.block(1, 2, m, n).setZero();
    contrastive::detail::gemm_add_public(zero.block(1, 2, m, n), a, b, alpha);
    CHECK(near(got, zero, tol));
  };
  const auto as = std::make_tuple(ac.block(1, 2, m, k), ar.block(1, 2, m, k), atc.block(2, 1, k, m).transpose(),
                                  atr.block(2, 1, k, m).transpose());
  const auto bs = std::make_tuple(bc.block(1, 2, k, n), br.block(1, 2, k, n), btc.block(2, 1, n, k).transpose(),
                                  btr.block(2, 1, n, k).transpose());
  const auto each_b = [&](const auto& a) {
    run(cc, a, std::get<0>(bs));
    run(cc, a, std::get<1>(bs));
    run(cr, a, std::get<2>(bs));
    run(cr, a, std::get<3>(bs));
    run(cr, a, std::get<0>(bs));
    run(cc, a, std::get<3>(bs));
  };
  each_b(std::get<0>(as));
  each_b(std::get<1>(as));
  each_b(std::get<2>(as));
  each_b(std::get<3>(as));
}

// GemmSpace::add_lower: the lower triangle (diagonal included) of a block of
// a column-major c gains alpha a a^T, with a a block of a row- or
// column-major matrix; the strictly upper triangle and everything outside
// the block stay as they were.
template <typename S>
void check_add_lower(contrastive::detail::GemmSpace<S>& g, Eigen::Index n, Eigen::Index k, std::mt19937_64& rng,
                     double tol) {
  using Col = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  using Row = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const auto fill = [&](auto& x) { fill_uniform(x, rng); };
  Col ac(n + 3, k + 3), c(n + 3, n + 3);
  Row ar(n + 3, k + 3);
  fill(ac);
  fill(ar);
  fill(c);
  const S alpha = S(-1.25);
  const auto run = [&](const auto& a) {
    INFO("n " << n << " k " << k << " a row-major " << bool(std::decay<decltype(a)>::type::IsRowMajor));
    Col square = Col::Zero(n, n);
    contrastive::detail::gemm_add_public(square, a, a.transpose(), alpha);
    Col expected = c;
    for (Eigen::Index j = 0; j < n; ++j) expected.col(2 + j).segment(1 + j, n - j) += square.col(j).tail(n - j);
    Col got = c;
    g.add_lower(got.block(1, 2, n, n), a, alpha);
    CHECK(near(got, expected, tol));
    for (Eigen::Index j = 0; j < n; ++j)  // untouched: exactly
      CHECK(got.col(2 + j).head(1 + j) == c.col(2 + j).head(1 + j));
  };
  run(ac.block(1, 2, n, k));
  run(ar.block(1, 2, n, k));
}

template <typename S>
void check_gemm_space_shapes(double tol) {
  std::mt19937_64 rng(37);
  contrastive::detail::GemmSpace<S> g;
  // Empty, GEMV-like and tiny shapes (Eigen's public product takes other
  // code paths there), the engine's tile shapes, and a depth past Eigen's
  // k blocking, in an order that makes the buffers grow and be reused.
  const Eigen::Index shapes[][3] = {{0, 5, 3}, {5, 0, 3}, {5, 3, 0}, {1, 1, 1},  {1, 7, 5},
                                    {7, 1, 5}, {3, 17, 2}, {64, 48, 96}, {160, 96, 700}, {9, 4, 11}};
  for (const auto& sh : shapes) check_gemm_space<S>(g, sh[0], sh[1], sh[2], rng, tol);
  // The buffers are kept: a smaller product reuses them, the largest one
  // needs no more.
  const std::size_t kept = g.bytes();
#if CONTRASTIVE_OWN_GEMM_BUFFERS
  CHECK(kept > 0);
#endif
  check_gemm_space<S>(g, 64, 48, 96, rng, tol);
  check_gemm_space<S>(g, 160, 96, 700, rng, tol);
  CHECK(g.bytes() == kept);
  // The triangular product: tiny, not a multiple of Eigen's 48/24-row
  // blocks, the engine's tile, and a depth past the k blocking.
  for (const auto& sh : std::vector<std::array<Eigen::Index, 2>>{{1, 3}, {5, 0}, {7, 5}, {70, 9}, {150, 33},
                                                                  {256, 128}, {100, 700}})
    check_add_lower<S>(g, sh[0], sh[1], rng, tol);
}

}  // namespace

TEST_CASE("tile products with the engine's own packing buffers equal Eigen's product", "[engine]") {
  check_gemm_space_shapes<double>(1e-13);
  check_gemm_space_shapes<float>(2e-5);
}

namespace {

// Rows [r0, r0 + src.rows()) of got equal src (cast to got's scalar)
// exactly; every other entry of got is still the NaN it was filled with.
template <typename M, typename R>
void check_rows_written(const M& got, Eigen::Index r0, const R& src) {
  using T = typename M::Scalar;
  bool exact = true, outside_kept = true;
  for (Eigen::Index i = 0; i < got.rows(); ++i)
    for (Eigen::Index j = 0; j < got.cols(); ++j) {
      if (i >= r0 && i < r0 + src.rows()) exact = exact && got(i, j) == static_cast<T>(src(i - r0, j));
      else outside_kept = outside_kept && std::isnan(got(i, j));
    }
  CHECK(exact);
  CHECK(outside_kept);
}

// copy_rows(w, r0, z) into a NaN-filled w.
template <typename S, typename Z>
void check_copy_rows(const Z& z, Eigen::Index r0, const char* what) {
  using contrastive::detail::RowMatrix;
  INFO(what << ": " << z.rows() << " x " << z.cols() << " at row " << r0);
  RowMatrix<S> w(z.rows() + r0 + 2, z.cols());
  w.setConstant(std::numeric_limits<S>::quiet_NaN());
  contrastive::detail::copy_rows(w, r0, z);
  check_rows_written(w, r0, z);
}

// store_rows(out, i0, rows) into a NaN-filled out.
template <typename Out, typename Rows>
void check_store_rows(Out out, const Rows& rows, Eigen::Index i0, const char* what) {
  using T = typename Out::Scalar;
  INFO(what << ": " << rows.rows() << " x " << rows.cols() << " at row " << i0);
  out.setConstant(std::numeric_limits<T>::quiet_NaN());
  contrastive::detail::store_rows(out, i0, rows);
  check_rows_written(out, i0, rows);
}

template <typename S>
void check_row_copies() {
  using Col = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  using Row = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Other = typename std::conditional<std::is_same<S, float>::value, double, float>::type;
  using OtherCol = Eigen::Matrix<Other, Eigen::Dynamic, Eigen::Dynamic>;
  // Shapes below, at and around every SIMD width (2 .. 16 entries), so that
  // the in-register blocks, their row and column edges and the scalar
  // corner are all taken.
  const Eigen::Index shapes[][2] = {{0, 4}, {4, 0}, {1, 1}, {3, 2}, {8, 8}, {16, 16}, {17, 33}, {37, 19}, {64, 128}, {50, 7}};
  for (const auto& sh : shapes) {
    const Eigen::Index n = sh[0], d = sh[1];
    const Col big = Col::Random(n + 5, d + 4);
    const Row bigr = big;
    const Col z = big.block(2, 1, n, d);
    check_copy_rows<S>(z, 3, "column-major matrix");
    check_copy_rows<S>(big.block(2, 1, n, d), 0, "column-major block (outer stride)");
    check_copy_rows<S>(bigr.block(2, 1, n, d), 1, "row-major block (outer stride)");
    check_copy_rows<S>(Row(z), 2, "row-major matrix");
    check_copy_rows<S>(Col(z.transpose()).transpose(), 1, "transposed column-major (row-major view)");
    const Col strided = Col::Random(2 * n + 1, d);
    using StridedMap = Eigen::Map<const Col, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
    check_copy_rows<S>(StridedMap(strided.data(), n, d, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(2 * n + 1, 2)), 0,
                       "map with inner stride 2");
    check_copy_rows<S>(OtherCol(z.template cast<Other>()), 4, "other scalar");
    check_copy_rows<S>(z.template cast<Other>(), 1, "cast expression");

    const Row rows = z;
    Col outc(n + 6, d + 3);
    Row outr(n + 6, d + 3);
    OtherCol outo(n + 6, d);
    for (const Eigen::Index i0 : {Eigen::Index(0), Eigen::Index(3)}) {
      check_store_rows(outc.block(0, 2, n + 5, d), rows.topRows(n), i0 == 0 ? 0 : 2, "column-major block");
      check_store_rows(Eigen::Ref<Col>(outc.leftCols(d)), rows.topRows(n), i0, "column-major Ref");
      check_store_rows(outr.block(1, 1, n + 4, d), rows.topRows(n), i0 == 0 ? 0 : 4, "row-major block");
      check_store_rows(Eigen::Ref<OtherCol>(outo), rows.topRows(n), i0, "other scalar");
    }
  }
}

}  // namespace

TEST_CASE("rows copied in from and out to the caller's storage are exact, and nothing else is written", "[engine]") {
  check_row_copies<double>();
  check_row_copies<float>();
}

TEST_CASE("a reused workspace keeps its buffers and its results", "[engine]") {
  std::mt19937_64 rng(32);
  const MatD za = uneven_rows(40, 8, rng), zb = uneven_rows(40, 8, rng);
  contrastive::EngineOptions o;
  o.tile_size = 16;
  const contrastive::NTXent<double> loss(0.5, o);
  contrastive::Workspace<double> ws;
  MatD ga(40, 8), gb(40, 8);
  const double v1 = loss.value_and_grad(za, zb, ga, gb, nullptr, ws);
  const MatD ga1 = ga;
  const std::size_t bytes = ws.bytes();
  CHECK(bytes > 0);
  for (int k = 0; k < 3; ++k) {
    const double v = loss.value_and_grad(za, zb, ga, gb, nullptr, ws);
    CHECK(v == v1);
    CHECK(ga == ga1);
    CHECK(ws.bytes() == bytes);
    CHECK(loss.value(za, zb, ws) == Approx(v1).epsilon(1e-14));  // a value call keeps the tile cache
    CHECK(ws.bytes() == bytes);
  }
}

TEST_CASE("streaming keeps the workspace O(n d + threads tile^2 + tiles)", "[engine]") {
  std::mt19937_64 rng(33);
  const Eigen::Index n = 600, d = 4;
  const MatD za = uneven_rows(n, d, rng), zb = uneven_rows(n, d, rng);
  contrastive::EngineOptions o;
  o.tile_size = 32;
  o.num_threads = 1;
  o.memory_budget_bytes = 64 * 1024;  // far below the 2n x 2n / 2 tiles (~5.8 MB)
  contrastive::Workspace<double> ws;
  MatD ga(n, d), gb(n, d);
  contrastive::NTXent<double>(0.5, o).value_and_grad(za, zb, ga, gb, nullptr, ws);
  CHECK(ws.last_call_streamed());
  // The README's formula for a streamed call: W and dW (2n x d each), per
  // row the inverse norm, a clamp flag, K = 2 statistics with their shift
  // and 4 results; per thread one tile, 4 + 4K + 2 vectors of a tile edge;
  // the packing buffers of the tile products, at most t (max(t, d) + d);
  // per tile its description, its two turns (row and column block) and its
  // pair sums.
  const auto N = static_cast<std::size_t>(n), D = static_cast<std::size_t>(d);
  const std::size_t nb = (N + 31) / 32, chunk = 32, k = 2;
  const std::size_t ntiles = 3 * nb * nb;  // at most: three view blocks of nb x nb tiles
  const std::size_t bound =
      sizeof(double) * (2 * (2 * N * D) + 2 * N * (1 + k + 1 + 4) +
                        (chunk * chunk + (4 + 2 * k + 2) * chunk + chunk * (std::max(chunk, D) + D))) +
      2 * N +
      ntiles * (sizeof(contrastive::detail::Tile) + 2 * sizeof(std::uint32_t) + 1 + sizeof(contrastive::detail::PairSums));
  CHECK(ws.bytes() <= bound);
}

TEST_CASE("float stays finite and within 1e-4 of double for tau down to 0.01 and norms 1e-6..1e6", "[engine][float]") {
  std::mt19937_64 rng(34);
  for (Preset p : kPresets) {
    for (double tau : {0.01, 0.05, 1.0}) {
      INFO(preset_name(p) << " tau " << tau);
      MatD za = uneven_rows(45, 16, rng, std::log(1e6)), zb = uneven_rows(45, 16, rng, std::log(1e6));
      za.row(0) *= 1e6 / za.row(0).norm();
      zb.row(1) *= 1e-6 / zb.row(1).norm();
      contrastive::EngineOptions o;
      o.tile_size = 16;
      const auto rd = make_loss<double>(p, tau, o).value_and_grad(za, zb);
      const auto rf = make_loss<float>(p, tau, o).value_and_grad(za.cast<float>(), zb.cast<float>());
      REQUIRE(std::isfinite(rf.value));
      REQUIRE(rf.grad_a.allFinite());
      REQUIRE(rf.grad_b.allFinite());
      CHECK(near(rf.value, rd.value, 1e-4));
      CHECK(near(rf.grad_temperature, rd.grad_temperature, 1e-4));
      // Row by row: every row's gradient to 1e-4 of that row's size.
      for (Eigen::Index i = 0; i < za.rows(); ++i) {
        CHECK(near(rf.grad_a.row(i), rd.grad_a.row(i), 1e-4, 1e-300));
        CHECK(near(rf.grad_b.row(i), rd.grad_b.row(i), 1e-4, 1e-300));
      }
    }
  }
}

TEST_CASE("tiny batches run on one thread below the parallel threshold", "[engine]") {
  std::mt19937_64 rng(35);
  const MatD za = uneven_rows(64, 8, rng), zb = uneven_rows(64, 8, rng);
  contrastive::EngineOptions o;
  o.num_threads = 2;
  contrastive::Workspace<double> ws;
  MatD ga(64, 8), gb(64, 8);
  contrastive::NTXent<double>(0.5, o).value_and_grad(za, zb, ga, gb, nullptr, ws);
  CHECK(ws.last_call_threads() == 1);  // 64 x 8: ~66k multiply-adds, far below 2^22
  o.parallel_threshold = -1;
  CHECK_THROWS_WITH(contrastive::NTXent<double>(0.5, o), Catch::Matchers::Contains("'parallel_threshold'"));
}
