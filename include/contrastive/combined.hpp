// contrastive — sums of losses on shared tiles: an InfoNCE-family loss plus
// any weighted additive terms (SigLIP, spectral CL, the VRNS penalty), in one
// call with one normalisation, one set of similarity tiles and one gradient
// pass.  WithVRNS is such a sum with a single term.
// SPDX-License-Identifier: MIT
//
//   L = base(za, zb) + sum_k lambda_k term_k(za, zb)
//
// Instance ids (optional, one per row) remove the pairs of equal ids from the
// negatives of the base and of every additive term.
//
// dL/dtau of a sum is that of its base (the terms do not depend on tau).
#pragma once

#include <optional>
#include <variant>
#include <vector>

#include <Eigen/Core>

#include "api.hpp"
#include "detail/additive_kernel.hpp"
#include "detail/checks.hpp"
#include "detail/math.hpp"
#include "engine.hpp"
#include "two_view_loss.hpp"
#include "infonce_family.hpp"
#include "siglip.hpp"
#include "spectral.hpp"
#include "vrns.hpp"

namespace contrastive {

/// One weighted term of a combination (see Combined): SigLIP, spectral CL
/// or the VRNS penalty, each with its own parameters.
struct LossTerm {
  /// Which loss the term is.
  enum class Kind { SigLIP, Spectral, VRNS };
  Kind kind = Kind::VRNS;  ///< the term's loss
  double weight = 1.0;     ///< lambda >= 0 multiplying the term
  SigLIPParams siglip{};   ///< used when kind is SigLIP
  SpectralParams spectral{};  ///< used when kind is Spectral
  VRNSParams vrns{};          ///< used when kind is VRNS

  /// lambda * SigLIP(p).
  static LossTerm make_siglip(const SigLIPParams& p, double weight = 1.0) {
    LossTerm t{Kind::SigLIP, weight};
    t.siglip = p;
    return t;
  }
  /// lambda * Spectral(p).
  static LossTerm make_spectral(const SpectralParams& p, double weight = 1.0) {
    LossTerm t{Kind::Spectral, weight};
    t.spectral = p;
    return t;
  }
  /// lambda * VRNS(p).
  static LossTerm make_vrns(const VRNSParams& p, double weight = 1.0) {
    LossTerm t{Kind::VRNS, weight};
    t.vrns = p;
    return t;
  }

  /// Throws std::invalid_argument naming the first invalid field.
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
                                AdditiveKernel<S, PenaltyTerms<S>>>;

/// A term's kernel (n pairs, `negatives` ordered cross-view negative pairs).
template <typename S>
TermKernel<S> make_term_kernel(const LossTerm& t, Eigen::Index n, double negatives, const Eigen::Index* ids) {
  switch (t.kind) {
    case LossTerm::Kind::SigLIP: return make_siglip_kernel<S>(t.siglip, t.weight, n, ids, false);
    case LossTerm::Kind::Spectral: return make_spectral_kernel<S>(t.spectral, t.weight, n, ids, false);
    case LossTerm::Kind::VRNS: break;
  }
  return make_vrns_kernel<S>(t.vrns, t.weight, n, negatives, ids, false);
}

/// Several additive kernels on the same tiles, dispatched once per tile.
template <typename S>
class MixedKernel {
 public:
  explicit MixedKernel(std::vector<TermKernel<S>> terms) : terms_(std::move(terms)) {}

  void share_tiles_with_scale(S engine_scale) {
    for (auto& k : terms_) std::visit([&](auto& t) { t.share_tiles_with_scale(engine_scale); }, k);
  }
  bool visits(int vr, int vc) const {
    for (const auto& k : terms_)
      if (std::visit([&](const auto& t) { return t.visits(vr, vc); }, k)) return true;
    return false;
  }
  S logit_scale() const { return S(1); }  // standalone: tiles hold K itself
  int stat_count() const { return 0; }
  bool online() const { return false; }
  void begin(const RowMatrix<S>&, CallStats<S>&) const {}

