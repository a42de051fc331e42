// The benchmarks' inputs, in a header that needs only Eigen, so that
// bench/before_after.cpp can use it against any revision's headers.
#pragma once

#include <cmath>

#include <Eigen/Core>

namespace contrastive_bench {

/// Inputs both the C++ benchmarks and bench/torch_compare.py build:
/// z(i, j) = sin(0.37 (i d + j) + 1.1 view) * (1 + (i mod 7)).
template <typename S>
Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> deterministic_input(Eigen::Index n, Eigen::Index d, int view) {
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> z(n, d);
  for (Eigen::Index i = 0; i < n; ++i)
    for (Eigen::Index j = 0; j < d; ++j)
      z(i, j) = static_cast<S>(std::sin(0.37 * static_cast<double>(i * d + j) + 1.1 * view) * (1.0 + static_cast<double>(i % 7)));
  return z;
}

}  // namespace contrastive_bench
