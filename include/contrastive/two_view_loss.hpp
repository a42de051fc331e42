// contrastive — the one interface of every two-view loss: the calling
// convention of api.hpp written once.
// SPDX-License-Identifier: MIT
#pragma once

#include <array>
#include <exception>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "api.hpp"
#include "detail/checks.hpp"
#include "detail/engine_call.hpp"
#include "engine.hpp"

namespace contrastive {

namespace detail {
/// Where the allocating value_and_grad(za, zb, call) puts a loss's scalar
/// gradients: Loss::result_fields(result) when the loss declares it (e.g.
/// Alignment: Result::grad_alpha), otherwise Result::grad_temperature (one
/// scalar gradient) or grad_logit_scale and grad_logit_bias (two).
template <typename L, typename S, typename = void>
struct ResultFields {
  static std::array<S*, 2> of(Result<S>& r) {
    return {L::kScalarGradients == 2 ? &r.grad_logit_scale : &r.grad_temperature, &r.grad_logit_bias};
  }
};
template <typename L, typename S>
struct ResultFields<L, S, std::void_t<decltype(L::result_fields(std::declval<Result<S>&>()))>> {
  static std::array<S*, 2> of(Result<S>& r) { return L::result_fields(r); }
};
}  // namespace detail

/// What every configured loss carries: its parameters (validated by their
/// check() on construction, naming the field; a loss adds the ranges its
/// Scalar computes correctly), its engine options (also validated) and the
/// name its errors start with.
template <typename Params>
class LossSettings {
 public:
  /// The loss's parameters.
  const Params& params() const { return params_; }
  /// The engine options the loss runs with.
  const EngineOptions& options() const { return options_; }
  /// The name errors start with ("contrastive::NTXent", ...).
  const char* name() const { return name_; }

 protected:
  /// Validates `params` and `options` (std::invalid_argument naming the field).
  LossSettings(const Params& params, const EngineOptions& options, const char* name)
      : params_(params), options_(options), name_(name) {
    params_.check(name_);
    options_.check();
  }
  Params params_;          ///< validated parameters
  EngineOptions options_;  ///< validated engine options
  const char* name_;       ///< error prefix
};

/// The calls of every loss of two views za, zb (rows are samples; row i of
/// both is instance i), written once for all of them:
///
///     value(za, zb, [ws,] call = {})
///     value_and_grad(za, zb, grad_a, grad_b, scalar gradients..., ws, call = {})
///     value_and_grad(za, zb, call = {})  -> Result
///
/// where "scalar gradients" are as many `Scalar*` (each may be null) as the
/// loss has differentiable scalar parameters: none (Spectral, VRNS), one
/// (dL/dtau: the InfoNCE family, SupCon, Combined, SampledNegatives;
/// Alignment's dL/dalpha, Uniformity's dL/dt) or two
/// (SigLIP's dL/dt and dL/db).  Inputs are any dense Eigen expressions;
/// outputs any writable dense Eigen objects of the inputs' shape.  On an
/// exception nothing of the outputs has been written.  With a reused
/// Workspace no loss reallocates its own buffers between calls of the same
/// shape.
///
/// A loss derives from TwoViewLoss<Loss, Scalar> and provides name(),
/// anchors(n) and `static constexpr int kScalarGradients`.  A loss on the
/// engine also provides (private, with TwoViewLoss and detail::EngineCall as
/// friends) accepts(), requires_labels(), signature(), with_kernel(batch, f)
/// and scalar_gradients(stats, g); a loss that is not on the engine instead
/// provides evaluate(za, zb, buffers, call) and
/// differentiate(za, zb, grad_a, grad_b, scalar_gradients, buffers, call).
template <typename Derived, typename Scalar>
class TwoViewLoss {
 public:
  /// The options of a call of this loss.
  using Call = CallOptions<Scalar>;

  /// Loss value only (one pass), with a workspace of its own.
  template <typename DA, typename DB>
  Scalar value(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb, const Call& call = {}) const {
    Workspace<Scalar> ws;
    return value(za, zb, ws, call);
  }

  /// Loss value only (one pass) with a reused Workspace.
  template <typename DA, typename DB>
  Scalar value(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb, Workspace<Scalar>& ws,
               const Call& call = {}) const {
    return self().evaluate(za, zb, detail::buffers(ws), call);
  }

  /// Value and gradients of a loss without scalar parameters.
  template <typename DA, typename DB, typename GA, typename GB, typename D = Derived,
            std::enable_if_t<D::kScalarGradients == 0, int> = 0>
  Scalar value_and_grad(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                        const Eigen::MatrixBase<GA>& grad_a, const Eigen::MatrixBase<GB>& grad_b,
                        Workspace<Scalar>& ws, const Call& call = {}) const {
    return gradients(za, zb, grad_a, grad_b, {nullptr, nullptr}, ws, call);
  }

