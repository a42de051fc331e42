// Diagnostic (outside the CMake build): how far float's dL/dtau lies from
// double's on near-collapsed batches at tau = 0.01, over 20 random batches
// built as the tests build theirs, and how much of that an exact computation
// on the same float inputs would show (the spread of double's dL/dtau when
// every input is perturbed by up to 2^-24 of itself, 8 draws).  The first
// column is the float result's error; the second says whether the inputs'
// own rounding explains it (it does not: the cosines of near-parallel unit
// vectors are far better determined by the inputs than a float dot product
// of the normalised rows computes them).
//
//   g++ -std=c++17 -O2 [-march=native] -I/usr/include/eigen3 -Iinclude
//     bench/collapsed_precision.cpp -o collapsed_precision   (one line)
//   ./collapsed_precision
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include <contrastive/contrastive.hpp>

#include "../tests/support.hpp"  // testing::collapsed(), the tests' batches

namespace {

using testing::collapsed;
using testing::MatD;

/// dL/dtau of NT-Xent (tau = 0.01) or of InfoNCEWithNegatives (shared keys
/// zc, the debiased variant with tau_plus = 0.1).
template <typename S>
double dtau(bool keys, const MatD& za, const MatD& zb, const MatD& zc) {
  using M = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  const M a = za.cast<S>(), b = zb.cast<S>();
  if (keys) {
    const contrastive::NegativeKeysParams p{0.01, contrastive::NegativeMode::Shared, 0.1, 0.0};
    return static_cast<double>(contrastive::InfoNCEWithNegatives<S>(p).value_and_grad(a, b, M(zc.cast<S>())).grad_temperature);
  }
  M ga(a.rows(), a.cols()), gb(a.rows(), a.cols());
  S t = 0;
  contrastive::Workspace<S> ws;
  contrastive::NTXent<S>(0.01).value_and_grad(a, b, ga, gb, &t, ws);
  return static_cast<double>(t);
}

void run(bool keys, double spread) {
  const double eps = std::ldexp(1.0, -24);
  double worst = 0, worst_rel = 0, worst_input = 0, smallest = 1e300, min_cos = 1;
  for (unsigned seed = 1; seed <= 20; ++seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> g(0.0, 1.0);
    const Eigen::Index n = keys ? 32 : 64, d = keys ? 16 : 32;
    const MatD z = collapsed(2 * n, d, spread, rng);  // one centre: anchors, then keys
    const MatD za = z.topRows(n), zc = z.bottomRows(n);
    MatD zb = za;
    for (Eigen::Index i = 0; i < zb.size(); ++i) zb(i) += 0.3 * spread * g(rng);
    // The inputs as float holds them: both runs see the same numbers.
    const MatD fa = za.cast<float>().cast<double>(), fb = zb.cast<float>().cast<double>(),
               fc = zc.cast<float>().cast<double>();
    const double ref = dtau<double>(keys, fa, fb, fc);
    const double err = std::abs(dtau<float>(keys, fa, fb, fc) - ref);
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    double input = 0;
    for (int k = 0; k < 8; ++k) {
      MatD pa = fa, pb = fb;
      for (Eigen::Index i = 0; i < pa.size(); ++i) {
        pa(i) *= 1.0 + eps * u(rng);
        pb(i) *= 1.0 + eps * u(rng);
      }
      input = std::max(input, std::abs(dtau<double>(keys, pa, pb, fc) - ref));
    }
    const MatD na = fa.rowwise().normalized(), nb = fb.rowwise().normalized();
    min_cos = std::min(min_cos, (na * nb.transpose()).minCoeff());
    worst = std::max(worst, err);
    worst_rel = std::max(worst_rel, err / std::abs(ref));
    worst_input = std::max(worst_input, input);
    smallest = std::min(smallest, std::abs(ref));
  }
  std::printf("%-21s spread %.4f (cosines >= %.6f): |dL/dtau| >= %.3g; float's error <= %.3g (%.2g of it); "
              "inputs' rounding <= %.2g\n",
              keys ? "InfoNCEWithNegatives" : "NTXent", spread, min_cos, smallest, worst, worst_rel, worst_input);
}

}  // namespace

int main() {
  for (double spread : {0.0025, 0.025}) run(false, spread);
  for (double spread : {0.0025, 0.025}) run(true, spread);
}
