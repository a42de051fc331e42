// contrastive — the independently additive family (paper notes, Def. 3.2):
// SigLIP and spectral contrastive loss.
// SPDX-License-Identifier: MIT
//
//   L = -1/m sum_i phi(s_ii)
//       + c1/(m(m-1))  sum_{i != j} psi(u_i.v_j)
//       + c2/(2m(m-1)) sum_{i != j} [psi(u_i.u_j) + psi(v_i.v_j)]
//
// Each pair contributes on its own, so a tile's value and dL/dK need no
// reduction pass: dL/dK_ij = weight * psi'(s_ij) (per pair, in the tile).
//
// SigLIP (open_clip's SigLipLoss on normalised features, one process), with
// logit scale t and bias b as open_clip adds it (logits t s + b, init t = 10,
// b = -10):
//   L = 1/m sum_i softplus(-(t s_ii + b)) + 1/m sum_{i != j} softplus(t s_ij + b)
//   dL/dt = (1/(2t)) sum_r w_r . dL/dw_r   (Euler's identity),
//   dL/db = -1/m sum_i sigmoid(-(t s_ii + b)) + 1/m sum_{i != j} sigmoid(t s_ij + b).
// (The paper's bias is -b.)
//
// Spectral CL: phi(x) = x, psi(x) = x^2, (c1, c2) = (1, 0) by default.
#pragma once

#include <cmath>

#include <Eigen/Core>

#include "detail/additive_kernel.hpp"
#include "detail/checks.hpp"
#include "engine.hpp"
#include "infonce_family.hpp"

namespace contrastive {

/// Parameters of SigLIP.  check() throws std::invalid_argument naming the field.
struct SigLIPParams {
  /// t > 0: logits are t * cosine + bias.  open_clip initialises t = 10.
  double logit_scale = 10.0;
  /// b (open_clip's sign: added to the logits).  open_clip initialises b = -10.
  double logit_bias = -10.0;

  void check(const char* where = "contrastive::SigLIPParams") const {
    detail::check_positive_finite(where, "logit_scale", logit_scale);
    if (!std::isfinite(logit_bias)) detail::fail_field(where, "logit_bias", "must be finite " + detail::got(logit_bias));
  }
};

/// Value and gradients of SigLIP (allocating overload).
template <typename Scalar>
struct SigLIPResult {
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  Scalar value{};
  Matrix grad_a, grad_b;
  Scalar grad_logit_scale{};  ///< dL/dt (for a learned log t: t * dL/dt)
  Scalar grad_logit_bias{};   ///< dL/db
};

/// SigLIP's sigmoid loss.  Inputs and outputs as InfoNCEFamily.
template <typename Scalar>
class SigLIP {
 public:
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

  explicit SigLIP(const SigLIPParams& params = {}, const EngineOptions& options = {})
      : params_(params), options_(options) {
    params_.check(kName);
    options_.check();
  }
  SigLIP(double logit_scale, double logit_bias, const EngineOptions& options = {})
      : SigLIP(SigLIPParams{logit_scale, logit_bias}, options) {}

  const SigLIPParams& params() const { return params_; }
  /// Sets a learned scale and bias, validated as in check().
  void set_params(const SigLIPParams& p) {
    p.check(kName);
    params_ = p;
  }

  template <typename DA, typename DB>
  Scalar value(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb) const {
    Workspace<Scalar> ws;
    return value(za, zb, ws);
  }
  template <typename DA, typename DB>
  Scalar value(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb, Workspace<Scalar>& ws) const {
    return static_cast<Scalar>(detail::Engine<Scalar>::evaluate(kernel(za.rows()), ws, options_, za, zb, kName));
  }

  template <typename DA, typename DB>
  SigLIPResult<Scalar> value_and_grad(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb) const {
    Workspace<Scalar> ws;
    SigLIPResult<Scalar> out;
    detail::check_views(kName, za, zb);
    out.grad_a.resize(za.rows(), za.cols());
    out.grad_b.resize(zb.rows(), zb.cols());
    out.value = value_and_grad(za, zb, out.grad_a, out.grad_b, &out.grad_logit_scale, &out.grad_logit_bias, ws);
    return out;
  }

