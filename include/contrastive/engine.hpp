// contrastive — the shared similarity engine: options and the reusable workspace.
// SPDX-License-Identifier: MIT
//
// Every loss of the library is a function of the cosine similarities of two
// views.  The engine (detail/engine_impl.hpp) owns what all losses share:
//
//   1. normalisation   w_r = z_r / max(||z_r||, 1e-12)   (torch's F.normalize)
//   2. similarity tiles K_IJ = W_I W_J^T / tau of the stacked W = [U; V]
//   3. per-row reductions over the tiles (pass 1), merged per row block
//   4. the tile gradient H_IJ = dL/dK_IJ from the loss kernel, pushed back
//      with two GEMMs: dW_I += H_IJ W_J, dW_J += H_IJ^T W_I (pass 2)
//   5. back through the normalisation: dz = (dw - w (w . dw)) / ||z||
//
// A loss kernel only says what a tile means (step 3 and 4's H); tiling,
// threading, streaming and memory are decided here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <Eigen/Core>

#include "detail/checks.hpp"
#include "detail/gemm.hpp"
#include "detail/resize.hpp"
#include "detail/rng.hpp"

namespace contrastive {

/// Engine settings shared by every loss.  Aggregate with documented defaults;
/// call check() (the losses do) to validate.
struct EngineOptions {
  /// Largest number of bytes of similarity tiles the engine may keep between
  /// the reduction pass and the gradient pass.  When the tiles a loss needs
  /// fit, they are computed once ("materialised").  When they total at most
  /// twice the budget, as many as fit are kept and the others recomputed in
  /// the gradient pass; beyond that, all are recomputed ("streaming") and memory
  /// stays O(n d + threads tile_size^2) whatever n is.  Default: 256 MiB.
  std::size_t memory_budget_bytes = std::size_t(256) << 20;
  /// Largest edge (rows = columns) of the square similarity tiles, 1 to
  /// kMaxTileSize.  Default 256.  Batches of 128 to 2 * tile_size pairs use
  /// two chunks per view; no tile edge ever exceeds tile_size.
  Eigen::Index tile_size = 256;
  /// Threads for the tile loop; 0 means OpenMP's default
  /// (omp_get_max_threads()).  Without OpenMP the engine is serial.  Eigen's
  /// own GEMM threads are switched off inside the tile loop, so the two never
  /// oversubscribe the cores.  Results are bitwise the same for every thread
  /// count.
  int num_threads = 0;
  /// Below this many multiply-adds in the similarity tiles (n_tiles * tile^2
  /// * d) a call runs on one thread: waking threads costs more than it saves
  /// on tiny batches, and idle OpenMP workers spinning after a short
  /// parallel region slow down the caller's own serial work.  Default 2^22.
  double parallel_threshold = 4194304.0;

  /// The largest tile_size accepted (a tile of doubles is then 2 GiB).
  static constexpr Eigen::Index kMaxTileSize = Eigen::Index(1) << 14;

