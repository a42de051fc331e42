// contrastive — the tiled two-pass engine (internal; include engine.hpp).
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "checks.hpp"

namespace contrastive {
namespace detail {

/// Norm floor of the normalisation, as torch.nn.functional.normalize.
constexpr double kNormEps = 1e-12;

/// Rows per block when copying between row-major and the caller's storage order.
constexpr Eigen::Index kRowBlock = 32;

template <typename S>
using TileRef = Eigen::Ref<TileArray<S>>;

/// Merge one (max, sum) pair into an online log-sum-exp state where the
/// running total is s * exp(m).  A contribution with st == 0 adds nothing.
template <typename S>
inline void lse_merge(S& m, S& s, S mt, S st) {
  if (!(st > S(0))) return;
  if (!(s > S(0))) {
    m = mt;
    s = st;
  } else if (mt > m) {
    s = s * std::exp(m - mt) + st;
    m = mt;
  } else {
    s += st * std::exp(mt - m);
  }
}

/// Online log-sum-exp over the rows of a tile: for every row i of X, adds
/// exp(log_w) * sum_j exp(X_ij) to the state of row (r0 + i).  Entries equal
/// to -inf are masked.  Column by column over the column-major tile, so every
/// max, subtraction and exp is a contiguous, vectorised Eigen array op
/// (Eigen's packet exp, never the scalar libm one).
template <typename S>
inline void reduce_rows(const TileRef<S>& X, S log_w, ColArray<S>& m, ColArray<S>& s, Eigen::Index r0,
                        ColArray<S>& buf) {
  const Eigen::Index nr = X.rows(), nc = X.cols();
  auto mx = buf.head(nr);
  auto sm = buf.segment(nr, nr);
  mx = X.col(0);
  for (Eigen::Index j = 1; j < nc; ++j) mx = mx.max(X.col(j));
  mx = (mx == -std::numeric_limits<S>::infinity()).select(S(0), mx);  // fully masked row
  sm.setZero();
  for (Eigen::Index j = 0; j < nc; ++j) sm += (X.col(j) - mx).exp();
  for (Eigen::Index i = 0; i < nr; ++i) lse_merge(m[r0 + i], s[r0 + i], mx[i] + log_w, sm[i]);
}

/// Same over the columns of a tile (the transposed block of a symmetric W W^T).
template <typename S>
inline void reduce_cols(const TileRef<S>& X, S log_w, ColArray<S>& m, ColArray<S>& s, Eigen::Index c0) {
  const Eigen::Index nc = X.cols();
  for (Eigen::Index j = 0; j < nc; ++j) {
    S mj = X.col(j).maxCoeff();
    if (mj == -std::numeric_limits<S>::infinity()) continue;  // fully masked column
    lse_merge(m[c0 + j], s[c0 + j], mj + log_w, (X.col(j) - mj).exp().sum());
  }
}

/// Writes `fill` into the entries of column j of a tile whose rows carry the
/// same instance id as the column (ids are per instance: row r of W has
/// ids[r mod n]).  The one masking rule of every loss that takes ids.
template <typename V, typename S>
inline void mask_equal_ids(V&& column, const Eigen::Index* ids, Eigen::Index n, const Tile& t, Eigen::Index j,
                           S fill) {
  const Eigen::Index idj = ids[(t.c0 + j) % n];
  const Eigen::Index r0 = t.r0 % n;
  for (Eigen::Index i = 0; i < t.nr; ++i) column[i] = ids[r0 + i] == idj ? fill : column[i];
}

/// The one normalisation rule of the library.  Copies z into rows
/// [r0, r0 + z.rows()) of w (already sized), rejects non-finite entries
/// (naming the argument) and scales every row to unit norm, the norm clamped
/// at kNormEps (inv_norm and clamped record the factor for the backward pass).
template <typename S, typename D>
void load_rows(RowMatrix<S>& w, ColArray<S>& inv_norm, std::vector<unsigned char>& clamped, Eigen::Index r0,
               const Eigen::MatrixBase<D>& z_, const char* where, const char* arg) {
  // An expression (product, sum, ...) is evaluated once; storage (Matrix,
  // Map, Block, Ref) is read in place.
  typename Eigen::internal::nested_eval<D, 2>::type z(z_.derived());
  // Copied through an L1-sized column-major buffer of kRowBlock rows: a
  // column-major z is then read a cache line at a time.  Reading it row by
  // row instead strides by n entries (all in one cache set when n * sizeof
  // is a multiple of 4 KiB) and was 5-14x slower.
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> buf;
  for (Eigen::Index i0 = 0; i0 < z.rows(); i0 += kRowBlock) {
    const Eigen::Index b = std::min(kRowBlock, z.rows() - i0);
    buf = z.middleRows(i0, b).template cast<S>();
    w.middleRows(r0 + i0, b) = buf;
  }
  const S eps = static_cast<S>(kNormEps);
  for (Eigen::Index i = 0; i < z.rows(); ++i) {
    const Eigen::Index r = r0 + i;
    auto row = w.row(r);
    // Scaled norm: no overflow or underflow of the squared norm.  The
    // NaN-propagating max is also the finiteness check of the row.
    const S amax = row.cwiseAbs().template maxCoeff<Eigen::PropagateNaN>();
    if (!std::isfinite(amax)) fail(where, arg, "contains NaN or infinite entries");
    const S nrm = amax > S(0) ? amax * (row / amax).norm() : S(0);
    if (nrm > eps) {
      inv_norm[r] = S(1) / nrm;
      clamped[static_cast<std::size_t>(r)] = 0;
    } else {
      inv_norm[r] = S(1) / eps;
      clamped[static_cast<std::size_t>(r)] = 1;
    }
    row *= inv_norm[r];
  }
}

/// Back through the normalisation for rows [r0, r0 + out.rows()):
/// dz_r = (dw_r - w_r (w_r . dw_r)) / ||z_r||, or dw_r / eps for a clamped
/// row, written into `out`.  Returns sum_r w_r . dw_r.
template <typename S, typename Out>
double backprop_rows(const RowMatrix<S>& w, const ColArray<S>& inv_norm, const std::vector<unsigned char>& clamped,
                     const RowMatrix<S>& dw, Eigen::Index r0, const Eigen::MatrixBase<Out>& out_) {
  auto& out = const_cast<Eigen::MatrixBase<Out>&>(out_);
  using T = typename Out::Scalar;
  double euler = 0.0;
  // Rows are formed in a small row-major buffer and stored kRowBlock at a
  // time, so a column-major `out` is written in whole cache lines.
  RowMatrix<S> buf(std::min(kRowBlock, out.rows()), w.cols());
  for (Eigen::Index i0 = 0; i0 < out.rows(); i0 += kRowBlock) {
    const Eigen::Index b = std::min(kRowBlock, out.rows() - i0);
    for (Eigen::Index i = 0; i < b; ++i) {
      const Eigen::Index r = r0 + i0 + i;
      const auto wr = w.row(r);
      const auto g = dw.row(r);
      const S wd = wr.dot(g);
      euler += static_cast<double>(wd);
      const S inv = inv_norm[r];
      if (clamped[static_cast<std::size_t>(r)]) buf.row(i) = inv * g;
      else buf.row(i) = inv * (g - wd * wr);
    }
    out.middleRows(i0, b) = buf.topRows(b).template cast<T>();
  }
  return euler;
}

inline int resolve_threads(int requested) {
#ifdef _OPENMP
  return requested > 0 ? requested : omp_get_max_threads();
#else
  (void)requested;
  return 1;
#endif
}

inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

/// Inside the tile loop Eigen's GEMM must run serially: our threads already
/// occupy the cores.  omp_set_num_threads here changes only the calling
/// thread's setting for the rest of the parallel region.
inline void make_eigen_serial() {
#ifdef _OPENMP
  omp_set_num_threads(1);
#endif
}

// ---- the kernel contract ----------------------------------------------------
//
// A kernel says what a tile means; the engine decides tiles, threads, memory.
// Required members (checked by static_assert in Engine::run, with K the
// kernel type and S its scalar):
//
//   bool   visits(int view_r, int view_c) const;
//            which of the view blocks (0,0), (0,1), (1,1) of W W^T it needs
//   S      logit_scale() const;
//            the tiles hold logit_scale() * w_r . w_c
//   void   prepare(TileRef<S> X, const Tile& t) const;
//            masks a fresh tile in place (-inf: not a term)
//   void   reduce(const TileRef<S>& X, const Tile& t, ThreadSlot<S>& slot) const;
//            pass 1: online log-sum-exp into slot.m / slot.s (reduce_rows /
//            reduce_cols), additive value terms into slot.sums.value
//   double finish(const RowMatrix<S>& W, const ColArray<S>& m, const ColArray<S>& s,
//                 CallStats<S>& stats) const;
//            after pass 1 (m, s merged over threads): fills stats.lse /
//            stats.lse_neg, adds its positive pairs' sums to stats.sums and
//            returns the value (the engine adds the slots' sums.value)
//   bool   gradient(const TileRef<S>& X, const Tile& t, const CallStats<S>& stats,
//                   TileRef<S> H, ThreadSlot<S>& slot) const;
//            pass 2: H = dL/dK of the tile (false: the tile contributes
//            nothing); may add to slot.sums.term_derivative / term_dot
//   void   pair_terms(const RowMatrix<S>& W, const CallStats<S>& stats, RowMatrix<S>& dW) const;
//            the O(n d) pair contributions (positives) to dL/dW
//
// A kernel that can be the second member of a SumKernel (it reads tiles made
// for another kernel) is additive and also has
//
//   void   share_tiles_with_scale(S engine_scale);
//   void   add_gradient(const TileRef<S>& X, const Tile& t, TileRef<S> H,
//                       ThreadSlot<S>& slot, bool accumulate) const;

namespace contract {
template <typename...>
using void_t = void;
template <typename K, typename S, typename = void>
struct has_visits : std::false_type {};
template <typename K, typename S>
struct has_visits<K, S, void_t<decltype(bool(std::declval<const K&>().visits(0, 0)))>> : std::true_type {};
template <typename K, typename S, typename = void>
struct has_logit_scale : std::false_type {};
template <typename K, typename S>
struct has_logit_scale<K, S, std::enable_if_t<std::is_same<decltype(std::declval<const K&>().logit_scale()), S>::value>>
    : std::true_type {};
template <typename K, typename S, typename = void>
struct has_prepare : std::false_type {};
template <typename K, typename S>
struct has_prepare<K, S, void_t<decltype(std::declval<const K&>().prepare(std::declval<TileRef<S>>(), std::declval<const Tile&>()))>>
    : std::true_type {};
template <typename K, typename S, typename = void>
struct has_reduce : std::false_type {};
template <typename K, typename S>
struct has_reduce<K, S,
                  void_t<decltype(std::declval<const K&>().reduce(std::declval<const TileRef<S>&>(), std::declval<const Tile&>(),
                                                                  std::declval<ThreadSlot<S>&>()))>> : std::true_type {};
template <typename K, typename S, typename = void>
struct has_finish : std::false_type {};
template <typename K, typename S>
struct has_finish<K, S,
                  std::enable_if_t<std::is_same<decltype(std::declval<const K&>().finish(
                                                    std::declval<const RowMatrix<S>&>(), std::declval<const ColArray<S>&>(),
                                                    std::declval<const ColArray<S>&>(), std::declval<CallStats<S>&>())),
                                                double>::value>> : std::true_type {};
template <typename K, typename S, typename = void>
struct has_gradient : std::false_type {};
template <typename K, typename S>
struct has_gradient<K, S,
                    void_t<decltype(bool(std::declval<const K&>().gradient(
                        std::declval<const TileRef<S>&>(), std::declval<const Tile&>(), std::declval<const CallStats<S>&>(),
                        std::declval<TileRef<S>>(), std::declval<ThreadSlot<S>&>())))>> : std::true_type {};
template <typename K, typename S, typename = void>
struct has_pair_terms : std::false_type {};
template <typename K, typename S>
struct has_pair_terms<K, S,
                      void_t<decltype(std::declval<const K&>().pair_terms(std::declval<const RowMatrix<S>&>(),
                                                                          std::declval<const CallStats<S>&>(),
                                                                          std::declval<RowMatrix<S>&>()))>> : std::true_type {};
template <typename K, typename S, typename = void>
struct has_add_gradient : std::false_type {};
template <typename K, typename S>
struct has_add_gradient<K, S,
                        void_t<decltype(std::declval<const K&>().add_gradient(
                                   std::declval<const TileRef<S>&>(), std::declval<const Tile&>(), std::declval<TileRef<S>>(),
                                   std::declval<ThreadSlot<S>&>(), true)),
                               decltype(std::declval<K&>().share_tiles_with_scale(S(1)))>> : std::true_type {};
}  // namespace contract

/// True when K meets the kernel contract for scalar S.
template <typename K, typename S>
constexpr bool is_kernel_v = contract::has_visits<K, S>::value && contract::has_logit_scale<K, S>::value &&
                             contract::has_prepare<K, S>::value && contract::has_reduce<K, S>::value &&
                             contract::has_finish<K, S>::value && contract::has_gradient<K, S>::value &&
                             contract::has_pair_terms<K, S>::value;

/// True when K is a kernel that can also read another kernel's tiles.
template <typename K, typename S>
constexpr bool is_additive_kernel_v = is_kernel_v<K, S> && contract::has_add_gradient<K, S>::value;

/// Compile-time check of the contract, one message per missing member.
template <typename K, typename S>
constexpr bool check_kernel() {
  static_assert(contract::has_visits<K, S>::value, "contrastive kernel: missing bool visits(int, int) const");
  static_assert(contract::has_logit_scale<K, S>::value, "contrastive kernel: missing S logit_scale() const");
  static_assert(contract::has_prepare<K, S>::value, "contrastive kernel: missing void prepare(TileRef<S>, const Tile&) const");
  static_assert(contract::has_reduce<K, S>::value,
                "contrastive kernel: missing void reduce(const TileRef<S>&, const Tile&, ThreadSlot<S>&) const");
  static_assert(contract::has_finish<K, S>::value,
                "contrastive kernel: missing double finish(const RowMatrix<S>&, const ColArray<S>&, const ColArray<S>&, "
                "CallStats<S>&) const");
  static_assert(contract::has_gradient<K, S>::value,
                "contrastive kernel: missing bool gradient(const TileRef<S>&, const Tile&, const CallStats<S>&, "
                "TileRef<S>, ThreadSlot<S>&) const");
  static_assert(contract::has_pair_terms<K, S>::value,
                "contrastive kernel: missing void pair_terms(const RowMatrix<S>&, const CallStats<S>&, RowMatrix<S>&) const");
  return true;
}

/// What the engine decided for one call (Engine::plan).
struct Plan {
  Eigen::Index chunk = 1;  // tile edge
  int threads = 1;
  bool cache = false;      // tiles kept between the passes
  bool gradient = false;   // the gradient pass runs
};

/// The value and Euler's sum sum_r w_r . dL/dw_r of a gradient call.
struct ValueAndEuler {
  double value = 0;
  double euler = 0;
};

/// The engine: plan -> size -> reduction pass -> gradient pass.
template <typename S>
class Engine {
 public:
  /// Copies the two views into the workspace as W = [U; V], rejects
  /// non-finite entries (naming the argument) and normalises every row.  An
  /// input that is an expression rather than storage (a product, a sum) is
  /// evaluated once here, never per block of rows.
  template <typename DA, typename DB>
  static void load(Buffers<S>& b, const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                   const char* where) {
    const Eigen::Index n = za.rows();
    b.w.resize(2 * n, za.cols());
    b.inv_norm.resize(2 * n);
    b.clamped.assign(static_cast<std::size_t>(2 * n), 0);
    load_rows(b.w, b.inv_norm, b.clamped, 0, za, where, "za");
    load_rows(b.w, b.inv_norm, b.clamped, n, zb, where, "zb");
  }

