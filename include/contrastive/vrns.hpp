// contrastive — the negative-similarity variance penalty (VRNS, paper notes
// Def. 5.7) and its composition with the InfoNCE family.
// SPDX-License-Identifier: MIT
//
//   L_VRNS = 1/|N| sum_{(i, j) in N} |u_i . v_j - target|^p,
//   N = cross-view pairs (i, j), i != j, whose instance ids differ,
//   target = -1/(N_data - 1) from the data-set size (or given), p = 2 default.
//
// For p = 2 this is the authors' "mean over negative pairs of (s - delta)^2".
// dL/dK_ij = p |s_ij - target|^{p-1} sign(s_ij - target) / |N| on the
// negative pairs; the engine does the rest.
//
// WithVRNS computes  L = L_base + lambda * L_VRNS  in one call: one
// normalisation, one set of similarity tiles (the penalty reads the base
// loss's cross-view tiles), one gradient pass.
#pragma once

#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "detail/additive_kernel.hpp"
#include "detail/checks.hpp"
#include "engine.hpp"
#include "infonce_family.hpp"

namespace contrastive {

/// Parameters of the variance penalty.  Give exactly one of dataset_size and
/// target.  check() throws std::invalid_argument naming the field.
struct VRNSParams {
  /// N >= 2, the data-set size: target = -1/(N - 1).  0 = use `target`.
  long long dataset_size = 0;
  /// The similarity negatives are pulled to, when dataset_size is 0.
  double target = std::numeric_limits<double>::quiet_NaN();
  /// p >= 1 (default 2): the penalty is |s - target|^p.
  double power = 2.0;

  double resolved_target() const {
    return dataset_size > 0 ? -1.0 / static_cast<double>(dataset_size - 1) : target;
  }

  void check(const char* where = "contrastive::VRNSParams") const {
    if (dataset_size < 0 || dataset_size == 1)
      detail::fail_field(where, "dataset_size", "must be >= 2, or 0 to use field 'target' " + detail::got(dataset_size));
    if (dataset_size > 0 && !std::isnan(target))
      detail::fail_field(where, "target", "is set together with field 'dataset_size': give exactly one");
    if (dataset_size == 0 && !std::isfinite(target))
      detail::fail_field(where, "target", "must be finite when field 'dataset_size' is 0 " + detail::got(target));
    if (!(std::isfinite(power) && power >= 1.0))
      detail::fail_field(where, "power", "must be finite and >= 1 " + detail::got(power));
  }
};

namespace detail {

/// Validates optional instance ids and returns the number of ordered
/// cross-view negative pairs: n^2 - sum over ids of (count)^2 (n(n-1) without ids).
inline double count_negatives(const char* where, Eigen::Index n, const std::vector<Eigen::Index>* ids) {
  if (!ids) return static_cast<double>(n) * static_cast<double>(n - 1);
  if (static_cast<Eigen::Index>(ids->size()) != n)
    fail(where, "instance_ids",
         "has " + std::to_string(ids->size()) + " entries but the batch has " + std::to_string(n) + " rows");
  std::map<Eigen::Index, double> counts;
  for (Eigen::Index id : *ids) counts[id] += 1.0;
  double same = 0;
  for (const auto& c : counts) same += c.second * c.second;
  const double negatives = static_cast<double>(n) * static_cast<double>(n) - same;
  if (negatives <= 0) fail(where, "instance_ids", "gives every pair the same id: there is no negative pair");
  return negatives;
}

/// Calls f(kernel) with the VRNS kernel for the params (p = 2 gets the
/// cheaper squared terms).
template <typename S, typename F>
auto with_vrns_kernel(const VRNSParams& p, Eigen::Index n, double weight, const std::vector<Eigen::Index>* ids,
                      AuxSum aux, F&& f) {
  const S target = static_cast<S>(p.resolved_target());
  const Eigen::Index* id = ids ? ids->data() : nullptr;
  if (p.power == 2.0)
    return f(AdditiveKernel<S, SquareTerms<S>>(SquareTerms<S>{target}, S(1), 0.0, weight, 0.0, n, id, aux));
  return f(AdditiveKernel<S, PowerTerms<S>>(PowerTerms<S>{target, static_cast<S>(p.power)}, S(1), 0.0, weight, 0.0,
                                            n, id, aux));
}

}  // namespace detail

/// The variance penalty on its own.
template <typename Scalar>
class VRNS {
 public:
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Ids = std::vector<Eigen::Index>;

  explicit VRNS(const VRNSParams& params, const EngineOptions& options = {}) : params_(params), options_(options) {
    params_.check(kName);
    options_.check();
  }
  const VRNSParams& params() const { return params_; }

  /// Value; `instance_ids` (one per row, optional): equal ids are not negatives.
  template <typename DA, typename DB>
  Scalar value(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb, const Ids* instance_ids = nullptr) const {
    Workspace<Scalar> ws;
    return value(za, zb, ws, instance_ids);
  }
  template <typename DA, typename DB>
  Scalar value(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb, Workspace<Scalar>& ws,
               const Ids* instance_ids = nullptr) const {
    detail::check_views(kName, za, zb);
    const double count = detail::count_negatives(kName, za.rows(), instance_ids);
    return detail::with_vrns_kernel<Scalar>(params_, za.rows(), 1.0 / count, instance_ids, detail::AuxSum::None,
                                            [&](const auto& k) {
                                              return static_cast<Scalar>(
                                                  detail::Engine<Scalar>::evaluate(k, ws, options_, za, zb, kName));
                                            });
  }