  /// Throws std::invalid_argument naming the offending field.
  void check() const {
    const char* where = "contrastive::EngineOptions";
    if (tile_size < 1 || tile_size > kMaxTileSize)
      detail::fail_field(where, "tile_size",
                         "must be in [1, " + std::to_string(kMaxTileSize) + "] " + detail::got(tile_size));
    if (!(parallel_threshold >= 0))
      detail::fail_field(where, "parallel_threshold", "must be >= 0 " + detail::got(parallel_threshold));
    if (num_threads < 0 || num_threads > 4096)
      detail::fail_field(where, "num_threads", "must be in [0, 4096] (0 = OpenMP default) " + detail::got(num_threads));
  }
};

namespace detail {

template <typename S>
using RowMatrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename S>
using TileArray = Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic>;
template <typename S>
using ColArray = Eigen::Array<S, Eigen::Dynamic, 1>;

/// One tile of the stacked similarity matrix W W^T: rows [r0, r0+nr) and
/// columns [c0, c0+nc) of W, lying inside one view block (view_r, view_c in
/// {0 = first view, 1 = second view}).  `same_chunk` says the tile's diagonal
/// holds the pairs (i, i) of one instance: self-similarities inside a view
/// block, positive pairs in the cross-view block.  rb and cb number the row
/// blocks of W the tile's rows and columns belong to.
struct Tile {
  Eigen::Index r0 = 0, nr = 0, c0 = 0, nc = 0;
  int view_r = 0, view_c = 0;
  bool same_chunk = false;
  Eigen::Index rb = 0, cb = 0;
  bool diagonal() const { return same_chunk && view_r == view_c; }
};

/// Scalar sums a kernel accumulates over the pairs of a tile (kept per tile
/// and added in tile order, so totals do not depend on the thread count).
struct PairSums {
  /// Additive value terms.
  double value = 0;
  /// sum over pairs of w * dterm/dx: SigLIP's dL/db.
  double term_derivative = 0;
  /// sum over pairs of w * dterm/dx * x: SigLIP's t dL/dt.
  double term_dot = 0;
  void add(const PairSums& o) {
    value += o.value;
    term_derivative += o.term_derivative;
    term_dot += o.term_dot;
  }
};

/// What a kernel's pass 1 leaves for one tile: up to K sums per row and per
/// column of the tile (columns only when they are anchors too), relative to
/// a shift (the kernel's fixed shift, or per row / column in `rows_m` /
/// `cols_m` for kernels with online shifts), and its pair sums.
template <typename S>
struct TileStats {
  TileArray<S> rows, cols;     // nr x K, nc x K
  ColArray<S> rows_m, cols_m;  // online shifts (empty for fixed-shift kernels)
  bool has_rows = false, has_cols = false;
  PairSums sums;
};

/// Per-row statistics merged over all tiles: s (2n x K) relative to a shift,
/// the kernel's fixed one or m (online).
template <typename S>
struct RowStats {
  ColArray<S> m;
  TileArray<S> s;
  ColArray<S> m_local;  // across processes: this process's shifts while they are merged
};

/// The named results of one call, filled by the kernel's begin() (before
/// pass 1) and finish() (after it) and read by its pass 2, its pair terms
/// and the loss.
template <typename S>
struct CallStats {
  ColArray<S> pos;      ///< logit of every row's positive pair
  ColArray<S> lse;      ///< log-sum-exp of each anchor's denominator
  ColArray<S> lse_neg;  ///< the same over its negatives only
  ColArray<S> alpha;    ///< per-row coefficient of the gradient tile (0: not an anchor)
  ColArray<S> alpha2;   ///< a second per-row coefficient (kernels whose gradient tile has two terms)
  S shift = 0;          ///< the fixed shift of the exponentials (fixed-shift kernels)
  bool online = false;  ///< shifts are per row (stats.m) instead of `shift`
  double dtau = 0;      ///< dL/dtau (kernels with a temperature, gradient calls)
  PairSums sums;        ///< the pair sums of both passes, totalled in tile order
};

/// Per-thread scratch: a tile, a second tile for sums of kernels, vectors,
/// and one tile's statistics (streamed calls).
template <typename S>
struct ThreadSlot {
  TileArray<S> x, h;  // h: allocated (chunk x chunk) by the kernels that need a second tile
  ColArray<S> v;      // per-tile vectors, 4 chunk
  TileStats<S> ts;
  GemmSpace<S> gemm;       // packing buffers of this thread's tile products
  Eigen::Index chunk = 0;  // the call's tile edge
};

/// Everything a Workspace holds; the engine and the losses reach it through
/// buffers(ws).
template <typename S>
struct Buffers {
  RowMatrix<S> w;                      // 2n x d, normalised rows [U; V] (or [Q; P])
  RowMatrix<S> dw;                     // dL/dW after a gradient call
  RowMatrix<S> w_local, dw_local;      // across processes: this process's rows before the gather, after the scatter
  ColArray<S> inv_local;               // ... and their inverse norms
  std::vector<unsigned char> clamped_local;
  std::vector<Eigen::Index> ids, labels;  // across processes: the global instance ids / labels
  ColArray<S> weights;                    // ... and anchor weights
  ColArray<S> inv_norm;                // 1 / max(||z_r||, eps)
  std::vector<unsigned char> clamped;  // 1 where the norm was clamped
  std::vector<Tile> tiles;             // by round: no two tiles of a round share a row block
  std::vector<std::uint32_t> seq;      // per tile: its turn in its row block and its column block
  std::vector<TileArray<S>> cache;     // materialised tiles (pass 2 reads them)
  std::vector<unsigned char> kept;     // per tile: 1 when the call computes it in cache[t]
  std::vector<PairSums> tile_sums;     // per tile, both passes
  std::vector<ThreadSlot<S>> slots;
  RowStats<S> stats;
  CallStats<S> cs;
  ColArray<S> coef;       // per-anchor coefficients a_r of the call
  std::vector<S> losses;  // per-anchor losses l_r of the call
  RowMatrix<S> keys, dkeys;            // explicit negative keys, normalised, and dL/dkeys
  ColArray<S> keys_inv_norm, scratch;  // their norms; a row of exps
  std::vector<unsigned char> keys_clamped;
  RowMatrix<S> logits;                    // a block of query-key logits
  std::vector<Eigen::Index> cand, drawn;  // sampled negatives: candidates, draws
  MovedPositions moved;                   // sampled negatives: sparse shuffle
  bool streamed = false;
  int threads = 1;
  int views = 2;  // W = [U; V] (2) or U alone (1)

