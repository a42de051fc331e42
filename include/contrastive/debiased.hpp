// contrastive — the debiased contrastive loss (Chuang et al., NeurIPS 2020)
// and hard-negative weighting (Robinson et al., ICLR 2021), as their
// reference code computes them (tests/data/REFERENCE_LOSSES.md, sections 1-2).
// SPDX-License-Identifier: MIT
//
// Anchor r of a member of the InfoNCE family (NT-Xent: 2n anchors, N = 2n - 2
// negatives; CLIP: 2n anchors, InfoNCE: n, N = n - 1; with instance ids N_r
// counts the anchor's negatives), positive logit x_p, negatives x_j:
//
//   R_r  = N sum_j w_j e^{x_j},   w_j = e^{beta x_j} / sum_k e^{beta x_k}   (beta = 0: R_r = sum_j e^{x_j})
//   Ng_r = max( (R_r - tau_plus N e^{x_p}) / (1 - tau_plus),  N e^{-1/tau} )
//   l_r  = log(e^{x_p} + Ng_r) - x_p,       L = mean over the anchors,
//
// nothing detached (the importance weights carry gradient, as in their
// code); where the floor is active the negatives get no gradient and the
// floor's dependence on tau is differentiated.  tau_plus = 0 and beta = 0
// give the member itself exactly.
//
// On the engine: logits lie in [-1/tau, 1/tau], so with the fixed shift
// sigma = 1/tau every a_j = e^{(1 + beta)(x_j - sigma)} and b_j =
// e^{beta (x_j - sigma)} is a normal number when 2 (1 + beta) / tau fits the
// exponent range (float: (1 + beta) / tau <= 32; checked on construction).
// Pass 1 sums A = sum a, B = sum b and their sums centred on x_p (dL/dtau);
// pass 2 forms H_ij = a_ij (alpha_i + alpha_j) - b_ij (gamma_i + gamma_j)
// (beta = 0: one exp per element and the tile cached as a, as the family).
#pragma once

#include <cmath>
#include <limits>
#include <vector>

#include <Eigen/Core>

#include "api.hpp"
#include "detail/checks.hpp"
#include "detail/exp.hpp"
#include "detail/math.hpp"
#include "engine.hpp"
#include "infonce_family.hpp"
#include "two_view_loss.hpp"

namespace contrastive {

/// Parameters of Debiased; check() throws std::invalid_argument naming the
/// field.
struct DebiasedParams {
  /// The member of the family (positive in the denominator, weights 0 or 1),
  /// e.g. `NTXent<S>(0.5).params()`.  Default: NT-Xent at tau = 0.5 (Chuang
  /// et al.'s t).
  InfoNCEFamilyParams family{0.5, 1.0, 1.0, true, Direction::Symmetric, 0.0};
  /// tau+ in [0, 1): the class prior, the probability that a negative shares
  /// the anchor's class (1 / number of classes).  Default 0.1.
  double tau_plus = 0.1;
  /// beta in [0, 64]: concentration of the importance weights on hard
  /// negatives (0: none, the debiased loss alone).  It multiplies the logit
  /// x = s / tau, as Robinson et al.'s code does.
  double beta = 0.0;

  /// Throws std::invalid_argument naming the first invalid field.
  void check(const char* where = "contrastive::DebiasedParams") const {
    family.check(where);
    if (!family.positive_in_denominator)
      detail::fail_field(where, "family.positive_in_denominator", "must be true (the positive is in the loss's denominator)");
    if (family.label_smoothing != 0.0) detail::fail_field(where, "family.label_smoothing", "must be 0 here");
    const auto unit = [](double c) { return c == 0.0 || c == 1.0; };
    if (!unit(family.cross_weight))
      detail::fail_field(where, "family.cross_weight", "must be 0 or 1 (N counts the negatives)");
    if (!unit(family.within_weight))
      detail::fail_field(where, "family.within_weight", "must be 0 or 1 (N counts the negatives)");
    if (!(tau_plus >= 0.0 && tau_plus < 1.0)) detail::fail_field(where, "tau_plus", "must be in [0, 1) " + detail::got(tau_plus));
    if (!(beta >= 0.0 && beta <= 64.0)) detail::fail_field(where, "beta", "must be in [0, 64] " + detail::got(beta));
  }
};

namespace detail {

template <typename S>
class DebiasedKernel : public InfoNCEKernel<S> {
  using Base = InfoNCEKernel<S>;
  using Base::anchor_coef;
  using Base::is_anchor;
  using Base::partner;

 public:
  DebiasedKernel(const DebiasedParams& p, Eigen::Index n, const Eigen::Index* ids, const ColArray<S>* coef, S* losses,
                 bool want_dtau)
      : Base(p.family, n, ids, coef, losses, want_dtau), ids_(ids), tau_plus_(p.tau_plus), beta_(p.beta) {
    if (ids) {
      std::map<Eigen::Index, double> count;
      for (Eigen::Index i = 0; i < n; ++i) count[ids[i]] += 1.0;
      same_.resize(static_cast<std::size_t>(n));
      for (Eigen::Index i = 0; i < n; ++i) same_[static_cast<std::size_t>(i)] = count[ids[i]];
    }
  }

