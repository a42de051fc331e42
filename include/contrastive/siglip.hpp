// contrastive — SigLIP's sigmoid loss (paper notes, Def. 3.2): its
// parameters, its pair terms and the functor.
// SPDX-License-Identifier: MIT
//
// open_clip's SigLipLoss on normalised features (one process), with logit
// scale t and bias b as open_clip adds them (logits t s + b; init t = 10,
// b = -10):
//
//   L = 1/m sum_i softplus(-(t s_ii + b)) + 1/m sum_{i != j} softplus(t s_ij + b)
//       [+ c2/(2m) sum_{i != j} softplus(t u_i.u_j + b) + softplus(t v_i.v_j + b)]
//   dL/dt = sum over pairs of dterm/dx * s                 (x = t s),
//   dL/db = -1/m sum_i sigmoid(-(t s_ii + b)) + 1/m sum_{i != j} sigmoid(t s_ij + b).
//
// (The paper's bias is -b.)  Each pair contributes on its own, so a tile's
// value and dL/dK need no reduction pass.
#pragma once

#include <cmath>

#include <Eigen/Core>

#include "api.hpp"
#include "detail/additive_kernel.hpp"
#include "detail/checks.hpp"
#include "detail/math.hpp"
#include "engine.hpp"
#include "two_view_loss.hpp"

namespace contrastive {

/// Parameters of SigLIP.  check() throws std::invalid_argument naming the field.
struct SigLIPParams {
  /// t > 0: logits are t * cosine + bias.  open_clip initialises t = 10.
  /// A loss takes t in [1e-4, 1e3] (float) or [1e-4, 1e6] (double).
  double logit_scale = 10.0;
  /// b (open_clip's sign: added to the logits), |b| <= 1e4.  open_clip
  /// initialises b = -10.
  double logit_bias = -10.0;
  /// c2 >= 0: within-view pairs (u_i, u_j), (v_i, v_j) as negatives, each
  /// ordered pair weighted c2/(2m) (Def. 3.2; 0 in SigLIP itself).
  double within_weight = 0.0;

  /// Throws std::invalid_argument naming the first invalid field.
  void check(const char* where = "contrastive::SigLIPParams") const {
    detail::check_positive_finite(where, "logit_scale", logit_scale);
    if (!(std::isfinite(logit_bias) && std::abs(logit_bias) <= detail::kMaxBias))
      detail::fail_field(where, "logit_bias", "must be finite with |b| <= 1e4 " + detail::got(logit_bias));
    detail::check_weight(where, "within_weight", within_weight);
  }
};

namespace detail {

/// SigLIP's pair terms on x = t s with open_clip's bias b (logits x + b):
/// a positive costs softplus(-(x + b)), a negative softplus(x + b).
template <typename S>
struct SigmoidTerms {
  S bias;
  template <typename A, typename O>
  void neg(const A& x, O&& out) const {
    out = softplus_array(x + bias);
  }
  template <typename A, typename O>
  void dneg(const A& x, O&& out) const {
    out = sigmoid_array(x + bias);
  }
  S pos(S x) const { return softplus(-(x + bias)); }
  S dpos(S x) const { return -sigmoid(-(x + bias)); }
};

/// SigLIP's kernel for n pairs and weight w (1 standalone):
/// positives and cross negatives w/n each, within pairs w c2/(2n).
template <typename S>
AdditiveKernel<S, SigmoidTerms<S>> make_siglip_kernel(const SigLIPParams& p, double w, Eigen::Index n_,
                                                      const Eigen::Index* ids, bool sums) {
  const double n = static_cast<double>(n_);
  return AdditiveKernel<S, SigmoidTerms<S>>(SigmoidTerms<S>{static_cast<S>(p.logit_bias)}, static_cast<S>(p.logit_scale),
                                            w / n, w / n, w * p.within_weight / (2 * n), n_, ids, sums);
}

}  // namespace detail

/// SigLIP's sigmoid loss (formula above), called as every TwoViewLoss with two
/// scalar gradients, dL/dt and dL/db.  CallOptions: instance_ids (cross-view
/// pairs of equal ids are not negatives: their term is dropped; the positives
/// and the 1/n normalisation stay).
template <typename Scalar>
class SigLIP : public TwoViewLoss<SigLIP<Scalar>, Scalar>, public LossSettings<SigLIPParams> {
  friend class TwoViewLoss<SigLIP<Scalar>, Scalar>;

 public:
  /// Two scalar gradients: dL/dt (for a learned log t, multiply by t) and dL/db.
  static constexpr int kScalarGradients = 2;

  /// Validates `params` and `options`.
  explicit SigLIP(const SigLIPParams& params = {}, const EngineOptions& options = {})
      : LossSettings<SigLIPParams>(params, options, "contrastive::SigLIP") {
    detail::check_logit_scale<Scalar>(name_, "logit_scale", params_.logit_scale);
  }
  /// SigLIP with logit scale t and bias b, no within-view pairs.
  SigLIP(double logit_scale, double logit_bias, const EngineOptions& options = {})
      : SigLIP(SigLIPParams{logit_scale, logit_bias, 0.0}, options) {}

  /// Sets a learned scale and bias, validated as in check().
  void set_params(const SigLIPParams& p) {
    p.check(name_);
    detail::check_logit_scale<Scalar>(name_, "logit_scale", p.logit_scale);
    params_ = p;
  }
  /// SigLIP's terms are pairs, not anchors (0).
  Eigen::Index anchors(Eigen::Index) const { return 0; }

 private:
  friend struct detail::EngineCall;
  detail::Accepts accepts() const { return {false, true, false}; }
  bool requires_labels() const { return false; }
  std::vector<double> signature() const { return {params_.logit_scale, params_.logit_bias, params_.within_weight}; }
  template <typename F>
  double with_kernel(const detail::Batch<Scalar>& batch, F&& f) const {
    return f(detail::make_siglip_kernel<Scalar>(params_, 1.0, batch.n, batch.ids, true));
  }
  // Straight from the pair terms: dL/dt = sum w dterm/dx s = term_dot / t, dL/db = term_derivative.
  void scalar_gradients(const detail::CallStats<Scalar>& cs, Scalar* const* g) const {
    if (g[0]) *g[0] = static_cast<Scalar>(cs.sums.term_dot / params_.logit_scale);
    if (g[1]) *g[1] = static_cast<Scalar>(cs.sums.term_derivative);
  }
};

}  // namespace contrastive
