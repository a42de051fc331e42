// contrastive — the tile kernel of the independently additive family
// (internal; the losses that use it include it).
// SPDX-License-Identifier: MIT
#pragma once

#include <cmath>
#include <limits>

#include <Eigen/Core>

#include "../api.hpp"
#include "../engine.hpp"
#include "../two_view_loss.hpp"
#include "checks.hpp"

namespace contrastive {
namespace detail {

// A Terms type (the math of one additive loss, in its own header) provides
//   template <class A, class O> void neg(const A& x, O&& out) const;   out = psi(x), element-wise
//   template <class A, class O> void dneg(const A& x, O&& out) const;  out = psi'(x)
//   S pos(S x) const;  S dpos(S x) const;                              phi of a positive, and phi'

/// L = sum_i w_pos pos(x_ii) + w_cross sum_{i != j} neg(x(u_i.v_j))
///       + w_within sum_{i != j} [neg(x(u_i.u_j)) + neg(x(v_i.v_j))],
/// x = scale * s.  With instance ids, pairs of equal ids are not negatives.
/// Each pair contributes on its own: no per-row statistics, so a cached
/// tile is turned into H = dL/dK in pass 1 already (value and gradient in
/// one sweep) and pass 2 has nothing left to do.  With `sums` the kernel
/// also totals, over all pairs, w dterm/dx (PairSums::term_derivative) and
/// w dterm/dx x (PairSums::term_dot), the derivatives with respect to a
/// bias added to x and to the scale (times the scale).  `ratio` converts
/// the engine's tile (engine_scale * K) to this kernel's x (scale * K) when
/// it shares tiles with another kernel.
template <typename S, typename Terms>
class AdditiveKernel {
 public:
  AdditiveKernel(Terms terms, S scale, double w_pos, double w_cross, double w_within, Eigen::Index n,
                 const Eigen::Index* ids = nullptr, bool sums = false)
      : terms_(terms), scale_(scale), ratio_(1), w_pos_(w_pos), w_cross_(w_cross), w_within_(w_within), n_(n),
        ids_(ids), sums_(sums) {}

  /// Reads tiles made at another kernel's scale (see SumKernel).
  void share_tiles_with_scale(S engine_scale) { ratio_ = scale_ / engine_scale; }

  bool visits(int vr, int vc) const { return vr != vc ? w_cross_ > 0.0 : w_within_ > 0.0; }
  S logit_scale() const { return scale_; }
  int stat_count() const { return 0; }
  bool online() const { return false; }
  void begin(const RowMatrix<S>&, CallStats<S>&) const {}

  void pass1(TileRef<S> X, const Tile& t, const CallStats<S>&, TileOut<S>& out, bool keep, ThreadSlot<S>& sl) const {
    if (!visits(t.view_r, t.view_c)) return;
    out.sums->value += tile_value(X, t, sl);
    if (keep) tile_gradient(X, t, X, false, *out.sums, sl);
  }

  /// Positive pairs: their value, and their shares of the pair sums.
  double finish(const RowMatrix<S>& W, const RowStats<S>&, CallStats<S>& cs) const {
    if (w_pos_ == 0.0) return 0.0;
    double value = 0, dsum = 0, dxsum = 0;
    for (Eigen::Index i = 0; i < n_; ++i) {
      const S x = scale_ * W.row(i).dot(W.row(i + n_));
      value += static_cast<double>(terms_.pos(x));
      dsum += static_cast<double>(terms_.dpos(x));
      dxsum += static_cast<double>(terms_.dpos(x) * x);
    }
    if (sums_) {
      cs.sums.term_derivative += w_pos_ * dsum;
      cs.sums.term_dot += w_pos_ * dxsum;
    }
    return w_pos_ * value;
  }

  bool pass2(TileRef<S> P, const Tile& t, bool kept, const CallStats<S>&, PairSums& sums, ThreadSlot<S>& sl) const {
    if (!visits(t.view_r, t.view_c)) return false;
    if (!kept) tile_gradient(P, t, P, false, sums, sl);
    return true;
  }

