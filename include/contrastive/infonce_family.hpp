// contrastive — the InfoNCE-based family (paper notes, Def. 3.1) as one kernel.
// SPDX-License-Identifier: MIT
//
// Anchor u_i (first view) with positive v_i, for one direction:
//
//   l_i = -s_ii/tau + log( [pos] e^{s_ii/tau}
//                          + c1 * sum_{j != i} e^{u_i.v_j / tau}     cross-view negatives
//                          + c2 * sum_{j != i} e^{u_i.u_j / tau} )   within-view negatives
//
// and, for the symmetric loss, the same with the views swapped.  The loss is
// the mean of l over all anchors (n of them one-way, 2n symmetric).
// A weight c enters as the logit offset log c; c = 0 removes the term.
//
//   preset   direction  [pos]  c1  c2   matches
//   InfoNCE  one-way    yes    1   0    info-nce-pytorch InfoNCE (no negative keys)
//   CLIP     symmetric  yes    1   0    open_clip ClipLoss, logit scale 1/tau
//   NTXent   symmetric  yes    1   1    SimCLR; lightly / pytorch-metric-learning NTXentLoss
//   DCL      symmetric  no     1   1    lightly DCLLoss (value can be negative)
//   DHEL     symmetric  no     0   1    DHEL (within-view negatives only)
//
// Gradient with respect to the similarities (G = dL/dK for the logit tiles):
//   G_ij = a_i / tau * (c_ij e^{K_ij/tau - lse_i} - [j = pos(i)]),
// a_i = 1/(number of anchors), c_ij the weight of the pair; the engine turns
// G into dL/dW with two GEMMs and then into dL/dz through the normalisation.
// dL/dtau = -<G, K>/tau = -(1/(2 tau)) sum_r w_r . dL/dw_r (Euler's identity
// for the bilinear similarities), so the temperature gradient is O(n d).
#pragma once

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "api.hpp"
#include "detail/checks.hpp"
#include "detail/math.hpp"
#include "engine.hpp"
#include "two_view_loss.hpp"

namespace contrastive {

/// One direction (anchors from the first view only) or both.
enum class Direction { OneWay, Symmetric };

/// Parameters of the InfoNCE-based family.  Aggregate with defaults equal to
/// NT-Xent at temperature 0.5; check() throws std::invalid_argument naming
/// the field.
struct InfoNCEFamilyParams {
  /// tau > 0: logits are cosine similarities divided by tau.
  double temperature = 0.5;
  /// c1 >= 0: weight of cross-view negatives (u_i, v_j), j != i.
  double cross_weight = 1.0;
  /// c2 >= 0: weight of within-view negatives (u_i, u_j), j != i.
  double within_weight = 1.0;
  /// true: log(1 + x) form (positive in the denominator); false: decoupled log(x).
  bool positive_in_denominator = true;
  /// OneWay: anchors are the first view; Symmetric: mean over both views as anchors.
  Direction direction = Direction::Symmetric;

  /// Throws std::invalid_argument naming the first invalid field.
  void check(const char* where = "contrastive::InfoNCEFamilyParams") const {
    detail::check_positive_finite(where, "temperature", temperature);
    detail::check_weight(where, "cross_weight", cross_weight);
    detail::check_weight(where, "within_weight", within_weight);
    if (cross_weight == 0.0 && within_weight == 0.0)
      detail::fail_field(where, "cross_weight",
                         "and field 'within_weight' are both 0: the loss would have no negatives");
  }
};

namespace detail {

/// The family's tile kernel (step 3 of the engine).
template <typename S>
class InfoNCEKernel {
 public:
  /// `coef` (optional): per-anchor coefficients a_r (anchor_coefficients);
  /// `losses` (optional): receives l_r of every anchor in finish().
  InfoNCEKernel(const InfoNCEFamilyParams& p, Eigen::Index n, const Eigen::Index* ids = nullptr,
                const ColArray<S>* coef = nullptr, S* losses = nullptr)
      : n_(n),
        ids_(ids),
        coef_(coef),
        losses_(losses),
        inv_tau_(static_cast<S>(1.0 / p.temperature)),
        log_c1_(log_weight<S>(p.cross_weight)),
        log_c2_(log_weight<S>(p.within_weight)),
        c1_(p.cross_weight > 0.0),
        c2_(p.within_weight > 0.0),
        pos_(p.positive_in_denominator),
        sym_(p.direction == Direction::Symmetric) {
    const double anchors = sym_ ? 2.0 * static_cast<double>(n) : static_cast<double>(n);
    a_[0] = 1.0 / anchors;
    a_[1] = sym_ ? a_[0] : 0.0;
  }