  /// Runs the kernel over the tiles.  Returns the loss value; with want_grad
  /// dL/dW is left in the first slot's dw and the statistics in b.stats.
  template <typename Kernel>
  static double run(const Kernel& kernel, Buffers<S>& b, const EngineOptions& opt, bool want_grad) {
    static_assert(check_kernel<Kernel, S>(), "contrastive: not a kernel");
    const Plan p = plan(kernel, b, opt, want_grad);
    size(b, p);
    const double value = reduction_pass(kernel, b, p);
    if (want_grad) gradient_pass(kernel, b, p);
    return value;
  }

  /// Chooses tiles, threads and whether tiles are cached.
  template <typename Kernel>
  static Plan plan(const Kernel& kernel, Buffers<S>& b, const EngineOptions& opt, bool want_grad) {
    const Eigen::Index n = b.w.rows() / 2, d = b.w.cols();
    Plan p;
    p.gradient = want_grad;
    // Small batches: at least two chunks per view, so that there are enough
    // tiles for the threads (measured: n = 256 pairs runs 1.4x faster with
    // 128-row tiles than with one 256-row tile per block).
    p.chunk = std::min<Eigen::Index>(opt.tile_size, n);
    if (n < 2 * opt.tile_size && n >= 128) p.chunk = ((n + 1) / 2 + 7) / 8 * 8;
    build_tiles(kernel, b, n, p.chunk);
    const long ntiles = static_cast<long>(b.tiles.size());
    double work = 0;
    std::size_t cache_bytes = 0;
    for (const auto& t : b.tiles) {
      work += static_cast<double>(t.nr * t.nc) * static_cast<double>(d);
      cache_bytes += sizeof(S) * static_cast<std::size_t>(t.nr * t.nc);
    }
    p.threads = work < opt.parallel_threshold
                    ? 1
                    : static_cast<int>(std::max<long>(1, std::min<long>(resolve_threads(opt.num_threads), ntiles)));
    p.cache = want_grad && cache_bytes <= opt.memory_budget_bytes;
    return p;
  }

