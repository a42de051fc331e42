// contrastive — the tile kernel of the independently additive family
// (internal; include additive_family.hpp or combined.hpp).
// SPDX-License-Identifier: MIT
#pragma once

#include <cmath>
#include <limits>

#include <Eigen/Core>

#include "../engine.hpp"

namespace contrastive {
namespace detail {

/// SigLIP's pair terms on x = t s with open_clip's bias b (logits t s + b):
/// a positive costs softplus(-(x + b)), a negative softplus(x + b).
template <typename S>
struct SigmoidTerms {
  S bias;
  template <typename A>
  auto neg(const A& x) const {
    const auto y = x + bias;
    return y.max(S(0)) + (-y.abs()).exp().log1p();
  }
  template <typename A>
  auto dneg(const A& x) const {
    return (S(1) + (-(x + bias)).exp()).inverse();
  }
  S pos(S x) const {
    const S y = -(x + bias);
    return (y > S(0) ? y : S(0)) + std::log1p(std::exp(-std::abs(y)));
  }
  S dpos(S x) const { return -S(1) / (S(1) + std::exp(x + bias)); }
};

/// Spectral contrastive loss: a positive costs -x, a negative x^2.
template <typename S>
struct SpectralTerms {
  template <typename A>
  auto neg(const A& x) const {
    return x.square();
  }
  template <typename A>
  auto dneg(const A& x) const {
    return S(2) * x;
  }
  S pos(S x) const { return -x; }
  S dpos(S) const { return S(-1); }
};

/// The variance penalty with p = 2: a negative costs (x - target)^2.
template <typename S>
struct SquareTerms {
  S target;
  template <typename A>
  auto neg(const A& x) const {
    return (x - target).square();
  }
  template <typename A>
  auto dneg(const A& x) const {
    return S(2) * (x - target);
  }
  S pos(S) const { return S(0); }
  S dpos(S) const { return S(0); }
};

/// The variance penalty with any p >= 1: a negative costs |x - target|^p.
template <typename S>
struct PowerTerms {
  S target;
  S power;
  template <typename A>
  auto neg(const A& x) const {
    return (x - target).abs().pow(power);
  }
  template <typename A>
  auto dneg(const A& x) const {
    const auto y = x - target;
    return power * y.abs().pow(power - S(1)) * y.sign();
  }
  S pos(S) const { return S(0); }
  S dpos(S) const { return S(0); }
};

/// What a kernel sums into the slot's `aux` during the gradient pass.
enum class AuxSum {
  None,
  TermDerivative,     ///< sum over pairs of w dterm/dx (= dL/d bias for SigLIP)
  TermDerivativeDotX  ///< sum over pairs of w dterm/dx * x (= <dL/dK, K>)
};

/// L = sum_i w_pos pos(x_ii) + w_cross sum_{i != j} neg(x(u_i.v_j))
///       + w_within sum_{i != j} [neg(x(u_i.u_j)) + neg(x(v_i.v_j))],
/// x = scale * s.  With instance ids, pairs of equal ids are not negatives.
/// `ratio` converts the engine's tile (engine_scale * K) to this kernel's
/// x (scale * K) when it shares tiles with another kernel.
template <typename S, typename Terms>
class AdditiveKernel {
 public:
  AdditiveKernel(Terms terms, S scale, double w_pos, double w_cross, double w_within, Eigen::Index n,
                 const Eigen::Index* ids = nullptr, AuxSum aux = AuxSum::None)
      : terms_(terms), scale_(scale), ratio_(1), w_pos_(w_pos), w_cross_(w_cross), w_within_(w_within), n_(n),
        ids_(ids), aux_(aux) {}

  void share_tiles_with_scale(S engine_scale) { ratio_ = scale_ / engine_scale; }

  bool visits(int vr, int vc) const { return vr != vc ? w_cross_ > 0.0 : w_within_ > 0.0; }
  S logit_scale() const { return scale_; }
  void prepare(TileRef<S>, const Tile&) const {}

  void reduce(const TileRef<S>& X, const Tile& t, ThreadSlot<S>& sl) const {
    auto buf = sl.vr.head(t.nr);
    double sum = 0;
    for (Eigen::Index j = 0; j < t.nc; ++j) {
      buf = terms_.neg(ratio_ * X.col(j));
      mask(buf, t, j);
      sum += static_cast<double>(buf.sum());
    }
    sl.value += multiplicity(t) * weight(t) * sum;
  }

  /// Positive pairs; stat[0] = sum_i w_pos dpos(x_ii) (dL/dbias of the
  /// positives), stat[1] = sum_i w_pos dpos(x_ii) x_ii (their <dL/dK, K>).
  double finish(const RowMatrix<S>& W, ColArray<S>&, ColArray<S>&, ColArray<S>& stat) const {
    stat.setZero(2);
    if (w_pos_ == 0.0) return 0.0;
    double value = 0, dsum = 0, dxsum = 0;
    for (Eigen::Index i = 0; i < n_; ++i) {
      const S x = scale_ * W.row(i).dot(W.row(i + n_));
      value += static_cast<double>(terms_.pos(x));
      dsum += static_cast<double>(terms_.dpos(x));
      dxsum += static_cast<double>(terms_.dpos(x) * x);
    }
    stat[0] = static_cast<S>(w_pos_ * dsum);
    stat[1] = static_cast<S>(w_pos_ * dxsum);
    return w_pos_ * value;
  }

  bool gradient(const TileRef<S>& X, const Tile& t, const ColArray<S>&, TileRef<S> H, ThreadSlot<S>& sl) const {
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
      d = terms_.dneg(x);
      mask(d, t, j);
      if (aux_ == AuxSum::TermDerivative) aux += static_cast<double>(d.sum());
      if (aux_ == AuxSum::TermDerivativeDotX) aux += static_cast<double>((d * x).sum());
      if (accumulate) H.col(j) += coef * d;
      else H.col(j) = coef * d;
    }
    sl.aux += multiplicity(t) * static_cast<double>(w) * aux;
  }

  /// Positive pairs: dL/dK_{i, n+i} = w_pos scale dpos(x_ii).
  void pair_terms(const RowMatrix<S>& W, const ColArray<S>&, RowMatrix<S>& dW) const {
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
  AuxSum aux_;
};

/// Two kernels on the same tiles: the first decides the tiles' scale and
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
  double finish(const RowMatrix<S>& W, ColArray<S>& m, ColArray<S>& s, ColArray<S>& stat) const {
    return k1_.finish(W, m, s, stat) + k2_.finish(W, m, s, stat2_);
  }
  bool gradient(const TileRef<S>& X, const Tile& t, const ColArray<S>& stat, TileRef<S> H, ThreadSlot<S>& sl) const {
    bool any = k1_.visits(t.view_r, t.view_c) && k1_.gradient(X, t, stat, H, sl);
    if (k2_.visits(t.view_r, t.view_c)) {
      k2_.add_gradient(X, t, H, sl, any);
      any = true;
    }
    return any;
  }
  void pair_terms(const RowMatrix<S>& W, const ColArray<S>& stat, RowMatrix<S>& dW) const {
    k1_.pair_terms(W, stat, dW);
    k2_.pair_terms(W, stat2_, dW);
  }
  const K2& second() const { return k2_; }

 private:
  const K1& k1_;
  K2 k2_;
  mutable ColArray<S> stat2_;
};

}  // namespace detail
}  // namespace contrastive