  bool visits(int vr, int vc) const {
    if (vr != vc) return c1_;
    return c2_ && is_anchor(vr);
  }
  S logit_scale() const { return inv_tau_; }

  void prepare(TileRef<S> X, const Tile& t) const {
    // Self-similarities are never terms; positives are added per pair (O(n d));
    // with instance ids, no pair of equal ids is a negative.
    const S ninf = -std::numeric_limits<S>::infinity();
    if (ids_) {
      for (Eigen::Index j = 0; j < t.nc; ++j) mask_equal_ids(X.col(j), ids_, n_, t, j, ninf);
    } else if (t.same_chunk) {
      X.matrix().diagonal().setConstant(ninf);
    }
  }

  void reduce(const TileRef<S>& X, const Tile& t, ThreadSlot<S>& sl) const {
    const S lw = block_log_weight(t);
    if (is_anchor(t.view_r)) reduce_rows<S>(X, lw, sl.m, sl.s, t.r0, sl.vr);
    if (is_anchor(t.view_c) && !t.diagonal()) reduce_cols<S>(X, lw, sl.m, sl.s, t.c0);
  }

  /// Turns the negatives' (m, s) into stats.lse (over all terms) and
  /// stats.lse_neg (over the negatives only) and returns the loss.  The positive enters in closed
  /// form, l_r = softplus(lse_neg - s_rr/tau) (or lse_neg - s_rr/tau when
  /// decoupled), so a well-separated anchor keeps its tiny loss and gradient
  /// to full relative precision instead of cancelling 1 - p to zero.
  double finish(const RowMatrix<S>& W, const ColArray<S>& m, const ColArray<S>& s, CallStats<S>& stats) const {
    const Eigen::Index n2 = W.rows();
    stats.lse.setZero(n2);
    stats.lse_neg.setZero(n2);
    double value = 0.0;
    for (Eigen::Index r = 0; r < n2; ++r) {
      const int view = r < n_ ? 0 : 1;
      if (!is_anchor(view)) continue;
      const S sp = inv_tau_ * W.row(r).dot(W.row(partner(r)));
      const S neg = m[r] + std::log(s[r]);
      stats.lse_neg[r] = neg;
      const S term = pos_ ? softplus(neg - sp) : neg - sp;
      stats.lse[r] = sp + term;
      if (losses_) losses_[r] = term;
      value += anchor_coef(r) * static_cast<double>(term);
    }
    return value;
  }

  bool gradient(const TileRef<S>& X, const Tile& t, const CallStats<S>& stats, TileRef<S> H, ThreadSlot<S>& sl) const {
    const ColArray<S>& lse = stats.lse;
    const S lw = block_log_weight(t);
    const bool rows = is_anchor(t.view_r), cols = is_anchor(t.view_c) && !t.diagonal();
    if (!rows && !cols) return false;
    // Column by column: contiguous, vectorised exp (see reduce_rows).
    auto li = sl.vr.head(t.nr);
    li = lse.segment(t.r0, t.nr) - lw;
    // Anchor coefficients a / tau: down the rows (per anchor, or the view's
    // constant) and one per column.
    auto ci = sl.vr.segment(t.nr, t.nr);
    if (rows && coef_) ci = inv_tau_ * coef_->segment(t.r0, t.nr);
    else if (rows) ci.setConstant(static_cast<S>(a_[t.view_r]) * inv_tau_);
    for (Eigen::Index j = 0; j < t.nc; ++j) {
      const S lj = lse[t.c0 + j] - lw;
      const S cj = !cols ? S(0) : inv_tau_ * (coef_ ? (*coef_)[t.c0 + j] : static_cast<S>(a_[t.view_c]));
      if (rows && cols)
        H.col(j) = ci * (X.col(j) - li).exp() + cj * (X.col(j) - lj).exp();
      else if (rows)
        H.col(j) = ci * (X.col(j) - li).exp();
      else
        H.col(j) = cj * (X.col(j) - lj).exp();
    }
    if (t.diagonal()) {
      // dL/dK of a symmetric block: G + G^T (in place through the square's triangles).
      for (Eigen::Index j = 0; j < t.nc; ++j) {
        H(j, j) *= S(2);
        for (Eigen::Index i = j + 1; i < t.nr; ++i) H(i, j) = H(j, i) = H(i, j) + H(j, i);
      }
    }
    return true;
  }