  /// Sizes the per-thread slots and the tile cache for a plan.
  static void size(Buffers<S>& b, const Plan& p) {
    const Eigen::Index n2 = b.w.rows(), d = b.w.cols();
    b.threads = p.threads;
    if (p.gradient) b.streamed = !p.cache;  // (a value call leaves the last gradient call's)
    b.slots.resize(static_cast<std::size_t>(p.threads));
    for (auto& sl : b.slots) {
      sl.x.resize(p.chunk, p.chunk);
      sl.h.resize(p.chunk, p.chunk);
      sl.vr.resize(2 * p.chunk);
      sl.m.setZero(n2);
      sl.s.setZero(n2);
      sl.sums = PairSums{};
      if (p.gradient) sl.dw.setZero(n2, d);
    }
    if (p.cache) {
      b.cache.resize(b.tiles.size());
      for (std::size_t t = 0; t < b.tiles.size(); ++t) b.cache[t].resize(b.tiles[t].nr, b.tiles[t].nc);
    } else if (p.gradient) {
      // Streaming: give the memory of an earlier, smaller problem's tiles back.
      // (A value-only call keeps them for the next gradient call.)
      b.cache.clear();
      b.cache.shrink_to_fit();
    }
  }

  /// Pass 1: similarity tiles and the per-row reductions, merged over the
  /// threads; the kernel's finish() turns them into the statistics and the
  /// value.
  template <typename Kernel>
  static double reduction_pass(const Kernel& kernel, Buffers<S>& b, const Plan& p) {
    const S scale = kernel.logit_scale();
    for_each_tile(b, p, [&](const Tile& tile, TileRef<S>& X, ThreadSlot<S>& sl) {
      similarity_tile(kernel, b, tile, scale, X);
      kernel.reduce(X, tile, sl);
    });
    const Eigen::Index n2 = b.w.rows();
    ThreadSlot<S>& s0 = b.slots[0];
    for (std::size_t t = 1; t < b.slots.size(); ++t)
      for (Eigen::Index r = 0; r < n2; ++r) lse_merge(s0.m[r], s0.s[r], b.slots[t].m[r], b.slots[t].s[r]);
    b.stats.sums = PairSums{};
    double value = kernel.finish(b.w, s0.m, s0.s, b.stats);
    for (auto& sl : b.slots) {
      value += sl.sums.value;
      sl.sums = PairSums{};
    }
    return value;
  }