  /// Sum over the tile's pairs of their value terms.
  double tile_value(const TileRef<S>& X, const Tile& t, ThreadSlot<S>& sl) const {
    auto buf = sl.v.head(t.nr);
    auto x = sl.v.segment(t.nr, t.nr);
    double sum = 0;
    for (Eigen::Index j = 0; j < t.nc; ++j) {
      x = ratio_ * X.col(j);
      mask_pairs(x, ids_, n_, t, j, S(0));  // keep masked entries finite
      terms_.neg(x, buf);
      mask_pairs(buf, ids_, n_, t, j, S(0));
      sum += static_cast<double>(buf.sum());
    }
    return multiplicity(t) * weight(t) * sum;
  }

  /// H (+)= dL/dK of the tile from the raw tile X, column by column (H may
  /// be X itself: each column is read before it is written).
  void tile_gradient(const TileRef<S>& X, const Tile& t, TileRef<S> H, bool accumulate, PairSums& sums,
                     ThreadSlot<S>& sl) const {
    const S w = static_cast<S>(weight(t));
    // Within-view tiles stand for both orders of their pairs (G + G^T).
    const S coef = (t.view_r == t.view_c ? S(2) : S(1)) * w * scale_;
    auto d = sl.v.head(t.nr);
    auto x = sl.v.segment(t.nr, t.nr);
    double dsum = 0, dxsum = 0;
    for (Eigen::Index j = 0; j < t.nc; ++j) {
      x = ratio_ * X.col(j);
      mask_pairs(x, ids_, n_, t, j, S(0));  // masked entries: x = 0 (finite), their derivative is zeroed below
      terms_.dneg(x, d);
      mask_pairs(d, ids_, n_, t, j, S(0));
      if (sums_) {
        dsum += static_cast<double>(d.sum());
        dxsum += static_cast<double>((d * x).sum());
      }
      if (accumulate) H.col(j) += coef * d;
      else H.col(j) = coef * d;
    }
    if (sums_) {
      const double m = multiplicity(t) * static_cast<double>(w);
      sums.term_derivative += m * dsum;
      sums.term_dot += m * dxsum;
    }
  }

  /// Positive pairs of instances [i0, i1): dL/dK_{i, n+i} = w_pos scale dpos(x_ii).
  void pair_terms(const RowMatrix<S>& W, const CallStats<S>&, RowMatrix<S>& dW, Eigen::Index i0,
                  Eigen::Index i1) const {
    if (w_pos_ == 0.0) return;
    for (Eigen::Index i = i0; i < i1; ++i) {
      const S x = scale_ * W.row(i).dot(W.row(i + n_));
      const S g = static_cast<S>(w_pos_) * scale_ * terms_.dpos(x);
      dW.row(i) += g * W.row(i + n_);
      dW.row(i + n_) += g * W.row(i);
    }
  }

 private:
  double weight(const Tile& t) const { return t.view_r == t.view_c ? w_within_ : w_cross_; }
  // Off-diagonal tiles of a within-view block stand for (i, j) and (j, i).
  static double multiplicity(const Tile& t) { return (t.view_r == t.view_c && !t.same_chunk) ? 2.0 : 1.0; }

  Terms terms_;
  S scale_, ratio_;
  double w_pos_, w_cross_, w_within_;
  Eigen::Index n_;
  const Eigen::Index* ids_;
  bool sums_;
};

/// A base kernel with statistics (the InfoNCE family) and additive terms on
/// the same tiles: the base decides the tiles' scale; the second kernel
/// (MixedKernel) reads them through its ratio.  Both see the raw tile (the
/// base keeps no exponentials in the cache), so pass 2 forms the terms'
/// H in the thread's second tile and adds it to the base's.
template <typename S, typename K1, typename K2>
class SumKernel {
 public:
  SumKernel(const K1& k1, K2 k2) : k1_(k1), k2_(std::move(k2)) { k2_.share_tiles_with_scale(k1_.logit_scale()); }