  /// Value and gradients (grad_temperature of the result is 0: no temperature).
  template <typename DA, typename DB>
  LossAndGradient<Scalar> value_and_grad(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                                         const Ids* instance_ids = nullptr) const {
    Workspace<Scalar> ws;
    LossAndGradient<Scalar> out;
    detail::check_views(kName, za, zb);
    out.grad_a.resize(za.rows(), za.cols());
    out.grad_b.resize(zb.rows(), zb.cols());
    out.value = value_and_grad(za, zb, out.grad_a, out.grad_b, ws, instance_ids);
    return out;
  }
  template <typename DA, typename DB, typename GA, typename GB>
  Scalar value_and_grad(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                        const Eigen::MatrixBase<GA>& grad_a, const Eigen::MatrixBase<GB>& grad_b,
                        Workspace<Scalar>& ws, const Ids* instance_ids = nullptr) const {
    detail::check_views(kName, za, zb);
    const double count = detail::count_negatives(kName, za.rows(), instance_ids);
    return detail::with_vrns_kernel<Scalar>(
        params_, za.rows(), 1.0 / count, instance_ids, detail::AuxSum::None, [&](const auto& k) {
          return static_cast<Scalar>(
              detail::Engine<Scalar>::evaluate_grad(k, ws, options_, za, zb, grad_a, grad_b, kName).first);
        });
  }

 private:
  static constexpr const char* kName = "contrastive::VRNS";
  VRNSParams params_;
  EngineOptions options_;
};

/// L = base + lambda * VRNS in one pass over shared tiles.  The base is any
/// InfoNCE-family loss (NTXent, InfoNCE, CLIP, DCL, DHEL or a custom member);
/// its engine options are used.  dL/dtau is that of the base (the penalty
/// does not depend on tau).
template <typename Scalar>
class WithVRNS {
 public:
  using Ids = std::vector<Eigen::Index>;

  WithVRNS(const InfoNCEFamily<Scalar>& base, const VRNSParams& vrns, double lambda)
      : base_(base), vrns_(vrns), lambda_(lambda) {
    vrns_.check(kName);
    detail::check_weight(kName, "lambda", lambda_);
  }
  const InfoNCEFamily<Scalar>& base() const { return base_; }
  double lambda() const { return lambda_; }

  template <typename DA, typename DB>
  Scalar value(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb, const Ids* instance_ids = nullptr) const {
    Workspace<Scalar> ws;
    return value(za, zb, ws, instance_ids);
  }
  template <typename DA, typename DB>
  Scalar value(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb, Workspace<Scalar>& ws,
               const Ids* instance_ids = nullptr) const {
    detail::check_views(kName, za, zb);
    const detail::InfoNCEKernel<Scalar> k1(base_.params(), za.rows());
    const double w = lambda_ / detail::count_negatives(kName, za.rows(), instance_ids);
    return detail::with_vrns_kernel<Scalar>(vrns_, za.rows(), w, instance_ids, detail::AuxSum::None, [&](auto k2) {
      const detail::SumKernel<Scalar, detail::InfoNCEKernel<Scalar>, decltype(k2)> k(k1, k2);
      return static_cast<Scalar>(detail::Engine<Scalar>::evaluate(k, ws, base_.options(), za, zb, kName));
    });
  }

  template <typename DA, typename DB>
  LossAndGradient<Scalar> value_and_grad(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                                         const Ids* instance_ids = nullptr) const {
    Workspace<Scalar> ws;
    LossAndGradient<Scalar> out;
    detail::check_views(kName, za, zb);
    out.grad_a.resize(za.rows(), za.cols());
    out.grad_b.resize(zb.rows(), zb.cols());
    out.value = value_and_grad(za, zb, out.grad_a, out.grad_b, &out.grad_temperature, ws, instance_ids);
    return out;
  }

  /// Caller-owned outputs; `grad_temperature` may be null.
  template <typename DA, typename DB, typename GA, typename GB>
  Scalar value_and_grad(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                        const Eigen::MatrixBase<GA>& grad_a, const Eigen::MatrixBase<GB>& grad_b,
                        Scalar* grad_temperature, Workspace<Scalar>& ws, const Ids* instance_ids = nullptr) const {
    detail::check_views(kName, za, zb);
    const detail::InfoNCEKernel<Scalar> k1(base_.params(), za.rows());
    const double w = lambda_ / detail::count_negatives(kName, za.rows(), instance_ids);
    const double tau = base_.params().temperature;
    return detail::with_vrns_kernel<Scalar>(
        vrns_, za.rows(), w, instance_ids, detail::AuxSum::TermDerivativeDotX, [&](auto k2) {
          const detail::SumKernel<Scalar, detail::InfoNCEKernel<Scalar>, decltype(k2)> k(k1, k2);
          const auto r =
              detail::Engine<Scalar>::evaluate_grad(k, ws, base_.options(), za, zb, grad_a, grad_b, kName);
          // Euler: sum_r w_r . dw_r = 2 <G_base + G_vrns, K>; aux = <G_vrns, K>.
          if (grad_temperature)
            *grad_temperature = static_cast<Scalar>(-(r.second / 2.0 - detail::Engine<Scalar>::aux(ws)) / tau);
          return static_cast<Scalar>(r.first);
        });
  }

 private:
  static constexpr const char* kName = "contrastive::WithVRNS";
  InfoNCEFamily<Scalar> base_;
  VRNSParams vrns_;
  double lambda_;
};

}  // namespace contrastive