  /// The positive pair of every anchor: G_{r,p} = -a/tau (1 - p_pos), with
  /// 1 - p_pos = sigmoid(lse_neg - s_rr/tau) (1 when decoupled).
  void pair_terms(const RowMatrix<S>& W, const CallStats<S>& stats, RowMatrix<S>& dW) const {
    const Eigen::Index n2 = W.rows();
    for (Eigen::Index r = 0; r < n2; ++r) {
      const int view = r < n_ ? 0 : 1;
      if (!is_anchor(view)) continue;
      const Eigen::Index p = partner(r);
      const S sp = inv_tau_ * W.row(r).dot(W.row(p));
      const S miss = pos_ ? sigmoid(stats.lse_neg[r] - sp) : S(1);
      const S g = -static_cast<S>(anchor_coef(r)) * inv_tau_ * miss;
      dW.row(r) += g * W.row(p);
      dW.row(p) += g * W.row(r);
    }
  }

 private:
  bool is_anchor(int view) const { return view == 0 || sym_; }
  double anchor_coef(Eigen::Index r) const {
    return coef_ ? static_cast<double>((*coef_)[r]) : a_[r < n_ ? 0 : 1];
  }
  S block_log_weight(const Tile& t) const { return t.view_r == t.view_c ? log_c2_ : log_c1_; }
  Eigen::Index partner(Eigen::Index r) const { return r < n_ ? r + n_ : r - n_; }

  Eigen::Index n_;
  const Eigen::Index* ids_;
  const ColArray<S>* coef_;
  S* losses_;
  S inv_tau_, log_c1_, log_c2_;
  bool c1_, c2_, pos_, sym_;
  double a_[2];
};

}  // namespace detail

/// A loss of the InfoNCE-based family.  Rows of the inputs are samples; row i
/// of `za` and row i of `zb` are the two views of instance i.  Inputs are any
/// dense Eigen expression (Matrix, Map, Block; row- or column-major; any real
/// scalar, cast to Scalar).  Embeddings are L2-normalised inside the loss with
/// the norm clamped at 1e-12; gradients are with respect to the raw inputs.
///
/// Calls (the library's one convention, see api.hpp):
///
///     value(za, zb, [ws,] call = {})
///     value_and_grad(za, zb, grad_a, grad_b, &grad_temperature, ws, call = {})
///     value_and_grad(za, zb, call = {})  -> Result (grad_a, grad_b, grad_temperature, per_anchor)
///
/// CallOptions: reduction, anchor_weights, per_anchor (anchors r < n are the
/// rows of za, n + i the rows of zb for symmetric members), instance_ids.
template <typename Scalar>
class InfoNCEFamily : public TwoViewLoss<InfoNCEFamily<Scalar>, Scalar>, public LossSettings<InfoNCEFamilyParams> {
  static_assert(std::is_floating_point<Scalar>::value, "contrastive: Scalar must be float or double");
  friend class TwoViewLoss<InfoNCEFamily<Scalar>, Scalar>;

 public:
  /// One scalar gradient: dL/dtau (for a learned logit scale t = 1/tau,
  /// dL/dt = -tau^2 dL/dtau).
  static constexpr int kScalarGradients = 1;

  /// Validates `params` and `options` (std::invalid_argument naming the field).
  explicit InfoNCEFamily(const InfoNCEFamilyParams& params, const EngineOptions& options = {},
                         const char* name = "contrastive::InfoNCEFamily")
      : LossSettings<InfoNCEFamilyParams>(params, options, name) {}

  /// Changes the temperature (e.g. a learned one); validated as in check().
  void set_temperature(double tau) {
    detail::check_positive_finite(name_, "temperature", tau);
    params_.temperature = tau;
  }
  /// Number of anchors: n one-way, 2n symmetric.
  Eigen::Index anchors(Eigen::Index n) const { return params_.direction == Direction::Symmetric ? 2 * n : n; }

 private:
  template <typename DA, typename DB>
  Scalar evaluate(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb, detail::Buffers<Scalar>& b,
                  const CallOptions<Scalar>& call) const {
    const auto k = kernel(za, zb, b, call);
    const auto v = static_cast<Scalar>(detail::Engine<Scalar>::evaluate(k, b, options_, za, zb, name_));
    detail::publish_per_anchor(call, b.losses);
    return v;
  }

  template <typename DA, typename DB, typename GA, typename GB>
  Scalar differentiate(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                       const Eigen::MatrixBase<GA>& grad_a, const Eigen::MatrixBase<GB>& grad_b, Scalar* const* g,
                       detail::Buffers<Scalar>& b, const CallOptions<Scalar>& call) const {
    const auto k = kernel(za, zb, b, call);
    const auto r = detail::Engine<Scalar>::evaluate_grad(k, b, options_, za, zb, grad_a, grad_b, name_);
    if (g[0]) *g[0] = static_cast<Scalar>(detail::temperature_gradient(r.euler, params_.temperature));
    detail::publish_per_anchor(call, b.losses);
    return static_cast<Scalar>(r.value);
  }

