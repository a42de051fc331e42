// Two-view augmentations: determinism given a seed, and the parts on their own.
#include <cmath>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "augment.hpp"
#include "idx.hpp"

namespace {

/// 8 synthetic 28 x 28 images with structure (a bright off-centre block) and texture.
fmnist::ImageMatrix images() {
  fmnist::ImageMatrix x = fmnist::ImageMatrix::Zero(8, 784);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  for (Eigen::Index i = 0; i < x.rows(); ++i)
    for (int r = 4; r < 20; ++r)
      for (int c = 4 + static_cast<int>(i); c < 16 + static_cast<int>(i); ++c) x(i, r * 28 + c) = 0.5f + 0.5f * u(rng);
  return x;
}

const std::vector<int> kAll = {0, 1, 2, 3, 4, 5, 6, 7};

}  // namespace

TEST_CASE("augmentations are deterministic given the seed and stream", "[augment]") {
  const auto x = images();
  const fmnist::AugmentParams p;
  fmnist::ImageMatrix a, b, c, d;
  fmnist::make_views(x, kAll, p, 42, 7, a);
  fmnist::make_views(x, kAll, p, 42, 7, b);
  fmnist::make_views(x, kAll, p, 43, 7, c);
  fmnist::make_views(x, kAll, p, 42, 8, d);
  REQUIRE(a.rows() == 16);
  CHECK(a == b);
  CHECK((a - c).cwiseAbs().maxCoeff() > 0.1f);
  CHECK((a - d).cwiseAbs().maxCoeff() > 0.1f);
  // The two views of an image differ from each other and from the image, and stay in [0, 1].
  for (Eigen::Index i = 0; i < 8; ++i) {
    CHECK((a.row(i) - a.row(8 + i)).cwiseAbs().maxCoeff() > 0.05f);
    CHECK((a.row(i) - x.row(i)).cwiseAbs().maxCoeff() > 0.05f);
  }
  CHECK(a.minCoeff() >= 0.f);
  CHECK(a.maxCoeff() <= 1.f);
}

TEST_CASE("augmentations switched off give the image; flip alone mirrors it", "[augment]") {
  const auto x = images();
  fmnist::AugmentParams off;
  off.min_area = 1.f;
  off.aspect = 1.f;
  off.max_shift = 0;
  off.flip_prob = 0.f;
  off.brightness = off.contrast = off.noise = off.erase_prob = 0.f;
  fmnist::ImageMatrix v;
  fmnist::make_views(x, kAll, off, 1, 0, v);
  CHECK((v.topRows(8) - x).cwiseAbs().maxCoeff() < 1e-5f);
  CHECK((v.bottomRows(8) - x).cwiseAbs().maxCoeff() < 1e-5f);

  fmnist::AugmentParams flip = off;
  flip.flip_prob = 1.f;
  fmnist::make_views(x, kAll, flip, 1, 0, v);
  for (Eigen::Index i = 0; i < 8; ++i)
    for (int r = 0; r < 28; ++r)
      for (int c = 0; c < 28; ++c) CHECK(std::abs(v(i, r * 28 + c) - x(i, r * 28 + 27 - c)) < 1e-5f);

  // A shift-only crop keeps the mass of the block (which is away from the
  // border) up to interpolation: a shift never scales the image.
  fmnist::AugmentParams shift = off;
  shift.max_shift = 3;
  fmnist::make_views(x, kAll, shift, 5, 0, v);
  CHECK((v.topRows(8) - x).cwiseAbs().maxCoeff() > 0.1f);
  for (Eigen::Index i = 0; i < 8; ++i) CHECK(v.row(i).sum() == Approx(x.row(i).sum()).epsilon(0.15));
}
