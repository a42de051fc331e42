// Values known in closed form: collinear embeddings and the regular simplex.
#include <catch2/catch.hpp>

#include <Eigen/QR>

#include "support.hpp"

using namespace testing;

namespace {

// n unit vectors of a regular simplex (pairwise cosine -1/(n-1)), rotated at
// random into R^d (d >= n), as rows.
MatD simplex(Eigen::Index n, Eigen::Index d, std::mt19937_64& rng) {
  MatD e = MatD::Identity(n, n);
  e.rowwise() -= e.colwise().mean();
  e.rowwise().normalize();
  const MatD rot = Eigen::HouseholderQR<MatD>(uneven_rows(d, d, rng, 0.0)).householderQ();
  return e * rot.topRows(n);
}

// The row scales of the raw inputs do not matter (the loss normalises).
MatD scale_rows(MatD z, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(-3.0, 3.0);
  for (Eigen::Index i = 0; i < z.rows(); ++i) z.row(i) *= std::exp(u(rng));
  return z;
}

}  // namespace

TEST_CASE("collinear embeddings: NT-Xent = log(2n-1), InfoNCE = log n, and no gradient", "[closed-form]") {
  std::mt19937_64 rng(1);
  for (Eigen::Index n : {2, 3, 8, 33}) {
    const Eigen::Index d = 5;
    const MatD dir = uneven_rows(1, d, rng);
    const MatD za = scale_rows(dir.replicate(n, 1), rng), zb = scale_rows(dir.replicate(n, 1), rng);
    const double nn = static_cast<double>(n);
    const std::pair<Preset, double> expect[] = {{Preset::NTXent, std::log(2 * nn - 1)},
                                                {Preset::InfoNCE, std::log(nn)},
                                                {Preset::CLIP, std::log(nn)},
                                                {Preset::DCL, std::log(2 * nn - 2)},
                                                {Preset::DHEL, std::log(nn - 1)}};
    for (const auto& e : expect) {
      for (double tau : {0.05, 0.5, 2.0}) {
        INFO(preset_name(e.first) << " n=" << n << " tau=" << tau);
        contrastive::EngineOptions opt;
        opt.tile_size = 4;
        const auto r = make_loss<double>(e.first, tau, opt).value_and_grad(za, zb);
        CHECK(near(r.value, e.second, 1e-12));
        // Every gradient is along its own row, so the tangential part vanishes.
        CHECK(r.grad_a.cwiseProduct(za.rowwise().norm().replicate(1, d)).cwiseAbs().maxCoeff() < 1e-9 / tau);
        CHECK(r.grad_b.cwiseProduct(zb.rowwise().norm().replicate(1, d)).cwiseAbs().maxCoeff() < 1e-9 / tau);
        CHECK(std::abs(r.grad_temperature) < 1e-9 / (tau * tau));
      }
    }
  }
}

TEST_CASE("regular simplex: closed-form values and a stationary point (Thm 5.1)", "[closed-form]") {
  std::mt19937_64 rng(2);
  for (Eigen::Index n : {2, 4, 8, 17}) {
    const Eigen::Index d = n + 2;
    const MatD s = simplex(n, d, rng);
    const MatD za = scale_rows(s, rng), zb = scale_rows(s, rng);
    const double nn = static_cast<double>(n);
    for (double tau : {0.1, 0.5, 1.0}) {
      const double pos = 1.0 / tau, neg = -1.0 / ((nn - 1) * tau);
      const std::pair<Preset, double> expect[] = {
          {Preset::NTXent, -pos + std::log(std::exp(pos) + (2 * nn - 2) * std::exp(neg))},
          {Preset::InfoNCE, -pos + std::log(std::exp(pos) + (nn - 1) * std::exp(neg))},
          {Preset::CLIP, -pos + std::log(std::exp(pos) + (nn - 1) * std::exp(neg))},
          {Preset::DCL, -pos + neg + std::log(2 * nn - 2)},
          {Preset::DHEL, -pos + neg + std::log(nn - 1)}};
      for (const auto& e : expect) {
        INFO(preset_name(e.first) << " n=" << n << " tau=" << tau);
        contrastive::EngineOptions opt;
        opt.tile_size = 3;
        const auto r = make_loss<double>(e.first, tau, opt).value_and_grad(za, zb);
        CHECK(near(r.value, e.second, 1e-12));
        const double g = std::max(r.grad_a.cwiseProduct(za.rowwise().norm().replicate(1, d)).cwiseAbs().maxCoeff(),
                                  r.grad_b.cwiseProduct(zb.rowwise().norm().replicate(1, d)).cwiseAbs().maxCoeff());
        CHECK(g < 1e-10 / tau);
      }
    }
  }
}

TEST_CASE("the positive-only limit: DCL is below NT-Xent by the positive's share", "[closed-form]") {
  // For any batch, NT-Xent's per-anchor term is log(1 + e^{s_ii/tau} / sum_neg)
  // above DCL's, so NT-Xent > DCL and NT-Xent - DCL < log(1 + e^{2/tau}).
  std::mt19937_64 rng(5);
  const MatD za = uneven_rows(10, 6, rng), zb = uneven_rows(10, 6, rng);
  const double a = contrastive::NTXent<double>(0.3).value(za, zb), b = contrastive::DCL<double>(0.3).value(za, zb);
  CHECK(a > b);
  CHECK(a - b < std::log1p(std::exp(2.0 / 0.3)));
}
