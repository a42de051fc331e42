// contrastive — the scalar functions every loss shares (internal), one
// definition each.
// SPDX-License-Identifier: MIT
#pragma once

#include <cmath>
#include <limits>

namespace contrastive {
namespace detail {

/// softplus(x) = log(1 + e^x), without overflow (large x) or loss of the
/// tiny value (very negative x).
template <typename S>
S softplus(S x) {
  return x > S(0) ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
}

/// The same element-wise on an Eigen array expression.
template <typename A>
auto softplus_array(const A& x) {
  using S = typename A::Scalar;
  return x.max(S(0)) + (-x.abs()).exp().log1p();
}

/// sigmoid(x) = 1 / (1 + e^-x), never forming e^{+large}.
template <typename S>
S sigmoid(S x) {
  if (x >= S(0)) return S(1) / (S(1) + std::exp(-x));
  const S e = std::exp(x);
  return e / (S(1) + e);
}

/// The same element-wise on an Eigen array expression (e^-x overflows to
/// +inf for x << 0, which gives the correct 0).
template <typename A>
auto sigmoid_array(const A& x) {
  using S = typename A::Scalar;
  return (S(1) + (-x).exp()).inverse();
}

/// The logit offset of a weight c >= 0: log c, and -inf for c = 0 (the term
/// is removed: e^{-inf} = 0).  The one rule for a weight of 0.
template <typename S>
S log_weight(double c) {
  return c > 0.0 ? static_cast<S>(std::log(c)) : -std::numeric_limits<S>::infinity();
}


}  // namespace detail
}  // namespace contrastive
