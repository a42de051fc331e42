// contrastive — the independently additive family (paper notes, Def. 3.2):
// SigLIP, spectral contrastive loss and the VRNS penalty: their parameters,
// the per-pair weights of every term, and the SigLIP functor.  Spectral,
// VRNS and compositions (WithVRNS, Combined) are in combined.hpp.
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
#include <limits>
#include <variant>

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
  /// c2 >= 0: within-view pairs (u_i, u_j), (v_i, v_j) as negatives, each
  /// ordered pair weighted c2/(2m) (Def. 3.2; 0 in SigLIP itself).
  double within_weight = 0.0;

  void check(const char* where = "contrastive::SigLIPParams") const {
    detail::check_positive_finite(where, "logit_scale", logit_scale);
    if (!std::isfinite(logit_bias)) detail::fail_field(where, "logit_bias", "must be finite " + detail::got(logit_bias));
    detail::check_weight(where, "within_weight", within_weight);
  }
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

/// One weighted term of a combination (see Combined): SigLIP, spectral CL
/// or the VRNS penalty, each with its own parameters.
struct LossTerm {
  enum class Kind { SigLIP, Spectral, VRNS };
  Kind kind = Kind::VRNS;
  double weight = 1.0;  ///< lambda >= 0 multiplying the term
  SigLIPParams siglip{};
  SpectralParams spectral{};
  VRNSParams vrns{};

  static LossTerm make_siglip(const SigLIPParams& p, double weight = 1.0) {
    LossTerm t{Kind::SigLIP, weight};
    t.siglip = p;
    return t;
  }
  static LossTerm make_spectral(const SpectralParams& p, double weight = 1.0) {
    LossTerm t{Kind::Spectral, weight};
    t.spectral = p;
    return t;
  }
  static LossTerm make_vrns(const VRNSParams& p, double weight = 1.0) {
    LossTerm t{Kind::VRNS, weight};
    t.vrns = p;
    return t;
  }

  void check(const char* where = "contrastive::LossTerm") const {
    detail::check_weight(where, "weight", weight);
    switch (kind) {
      case Kind::SigLIP: siglip.check(where); break;
      case Kind::Spectral: spectral.check(where); break;
      case Kind::VRNS: vrns.check(where); break;
    }
  }
};

namespace detail {

template <typename S>
using TermKernel = std::variant<AdditiveKernel<S, SigmoidTerms<S>>, AdditiveKernel<S, SpectralTerms<S>>,
                                AdditiveKernel<S, SquareTerms<S>>, AdditiveKernel<S, PowerTerms<S>>>;

/// The one place where a term's per-pair weights are set (n pairs in the
/// batch, `negatives` = number of ordered cross-view negative pairs):
///   SigLIP   positives weight/n, cross negatives weight/n, within weight*c2/(2n)
///   Spectral positives weight/n, cross weight*c1/(n(n-1)), within weight*c2/(2n(n-1))
///   VRNS     cross negatives weight/negatives (the mean over negative pairs)
template <typename S>
TermKernel<S> make_term_kernel(const LossTerm& t, Eigen::Index n_, double negatives, const Eigen::Index* ids,
                               AuxSum aux) {
  const double n = static_cast<double>(n_), w = t.weight;
  switch (t.kind) {
    case LossTerm::Kind::SigLIP:
      return AdditiveKernel<S, SigmoidTerms<S>>(SigmoidTerms<S>{static_cast<S>(t.siglip.logit_bias)},
                                                static_cast<S>(t.siglip.logit_scale), w / n, w / n,
                                                w * t.siglip.within_weight / (2 * n), n_, ids, aux);
    case LossTerm::Kind::Spectral:
      return AdditiveKernel<S, SpectralTerms<S>>(SpectralTerms<S>{}, S(1), w / n,
                                                 w * t.spectral.cross_weight / (n * (n - 1)),
                                                 w * t.spectral.within_weight / (2 * n * (n - 1)), n_, ids, aux);
    case LossTerm::Kind::VRNS:
      break;
  }
  const S target = static_cast<S>(t.vrns.resolved_target());
  if (t.vrns.power == 2.0)
    return AdditiveKernel<S, SquareTerms<S>>(SquareTerms<S>{target}, S(1), 0.0, w / negatives, 0.0, n_, ids, aux);
  return AdditiveKernel<S, PowerTerms<S>>(PowerTerms<S>{target, static_cast<S>(t.vrns.power)}, S(1), 0.0,
                                          w / negatives, 0.0, n_, ids, aux);
}

}  // namespace detail

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
      : SigLIP(SigLIPParams{logit_scale, logit_bias, 0.0}, options) {}

  const SigLIPParams& params() const { return params_; }
  /// Sets a learned scale and bias, validated as in check().
  void set_params(const SigLIPParams& p) {
    p.check(kName);
    params_ = p;
  }

  using Ids = std::vector<Eigen::Index>;

  /// Value.  `instance_ids` (optional, one per row): cross-view pairs of
  /// equal ids are not negatives (their term is dropped; the positives and
  /// the 1/n normalisation stay).
  template <typename DA, typename DB>
  Scalar value(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
               const Ids* instance_ids = nullptr) const {
    Workspace<Scalar> ws;
    return value(za, zb, ws, instance_ids);
  }
  template <typename DA, typename DB>
  Scalar value(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb, Workspace<Scalar>& ws,
               const Ids* instance_ids = nullptr) const {
    const auto k = kernel(za.rows(), detail::checked_ids(kName, za, zb, instance_ids));
    return static_cast<Scalar>(detail::Engine<Scalar>::evaluate(k, ws, options_, za, zb, kName));
  }

  template <typename DA, typename DB>
  SigLIPResult<Scalar> value_and_grad(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                                      const Ids* instance_ids = nullptr) const {
    Workspace<Scalar> ws;
    SigLIPResult<Scalar> out;
    detail::size_result(out, kName, za, zb);
    out.value = value_and_grad(za, zb, out.grad_a, out.grad_b, &out.grad_logit_scale, &out.grad_logit_bias, ws,
                               instance_ids);
    return out;
  }

  /// Caller-owned outputs; `grad_logit_scale` and `grad_logit_bias` may be null.
  template <typename DA, typename DB, typename GA, typename GB>
  Scalar value_and_grad(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                        const Eigen::MatrixBase<GA>& grad_a, const Eigen::MatrixBase<GB>& grad_b,
                        Scalar* grad_logit_scale, Scalar* grad_logit_bias, Workspace<Scalar>& ws,
                        const Ids* instance_ids = nullptr) const {
    const auto k = kernel(za.rows(), detail::checked_ids(kName, za, zb, instance_ids));
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

  Kernel kernel(Eigen::Index n, const Eigen::Index* ids) const {
    return std::get<Kernel>(detail::make_term_kernel<Scalar>(LossTerm::make_siglip(params_), n, 0.0, ids,
                                                             detail::AuxSum::TermDerivative));
  }


  SigLIPParams params_;
  EngineOptions options_;
};

}  // namespace contrastive
