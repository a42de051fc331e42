// contrastive — sums of losses on shared tiles: an InfoNCE-family loss plus
// any weighted additive terms (SigLIP, spectral CL, the VRNS penalty), in one
// call with one normalisation, one set of similarity tiles and one gradient
// pass.  Spectral, VRNS and WithVRNS are such sums with a single term.
// SPDX-License-Identifier: MIT
//
// The variance penalty (paper notes, Def. 5.7):
//   L_VRNS = 1/|N| sum_{(i, j) in N} |u_i . v_j - target|^p,
//   N = cross-view pairs (i, j), i != j, whose instance ids differ,
//   target = -1/(N_data - 1) from the data-set size (or given), p = 2 default;
// for p = 2 this is the authors' "mean over negative pairs of (s - delta)^2".
//
// Instance ids (optional, one per row) remove the pairs of equal ids from the
// negatives of the base and of every additive term.
//
// dL/dtau of a sum is that of its base: by Euler's identity,
// sum_r w_r . dL/dw_r = 2 <dL/dK, K>, and the terms' own share of <dL/dK, K>
// is summed over their pairs and subtracted.
#pragma once

#include <optional>
#include <variant>
#include <vector>

#include <Eigen/Core>

#include "additive_family.hpp"
#include "detail/additive_kernel.hpp"
#include "detail/checks.hpp"
#include "engine.hpp"
#include "infonce_family.hpp"

namespace contrastive {
namespace detail {

/// Several additive kernels on the same tiles, dispatched once per tile.
template <typename S>
class MixedKernel {
 public:
  explicit MixedKernel(std::vector<TermKernel<S>> terms) : terms_(std::move(terms)), stats_(terms_.size()) {}

  void share_tiles_with_scale(S engine_scale) {
    for (auto& k : terms_) std::visit([&](auto& t) { t.share_tiles_with_scale(engine_scale); }, k);
  }
  bool visits(int vr, int vc) const {
    for (const auto& k : terms_)
      if (std::visit([&](const auto& t) { return t.visits(vr, vc); }, k)) return true;
    return false;
  }
  S logit_scale() const { return S(1); }  // standalone: tiles hold K itself
  void prepare(TileRef<S>, const Tile&) const {}

  void reduce(const TileRef<S>& X, const Tile& t, ThreadSlot<S>& sl) const {
    for (const auto& k : terms_)
      std::visit([&](const auto& term) { if (term.visits(t.view_r, t.view_c)) term.reduce(X, t, sl); }, k);
  }
  double finish(const RowMatrix<S>& W, ColArray<S>& m, ColArray<S>& s, ColArray<S>&) const {
    double v = 0;
    for (std::size_t i = 0; i < terms_.size(); ++i)
      v += std::visit([&](const auto& term) { return term.finish(W, m, s, stats_[i]); }, terms_[i]);
    return v;
  }
  void add_gradient(const TileRef<S>& X, const Tile& t, TileRef<S> H, ThreadSlot<S>& sl, bool accumulate) const {
    for (const auto& k : terms_)
      std::visit(
          [&](const auto& term) {
            if (!term.visits(t.view_r, t.view_c)) return;
            term.add_gradient(X, t, H, sl, accumulate);
            accumulate = true;
          },
          k);
  }
  bool gradient(const TileRef<S>& X, const Tile& t, const ColArray<S>&, TileRef<S> H, ThreadSlot<S>& sl) const {
    if (!visits(t.view_r, t.view_c)) return false;
    add_gradient(X, t, H, sl, false);
    return true;
  }
  void pair_terms(const RowMatrix<S>& W, const ColArray<S>&, RowMatrix<S>& dW) const {
    for (std::size_t i = 0; i < terms_.size(); ++i)
      std::visit([&](const auto& term) { term.pair_terms(W, stats_[i], dW); }, terms_[i]);
  }
  /// <dL/dK, K> of the terms' positive pairs (after finish()).
  double positive_dot() const {
    double v = 0;
    for (const auto& st : stats_) v += static_cast<double>(st[1]);
    return v;
  }

 private:
  std::vector<TermKernel<S>> terms_;
  mutable std::vector<ColArray<S>> stats_;
};

}  // namespace detail

/// base (an InfoNCE-family loss, optional) + sum_k weight_k * term_k, in one
/// call on shared tiles.  Inputs, outputs and errors as InfoNCEFamily.
template <typename Scalar>
class Combined : public detail::AllocatingOverloads<Combined<Scalar>, Scalar> {
 public:
  using Ids = std::vector<Eigen::Index>;
  using detail::AllocatingOverloads<Combined<Scalar>, Scalar>::value;
  using detail::AllocatingOverloads<Combined<Scalar>, Scalar>::value_and_grad;

  /// base + terms; the base's engine options are used.
  Combined(const InfoNCEFamily<Scalar>& base, std::vector<LossTerm> terms, const char* name = "contrastive::Combined")
      : base_(base), terms_(std::move(terms)), options_(base.options()), name_(name) {
    for (const auto& t : terms_) t.check(name_);
  }
  /// A sum of additive terms only.
  explicit Combined(std::vector<LossTerm> terms, const EngineOptions& options = {},
                    const char* name = "contrastive::Combined")
      : terms_(std::move(terms)), options_(options), name_(name) {
    for (const auto& t : terms_) t.check(name_);
    options_.check();
  }

