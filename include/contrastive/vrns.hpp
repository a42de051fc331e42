// contrastive — the negative-similarity variance penalty VRNS (paper notes,
// Def. 5.7): parameters, pair terms and the functor.  Its sum with a base
// loss on shared tiles is WithVRNS (combined.hpp).
// SPDX-License-Identifier: MIT
//
//   L_VRNS = 1/|N| sum_{(i, j) in N} |u_i . v_j - target|^p,
//   N = cross-view pairs (i, j), i != j, whose instance ids differ,
//   target = -1/(N_data - 1) from the data-set size (or given), p = 2 default;
//
// for p = 2 this is the authors' "mean over negative pairs of (s - delta)^2".
#pragma once

#include <cmath>
#include <limits>

#include <Eigen/Core>

#include "detail/additive_kernel.hpp"
#include "detail/checks.hpp"
#include "engine.hpp"
#include "two_view_loss.hpp"

namespace contrastive {

/// Parameters of the variance penalty.  Give exactly one of dataset_size and
/// target.  check() throws std::invalid_argument naming the field.
struct VRNSParams {
  /// N >= 2, the data-set size: target = -1/(N - 1).  0 = use `target`.
  long long dataset_size = 0;
  /// The similarity in [-1, 1] negatives are pulled to, when dataset_size is 0.
  double target = std::numeric_limits<double>::quiet_NaN();
  /// p in [1, 64] (default 2): the penalty is |s - target|^p.
  double power = 2.0;

  /// The target similarity: -1/(dataset_size - 1), or `target`.
  double resolved_target() const {
    return dataset_size > 0 ? -1.0 / static_cast<double>(dataset_size - 1) : target;
  }

  /// Throws std::invalid_argument naming the first invalid field.
  void check(const char* where = "contrastive::VRNSParams") const {
    if (dataset_size < 0 || dataset_size == 1)
      detail::fail_field(where, "dataset_size", "must be >= 2, or 0 to use field 'target' " + detail::got(dataset_size));
    if (dataset_size > 0 && !std::isnan(target))
      detail::fail_field(where, "target", "is set together with field 'dataset_size': give exactly one");
    if (dataset_size == 0 && !(target >= -1.0 && target <= 1.0))
      detail::fail_field(where, "target",
                         "must be a similarity in [-1, 1] when field 'dataset_size' is 0 " + detail::got(target));
    if (!(power >= 1.0 && power <= 64.0)) detail::fail_field(where, "power", "must be in [1, 64] " + detail::got(power));
  }
};

namespace detail {

/// A negative costs |x - target|^p (p = 2 without pow); positives cost nothing.
template <typename S>
struct PenaltyTerms {
  S target;
  S power;
  template <typename A, typename O>
  void neg(const A& x, O&& out) const {
    if (power == S(2)) out = (x - target).square();
    else out = (x - target).abs().pow(power);
  }
  template <typename A, typename O>
  void dneg(const A& x, O&& out) const {
    if (power == S(2)) out = S(2) * (x - target);
    else out = power * (x - target).abs().pow(power - S(1)) * (x - target).sign();
  }
  S pos(S) const { return S(0); }
  S dpos(S) const { return S(0); }
};

/// The penalty's kernel for n pairs and weight w: each of the `negatives`
/// cross-view negative pairs weighs w / negatives (the mean over them).
template <typename S>
AdditiveKernel<S, PenaltyTerms<S>> make_vrns_kernel(const VRNSParams& p, double w, Eigen::Index n, double negatives,
                                                    const Eigen::Index* ids, bool sums) {
  return AdditiveKernel<S, PenaltyTerms<S>>(
      PenaltyTerms<S>{static_cast<S>(p.resolved_target()), static_cast<S>(p.power)}, S(1), 0.0, w / negatives, 0.0, n,
      ids, sums);
}

}  // namespace detail

/// The variance penalty on its own (formula above).  Calls as TwoViewLoss with no scalar
/// gradient: value_and_grad(za, zb, grad_a, grad_b, ws, call).  CallOptions:
/// instance_ids.
template <typename Scalar>
class VRNS : public detail::AdditiveLoss<VRNS<Scalar>, Scalar, VRNSParams> {
  friend class detail::AdditiveLoss<VRNS<Scalar>, Scalar, VRNSParams>;

 public:
  /// Validates `params` and `options`.
  explicit VRNS(const VRNSParams& params, const EngineOptions& options = {})
      : detail::AdditiveLoss<VRNS<Scalar>, Scalar, VRNSParams>(params, options, "contrastive::VRNS") {}

 private:
  std::vector<double> params_signature() const {
    return {static_cast<double>(this->params_.dataset_size), this->params_.resolved_target(), this->params_.power};
  }
  // The engine kernel for a batch of n pairs with `negatives` negative pairs.
  detail::AdditiveKernel<Scalar, detail::PenaltyTerms<Scalar>> kernel(Eigen::Index n, double negatives,
                                                                      const Eigen::Index* ids) const {
    return detail::make_vrns_kernel<Scalar>(this->params_, 1.0, n, negatives, ids, false);
  }
};

}  // namespace contrastive