  /// Pass 2: tile gradients pushed back through two GEMMs into the slots'
  /// accumulators, merged into the first slot, plus the kernel's pair terms.
  template <typename Kernel>
  static void gradient_pass(const Kernel& kernel, Buffers<S>& b, const Plan& p) {
    const S scale = kernel.logit_scale();
    for_each_tile(b, p, [&](const Tile& tile, TileRef<S>& X, ThreadSlot<S>& sl) {
      if (!p.cache) similarity_tile(kernel, b, tile, scale, X);
      TileRef<S> H(sl.h.topLeftCorner(tile.nr, tile.nc));
      if (!kernel.gradient(X, tile, b.stats, H, sl)) return;
      // A diagonal tile's H already holds G + G^T of the symmetric block.
      sl.dw.middleRows(tile.r0, tile.nr).noalias() += H.matrix() * b.w.middleRows(tile.c0, tile.nc);
      if (!tile.diagonal())
        sl.dw.middleRows(tile.c0, tile.nc).noalias() += H.matrix().transpose() * b.w.middleRows(tile.r0, tile.nr);
    });
    ThreadSlot<S>& s0 = b.slots[0];
    for (std::size_t t = 1; t < b.slots.size(); ++t) s0.dw += b.slots[t].dw;
    for (const auto& sl : b.slots) b.stats.sums.add(sl.sums);
    kernel.pair_terms(b.w, b.stats, s0.dw);
  }