  // Validates the call (before anything is written) and builds the kernel;
  // per-anchor coefficients and losses live in the workspace.
  template <typename DA, typename DB>
  detail::InfoNCEKernel<Scalar> kernel(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                                       detail::Buffers<Scalar>& b, const CallOptions<Scalar>& call) const {
    detail::check_call(name_, call, detail::Accepts{true, true, false});
    detail::check_views(name_, za, zb);
    const Eigen::Index* ids = detail::checked_ids(name_, za, zb, call.instance_ids);
    const bool per = call.reduction != Reduction::Mean || call.anchor_weights.given() || call.per_anchor.given();
    if (!per) return detail::InfoNCEKernel<Scalar>(params_, za.rows(), ids);
    const Eigen::Index a = anchors(za.rows());
    detail::anchor_coefficients(name_, call, a, b.coef);
    b.losses.assign(static_cast<std::size_t>(a), Scalar(0));
    return detail::InfoNCEKernel<Scalar>(params_, za.rows(), ids, &b.coef, b.losses.data());
  }
};

// ---- presets ---------------------------------------------------------------

/// The named members of the family (see the table at the top of this header).
enum class PresetKind { InfoNCE, CLIP, NTXent, DCL, DHEL };

namespace detail {
struct PresetRow {
  const char* name;
  double default_temperature, cross_weight, within_weight;
  bool positive_in_denominator;
  Direction direction;
};
/// The one table of the presets: name, default tau, c1, c2, [pos], direction.
constexpr PresetRow preset_row(PresetKind k) {
  switch (k) {
    case PresetKind::InfoNCE: return {"contrastive::InfoNCE", 0.1, 1.0, 0.0, true, Direction::OneWay};
    case PresetKind::CLIP: return {"contrastive::CLIP", 0.07, 1.0, 0.0, true, Direction::Symmetric};
    case PresetKind::NTXent: return {"contrastive::NTXent", 0.5, 1.0, 1.0, true, Direction::Symmetric};
    case PresetKind::DCL: return {"contrastive::DCL", 0.1, 1.0, 1.0, false, Direction::Symmetric};
    case PresetKind::DHEL: break;
  }
  return {"contrastive::DHEL", 0.1, 0.0, 1.0, false, Direction::Symmetric};
}
}  // namespace detail

/// A preset of the family: the InfoNCEFamily with the parameters of its row
/// of the table and temperature tau (default: the row's).
template <typename Scalar, PresetKind Kind>
class Preset : public InfoNCEFamily<Scalar> {
 public:
  /// Validates tau (finite, > 0) and the options.
  explicit Preset(double temperature = detail::preset_row(Kind).default_temperature, const EngineOptions& options = {})
      : InfoNCEFamily<Scalar>(row_params(temperature), options, detail::preset_row(Kind).name) {}

 private:
  static InfoNCEFamilyParams row_params(double tau) {
    const detail::PresetRow r = detail::preset_row(Kind);
    return InfoNCEFamilyParams{tau, r.cross_weight, r.within_weight, r.positive_in_denominator, r.direction};
  }
};

/// One-directional InfoNCE (CPC / MoCo form; info-nce-pytorch's InfoNCE without
/// negative keys): queries za, positive keys zb, the other keys as negatives,
/// mean over the n queries.  Default tau = 0.1.
template <typename Scalar>
using InfoNCE = Preset<Scalar, PresetKind::InfoNCE>;

/// Symmetric InfoNCE of CLIP (open_clip ClipLoss with logit scale 1/tau): the
/// mean of the image->text and text->image cross entropies.  Default tau = 0.07.
template <typename Scalar>
using CLIP = Preset<Scalar, PresetKind::CLIP>;

/// NT-Xent of SimCLR: every one of the 2n samples is an anchor, with its other
/// view as positive and the 2n-2 others as negatives.  Default tau = 0.5.
template <typename Scalar>
using NTXent = Preset<Scalar, PresetKind::NTXent>;

/// Decoupled contrastive loss: NT-Xent with the positive removed from the
/// denominator (one log-sum-exp over the 2n-2 negatives).  Default tau = 0.1.
template <typename Scalar>
using DCL = Preset<Scalar, PresetKind::DCL>;

/// DHEL: decoupled, within-view negatives only (n-1 per anchor).  Default tau = 0.1.
template <typename Scalar>
using DHEL = Preset<Scalar, PresetKind::DHEL>;

}  // namespace contrastive