  int stat_count() const { return 4; }  // A, B and their centred sums
  bool online() const { return false; }

  void begin(const RowMatrix<S>& W, CallStats<S>& cs) const {
    Base::begin(W, cs);
    zero_buffer(cs.alpha2, W.rows());
  }

  void pass1(TileRef<S> X, const Tile& t, const CallStats<S>& cs, TileOut<S>& out, bool keep, ThreadSlot<S>& sl) const {
    const bool rows = is_anchor(t.view_r), cols = is_anchor(t.view_c) && !t.diagonal();
    out.has_rows = rows;
    out.has_cols = cols;
    if (rows) out.rows.setZero();
    if (cols) out.cols.setZero();
    const S sigma = this->inverse_temperature(), b1 = static_cast<S>(1.0 + beta_), bb = static_cast<S>(beta_);
    const auto xp = cs.pos.segment(t.r0, t.nr);
    auto a = sl.v.head(t.nr);
    auto b = sl.v.segment(t.nr, t.nr);
    for (Eigen::Index j = 0; j < t.nc; ++j) {
      auto x = X.col(j);
      a = exp_normal(b1 * (x - sigma));
      if (beta_ > 0) b = exp_normal(bb * (x - sigma));
      else b.setOnes();
      mask_pairs(a, ids_, this->instances(), t, j, S(0));
      mask_pairs(b, ids_, this->instances(), t, j, S(0));
      if (rows) {
        out.rows.col(0) += a;
        out.rows.col(1) += b;
        if (this->wants_dtau()) {
          out.rows.col(2) += a * (x - xp);
          out.rows.col(3) += b * (x - xp);
        }
      }
      if (cols) {
        const S xpj = cs.pos[t.c0 + j];
        out.cols(j, 0) = a.sum();
        out.cols(j, 1) = b.sum();
        if (this->wants_dtau()) {
          out.cols(j, 2) = (a * (x - xpj)).sum();
          out.cols(j, 3) = (b * (x - xpj)).sum();
        }
      }
      if (keep && beta_ == 0) x = a;  // beta = 0: pass 2 needs a only
    }
  }

  /// Per anchor, in double and in units of e^sigma: R, Ng, the clamp, l;
  /// the coefficients alpha (of a), gamma (of b) and the positive's
  /// derivative; dL/dtau.
  double finish(const RowMatrix<S>& W, const RowStats<S>& st, CallStats<S>& cs) const {
    const Eigen::Index n = this->instances(), n2 = W.rows();
    const double tau = this->temperature(), sigma = 1.0 / tau;
    double value = 0, dtau = 0;
    pos_grad_.assign(static_cast<std::size_t>(n2), 0.0);
    for (Eigen::Index r = 0; r < n2; ++r) {
      if (!is_anchor(r < n ? 0 : 1)) continue;
      const double N = negatives(r), A = st.s(r, 0), B = st.s(r, 1);
      const double xp = cs.pos[r], P = std::exp(xp - sigma);
      const double R = (N > 0 && B > 0) ? N * A / B : 0.0;
      const double ng = (R - tau_plus_ * N * P) / (1.0 - tau_plus_), F = N * std::exp(-2.0 * sigma);
      const bool clamped = ng < F;
      const double D = P + (clamped ? F : ng);
      const double l = std::log(D) + sigma - xp;
      if (this->losses()) this->losses()[r] = static_cast<S>(l);
      const double a = anchor_coef(r);
      if (a == 0.0) continue;
      value += a * l;
      if (clamped) {
        pos_grad_[static_cast<std::size_t>(r)] = P / D - 1.0;
        if (N > 0) dtau += a * (F / D) * (xp + sigma) / tau;
        continue;
      }
      const double k = N / ((1.0 - tau_plus_) * D * B);
      cs.alpha[r] = static_cast<S>(a / tau * k * (1.0 + beta_));
      cs.alpha2[r] = static_cast<S>(a / tau * k * beta_ * A / B);
      pos_grad_[static_cast<std::size_t>(r)] = P * (1.0 - tau_plus_ * N / (1.0 - tau_plus_)) / D - 1.0;
      if (this->wants_dtau() && N > 0)
        dtau -= a / tau * k * ((1.0 + beta_) * st.s(r, 2) - beta_ * A / B * st.s(r, 3));
    }
    if (this->wants_dtau()) cs.dtau = dtau;
    return value;
  }

