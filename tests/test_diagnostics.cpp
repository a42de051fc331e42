// Similarity statistics and the theory helpers (paper notes, Sec. 5).
#include <catch2/catch.hpp>

#include <Eigen/QR>

#include "support.hpp"

using namespace testing;
using Catch::Matchers::Contains;
namespace th = contrastive::theory;

namespace {

// Brute force: materialise the similarities.
contrastive::SimilarityStats brute_stats(const MatD& za, const MatD& zb) {
  const MatD u = za.rowwise().normalized(), v = zb.rowwise().normalized();
  const MatD s = u * v.transpose(), a = u * u.transpose(), b = v * v.transpose();
  const Eigen::Index n = za.rows();
  std::vector<double> pos, cross, within;
  for (Eigen::Index i = 0; i < n; ++i)
    for (Eigen::Index j = 0; j < n; ++j) {
      if (i == j) {
        pos.push_back(s(i, i));
      } else {
        cross.push_back(s(i, j));
        within.push_back(a(i, j));
        within.push_back(b(i, j));
      }
    }
  auto mom = [](const std::vector<double>& x) {
    contrastive::Moments m;
    m.count = static_cast<double>(x.size());
    for (double e : x) m.mean += e / m.count;
    for (double e : x) m.variance += (e - m.mean) * (e - m.mean) / m.count;
    return m;
  };
  return {mom(pos), mom(cross), mom(within)};
}

}  // namespace

TEST_CASE("similarity statistics match a brute-force computation", "[diagnostics]") {
  std::mt19937_64 rng(51);
  for (Eigen::Index n : {2, 5, 31}) {
    const MatD za = uneven_rows(n, 6, rng), zb = za + uneven_rows(n, 6, rng, 0.0);
    const auto st = contrastive::similarity_stats(za, zb);
    const auto bf = brute_stats(za, zb);
    for (auto pair : {std::make_pair(st.positive, bf.positive), std::make_pair(st.cross_negative, bf.cross_negative),
                      std::make_pair(st.within_negative, bf.within_negative)}) {
      CHECK(pair.first.count == pair.second.count);
      CHECK(near(pair.first.mean, pair.second.mean, 1e-12));
      CHECK(near(pair.first.variance, pair.second.variance, 1e-10, 1e-3));
    }
  }
  CHECK_THROWS_WITH(contrastive::similarity_stats(MatD::Random(3, 2), MatD::Random(2, 2)), Contains("'zb'"));
}

TEST_CASE("the regular simplex: statistics, Thm 5.2 and the tight bound with zero slack", "[diagnostics][closed-form]") {
  std::mt19937_64 rng(52);
  for (Eigen::Index n : {3, 8}) {
    MatD e = MatD::Identity(n, n);
    e.rowwise() -= e.colwise().mean();
    const MatD rot = Eigen::HouseholderQR<MatD>(uneven_rows(n + 1, n + 1, rng, 0.0)).householderQ();
    const MatD s = e * rot.topRows(n);
    const auto st = contrastive::similarity_stats(s, 3.0 * s);
    const double target = th::simplex_similarity(static_cast<double>(n));
    CHECK(st.positive.mean == Approx(1.0).epsilon(1e-12));
    CHECK(st.positive.variance < 1e-12);
    CHECK(st.cross_negative.mean == Approx(target).epsilon(1e-12));
    CHECK(st.cross_negative.variance < 1e-12);
    CHECK(st.within_negative.mean == Approx(target).epsilon(1e-12));
    CHECK(th::alignment_bound(st).holds());
    CHECK(std::abs(th::tight_alignment_bound(st).slack()) < 1e-12);
  }
}

TEST_CASE("Thm 5.2 and its tight form never fail on random embeddings", "[diagnostics]") {
  std::mt19937_64 rng(53);
  std::uniform_int_distribution<int> pick_n(2, 12), pick_d(1, 6);
  std::uniform_real_distribution<double> mix(0.0, 1.0);
  double worst = 1e9, worst_tight = 1e9;
  for (int trial = 0; trial < 3000; ++trial) {
    const Eigen::Index n = pick_n(rng), d = pick_d(rng);
    const MatD za = uneven_rows(n, d, rng);
    const MatD zb = mix(rng) * za + mix(rng) * uneven_rows(n, d, rng);  // from aligned to random
    worst = std::min(worst, th::alignment_bound(za, zb).slack());
    worst_tight = std::min(worst_tight, th::tight_alignment_bound(za, zb).slack());
  }
  CHECK(worst >= -1e-12);
  CHECK(worst_tight >= -1e-12);
}

TEST_CASE("Thm 5.5 bounds and the SigLIP optimum of Thm 5.3 reproduce the paper's numbers", "[diagnostics][closed-form]") {
  const auto vb = th::minibatch_variance_bounds(8, 4);
  CHECK(vb.lower == Approx(0.02721).margin(5e-6));
  CHECK(vb.upper == Approx(0.21769).margin(5e-6));
  CHECK(th::minibatch_variance_bounds(8, 8).upper == 0.0);
  CHECK_THROWS_WITH(th::minibatch_variance_bounds(3, 4), Contains("'n'"));
  CHECK_THROWS_WITH(th::minibatch_variance_bounds(8, 1), Contains("'m'"));
  CHECK_THROWS_WITH(th::simplex_similarity(1), Contains("'n'"));

  // The paper's bias b is open_clip's -b.
  const auto a = th::full_batch_optimum(th::siglip_terms(8, 5.0, -0.0), 8);
  CHECK(a.excessive);
  CHECK(a.positive == Approx(0.21786).margin(5e-6));
  CHECK(a.negative == Approx(-0.47806).margin(5e-6));
  const auto b = th::full_batch_optimum(th::siglip_terms(8, 2.0, 0.0), 8);
  CHECK(b.positive == Approx(-0.24063).margin(5e-6));
  CHECK(b.negative == Approx(-0.67456).margin(5e-6));
  const auto c = th::full_batch_optimum(th::siglip_terms(8, 5.0, -5.0), 8);  // paper b = 5
  CHECK(!c.excessive);
  CHECK(c.positive == 1.0);
  CHECK(c.negative == Approx(-1.0 / 7.0).epsilon(1e-15));
  // The SigLIP form of the condition in the notes: (1 + e^{t/(n-1) + b}) / (1 + e^{t - b}) < (n - 2) / 2.
  for (double t : {0.5, 2.0, 5.0, 10.0})
    for (double bp : {-5.0, 0.0, 2.0, 5.0, 10.0}) {
      const bool notes = (1 + std::exp(t / 7 + bp)) / (1 + std::exp(t - bp)) < 3.0;
      CHECK(th::excessive_separation(th::siglip_terms(8, t, -bp), 8) == notes);
    }
}