  /// The same for a loss with one scalar parameter: `grad_scalar` receives
  /// its derivative (dL/dtau) unless it is null.
  template <typename DA, typename DB, typename GA, typename GB, typename D = Derived,
            std::enable_if_t<D::kScalarGradients == 1, int> = 0>
  Scalar value_and_grad(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                        const Eigen::MatrixBase<GA>& grad_a, const Eigen::MatrixBase<GB>& grad_b, Scalar* grad_scalar,
                        Workspace<Scalar>& ws, const Call& call = {}) const {
    return gradients(za, zb, grad_a, grad_b, {grad_scalar, nullptr}, ws, call);
  }

  /// The same for a loss with two (SigLIP: dL/dt into `grad_first`, dL/db
  /// into `grad_second`; either may be null).
  template <typename DA, typename DB, typename GA, typename GB, typename D = Derived,
            std::enable_if_t<D::kScalarGradients == 2, int> = 0>
  Scalar value_and_grad(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                        const Eigen::MatrixBase<GA>& grad_a, const Eigen::MatrixBase<GB>& grad_b, Scalar* grad_first,
                        Scalar* grad_second, Workspace<Scalar>& ws, const Call& call = {}) const {
    return gradients(za, zb, grad_a, grad_b, {grad_first, grad_second}, ws, call);
  }

  /// Value and every gradient, allocated (see Result).  The scalar gradient
  /// is Result::grad_temperature (one parameter; Alignment's grad_alpha,
  /// Uniformity's grad_t) or grad_logit_scale and grad_logit_bias (SigLIP);
  /// Result::per_anchor holds the per-anchor losses of losses that have
  /// anchors.
  template <typename DA, typename DB>
  Result<Scalar> value_and_grad(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                                const Call& call = {}) const {
    Workspace<Scalar> ws;
    Result<Scalar> out;
    Call c = call;
    const Eigen::Index a = self().anchors(za.rows());
    try {
      detail::size_result(out, self().name(), za, zb);
      if (a > 0 && !call.per_anchor.given()) {
        out.per_anchor.assign(static_cast<std::size_t>(a), Scalar(0));
        c.per_anchor = out.per_anchor;
      }
    } catch (...) {
      // Across processes the others are entering the call: join it failed.
      self().fail_call(za, zb, detail::buffers(ws), call, std::current_exception());
    }
    std::array<Scalar*, 2> g = detail::ResultFields<Derived, Scalar>::of(out);
    out.value = self().differentiate(za, zb, out.grad_a, out.grad_b, g.data(), detail::buffers(ws), c);
    if (a > 0 && call.per_anchor.given()) out.per_anchor.assign(call.per_anchor.begin(), call.per_anchor.end());
    return out;
  }

 protected:
  /// A failure before a call (allocating a Result): across processes the
  /// engine's call is joined failed, so that every process throws.
  template <typename DA, typename DB>
  [[noreturn]] void fail_call(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                              detail::Buffers<Scalar>& b, const Call& call, const std::exception_ptr& err) const {
    detail::EngineCall::join_failed(self(), b, za, zb, call, err);
  }
  /// A value call of a loss on the engine.
  template <typename DA, typename DB>
  Scalar evaluate(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb, detail::Buffers<Scalar>& b,
                  const Call& call) const {
    return static_cast<Scalar>(detail::EngineCall::run(self(), b, za, zb, detail::no_gradient<Scalar>(),
                                                       detail::no_gradient<Scalar>(), false, call));
  }
  /// A gradient call of a loss on the engine.
  template <typename DA, typename DB, typename GA, typename GB>
  Scalar differentiate(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                       const Eigen::MatrixBase<GA>& grad_a, const Eigen::MatrixBase<GB>& grad_b, Scalar* const* g,
                       detail::Buffers<Scalar>& b, const Call& call) const {
    const double v = detail::EngineCall::run(self(), b, za, zb, &grad_a, &grad_b, g[0] != nullptr, call);
    self().scalar_gradients(b.cs, g);
    return static_cast<Scalar>(v);
  }

 private:
  const Derived& self() const { return static_cast<const Derived&>(*this); }
  template <typename DA, typename DB, typename GA, typename GB>
  Scalar gradients(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                   const Eigen::MatrixBase<GA>& grad_a, const Eigen::MatrixBase<GB>& grad_b,
                   std::array<Scalar*, 2> g, Workspace<Scalar>& ws, const Call& call) const {
    return self().differentiate(za, zb, grad_a, grad_b, g.data(), detail::buffers(ws), call);
  }
};

}  // namespace contrastive
