// contrastive — the tile kernel of the independently additive family
// (internal; the losses that use it include it).
// SPDX-License-Identifier: MIT
#pragma once

#include <cmath>
#include <limits>

#include <Eigen/Core>

#include "../api.hpp"
#include "../engine.hpp"
#include "checks.hpp"
#include "../two_view_loss.hpp"

namespace contrastive {
namespace detail {

/// What a kernel sums over its pairs in the gradient pass (PairSums).
enum class TermSums {
  None,
  Derivative,    ///< term_derivative: sum over pairs of w dterm/dx (= dL/d bias for SigLIP)
  DerivativeDot  ///< term_dot: sum over pairs of w dterm/dx * x (= the terms' <dL/dK, K>)
};

// A Terms type (the math of one additive loss, in its own header) provides
//   template <class A, class O> void neg(const A& x, O&& out) const;   out = psi(x), element-wise
//   template <class A, class O> void dneg(const A& x, O&& out) const;  out = psi'(x)
//   S pos(S x) const;  S dpos(S x) const;                              phi of a positive, and phi'

/// L = sum_i w_pos pos(x_ii) + w_cross sum_{i != j} neg(x(u_i.v_j))
///       + w_within sum_{i != j} [neg(x(u_i.u_j)) + neg(x(v_i.v_j))],
/// x = scale * s.  With instance ids, pairs of equal ids are not negatives.
/// `ratio` converts the engine's tile (engine_scale * K) to this kernel's
/// x (scale * K) when it shares tiles with another kernel.
template <typename S, typename Terms>
class AdditiveKernel {
 public:
  AdditiveKernel(Terms terms, S scale, double w_pos, double w_cross, double w_within, Eigen::Index n,
                 const Eigen::Index* ids = nullptr, TermSums sums = TermSums::None)
      : terms_(terms), scale_(scale), ratio_(1), w_pos_(w_pos), w_cross_(w_cross), w_within_(w_within), n_(n),
        ids_(ids), sums_(sums) {}

  void share_tiles_with_scale(S engine_scale) { ratio_ = scale_ / engine_scale; }

  bool visits(int vr, int vc) const { return vr != vc ? w_cross_ > 0.0 : w_within_ > 0.0; }
  S logit_scale() const { return scale_; }
  void prepare(TileRef<S>, const Tile&) const {}

  void reduce(const TileRef<S>& X, const Tile& t, ThreadSlot<S>& sl) const {
    auto buf = sl.vr.head(t.nr);
    double sum = 0;
    for (Eigen::Index j = 0; j < t.nc; ++j) {
      terms_.neg(ratio_ * X.col(j), buf);
      mask(buf, t, j);
      sum += static_cast<double>(buf.sum());
    }
    sl.sums.value += multiplicity(t) * weight(t) * sum;
  }

  /// Positive pairs: their value, and their shares of the pair sums
  /// (sum_i w_pos dpos(x_ii) to term_derivative, sum_i w_pos dpos(x_ii) x_ii
  /// to term_dot).
  double finish(const RowMatrix<S>& W, const ColArray<S>&, const ColArray<S>&, CallStats<S>& stats) const {
    if (w_pos_ == 0.0) return 0.0;
    double value = 0, dsum = 0, dxsum = 0;
    for (Eigen::Index i = 0; i < n_; ++i) {
      const S x = scale_ * W.row(i).dot(W.row(i + n_));
      value += static_cast<double>(terms_.pos(x));
      dsum += static_cast<double>(terms_.dpos(x));
      dxsum += static_cast<double>(terms_.dpos(x) * x);
    }
    if (sums_ == TermSums::Derivative) stats.sums.term_derivative += w_pos_ * dsum;
    if (sums_ == TermSums::DerivativeDot) stats.sums.term_dot += w_pos_ * dxsum;
    return w_pos_ * value;
  }

  bool gradient(const TileRef<S>& X, const Tile& t, const CallStats<S>&, TileRef<S> H, ThreadSlot<S>& sl) const {
    add_gradient(X, t, H, sl, false);
    return true;
  }

  /// H (+)= dL/dK of this tile, column by column.
  void add_gradient(const TileRef<S>& X, const Tile& t, TileRef<S> H, ThreadSlot<S>& sl, bool accumulate) const {
    const S w = static_cast<S>(weight(t));
    // Within-view tiles stand for both orders of their pairs (G + G^T).
    const S coef = (t.view_r == t.view_c ? S(2) : S(1)) * w * scale_;
    auto d = sl.vr.head(t.nr);
    auto x = sl.vr.segment(t.nr, t.nr);
    double aux = 0;
    for (Eigen::Index j = 0; j < t.nc; ++j) {
      x = ratio_ * X.col(j);
      mask(x, t, j);  // masked entries: x = 0 (finite), their derivative is zeroed below
      terms_.dneg(x, d);
      mask(d, t, j);
      if (sums_ == TermSums::Derivative) aux += static_cast<double>(d.sum());
      if (sums_ == TermSums::DerivativeDot) aux += static_cast<double>((d * x).sum());
      if (accumulate) H.col(j) += coef * d;
      else H.col(j) = coef * d;
    }
    const double total = multiplicity(t) * static_cast<double>(w) * aux;
    if (sums_ == TermSums::Derivative) sl.sums.term_derivative += total;
    if (sums_ == TermSums::DerivativeDot) sl.sums.term_dot += total;
  }

