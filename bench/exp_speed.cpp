// The engine's exponential (detail/exp.hpp) against Eigen's, alone: time per
// element of `y = exp(x - c)` over one 256-element column (a tile column, in
// L1), the best of 5 rounds in alternation, and the largest error of each
// in ulp against long double std::exp over the function's domain.
//
// Not part of the CMake build (a diagnostic):
//   g++ -std=c++17 -O3 -march=native -DNDEBUG -I/usr/include/eigen3 -Iinclude bench/exp_speed.cpp -o exp_speed
//   ./exp_speed
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>

#include <Eigen/Core>

#include <contrastive/detail/exp.hpp>

namespace {

template <typename S>
using Col = Eigen::Array<S, Eigen::Dynamic, 1>;

template <typename S>
double worst_ulp(const Col<S>& x, const Col<S>& y) {
  double worst = 0;
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    const long double exact = std::exp(static_cast<long double>(x[i]));
    const S r = static_cast<S>(exact);
    const long double ulp = static_cast<long double>(std::nextafter(r, std::numeric_limits<S>::infinity())) - r;
    worst = std::max(worst, static_cast<double>(std::fabs(y[i] - exact) / ulp));
  }
  return worst;
}

template <typename S>
void compare(const char* name, double lo) {
  const Eigen::Index n = 256;
  const int calls = 200000;
  Col<S> x(n), y(n);
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> u(lo, 0.0);
  for (Eigen::Index i = 0; i < n; ++i) x[i] = static_cast<S>(u(rng));
  double best[2] = {1e300, 1e300};
  S sink = 0;
  for (int round = 0; round < 5; ++round)
    for (int which = 0; which < 2; ++which) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int k = 0; k < calls; ++k) {
        const S c = static_cast<S>(k & 1) * S(1e-6);  // (not hoisted out of the loop)
        if (which == 0) y = (x - c).exp();
        else y = contrastive::detail::exp_normal(x - c);
        sink += y[k & (n - 1)];
      }
      const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
      best[which] = std::min(best[which], ns / (double(calls) * double(n)));
    }
  using C = contrastive::detail::ExpNormalConstants<S>;
  Col<S> xs = Col<S>::LinSpaced(1 << 21, C::lo, C::hi);
  std::printf("%-6s Eigen %.3f ns/element, exp_normal %.3f (%.2f of Eigen's); largest error %.3f and %.3f ulp%s\n",
              name, best[0], best[1], best[1] / best[0], worst_ulp<S>(xs, xs.exp().eval()),
              worst_ulp<S>(xs, contrastive::detail::exp_normal(xs).eval()), sink == S(-1) ? " " : "");
}

}  // namespace

int main() {
  std::printf("exp_normal's own packet path: float %s, double %s\n",
              contrastive::detail::exp_normal_has_packet_path<float>() ? "yes" : "no",
              contrastive::detail::exp_normal_has_packet_path<double>() ? "yes" : "no");
  compare<float>("float", -64.0);    // the fixed shift's range (detail::fixed_shift_range)
  compare<double>("double", -600.0);
}