  void pass1(TileRef<S> X, const Tile& t, const CallStats<S>&, TileOut<S>& out, bool keep, ThreadSlot<S>& sl) const {
    for (const auto& k : terms_)
      std::visit([&](const auto& term) { if (term.visits(t.view_r, t.view_c)) out.sums->value += term.tile_value(X, t, sl); }, k);
    if (!keep || !visits(t.view_r, t.view_c)) return;
    auto H = second_tile(sl, t);
    tile_gradient(X, t, H, false, *out.sums, sl);
    X = H;
  }
  double finish(const RowMatrix<S>& W, const RowStats<S>& st, CallStats<S>& cs) const {
    double v = 0;
    for (const auto& k : terms_) v += std::visit([&](const auto& term) { return term.finish(W, st, cs); }, k);
    return v;
  }
  /// H (+)= the terms' dL/dK of the raw tile X.
  void tile_gradient(const TileRef<S>& X, const Tile& t, TileRef<S> H, bool accumulate, PairSums& sums,
                     ThreadSlot<S>& sl) const {
    for (const auto& k : terms_)
      std::visit(
          [&](const auto& term) {
            if (!term.visits(t.view_r, t.view_c)) return;
            term.tile_gradient(X, t, H, accumulate, sums, sl);
            accumulate = true;
          },
          k);
  }
  bool pass2(TileRef<S> P, const Tile& t, bool kept, const CallStats<S>&, PairSums& sums, ThreadSlot<S>& sl) const {
    if (!visits(t.view_r, t.view_c)) return false;
    if (kept) return true;
    auto H = second_tile(sl, t);
    tile_gradient(P, t, H, false, sums, sl);
    P = H;
    return true;
  }
  void pair_terms(const RowMatrix<S>& W, const CallStats<S>& cs, RowMatrix<S>& dW, Eigen::Index i0,
                  Eigen::Index i1) const {
    for (const auto& k : terms_) std::visit([&](const auto& term) { term.pair_terms(W, cs, dW, i0, i1); }, k);
  }

 private:
  static TileRef<S> second_tile(ThreadSlot<S>& sl, const Tile& t) {
    if (sl.h.rows() < t.nr || sl.h.cols() < t.nc) detail::resize_buffer(sl.h, sl.chunk, sl.chunk);
    return TileRef<S>(sl.h.topLeftCorner(t.nr, t.nc));
  }
  std::vector<TermKernel<S>> terms_;
};

}  // namespace detail

/// base (an InfoNCE-family loss, optional) + sum_k weight_k * term_k, in one
/// call on shared tiles.  Inputs, outputs and errors as InfoNCEFamily.
///
/// Calls (api.hpp): value(za, zb, [ws,] call), value_and_grad(za, zb, grad_a,
/// grad_b, &grad_temperature, ws, call) (the base's dL/dtau; 0 without a
/// base), value_and_grad(za, zb, call) -> Result.  CallOptions: instance_ids.
template <typename Scalar>
class Combined : public TwoViewLoss<Combined<Scalar>, Scalar> {
  friend class TwoViewLoss<Combined<Scalar>, Scalar>;

 public:
  /// One scalar gradient: the base's dL/dtau (0 without a base).
  static constexpr int kScalarGradients = 1;

  /// base + terms; the base's engine options are used.  Validates the terms.
  Combined(const InfoNCEFamily<Scalar>& base, std::vector<LossTerm> terms, const char* name = "contrastive::Combined")
      : base_(base), terms_(std::move(terms)), options_(base.options()), name_(name) {
    for (const auto& t : terms_) t.check(name_);
  }
  /// A sum of additive terms only.  Validates the terms and the options.
  explicit Combined(std::vector<LossTerm> terms, const EngineOptions& options = {},
                    const char* name = "contrastive::Combined")
      : terms_(std::move(terms)), options_(options), name_(name) {
    if (terms_.empty()) detail::fail(name_, "terms", "is empty and there is no base loss: the sum has nothing to compute");
    for (const auto& t : terms_) t.check(name_);
    options_.check();
  }

