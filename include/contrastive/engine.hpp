// contrastive — the shared similarity engine: options and the reusable workspace.
// SPDX-License-Identifier: MIT
//
// Every loss of the library is a function of the cosine similarities of two
// views.  The engine (detail/engine_impl.hpp) owns what all losses share:
//
//   1. normalisation   w_r = z_r / max(||z_r||, 1e-12)   (torch's F.normalize)
//   2. similarity tiles K_IJ = W_I W_J^T / tau of the stacked W = [U; V]
//   3. per-row online log-sum-exp reductions over the tiles (first pass)
//   4. the tile gradient H_IJ = dL/dK_IJ from the loss kernel, pushed back
//      with two GEMMs: dW_I += H_IJ W_J, dW_J += H_IJ^T W_I (second pass)
//   5. back through the normalisation: dz = (dw - w (w . dw)) / ||z||
//
// A loss kernel only says what a tile means (step 3 and 4's H); tiling,
// threading, streaming and memory are decided here.
#pragma once

#include <cstddef>
#include <vector>

#include <Eigen/Core>

#include "detail/checks.hpp"
#include "detail/rng.hpp"

namespace contrastive {

/// Engine settings shared by every loss.  Aggregate with documented defaults;
/// call check() (the losses do) to validate.
struct EngineOptions {
  /// Largest number of bytes of similarity tiles the engine may keep between
  /// the reduction pass and the gradient pass.  When the tiles a loss needs
  /// fit, they are computed once ("materialised"); otherwise they are
  /// recomputed in the gradient pass ("streaming") and memory stays
  /// O((n + threads * tile_size) * d) whatever n is.  Default: 256 MiB.
  std::size_t memory_budget_bytes = std::size_t(256) << 20;
  /// Largest edge (rows = columns) of the square similarity tiles.  Default
  /// 256.  Batches of 128 to 2 * tile_size pairs use two chunks per view.
  Eigen::Index tile_size = 256;
  /// Threads for the tile loop; 0 means OpenMP's default
  /// (omp_get_max_threads()).  Without OpenMP the engine is serial.  Eigen's
  /// own GEMM threads are switched off inside the tile loop, so the two never
  /// oversubscribe the cores.
  int num_threads = 0;
  /// Below this many multiply-adds in the similarity tiles (n_tiles * tile^2
  /// * d) a call runs on one thread: waking threads costs more than it saves
  /// on tiny batches, and idle OpenMP workers spinning after a short
  /// parallel region slow down the caller's own serial work.  Default 2^22.
  double parallel_threshold = 4194304.0;

  /// Throws std::invalid_argument naming the offending field.
  void check() const {
    const char* where = "contrastive::EngineOptions";
    if (tile_size < 1) detail::fail_field(where, "tile_size", "must be >= 1 " + detail::got(tile_size));
    if (!(parallel_threshold >= 0))
      detail::fail_field(where, "parallel_threshold", "must be >= 0 " + detail::got(parallel_threshold));
    if (num_threads < 0)
      detail::fail_field(where, "num_threads", "must be >= 0 (0 = OpenMP default) " + detail::got(num_threads));
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
/// block, positive pairs in the cross-view block.
struct Tile {
  Eigen::Index r0, nr, c0, nc;
  int view_r, view_c;
  bool same_chunk;
  bool diagonal() const { return same_chunk && view_r == view_c; }
};

/// Scalar sums a kernel accumulates over the pairs it owns (per thread in the
/// passes, then in the call's totals).
struct PairSums {
  /// Additive value terms (pass 1).
  double value = 0;
  /// sum over pairs of w * dterm/dx: SigLIP's dL/db.
  double term_derivative = 0;
  /// sum over pairs of w * dterm/dx * x: the additive terms' <dL/dK, K>,
  /// taken out of Euler's sum for a base loss's dL/dtau.
  double term_dot = 0;
  void add(const PairSums& o) {
    value += o.value;
    term_derivative += o.term_derivative;
    term_dot += o.term_dot;
  }
};

/// The named statistics of one engine call, written by the kernel's finish()
/// (after the reduction pass) and read by its gradient() and pair_terms().
template <typename S>
struct CallStats {
  /// Per row r of W: log-sum-exp over all of the anchor's terms (positive
  /// included when it is in the denominator), and over its negatives only.
  ColArray<S> lse, lse_neg;
  /// Totals of the slots' PairSums plus the kernel's own positive pairs.
  PairSums sums;
};

/// Per-thread scratch: tile buffers, a private gradient accumulator and a
/// private copy of the row reductions (merged after the parallel loop).
template <typename S>
struct ThreadSlot {
  TileArray<S> x, h;
  ColArray<S> vr;  // per-tile row vectors (running max and sums)
  RowMatrix<S> dw;
  ColArray<S> m, s;  // online log-sum-exp state: sum = s * exp(m)
  PairSums sums;     // this thread's pair sums
};

/// Everything a Workspace holds; the engine and the losses reach it through
/// buffers(ws).
template <typename S>
struct Buffers {
  RowMatrix<S> w;                     // 2n x d, normalised rows [U; V] (or [Q; P])
  ColArray<S> inv_norm;               // 1 / max(||z_r||, eps)
  std::vector<unsigned char> clamped;  // 1 where the norm was clamped
  std::vector<Tile> tiles;
  std::vector<TileArray<S>> cache;
  std::vector<ThreadSlot<S>> slots;  // slots[0].dw: dL/dW after a gradient call
  CallStats<S> stats;
  ColArray<S> coef;       // per-anchor coefficients a_r of the call
  std::vector<S> losses;  // per-anchor losses l_r of the call
  RowMatrix<S> keys, dkeys;            // explicit negative keys, normalised, and dL/dkeys
  ColArray<S> keys_inv_norm, scratch;  // their norms; a row of exps
  std::vector<unsigned char> keys_clamped;
  RowMatrix<S> logits;                       // a block of query-key logits
  std::vector<Eigen::Index> cand, drawn;     // sampled negatives: candidates, draws
  MovedPositions moved;                      // sampled negatives: sparse shuffle
  bool streamed = false;
  int threads = 1;

  std::size_t bytes() const {
    const auto sz = [](const auto& a) { return sizeof(S) * static_cast<std::size_t>(a.size()); };
    std::size_t b = sz(w) + sz(inv_norm) + clamped.size() + sz(stats.lse) + sz(stats.lse_neg) + sz(coef) +
                    sizeof(S) * losses.size() + sz(keys) + sz(dkeys) + sz(keys_inv_norm) + sz(scratch) +
                    keys_clamped.size() + sizeof(Tile) * tiles.size() + sz(logits) +
                    sizeof(Eigen::Index) * (cand.capacity() + drawn.capacity());
    for (const auto& t : cache) b += sz(t);
    for (const auto& sl : slots) b += sz(sl.x) + sz(sl.h) + sz(sl.vr) + sz(sl.dw) + sz(sl.m) + sz(sl.s);
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
  /// True when the last gradient call recomputed tiles instead of caching them.
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