  bool visits(int vr, int vc) const { return k1_.visits(vr, vc) || k2_.visits(vr, vc); }
  S logit_scale() const { return k1_.logit_scale(); }
  int stat_count() const { return k1_.stat_count(); }
  bool online() const { return k1_.online(); }
  void begin(const RowMatrix<S>& W, CallStats<S>& cs) const {
    k1_.begin(W, cs);
    k2_.begin(W, cs);
  }
  void pass1(TileRef<S> X, const Tile& t, const CallStats<S>& cs, TileOut<S>& out, bool, ThreadSlot<S>& sl) const {
    k2_.pass1(X, t, cs, out, false, sl);  // first: the base may mask X in place
    if (k1_.visits(t.view_r, t.view_c)) k1_.pass1(X, t, cs, out, false, sl);
  }
  double finish(const RowMatrix<S>& W, const RowStats<S>& st, CallStats<S>& cs) const {
    return k1_.finish(W, st, cs) + k2_.finish(W, st, cs);
  }
  bool pass2(TileRef<S> P, const Tile& t, bool, const CallStats<S>& cs, PairSums& sums, ThreadSlot<S>& sl) const {
    const bool second = k2_.visits(t.view_r, t.view_c);
    if (!k1_.visits(t.view_r, t.view_c)) return k2_.pass2(P, t, false, cs, sums, sl);
    if (second) {
      if (sl.h.rows() < t.nr || sl.h.cols() < t.nc) resize_buffer(sl.h, sl.chunk, sl.chunk);
      k2_.tile_gradient(P, t, sl.h.topLeftCorner(t.nr, t.nc), false, sums, sl);
    }
    k1_.pass2(P, t, false, cs, sums, sl);
    if (second) P += sl.h.topLeftCorner(t.nr, t.nc);
    return true;
  }
  void pair_terms(const RowMatrix<S>& W, const CallStats<S>& cs, RowMatrix<S>& dW, Eigen::Index i0,
                  Eigen::Index i1) const {
    k1_.pair_terms(W, cs, dW, i0, i1);
    k2_.pair_terms(W, cs, dW, i0, i1);
  }

 private:
  const K1& k1_;
  K2 k2_;
};

/// The body of a loss that is one additive kernel with no scalar parameter
/// to differentiate (spectral CL, the VRNS penalty): calls as TwoViewLoss
/// with no scalar gradient; CallOptions: instance_ids (cross-view pairs of
/// equal ids are not negatives).  Derived provides kernel(n, negatives, ids).
template <typename Derived, typename Scalar, typename Params>
class AdditiveLoss : public TwoViewLoss<Derived, Scalar>, public LossSettings<Params> {
  friend class TwoViewLoss<Derived, Scalar>;

 public:
  /// Validates `params` and `options`.
  AdditiveLoss(const Params& params, const EngineOptions& options, const char* name)
      : LossSettings<Params>(params, options, name) {}
  /// No scalar gradient.
  static constexpr int kScalarGradients = 0;
  /// These losses have no per-anchor outputs (0).
  Eigen::Index anchors(Eigen::Index) const { return 0; }

 private:
  friend struct EngineCall;
  Accepts accepts() const { return {false, true, false}; }
  bool requires_labels() const { return false; }
  std::vector<double> signature() const { return self().params_signature(); }
  template <typename F>
  double with_kernel(const Batch<Scalar>& batch, F&& f) const {
    const double negatives =
        count_negatives(self().name(), batch.n,
                        batch.ids ? Span<const Eigen::Index>(batch.ids, static_cast<std::size_t>(batch.n))
                                  : Span<const Eigen::Index>());
    return f(self().kernel(batch.n, negatives, batch.ids));
  }
  void scalar_gradients(const CallStats<Scalar>&, Scalar* const*) const {}
  const Derived& self() const { return static_cast<const Derived&>(*this); }
};

}  // namespace detail
}  // namespace contrastive