  /// The additive terms.
  const std::vector<LossTerm>& terms() const { return terms_; }
  /// The engine options the loss runs with.
  const EngineOptions& options() const { return options_; }
  /// The name errors start with.
  const char* name() const { return name_; }
  /// No per-anchor outputs (0).
  Eigen::Index anchors(Eigen::Index) const { return 0; }
  /// True when the sum has an InfoNCE-family base loss (and so a temperature).
  bool has_base() const { return base_.has_value(); }
  /// Changes the base loss's temperature (e.g. a learned one), validated as
  /// on construction.  A sum without a base has no temperature: throws
  /// std::invalid_argument naming field 'temperature'.
  void set_temperature(double tau) {
    if (!base_) detail::fail_field(name_, "temperature", "does not exist: this sum has no base loss");
    detail::check_temperature<Scalar>(name_, "temperature", tau);
    base_->set_temperature(tau);
  }

 private:
  friend struct detail::EngineCall;
  detail::Accepts accepts() const { return {false, true, false}; }
  bool requires_labels() const { return false; }
  std::vector<double> signature() const {
    std::vector<double> s;
    if (base_) {
      const auto& p = base_->params();
      s = {p.temperature, p.cross_weight, p.within_weight, p.positive_in_denominator ? 1.0 : 0.0,
           p.direction == Direction::Symmetric ? 1.0 : 0.0};
    }
    for (const auto& t : terms_)
      s.insert(s.end(), {static_cast<double>(t.kind), t.weight, t.siglip.logit_scale, t.siglip.logit_bias,
                         t.siglip.within_weight, t.spectral.cross_weight, t.spectral.within_weight,
                         static_cast<double>(t.vrns.dataset_size), t.vrns.target, t.vrns.power});
    return s;
  }
  /// Calls f with the engine kernel for this batch: the base (if any) and
  /// the terms on its tiles.
  template <typename F>
  double with_kernel(const detail::Batch<Scalar>& batch, F&& f) const {
    const Eigen::Index n = batch.n;
    const double negatives = detail::count_negatives(
        name_, n,
        batch.ids ? Span<const Eigen::Index>(batch.ids, static_cast<std::size_t>(n)) : Span<const Eigen::Index>());
    std::vector<detail::TermKernel<Scalar>> kernels;
    for (const auto& t : terms_) kernels.push_back(detail::make_term_kernel<Scalar>(t, n, negatives, batch.ids));
    detail::MixedKernel<Scalar> mixed(std::move(kernels));
    if (!base_) {
      mixed.share_tiles_with_scale(Scalar(1));
      return f(mixed);
    }
    const detail::InfoNCEKernel<Scalar> k1(base_->params(), n, batch.ids, nullptr, nullptr, batch.want_dtau);
    const detail::SumKernel<Scalar, detail::InfoNCEKernel<Scalar>, detail::MixedKernel<Scalar>> k(k1, std::move(mixed));
    return f(k);
  }
  void scalar_gradients(const detail::CallStats<Scalar>& cs, Scalar* const* g) const {
    if (g[0]) *g[0] = base_ ? static_cast<Scalar>(cs.dtau) : Scalar(0);
  }

  std::optional<InfoNCEFamily<Scalar>> base_;
  std::vector<LossTerm> terms_;
  EngineOptions options_;
  const char* name_;
};

/// L = base + lambda * VRNS on shared tiles (the penalty reads the base's
/// cross-view tiles); dL/dtau is the base's.  Calls as Combined.
template <typename Scalar>
class WithVRNS : public Combined<Scalar> {
 public:
  /// Validates the penalty's parameters and lambda >= 0.
  WithVRNS(const InfoNCEFamily<Scalar>& base, const VRNSParams& vrns, double lambda)
      : Combined<Scalar>(base, {term(vrns, lambda)}, "contrastive::WithVRNS") {}
  /// lambda.
  double lambda() const { return this->terms().front().weight; }

 private:
  static LossTerm term(const VRNSParams& vrns, double lambda) {
    detail::check_weight("contrastive::WithVRNS", "lambda", lambda);
    return LossTerm::make_vrns(vrns, lambda);
  }
};

}  // namespace contrastive