  /// Caller-owned outputs; `grad_logit_scale` and `grad_logit_bias` may be null.
  template <typename DA, typename DB, typename GA, typename GB>
  Scalar value_and_grad(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                        const Eigen::MatrixBase<GA>& grad_a, const Eigen::MatrixBase<GB>& grad_b,
                        Scalar* grad_logit_scale, Scalar* grad_logit_bias, Workspace<Scalar>& ws) const {
    const auto k = kernel(za.rows());
    const auto r = detail::Engine<Scalar>::evaluate_grad(k, ws, options_, za, zb, grad_a, grad_b, kName);
    if (grad_logit_scale) *grad_logit_scale = static_cast<Scalar>(r.second / (2.0 * params_.logit_scale));
    if (grad_logit_bias)
      // negatives' part summed over the tiles + positives' part (left by finish())
      *grad_logit_bias = static_cast<Scalar>(detail::Engine<Scalar>::aux(ws) +
                                             static_cast<double>(detail::Engine<Scalar>::row_stat(ws)[0]));
    return static_cast<Scalar>(r.first);
  }

 private:
  static constexpr const char* kName = "contrastive::SigLIP";
  using Kernel = detail::AdditiveKernel<Scalar, detail::SigmoidTerms<Scalar>>;

  Kernel kernel(Eigen::Index n) const {
    const double w = 1.0 / static_cast<double>(n);
    return Kernel(detail::SigmoidTerms<Scalar>{static_cast<Scalar>(params_.logit_bias)},
                  static_cast<Scalar>(params_.logit_scale), w, w, 0.0, n, nullptr, detail::AuxSum::TermDerivative);
  }

  SigLIPParams params_;
  EngineOptions options_;
};

/// Weights of the spectral contrastive loss (Def. 3.2 with phi(x) = x, psi(x) = x^2).
struct SpectralParams {
  double cross_weight = 1.0;   ///< c1 >= 0
  double within_weight = 0.0;  ///< c2 >= 0
  void check(const char* where = "contrastive::SpectralParams") const {
    detail::check_weight(where, "cross_weight", cross_weight);
    detail::check_weight(where, "within_weight", within_weight);
  }
};

/// Spectral contrastive loss:
/// L = -1/m sum_i s_ii + c1/(m(m-1)) sum_{i!=j} s_ij^2 + c2/(2m(m-1)) sum_{i!=j} [(u_i.u_j)^2 + (v_i.v_j)^2].
template <typename Scalar>
class Spectral {
 public:
  explicit Spectral(const SpectralParams& params = {}, const EngineOptions& options = {})
      : params_(params), options_(options) {
    params_.check(kName);
    options_.check();
  }

  template <typename DA, typename DB>
  Scalar value(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb) const {
    Workspace<Scalar> ws;
    return value(za, zb, ws);
  }
  template <typename DA, typename DB>
  Scalar value(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb, Workspace<Scalar>& ws) const {
    return static_cast<Scalar>(detail::Engine<Scalar>::evaluate(kernel(za.rows()), ws, options_, za, zb, kName));
  }
  template <typename DA, typename DB>
  LossAndGradient<Scalar> value_and_grad(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb) const {
    Workspace<Scalar> ws;
    LossAndGradient<Scalar> out;
    detail::check_views(kName, za, zb);
    out.grad_a.resize(za.rows(), za.cols());
    out.grad_b.resize(zb.rows(), zb.cols());
    out.value = value_and_grad(za, zb, out.grad_a, out.grad_b, ws);
    return out;
  }
  template <typename DA, typename DB, typename GA, typename GB>
  Scalar value_and_grad(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                        const Eigen::MatrixBase<GA>& grad_a, const Eigen::MatrixBase<GB>& grad_b,
                        Workspace<Scalar>& ws) const {
    const auto r = detail::Engine<Scalar>::evaluate_grad(kernel(za.rows()), ws, options_, za, zb, grad_a, grad_b, kName);
    return static_cast<Scalar>(r.first);
  }

 private:
  static constexpr const char* kName = "contrastive::Spectral";
  using Kernel = detail::AdditiveKernel<Scalar, detail::SpectralTerms<Scalar>>;
  Kernel kernel(Eigen::Index n) const {
    const double m = static_cast<double>(n);
    return Kernel(detail::SpectralTerms<Scalar>{}, Scalar(1), 1.0 / m, params_.cross_weight / (m * (m - 1)),
                  params_.within_weight / (2 * m * (m - 1)), n);
  }
  SpectralParams params_;
  EngineOptions options_;
};

}  // namespace contrastive
