// contrastive — supervised contrastive loss (SupCon): labels give every
// anchor several positives.
// SPDX-License-Identifier: MIT
//
// The 2n rows of [U; V] are the anchors; row r has label c(r) (the label of
// its instance, shared by both views), P(r) = {q != r : c(q) = c(r)} its
// positives (|P| = 2 count(c) - 1, the other view included):
//
//   l_r = log sum_{q != r} e^{x_rq} - 1/|P(r)| sum_{p in P(r)} x_rp,   x = K / tau,
//   L   = mean over the 2n anchors (all have a positive: their other view),
//
// as pytorch-metric-learning's SupConLoss computes it on cat(za, zb) with
// labels cat(y, y) (its default reducer averages the anchors with a positive).
//
// On the engine this is NT-Xent (same log-sum-exp over every non-self pair)
// plus an O(n d) correction through the class sums C_c = sum_{c(q) = c} w_q:
//   sum_{p in P(r)} x_rp = w_r . (C_c(r) - w_r) / tau,
//   dL/dw_q gains (2a/tau) (w_pos(q) - (C_c(q) - w_q) / |P_c(q)|),  a = 1/(2n).
#pragma once

#include <map>
#include <vector>

#include <Eigen/Core>

#include "api.hpp"
#include "detail/checks.hpp"
#include "one_view_loss.hpp"
#include "two_view_loss.hpp"
#include "engine.hpp"
#include "infonce_family.hpp"

namespace contrastive {

/// Parameters of SupCon; check() throws std::invalid_argument naming the field.
struct SupConParams {
  /// tau > 0 (pytorch-metric-learning's default 0.1).
  double temperature = 0.1;
  /// Throws std::invalid_argument naming the first invalid field.
  void check(const char* where = "contrastive::SupConParams") const {
    detail::check_positive_finite(where, "temperature", temperature);
  }
};

namespace detail {

template <typename S>
class SupConKernel : public InfoNCEKernel<S> {
  using Base = InfoNCEKernel<S>;

 public:
  SupConKernel(double temperature, Eigen::Index n, Span<const Eigen::Index> labels, bool want_dtau)
      : Base(InfoNCEFamilyParams{temperature, 1.0, 1.0, true, Direction::Symmetric}, n, nullptr, nullptr, nullptr,
             want_dtau),
        n_(n),
        inv_tau_(static_cast<S>(1.0 / temperature)),
        a_(1.0 / (2.0 * static_cast<double>(n))),
        dtau_(want_dtau) {
    std::map<Eigen::Index, Eigen::Index> index;
    cls_.resize(static_cast<std::size_t>(n));
    for (Eigen::Index i = 0; i < n; ++i) {
      const auto it = index.emplace(labels[static_cast<std::size_t>(i)], static_cast<Eigen::Index>(index.size())).first;
      cls_[static_cast<std::size_t>(i)] = it->second;
    }
    positives_.setZero(static_cast<Eigen::Index>(index.size()));
    for (Eigen::Index c : cls_) positives_[c] += S(2);
    positives_ -= S(1);  // both views of each member, minus the anchor itself
  }

  /// NT-Xent's value (mean of lse_r - x_{r, partner}) plus, per anchor, the
  /// correction x_{r, partner} - mean_{p in P(r)} x_rp, and its share of
  /// dL/dtau, -(1/tau) a (x_{r, partner} - mean x_rp), both formed in double
  /// from the difference of the two vectors (no cancellation of two nearly
  /// equal logits).
  double finish(const RowMatrix<S>& W, const RowStats<S>& st, CallStats<S>& cs) const {
    double value = Base::finish(W, st, cs);
    class_sums(W);
    double dtau = 0;
    for (Eigen::Index r = 0; r < 2 * n_; ++r) {
      const Eigen::Index c = cls_[static_cast<std::size_t>(r % n_)];
      const auto diff = (W.row((r + n_) % (2 * n_)).template cast<double>() -
                         (sums_.row(c) - W.row(r).template cast<double>()) / static_cast<double>(positives_[c]))
                            .eval();
      const double corr = W.row(r).template cast<double>().dot(diff) * static_cast<double>(inv_tau_);
      value += a_ * corr;
      dtau -= a_ * corr / this->temperature();
    }
    if (dtau_) cs.dtau += dtau;
    return value;
  }

  void pair_terms(const RowMatrix<S>& W, const CallStats<S>& cs, RowMatrix<S>& dW, Eigen::Index i0,
                  Eigen::Index i1) const {
    Base::pair_terms(W, cs, dW, i0, i1);
    const S g = static_cast<S>(2.0 * a_) * inv_tau_;
    for (Eigen::Index i = i0; i < i1; ++i)
      for (const Eigen::Index q : {i, i + n_}) {
        const Eigen::Index c = cls_[static_cast<std::size_t>(i)];
        dW.row(q) += g * (W.row((q + n_) % (2 * n_)) -
                          ((sums_.row(c) - W.row(q).template cast<double>()) / static_cast<double>(positives_[c]))
                              .template cast<S>());
      }
  }

