// The central-difference gradient check shared by the gradient tests.
#pragma once

#include <catch2/catch.hpp>

#include "support.hpp"

namespace testing {

/// Checks ga = dL/dza and gb = dL/dzb against central differences of
/// f(za, zb), row by row: within 1e-6 of the row, with a floor of 1e-2 of the
/// natural scale 1/||z_i|| (it absorbs the differences' round-off where the
/// exact gradient is 0, e.g. d = 1).
inline void check_central_differences(const std::function<double(const MatD&, const MatD&)>& f, const MatD& za,
                                      const MatD& zb, const MatD& ga, const MatD& gb) {
  const MatD fa = central_difference([&](const MatD& x) { return f(x, zb); }, za);
  const MatD fb = central_difference([&](const MatD& x) { return f(za, x); }, zb);
  for (Eigen::Index i = 0; i < za.rows(); ++i) {
    CHECK(near(ga.row(i), fa.row(i), 1e-6, 1e-2 / za.row(i).norm()));
    CHECK(near(gb.row(i), fb.row(i), 1e-6, 1e-2 / zb.row(i).norm()));
  }
}

}  // namespace testing