  bool pass2(TileRef<S> P, const Tile& t, bool kept, const CallStats<S>& cs, PairSums&, ThreadSlot<S>& sl) const {
    const S sigma = this->inverse_temperature(), b1 = static_cast<S>(1.0 + beta_), bb = static_cast<S>(beta_);
    const bool cols = is_anchor(t.view_c);
    auto al = sl.v.head(t.nr);
    auto ga = sl.v.segment(t.nr, t.nr);
    auto b = sl.v.segment(2 * t.nr, t.nr);
    al = cs.alpha.segment(t.r0, t.nr);
    ga = cs.alpha2.segment(t.r0, t.nr);
    for (Eigen::Index j = 0; j < t.nc; ++j) {
      auto x = P.col(j);
      const S aj = cols ? cs.alpha[t.c0 + j] : S(0), gj = cols ? cs.alpha2[t.c0 + j] : S(0);
      if (beta_ == 0) {
        if (!kept) {
          x = exp_normal(x - sigma);
          mask_pairs(x, ids_, this->instances(), t, j, S(0));
        }
        x *= al + aj;
        continue;
      }
      b = exp_normal(bb * (x - sigma));
      x = exp_normal(b1 * (x - sigma)) * (al + aj) - b * (ga + gj);
      mask_pairs(x, ids_, this->instances(), t, j, S(0));
    }
    return true;
  }

  void pair_terms(const RowMatrix<S>& W, const CallStats<S>&, RowMatrix<S>& dW, Eigen::Index i0, Eigen::Index i1) const {
    const Eigen::Index n = this->instances();
    const S inv_tau = this->inverse_temperature();
    for (Eigen::Index i = i0; i < i1; ++i)
      for (const Eigen::Index r : {i, i + n}) {
        if (!is_anchor(r < n ? 0 : 1) || anchor_coef(r) == 0.0) continue;
        const S g = static_cast<S>(anchor_coef(r) * pos_grad_[static_cast<std::size_t>(r)]) * inv_tau;
        dW.row(r) += g * W.row(partner(r));
        dW.row(partner(r)) += g * W.row(r);
      }
  }

 private:
  // N_r: the anchor's negatives (its candidates of another id).
  double negatives(Eigen::Index r) const {
    const double n = static_cast<double>(this->instances());
    const double same = ids_ ? same_[static_cast<std::size_t>(r % this->instances())] : 1.0;
    return (this->cross() ? n - same : 0.0) + (this->within() ? n - same : 0.0);
  }

  const Eigen::Index* ids_;
  double tau_plus_, beta_;
  std::vector<double> same_;  // instances sharing each instance's id (itself included)
  mutable std::vector<double> pos_grad_;
};

}  // namespace detail

/// The debiased contrastive loss with optional hard-negative weighting
/// (formulas at the top of this header), called as every TwoViewLoss with
/// one scalar gradient, dL/dtau.  CallOptions: reduction, anchor_weights,
/// per_anchor, instance_ids (pairs of equal ids are not negatives; N_r
/// counts the rest).
template <typename Scalar>
class Debiased : public TwoViewLoss<Debiased<Scalar>, Scalar>, public LossSettings<DebiasedParams> {
  friend class TwoViewLoss<Debiased<Scalar>, Scalar>;
  friend struct detail::EngineCall;

 public:
  /// One scalar gradient: dL/dtau.
  static constexpr int kScalarGradients = 1;

  /// Validates the parameters, the temperature's range in Scalar, and that
  /// 2 (1 + beta) / tau fits the exponent range of the fixed shift.
  explicit Debiased(const DebiasedParams& params = {}, const EngineOptions& options = {})
      : LossSettings<DebiasedParams>(params, options, "contrastive::Debiased") {
    detail::check_temperature<Scalar>(name_, "temperature", params_.family.temperature);
    const double span = 2.0 * (1.0 + params_.beta) / params_.family.temperature;
    if (span > detail::fixed_shift_range<Scalar>())
      detail::fail_field(name_, "beta",
                         "and field 'temperature' give 2 (1 + beta) / tau = " + std::to_string(span) + ", beyond the " +
                             std::to_string(detail::fixed_shift_range<Scalar>()) + " the exponentials of " +
                             (sizeof(Scalar) <= 4 ? "float" : "double") + " span");
  }
  /// Number of anchors: n one-way, 2n symmetric.
  Eigen::Index anchors(Eigen::Index n) const { return params_.family.direction == Direction::Symmetric ? 2 * n : n; }

 private:
  detail::Accepts accepts() const { return {true, true, false}; }
  bool requires_labels() const { return false; }
  std::vector<double> signature() const {
    const auto& f = params_.family;
    return {f.temperature, f.cross_weight, f.within_weight, f.direction == Direction::Symmetric ? 1.0 : 0.0,
            params_.tau_plus, params_.beta};
  }
  template <typename F>
  double with_kernel(const detail::Batch<Scalar>& batch, F&& f) const {
    return f(detail::DebiasedKernel<Scalar>(params_, batch.n, batch.ids, batch.coef, batch.losses, batch.want_dtau));
  }
  void scalar_gradients(const detail::CallStats<Scalar>& cs, Scalar* const* g) const {
    if (g[0]) *g[0] = static_cast<Scalar>(cs.dtau);
  }
};

}  // namespace contrastive