 private:
  void class_sums(const RowMatrix<S>& W) const {
    sums_.setZero(positives_.size(), W.cols());
    for (Eigen::Index r = 0; r < 2 * n_; ++r)
      sums_.row(cls_[static_cast<std::size_t>(r % n_)]) += W.row(r).template cast<double>();
  }

  Eigen::Index n_;
  S inv_tau_;
  double a_;
  bool dtau_;
  std::vector<Eigen::Index> cls_;  // class index of each instance
  ColArray<S> positives_;          // |P| of each class
  mutable RowMatrix<double> sums_;  // C_c, in double: C_c / |P| - w_partner cancels near collapse
};

/// SupCon on one batch (one view, W = U): the within-view member of the
/// family with no term removed but self pairs, and per anchor the centre
/// c_i = mean_{p in P(i)} x_ip (formed in begin(), from class sums in
/// double) in place of the positive logit, so l_i = lse_{j != i} x_ij - c_i
/// with the base kernel's decoupled form, and dL/dtau centred on c_i.
/// Anchors without a positive, and every anchor when the batch has no
/// negative pair, have coefficient 0 (pytorch-metric-learning's reducer);
/// the others 1 / (their number).
template <typename S>
class SupConOneViewKernel : public InfoNCEKernel<S> {
  using Base = InfoNCEKernel<S>;

 public:
  SupConOneViewKernel(double temperature, Eigen::Index n, Span<const Eigen::Index> labels, bool want_dtau)
      : Base(InfoNCEFamilyParams{temperature, 0.0, 1.0, false, Direction::OneWay}, n, nullptr, &coef_, nullptr,
             want_dtau),
        n_(n),
        inv_tau_(static_cast<S>(1.0 / temperature)) {
    std::map<Eigen::Index, Eigen::Index> index;
    cls_.resize(static_cast<std::size_t>(n));
    for (Eigen::Index i = 0; i < n; ++i) {
      const auto it = index.emplace(labels[static_cast<std::size_t>(i)], static_cast<Eigen::Index>(index.size())).first;
      cls_[static_cast<std::size_t>(i)] = it->second;
    }
    count_.setZero(static_cast<Eigen::Index>(index.size()));
    for (Eigen::Index c : cls_) count_[c] += 1.0;
    const bool negatives = index.size() > 1;
    double anchors = 0;
    for (Eigen::Index c : cls_) anchors += (negatives && count_[c] > 1.0) ? 1.0 : 0.0;
    coef_.resize(n);
    for (Eigen::Index i = 0; i < n; ++i)
      coef_[i] = (anchors > 0 && count_[cls_[static_cast<std::size_t>(i)]] > 1.0) ? static_cast<S>(1.0 / anchors) : S(0);
  }

  /// The centres c_i = w_i . (C_c - w_i) / (|c| - 1) / tau.
  void begin(const RowMatrix<S>& W, CallStats<S>& cs) const {
    resize_buffer(cs.pos, n_);
    cs.shift = inv_tau_;
    for (ColArray<S>* a : {&cs.lse, &cs.lse_neg, &cs.alpha}) zero_buffer(*a, n_);
    sums_.setZero(count_.size(), W.cols());
    for (Eigen::Index r = 0; r < n_; ++r) sums_.row(cls_[static_cast<std::size_t>(r)]) += W.row(r).template cast<double>();
    for (Eigen::Index r = 0; r < n_; ++r) {
      const Eigen::Index c = cls_[static_cast<std::size_t>(r)];
      cs.pos[r] = count_[c] > 1.0 ? static_cast<S>(W.row(r).template cast<double>().dot(sums_.row(c) - W.row(r).template cast<double>()) /
                                                    (count_[c] - 1.0) * static_cast<double>(inv_tau_))
                                  : S(0);
    }
  }

  /// The positives' share: dl_i/dw = -(a/tau) mean_{p in P(i)} w_p for the
  /// anchor, and -(a/tau)/|P| w_i for each of its positives; with one
  /// coefficient per class both are (C_c - w_i) / (|c| - 1).
  void pair_terms(const RowMatrix<S>& W, const CallStats<S>&, RowMatrix<S>& dW, Eigen::Index i0, Eigen::Index i1) const {
    for (Eigen::Index i = i0; i < i1; ++i) {
      const S a = coef_[i];
      if (a == S(0)) continue;
      const Eigen::Index c = cls_[static_cast<std::size_t>(i)];
      dW.row(i) -= (S(2) * a * inv_tau_ / static_cast<S>(count_[c] - 1.0)) *
                   (sums_.row(c) - W.row(i).template cast<double>()).template cast<S>();
    }
  }

