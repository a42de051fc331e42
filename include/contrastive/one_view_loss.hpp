// contrastive — the calls of a loss of one batch of embeddings (one view):
// the calling convention of api.hpp with a single input.
// SPDX-License-Identifier: MIT
#pragma once

#include <exception>

#include <Eigen/Core>

#include "api.hpp"
#include "detail/engine_call.hpp"
#include "engine.hpp"

namespace contrastive {

/// The calls of every loss of one batch z (rows are samples), written once:
///
///     value(z, [ws,] call = {})
///     value_and_grad(z, grad, &grad_temperature, ws, call = {})
///     value_and_grad(z, call = {})  -> Result (grad_a = dL/dz, grad_temperature)
///
/// A loss derives from OneViewLoss<Loss, Scalar>, declares
/// `static constexpr int kViews = 1` and, like the two-view losses on the
/// engine, accepts(), requires_labels(), signature(), with_kernel() and
/// scalar_gradients() (private, with OneViewLoss and detail::EngineCall as
/// friends).
template <typename Derived, typename Scalar>
class OneViewLoss {
 public:
  /// The options of a call of this loss.
  using Call = CallOptions<Scalar>;

  /// Loss value only, with a workspace of its own.
  template <typename D>
  Scalar value(const Eigen::MatrixBase<D>& z, const Call& call = {}) const {
    Workspace<Scalar> ws;
    return value(z, ws, call);
  }
  /// Loss value only, with a reused Workspace.
  template <typename D>
  Scalar value(const Eigen::MatrixBase<D>& z, Workspace<Scalar>& ws, const Call& call = {}) const {
    return static_cast<Scalar>(detail::EngineCall::run(self(), detail::buffers(ws), z, z, detail::no_gradient<Scalar>(),
                                                       detail::no_gradient<Scalar>(), false, call));
  }
  /// Value and dL/dz into `grad` (z's shape); `grad_temperature` (may be
  /// null) receives dL/dtau.  On an exception nothing has been written.
  template <typename D, typename G>
  Scalar value_and_grad(const Eigen::MatrixBase<D>& z, const Eigen::MatrixBase<G>& grad, Scalar* grad_temperature,
                        Workspace<Scalar>& ws, const Call& call = {}) const {
    auto& b = detail::buffers(ws);
    const double v = detail::EngineCall::run(self(), b, z, z, &grad, detail::no_gradient<Scalar>(),
                                             grad_temperature != nullptr, call);
    Scalar* g[2] = {grad_temperature, nullptr};
    self().scalar_gradients(b.cs, g);
    return static_cast<Scalar>(v);
  }
  /// Value and gradients, allocated: Result::grad_a is dL/dz.
  template <typename D>
  Result<Scalar> value_and_grad(const Eigen::MatrixBase<D>& z, const Call& call = {}) const {
    Workspace<Scalar> ws;
    Result<Scalar> out;
    try {
      out.grad_a.resize(z.rows(), z.cols());
    } catch (...) {
      // Across processes the others are entering the call: join it failed.
      detail::EngineCall::join_failed(self(), detail::buffers(ws), z, z, call, std::current_exception());
    }
    out.value = value_and_grad(z, out.grad_a, &out.grad_temperature, ws, call);
    return out;
  }

 private:
  const Derived& self() const { return static_cast<const Derived&>(*this); }
};

}  // namespace contrastive
