// contrastive — the tiled two-pass engine (internal; include engine.hpp).
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
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
               const Eigen::MatrixBase<D>& z, const char* where, const char* arg) {
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

/// The engine.  A Kernel provides (see InfoNCEKernel for the reference):
///   bool   visits(int view_r, int view_c) const;   which view blocks to tile
///   S      logit_scale() const;                    tiles hold scale * w_r . w_c
///   void   prepare(TileRef X, const Tile&) const;  masks (-inf) on the tile
///   void   reduce(const TileRef X, const Tile&, ThreadSlot&) const;   pass 1
///   double finish(const RowMatrix& W, ColArray& m, ColArray& s, ColArray& stat) const;
///          (the engine adds the slots' `value`, which reduce() may accumulate)
///   bool   gradient(const TileRef X, const Tile&, const ColArray& stat, TileRef H, ThreadSlot&) const;
///          (a kernel may accumulate a sum of its own in the slot's `aux`)
///   void   pair_terms(const RowMatrix& W, const ColArray& stat, RowMatrix& dW) const;
template <typename S>
class Engine {
 public:
  /// Copies the two views into the workspace as W = [U; V], rejects
  /// non-finite entries (naming the argument) and normalises every row.
  template <typename DA, typename DB>
  static void load(Workspace<S>& ws, const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                   const char* where) {
    const Eigen::Index n = za.rows();
    ws.w_.resize(2 * n, za.cols());
    ws.inv_norm_.resize(2 * n);
    ws.clamped_.assign(static_cast<std::size_t>(2 * n), 0);
    load_rows(ws.w_, ws.inv_norm_, ws.clamped_, 0, za, where, "za");
    load_rows(ws.w_, ws.inv_norm_, ws.clamped_, n, zb, where, "zb");
  }

  /// Runs the kernel over the tiles.  Returns the loss value; with want_grad
  /// the gradient dL/dW is left in ws.slots_[0].dw.
  template <typename Kernel>
  static double run(const Kernel& kernel, Workspace<S>& ws, const EngineOptions& opt, bool want_grad) {
    const Eigen::Index n2 = ws.w_.rows(), n = n2 / 2, d = ws.w_.cols();
    // Small batches: at least two chunks per view, so that there are enough
    // tiles for the threads (measured: n = 256 pairs runs 1.4x faster with
    // 128-row tiles than with one 256-row tile per block).
    Eigen::Index chunk = std::min<Eigen::Index>(opt.tile_size, n);
    if (n < 2 * opt.tile_size && n >= 128) chunk = ((n + 1) / 2 + 7) / 8 * 8;
    build_tiles(kernel, ws, n, chunk);
    const long ntiles = static_cast<long>(ws.tiles_.size());
    double work = 0;
    for (const auto& t : ws.tiles_) work += static_cast<double>(t.nr * t.nc) * static_cast<double>(d);
    const int threads = work < opt.parallel_threshold
                            ? 1
                            : static_cast<int>(std::max<long>(1, std::min<long>(resolve_threads(opt.num_threads), ntiles)));
    ws.threads_ = threads;

    ws.slots_.resize(static_cast<std::size_t>(threads));
    for (auto& sl : ws.slots_) {
      sl.x.resize(chunk, chunk);
      sl.h.resize(chunk, chunk);
      sl.vr.resize(2 * chunk);
      sl.m.setZero(n2);
      sl.s.setZero(n2);
      sl.value = 0;
      sl.aux = 0;
      if (want_grad) sl.dw.setZero(n2, d);
    }

    std::size_t cache_bytes = 0;
    for (const auto& t : ws.tiles_) cache_bytes += sizeof(S) * static_cast<std::size_t>(t.nr * t.nc);
    const bool cache = want_grad && cache_bytes <= opt.memory_budget_bytes;
    ws.streamed_ = want_grad && !cache;
    if (cache) {
      ws.cache_.resize(ws.tiles_.size());
      for (std::size_t t = 0; t < ws.tiles_.size(); ++t) ws.cache_[t].resize(ws.tiles_[t].nr, ws.tiles_[t].nc);
    } else if (want_grad) {
      // Streaming: give the memory of an earlier, smaller problem's tiles back.
      // (A value-only call keeps them for the next gradient call.)
      ws.cache_.clear();
      ws.cache_.shrink_to_fit();
    }

    const S scale = kernel.logit_scale();
    // ---- pass 1: similarity tiles and the per-row reductions -------------
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
    {
      make_eigen_serial();
      ThreadSlot<S>& sl = ws.slots_[static_cast<std::size_t>(thread_id())];
#ifdef _OPENMP
#pragma omp for schedule(static, 1)
#endif
      for (long t = 0; t < ntiles; ++t) {
        const Tile& tile = ws.tiles_[static_cast<std::size_t>(t)];
        TileRef<S> X = cache ? TileRef<S>(ws.cache_[static_cast<std::size_t>(t)])
                             : TileRef<S>(sl.x.topLeftCorner(tile.nr, tile.nc));
        similarity_tile(kernel, ws, tile, scale, X);
        kernel.reduce(X, tile, sl);
      }
    }
    ThreadSlot<S>& s0 = ws.slots_[0];
    for (std::size_t t = 1; t < ws.slots_.size(); ++t)
      for (Eigen::Index r = 0; r < n2; ++r) lse_merge(s0.m[r], s0.s[r], ws.slots_[t].m[r], ws.slots_[t].s[r]);
    double value = kernel.finish(ws.w_, s0.m, s0.s, ws.row_stat_);
    for (const auto& sl : ws.slots_) value += sl.value;
    ws.aux_ = 0;
    if (!want_grad) return value;

    // ---- pass 2: tile gradients pushed back through two GEMMs ------------
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
    {
      make_eigen_serial();
      ThreadSlot<S>& sl = ws.slots_[static_cast<std::size_t>(thread_id())];
#ifdef _OPENMP
#pragma omp for schedule(static, 1)
#endif
      for (long t = 0; t < ntiles; ++t) {
        const Tile& tile = ws.tiles_[static_cast<std::size_t>(t)];
        TileRef<S> X = cache ? TileRef<S>(ws.cache_[static_cast<std::size_t>(t)])
                             : TileRef<S>(sl.x.topLeftCorner(tile.nr, tile.nc));
        if (!cache) similarity_tile(kernel, ws, tile, scale, X);
        TileRef<S> H(sl.h.topLeftCorner(tile.nr, tile.nc));
        if (!kernel.gradient(X, tile, ws.row_stat_, H, sl)) continue;
        if (tile.diagonal()) {
          // H already holds G + G^T of the symmetric diagonal tile.
          sl.dw.middleRows(tile.r0, tile.nr).noalias() += H.matrix() * ws.w_.middleRows(tile.c0, tile.nc);
        } else {
          sl.dw.middleRows(tile.r0, tile.nr).noalias() += H.matrix() * ws.w_.middleRows(tile.c0, tile.nc);
          sl.dw.middleRows(tile.c0, tile.nc).noalias() +=
              H.matrix().transpose() * ws.w_.middleRows(tile.r0, tile.nr);
        }
      }
    }
    for (std::size_t t = 1; t < ws.slots_.size(); ++t) s0.dw += ws.slots_[t].dw;
    for (const auto& sl : ws.slots_) ws.aux_ += sl.aux;
    kernel.pair_terms(ws.w_, ws.row_stat_, s0.dw);
    return value;
  }

  /// Checks the views, loads them and runs the value pass.
  template <typename Kernel, typename DA, typename DB>
  static double evaluate(const Kernel& kernel, Workspace<S>& ws, const EngineOptions& opt,
                         const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb, const char* where) {
    check_views(where, za, zb);
    load(ws, za, zb, where);
    return run(kernel, ws, opt, false);
  }

  /// Checks views and outputs (nothing is written on an exception), runs both
  /// passes and writes dL/dza, dL/dzb.  Returns {value, sum_r w_r . dL/dw_r}.
  template <typename Kernel, typename DA, typename DB, typename GA, typename GB>
  static std::pair<double, double> evaluate_grad(const Kernel& kernel, Workspace<S>& ws, const EngineOptions& opt,
                                                 const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                                                 const Eigen::MatrixBase<GA>& grad_a,
                                                 const Eigen::MatrixBase<GB>& grad_b, const char* where) {
    check_views(where, za, zb);
    check_output_shape(where, "grad_a", grad_a, za.rows(), za.cols());
    check_output_shape(where, "grad_b", grad_b, zb.rows(), zb.cols());
    load(ws, za, zb, where);
    const double v = run(kernel, ws, opt, true);
    return {v, backprop(ws, grad_a, grad_b)};
  }

  /// The normalised rows [U; V] of the last load().
  static const RowMatrix<S>& normalized(const Workspace<S>& ws) { return ws.w_; }

  /// The kernel's per-row statistics of the last call.
  static const ColArray<S>& row_stat(const Workspace<S>& ws) { return ws.row_stat_; }

  /// Sum of the slots' `aux` after the last gradient pass.
  static double aux(const Workspace<S>& ws) { return ws.aux_; }

  /// Back through the normalisation into the caller's outputs:
  /// dz_r = (dw_r - w_r (w_r . dw_r)) / ||z_r||, or dw_r / eps for a clamped
  /// row.  Returns sum_r w_r . dw_r (= 2 <dL/dK, K>, used for the
  /// temperature derivative).
  template <typename GA, typename GB>
  static double backprop(const Workspace<S>& ws, const Eigen::MatrixBase<GA>& grad_a,
                         const Eigen::MatrixBase<GB>& grad_b) {
    const Eigen::Index n = ws.w_.rows() / 2;
    const RowMatrix<S>& dw = ws.slots_[0].dw;
    return backprop_rows(ws.w_, ws.inv_norm_, ws.clamped_, dw, 0, grad_a) +
           backprop_rows(ws.w_, ws.inv_norm_, ws.clamped_, dw, n, grad_b);
  }

 private:
  template <typename Kernel>
  static void build_tiles(const Kernel& kernel, Workspace<S>& ws, Eigen::Index n, Eigen::Index chunk) {
    ws.tiles_.clear();
    const Eigen::Index nb = (n + chunk - 1) / chunk;
    const int blocks[3][2] = {{0, 0}, {0, 1}, {1, 1}};
    for (const auto& b : blocks) {
      if (!kernel.visits(b[0], b[1])) continue;
      for (Eigen::Index I = 0; I < nb; ++I)
        for (Eigen::Index J = (b[0] == b[1] ? I : 0); J < nb; ++J) {
          Tile t;
          t.r0 = b[0] * n + I * chunk;
          t.nr = std::min(chunk, n - I * chunk);
          t.c0 = b[1] * n + J * chunk;
          t.nc = std::min(chunk, n - J * chunk);
          t.view_r = b[0];
          t.view_c = b[1];
          t.same_chunk = (I == J);
          ws.tiles_.push_back(t);
        }
    }
  }

  template <typename Kernel>
  static void similarity_tile(const Kernel& kernel, const Workspace<S>& ws, const Tile& tile, S scale,
                              TileRef<S>& X) {
    X.matrix().noalias() = (scale * ws.w_.middleRows(tile.r0, tile.nr)) * ws.w_.middleRows(tile.c0, tile.nc).transpose();
    kernel.prepare(X, tile);
  }
};

}  // namespace detail
}  // namespace contrastive