  /// Positive pairs: dL/dK_{i, n+i} = w_pos scale dpos(x_ii).
  void pair_terms(const RowMatrix<S>& W, const CallStats<S>&, RowMatrix<S>& dW) const {
    if (w_pos_ == 0.0) return;
    for (Eigen::Index i = 0; i < n_; ++i) {
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

  /// Zeroes the entries of column j that are not negatives: the tile's
  /// diagonal (self pairs, positives) or, with ids, every pair of equal ids.
  template <typename V>
  void mask(V&& v, const Tile& t, Eigen::Index j) const {
    if (ids_) {
      mask_equal_ids(v, ids_, n_, t, j, S(0));
    } else if (t.same_chunk) {
      v[j] = S(0);
    }
  }

  Terms terms_;
  S scale_, ratio_;
  double w_pos_, w_cross_, w_within_;
  Eigen::Index n_;
  const Eigen::Index* ids_;
  TermSums sums_;
};

/// Two kernels on the same tiles (a base loss's tiles read by additive terms,
/// so K1's pairs stay owned by K1 and K2 only adds): the first decides the tiles' scale and
/// masks; the second (additive: AdditiveKernel or MixedKernel) reads them
/// through its ratio.
template <typename S, typename K1, typename K2>
class SumKernel {
 public:
  SumKernel(const K1& k1, K2 k2) : k1_(k1), k2_(k2) { k2_.share_tiles_with_scale(k1_.logit_scale()); }

  bool visits(int vr, int vc) const { return k1_.visits(vr, vc) || k2_.visits(vr, vc); }
  S logit_scale() const { return k1_.logit_scale(); }
  void prepare(TileRef<S> X, const Tile& t) const {
    if (k1_.visits(t.view_r, t.view_c)) k1_.prepare(X, t);
  }
  void reduce(const TileRef<S>& X, const Tile& t, ThreadSlot<S>& sl) const {
    if (k1_.visits(t.view_r, t.view_c)) k1_.reduce(X, t, sl);
    if (k2_.visits(t.view_r, t.view_c)) k2_.reduce(X, t, sl);
  }
  double finish(const RowMatrix<S>& W, const ColArray<S>& m, const ColArray<S>& s, CallStats<S>& stats) const {
    return k1_.finish(W, m, s, stats) + k2_.finish(W, m, s, stats);
  }
  bool gradient(const TileRef<S>& X, const Tile& t, const CallStats<S>& stats, TileRef<S> H, ThreadSlot<S>& sl) const {
    bool any = k1_.visits(t.view_r, t.view_c) && k1_.gradient(X, t, stats, H, sl);
    if (k2_.visits(t.view_r, t.view_c)) {
      k2_.add_gradient(X, t, H, sl, any);
      any = true;
    }
    return any;
  }
  void pair_terms(const RowMatrix<S>& W, const CallStats<S>& stats, RowMatrix<S>& dW) const {
    k1_.pair_terms(W, stats, dW);
    k2_.pair_terms(W, stats, dW);
  }
  const K2& second() const { return k2_; }

 private:
  static_assert(is_additive_kernel_v<K2, S>, "contrastive: the second kernel of a SumKernel must be additive");
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
  template <typename DA, typename DB>
  Scalar evaluate(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb, Buffers<Scalar>& b,
                  const CallOptions<Scalar>& call) const {
    return static_cast<Scalar>(Engine<Scalar>::evaluate(make(za, zb, call), b, self().options(), za, zb, self().name()));
  }

  template <typename DA, typename DB, typename GA, typename GB>
  Scalar differentiate(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                       const Eigen::MatrixBase<GA>& grad_a, const Eigen::MatrixBase<GB>& grad_b, Scalar* const*,
                       Buffers<Scalar>& b, const CallOptions<Scalar>& call) const {
    const auto k = make(za, zb, call);
    return static_cast<Scalar>(
        Engine<Scalar>::evaluate_grad(k, b, self().options(), za, zb, grad_a, grad_b, self().name()).value);
  }

  const Derived& self() const { return static_cast<const Derived&>(*this); }
  template <typename DA, typename DB>
  auto make(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb, const CallOptions<Scalar>& call) const {
    check_call(self().name(), call, Accepts{false, true, false});
    check_views(self().name(), za, zb);
    const double negatives = count_negatives(self().name(), za.rows(), call.instance_ids);
    return self().kernel(za.rows(), negatives, call.instance_ids.given() ? call.instance_ids.data() : nullptr);
  }
};

}  // namespace detail
}  // namespace contrastive