  const std::vector<LossTerm>& terms() const { return terms_; }

  const char* name() const { return name_; }

  /// Value with a reused Workspace; `instance_ids` (one per row, optional):
  /// equal ids are never negatives.  grad_temperature of the gradient
  /// overloads is the base's (0 without a base).
  template <typename DA, typename DB>
  Scalar value(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb, Workspace<Scalar>& ws,
               const Ids* instance_ids = nullptr) const {
    detail::check_views(name_, za, zb);
    return with_kernel(za.rows(), instance_ids, [&](const auto& k, const auto&) {
      return static_cast<Scalar>(detail::Engine<Scalar>::evaluate(k, ws, options_, za, zb, name_));
    });
  }

  /// Caller-owned outputs; `grad_temperature` may be null.
  template <typename DA, typename DB, typename GA, typename GB>
  Scalar value_and_grad(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                        const Eigen::MatrixBase<GA>& grad_a, const Eigen::MatrixBase<GB>& grad_b,
                        Scalar* grad_temperature, Workspace<Scalar>& ws, const Ids* instance_ids = nullptr) const {
    detail::check_views(name_, za, zb);
    return with_kernel(za.rows(), instance_ids, [&](const auto& k, const auto& mixed) {
      const auto r = detail::Engine<Scalar>::evaluate_grad(k, ws, options_, za, zb, grad_a, grad_b, name_);
      if (grad_temperature) {
        *grad_temperature = Scalar(0);
        if (base_) {
          const double terms_dot = detail::Engine<Scalar>::aux(ws) + mixed.positive_dot();
          *grad_temperature = static_cast<Scalar>(-(r.second / 2.0 - terms_dot) / base_->params().temperature);
        }
      }
      return static_cast<Scalar>(r.first);
    });
  }

 private:
  // Calls f(kernel, mixed) with the engine kernel for this batch.
  template <typename F>
  Scalar with_kernel(Eigen::Index n, const Ids* ids, F&& f) const {
    // Validated before any kernel exists, so errors leave outputs untouched.
    const double negatives = detail::count_negatives(name_, n, ids);
    std::vector<detail::TermKernel<Scalar>> kernels;
    for (const auto& t : terms_)
      kernels.push_back(detail::make_term_kernel<Scalar>(t, n, negatives, ids ? ids->data() : nullptr,
                                                         detail::AuxSum::TermDerivativeDotX));
    detail::MixedKernel<Scalar> mixed(std::move(kernels));
    if (!base_) {
      mixed.share_tiles_with_scale(Scalar(1));
      return f(mixed, mixed);
    }
    const detail::InfoNCEKernel<Scalar> k1(base_->params(), n, ids ? ids->data() : nullptr);
    const detail::SumKernel<Scalar, detail::InfoNCEKernel<Scalar>, detail::MixedKernel<Scalar>> k(k1, mixed);
    return f(k, k.second());
  }

  std::optional<InfoNCEFamily<Scalar>> base_;
  std::vector<LossTerm> terms_;
  EngineOptions options_;
  const char* name_;
};

/// Spectral contrastive loss (paper notes, Def. 3.2 with phi(x) = x, psi(x) = x^2):
/// L = -1/m sum_i s_ii + c1/(m(m-1)) sum_{i!=j} s_ij^2 + c2/(2m(m-1)) sum_{i!=j} [(u_i.u_j)^2 + (v_i.v_j)^2].
template <typename Scalar>
class Spectral : public Combined<Scalar> {
 public:
  explicit Spectral(const SpectralParams& params = {}, const EngineOptions& options = {})
      : Combined<Scalar>({LossTerm::make_spectral(params)}, options, "contrastive::Spectral") {}
};

/// The variance penalty on its own (grad_temperature of its results is 0).
template <typename Scalar>
class VRNS : public Combined<Scalar> {
 public:
  explicit VRNS(const VRNSParams& params, const EngineOptions& options = {})
      : Combined<Scalar>({LossTerm::make_vrns(params)}, options, "contrastive::VRNS") {}
  const VRNSParams& params() const { return this->terms().front().vrns; }
};

/// L = base + lambda * VRNS on shared tiles (the penalty reads the base's
/// cross-view tiles); dL/dtau is the base's.
template <typename Scalar>
class WithVRNS : public Combined<Scalar> {
 public:
  WithVRNS(const InfoNCEFamily<Scalar>& base, const VRNSParams& vrns, double lambda)
      : Combined<Scalar>(base, {term(vrns, lambda)}, "contrastive::WithVRNS") {}
  double lambda() const { return this->terms().front().weight; }

 private:
  static LossTerm term(const VRNSParams& vrns, double lambda) {
    detail::check_weight("contrastive::WithVRNS", "lambda", lambda);
    return LossTerm::make_vrns(vrns, lambda);
  }
};

}  // namespace contrastive
