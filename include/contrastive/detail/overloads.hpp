// contrastive — the allocating overloads of every two-view loss (internal).
// SPDX-License-Identifier: MIT
#pragma once

#include <vector>

#include <Eigen/Core>

#include "../api.hpp"
#include "../engine.hpp"
#include "checks.hpp"

namespace contrastive {
namespace detail {

/// value(za, zb, call) and value_and_grad(za, zb, call) -> Result for a loss
/// whose full calls are value(za, zb, ws, call) and fill(za, zb, result, ws,
/// call) (the latter writes the gradients and scalar gradients of a Result).
/// They make a Workspace and the outputs, and forward.
template <typename Derived, typename Scalar>
class TwoViewOverloads {
 public:
  /// Loss value only (no gradient pass), with a workspace of its own.
  template <typename DA, typename DB>
  Scalar value(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
               const CallOptions<Scalar>& call = {}) const {
    Workspace<Scalar> ws;
    return self().value(za, zb, ws, call);
  }

  /// Value and every gradient, allocated (see Result).  Result::per_anchor
  /// holds the per-anchor losses of losses that have anchors.
  template <typename DA, typename DB>
  Result<Scalar> value_and_grad(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                                const CallOptions<Scalar>& call = {}) const {
    Workspace<Scalar> ws;
    Result<Scalar> out;
    size_result(out, self().name(), za, zb);
    CallOptions<Scalar> c = call;
    const Eigen::Index a = self().anchors(za.rows());
    if (a > 0 && !call.per_anchor.given()) {
      out.per_anchor.assign(static_cast<std::size_t>(a), Scalar(0));
      c.per_anchor = out.per_anchor;
    }
    out.value = self().fill(za, zb, out, ws, c);
    if (a > 0 && call.per_anchor.given()) out.per_anchor.assign(call.per_anchor.begin(), call.per_anchor.end());
    return out;
  }

 private:
  const Derived& self() const { return static_cast<const Derived&>(*this); }
};

}  // namespace detail
}  // namespace contrastive