  std::size_t bytes() const {
    const auto sz = [](const auto& a) { return sizeof(S) * static_cast<std::size_t>(a.size()); };
    const auto ts_bytes = [&](const TileStats<S>& t) { return sz(t.rows) + sz(t.cols) + sz(t.rows_m) + sz(t.cols_m); };
    std::size_t b = sz(w) + sz(dw) + sz(w_local) + sz(dw_local) + sz(inv_local) + clamped_local.size() +
                    sizeof(Eigen::Index) * (ids.capacity() + labels.capacity()) + sz(weights) + sz(stats.m_local) +
                    sz(inv_norm) + clamped.size() + sz(stats.m) + sz(stats.s) + sz(cs.pos) +
                    sz(cs.lse) + sz(cs.lse_neg) + sz(cs.alpha) + sz(cs.alpha2) + sz(coef) + sizeof(S) * losses.size() + sz(keys) +
                    sz(dkeys) + sz(keys_inv_norm) + sz(scratch) + keys_clamped.size() + sizeof(Tile) * tiles.size() +
                    sizeof(std::uint32_t) * seq.size() + kept.capacity() +
                    sizeof(PairSums) * tile_sums.size() + sz(logits) +
                    sizeof(Eigen::Index) * (cand.capacity() + drawn.capacity());
    for (const auto& t : cache) b += sz(t);
    for (const auto& sl : slots) b += sz(sl.x) + sz(sl.h) + sz(sl.v) + ts_bytes(sl.ts) + sl.gemm.bytes();
    return b;
  }
};

struct WorkspaceAccess;

}  // namespace detail

/// Reusable memory of every loss.  Pass the same Workspace to every call in
/// a training loop: once it has seen the largest batch, its buffers are only
/// reused, never reallocated.  Not thread-safe: one Workspace per concurrent
/// caller.  One Workspace may serve several losses of the same Scalar.
template <typename Scalar>
class Workspace {
 public:
  Workspace() = default;

  /// Bytes currently held by the workspace's buffers.
  std::size_t bytes() const { return b_.bytes(); }
  /// True when the last gradient call recomputed some or all of its tiles
  /// instead of caching them (EngineOptions::memory_budget_bytes).
  bool last_call_streamed() const { return b_.streamed; }
  /// Threads the last call used for its tile loop.
  int last_call_threads() const { return b_.threads; }

 private:
  friend struct detail::WorkspaceAccess;
  detail::Buffers<Scalar> b_;
};

namespace detail {
struct WorkspaceAccess {
  template <typename S>
  static Buffers<S>& get(Workspace<S>& ws) {
    return ws.b_;
  }
  template <typename S>
  static const Buffers<S>& get(const Workspace<S>& ws) {
    return ws.b_;
  }
};
/// The buffers of a Workspace (for the library's own losses).
template <typename S>
Buffers<S>& buffers(Workspace<S>& ws) {
  return WorkspaceAccess::get(ws);
}
template <typename S>
const Buffers<S>& buffers(const Workspace<S>& ws) {
  return WorkspaceAccess::get(ws);
}
}  // namespace detail

}  // namespace contrastive

#include "detail/engine_impl.hpp"