  /// Checks the views, loads them and runs the value pass.
  template <typename Kernel, typename DA, typename DB>
  static double evaluate(const Kernel& kernel, Buffers<S>& b, const EngineOptions& opt,
                         const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb, const char* where) {
    check_views(where, za, zb);
    load(b, za, zb, where);
    return run(kernel, b, opt, false);
  }

  /// Checks views and outputs (nothing is written on an exception), runs both
  /// passes and writes dL/dza, dL/dzb.
  template <typename Kernel, typename DA, typename DB, typename GA, typename GB>
  static ValueAndEuler evaluate_grad(const Kernel& kernel, Buffers<S>& b, const EngineOptions& opt,
                                     const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                                     const Eigen::MatrixBase<GA>& grad_a, const Eigen::MatrixBase<GB>& grad_b,
                                     const char* where) {
    check_views(where, za, zb);
    check_output_shape(where, "grad_a", grad_a, za.rows(), za.cols());
    check_output_shape(where, "grad_b", grad_b, zb.rows(), zb.cols());
    load(b, za, zb, where);
    const double v = run(kernel, b, opt, true);
    return {v, backprop(b, grad_a, grad_b)};
  }

  /// Back through the normalisation into the caller's outputs:
  /// dz_r = (dw_r - w_r (w_r . dw_r)) / ||z_r||, or dw_r / eps for a clamped
  /// row.  Returns sum_r w_r . dw_r (= 2 <dL/dK, K>, used for the
  /// temperature derivative).
  template <typename GA, typename GB>
  static double backprop(const Buffers<S>& b, const Eigen::MatrixBase<GA>& grad_a, const Eigen::MatrixBase<GB>& grad_b) {
    const Eigen::Index n = b.w.rows() / 2;
    const RowMatrix<S>& dw = b.slots[0].dw;
    return backprop_rows(b.w, b.inv_norm, b.clamped, dw, 0, grad_a) +
           backprop_rows(b.w, b.inv_norm, b.clamped, dw, n, grad_b);
  }