 private:
  Eigen::Index n_;
  S inv_tau_;
  std::vector<Eigen::Index> cls_;  // class index of each row
  Eigen::ArrayXd count_;           // rows per class
  ColArray<S> coef_;               // per-anchor coefficients
  mutable RowMatrix<double> sums_;
};

}  // namespace detail

/// Supervised contrastive loss over both views (see the formula above),
/// called as every TwoViewLoss with one scalar gradient, dL/dtau; default
/// tau = 0.1 (pytorch-metric-learning's).  `call.labels` (one class label per
/// row of za, shared by both views) is required; reductions, weights and
/// instance ids are not defined for SupCon and are rejected.
template <typename Scalar>
class SupCon : public TwoViewLoss<SupCon<Scalar>, Scalar>, public LossSettings<SupConParams> {
  friend class TwoViewLoss<SupCon<Scalar>, Scalar>;

 public:
  /// One scalar gradient: dL/dtau.
  static constexpr int kScalarGradients = 1;

  /// Validates the temperature and the options (std::invalid_argument naming the field).
  explicit SupCon(double temperature = 0.1, const EngineOptions& options = {})
      : LossSettings<SupConParams>(SupConParams{temperature}, options, kName) {
    detail::check_temperature<Scalar>(kName, "temperature", temperature);
  }
  /// tau.
  double temperature() const { return params_.temperature; }
  /// Changes the temperature (e.g. a learned one); validated as on construction.
  void set_temperature(double tau) {
    detail::check_temperature<Scalar>(kName, "temperature", tau);
    params_.temperature = tau;
  }
  /// SupCon has no per-anchor outputs (0).
  Eigen::Index anchors(Eigen::Index) const { return 0; }

 private:
  static constexpr const char* kName = "contrastive::SupCon";
  friend struct detail::EngineCall;
  detail::Accepts accepts() const { return {false, false, true}; }
  bool requires_labels() const { return true; }
  std::vector<double> signature() const { return {params_.temperature}; }
  template <typename F>
  double with_kernel(const detail::Batch<Scalar>& batch, F&& f) const {
    return f(detail::SupConKernel<Scalar>(params_.temperature, batch.n, batch.labels, batch.want_dtau));
  }
  void scalar_gradients(const detail::CallStats<Scalar>& cs, Scalar* const* g) const {
    if (g[0]) *g[0] = static_cast<Scalar>(cs.dtau);
  }
};

/// Supervised contrastive loss on one batch, as pytorch-metric-learning's
/// `SupConLoss(embeddings, labels)`: n anchors (the rows of z, normalised),
/// positives the other rows of the same label, every other row in the
/// denominator,
///
///     l_i = log sum_{j != i} e^{x_ij} - 1/|P(i)| sum_{p in P(i)} x_ip,   x = u_i.u_j / tau,
///
/// averaged over the anchors that have a positive.  A batch where no anchor
/// has a positive, or with no negative pair (one label), gives 0 with zero
/// gradients.  Calls (one_view_loss.hpp): value(z, [ws,] call),
/// value_and_grad(z, grad, &dtau, ws, call), value_and_grad(z, call);
/// `call.labels` (one per row of z) is required.  A batch of one row is
/// allowed (loss 0).
template <typename Scalar>
class SupConOneView : public OneViewLoss<SupConOneView<Scalar>, Scalar>, public LossSettings<SupConParams> {
  friend class OneViewLoss<SupConOneView<Scalar>, Scalar>;
  friend struct detail::EngineCall;

 public:
  /// One view: W = U.
  static constexpr int kViews = 1;
  /// A batch of one row is allowed (loss 0).
  static constexpr Eigen::Index kMinRows = 1;

  /// Validates the temperature (default 0.1, pytorch-metric-learning's) and
  /// the options.
  explicit SupConOneView(double temperature = 0.1, const EngineOptions& options = {})
      : LossSettings<SupConParams>(SupConParams{temperature}, options, "contrastive::SupConOneView") {
    detail::check_temperature<Scalar>(name_, "temperature", temperature);
  }
  /// tau.
  double temperature() const { return params_.temperature; }
  /// No per-anchor outputs (0).
  Eigen::Index anchors(Eigen::Index) const { return 0; }

 private:
  detail::Accepts accepts() const { return {false, false, true}; }
  bool requires_labels() const { return true; }
  std::vector<double> signature() const { return {params_.temperature}; }
  template <typename F>
  double with_kernel(const detail::Batch<Scalar>& batch, F&& f) const {
    return f(detail::SupConOneViewKernel<Scalar>(params_.temperature, batch.n, batch.labels, batch.want_dtau));
  }
  void scalar_gradients(const detail::CallStats<Scalar>& cs, Scalar* const* g) const {
    if (g[0]) *g[0] = static_cast<Scalar>(cs.dtau);
  }
};

}  // namespace contrastive
