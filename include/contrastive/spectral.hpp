// contrastive — the spectral contrastive loss (paper notes, Def. 3.2 with
// phi(x) = x, psi(x) = x^2): parameters, pair terms and the functor.
// SPDX-License-Identifier: MIT
//
//   L = -1/m sum_i s_ii + c1/(m(m-1)) sum_{i != j} s_ij^2
//       + c2/(2m(m-1)) sum_{i != j} [(u_i.u_j)^2 + (v_i.v_j)^2],
//
// (c1, c2) = (1, 0) by default (HaoChen et al.'s form on normalised features).
#pragma once

#include <Eigen/Core>

#include "detail/additive_kernel.hpp"
#include "detail/checks.hpp"
#include "engine.hpp"
#include "two_view_loss.hpp"

namespace contrastive {

/// Weights of the spectral contrastive loss; check() throws
/// std::invalid_argument naming the field.
struct SpectralParams {
  double cross_weight = 1.0;   ///< c1 >= 0: cross-view pairs u_i.v_j, i != j
  double within_weight = 0.0;  ///< c2 >= 0: within-view pairs
  /// Throws std::invalid_argument naming the first invalid field.
  void check(const char* where = "contrastive::SpectralParams") const {
    detail::check_weight(where, "cross_weight", cross_weight);
    detail::check_weight(where, "within_weight", within_weight);
  }
};

namespace detail {

/// A positive costs -x, a negative x^2.
template <typename S>
struct SpectralTerms {
  template <typename A, typename O>
  void neg(const A& x, O&& out) const {
    out = x.square();
  }
  template <typename A, typename O>
  void dneg(const A& x, O&& out) const {
    out = S(2) * x;
  }
  S pos(S x) const { return -x; }
  S dpos(S) const { return S(-1); }
};

/// Spectral CL's kernel for n pairs and weight w: positives w/n, cross
/// negatives w c1/(n(n-1)), within pairs w c2/(2n(n-1)).
template <typename S>
AdditiveKernel<S, SpectralTerms<S>> make_spectral_kernel(const SpectralParams& p, double w, Eigen::Index n_,
                                                         const Eigen::Index* ids, bool sums) {
  const double n = static_cast<double>(n_);
  return AdditiveKernel<S, SpectralTerms<S>>(SpectralTerms<S>{}, S(1), w / n, w * p.cross_weight / (n * (n - 1)),
                                             w * p.within_weight / (2 * n * (n - 1)), n_, ids, sums);
}

}  // namespace detail

/// Spectral contrastive loss (formula above).  Calls as TwoViewLoss with no scalar
/// gradient: value_and_grad(za, zb, grad_a, grad_b, ws, call).  CallOptions:
/// instance_ids.
template <typename Scalar>
class Spectral : public detail::AdditiveLoss<Spectral<Scalar>, Scalar, SpectralParams> {
  friend class detail::AdditiveLoss<Spectral<Scalar>, Scalar, SpectralParams>;

 public:
  /// Validates `params` and `options`.
  explicit Spectral(const SpectralParams& params = {}, const EngineOptions& options = {})
      : detail::AdditiveLoss<Spectral<Scalar>, Scalar, SpectralParams>(params, options, "contrastive::Spectral") {}

 private:
  std::vector<double> params_signature() const { return {this->params_.cross_weight, this->params_.within_weight}; }
  // The engine kernel for a batch of n pairs (ids already validated).
  detail::AdditiveKernel<Scalar, detail::SpectralTerms<Scalar>> kernel(Eigen::Index n, double,
                                                                       const Eigen::Index* ids) const {
    return detail::make_spectral_kernel<Scalar>(this->params_, 1.0, n, ids, false);
  }
};

}  // namespace contrastive