 private:
  /// Calls f(tile, X, slot) for every tile of the plan on p.threads
  /// threads (tiles dealt round-robin, Eigen serial inside); X is the cached
  /// tile or the thread's scratch tile.
  template <typename F>
  static void for_each_tile(Buffers<S>& b, const Plan& p, F&& f) {
    const long ntiles = static_cast<long>(b.tiles.size());
#ifdef _OPENMP
#pragma omp parallel num_threads(p.threads) if (p.threads > 1)
#endif
    {
      make_eigen_serial();
      ThreadSlot<S>& sl = b.slots[static_cast<std::size_t>(thread_id())];
#ifdef _OPENMP
#pragma omp for schedule(static, 1)
#endif
      for (long t = 0; t < ntiles; ++t) {
        const Tile& tile = b.tiles[static_cast<std::size_t>(t)];
        TileRef<S> X = p.cache ? TileRef<S>(b.cache[static_cast<std::size_t>(t)])
                               : TileRef<S>(sl.x.topLeftCorner(tile.nr, tile.nc));
        f(tile, X, sl);
      }
    }
  }

  template <typename Kernel>
  static void build_tiles(const Kernel& kernel, Buffers<S>& b, Eigen::Index n, Eigen::Index chunk) {
    b.tiles.clear();
    const Eigen::Index nb = (n + chunk - 1) / chunk;
    const int blocks[3][2] = {{0, 0}, {0, 1}, {1, 1}};
    for (const auto& bl : blocks) {
      if (!kernel.visits(bl[0], bl[1])) continue;
      for (Eigen::Index I = 0; I < nb; ++I)
        for (Eigen::Index J = (bl[0] == bl[1] ? I : 0); J < nb; ++J) {
          Tile t;
          t.r0 = bl[0] * n + I * chunk;
          t.nr = std::min(chunk, n - I * chunk);
          t.c0 = bl[1] * n + J * chunk;
          t.nc = std::min(chunk, n - J * chunk);
          t.view_r = bl[0];
          t.view_c = bl[1];
          t.same_chunk = (I == J);
          b.tiles.push_back(t);
        }
    }
  }

  template <typename Kernel>
  static void similarity_tile(const Kernel& kernel, const Buffers<S>& b, const Tile& tile, S scale, TileRef<S>& X) {
    X.matrix().noalias() = (scale * b.w.middleRows(tile.r0, tile.nr)) * b.w.middleRows(tile.c0, tile.nc).transpose();
    kernel.prepare(X, tile);
  }
};

}  // namespace detail
}  // namespace contrastive
