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

  template <typename DA, typename DB>
  Scalar evaluate(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb, detail::Buffers<Scalar>& b,
                  const CallOptions<Scalar>& call) const {
    check_labels(za, zb, call);
    const detail::SupConKernel<Scalar> k(params_.temperature, za.rows(), call.labels, false);
    return static_cast<Scalar>(detail::Engine<Scalar>::evaluate(k, b, options_, za, zb, kName));
  }

  template <typename DA, typename DB, typename GA, typename GB>
  Scalar differentiate(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                       const Eigen::MatrixBase<GA>& grad_a, const Eigen::MatrixBase<GB>& grad_b, Scalar* const* g,
                       detail::Buffers<Scalar>& b, const CallOptions<Scalar>& call) const {
    check_labels(za, zb, call);
    const detail::SupConKernel<Scalar> k(params_.temperature, za.rows(), call.labels, g[0] != nullptr);
    const double v = detail::Engine<Scalar>::evaluate_grad(k, b, options_, za, zb, grad_a, grad_b, kName);
    if (g[0]) *g[0] = static_cast<Scalar>(b.cs.dtau);
    return static_cast<Scalar>(v);
  }

  template <typename DA, typename DB>
  static void check_labels(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                           const CallOptions<Scalar>& call) {
    detail::check_call(kName, call, detail::Accepts{false, false, true});
    detail::check_views(kName, za, zb);
    if (!call.labels.given()) detail::fail(kName, "call.labels", "is required: one class label per row of 'za'");
    if (static_cast<Eigen::Index>(call.labels.size()) != za.rows())
      detail::fail(kName, "call.labels",
                   "has " + std::to_string(call.labels.size()) + " entries but the batch has " +
                       std::to_string(za.rows()) + " rows");
  }

};

}  // namespace contrastive
