// Invariances every cosine loss must have.
#include <catch2/catch.hpp>

#include <numeric>

#include "support.hpp"

using namespace testing;

TEST_CASE("scaling a row leaves the loss unchanged; its gradient is orthogonal to it", "[invariance]") {
  std::mt19937_64 rng(21);
  for (Preset p : kPresets) {
    INFO(preset_name(p));
    const auto loss = make_loss<double>(p, 0.2);
    const MatD za = uneven_rows(7, 5, rng), zb = uneven_rows(7, 5, rng);
    const auto r = loss.value_and_grad(za, zb);
    for (Eigen::Index i = 0; i < za.rows(); ++i) {
      CHECK(std::abs(r.grad_a.row(i).dot(za.row(i))) < 1e-12 * r.grad_a.row(i).norm() * za.row(i).norm() + 1e-300);
      CHECK(std::abs(r.grad_b.row(i).dot(zb.row(i))) < 1e-12 * r.grad_b.row(i).norm() * zb.row(i).norm() + 1e-300);
    }
    MatD za2 = za;
    za2.row(3) *= 37.5;
    const auto r2 = loss.value_and_grad(za2, zb);
    CHECK(near(r2.value, r.value, 1e-13));
    CHECK(near(r2.grad_a.row(3) * 37.5, r.grad_a.row(3), 1e-12));
    CHECK(near(r2.grad_b, r.grad_b, 1e-12));
  }
}

TEST_CASE("permuting the pairs permutes the gradients", "[invariance]") {
  std::mt19937_64 rng(22);
  for (Preset p : kPresets) {
    INFO(preset_name(p));
    contrastive::EngineOptions opt;
    opt.tile_size = 3;
    const auto loss = make_loss<double>(p, 0.3, opt);
    const MatD za = uneven_rows(11, 4, rng), zb = uneven_rows(11, 4, rng);
    Eigen::VectorXi idx(11);
    std::iota(idx.data(), idx.data() + 11, 0);
    std::shuffle(idx.data(), idx.data() + 11, rng);
    const Eigen::PermutationMatrix<Eigen::Dynamic> perm(idx);
    const auto r = loss.value_and_grad(za, zb);
    const auto rp = loss.value_and_grad(perm * za, perm * zb);
    CHECK(near(rp.value, r.value, 1e-13));
    CHECK(near(rp.grad_a, perm * r.grad_a, 1e-12));
    CHECK(near(rp.grad_b, perm * r.grad_b, 1e-12));
    CHECK(near(rp.grad_temperature, r.grad_temperature, 1e-12));
  }
}

TEST_CASE("symmetric losses are symmetric in the two views; InfoNCE is not", "[invariance]") {
  std::mt19937_64 rng(23);
  const MatD za = uneven_rows(9, 6, rng), zb = uneven_rows(9, 6, rng);
  for (Preset p : kPresets) {
    INFO(preset_name(p));
    const auto loss = make_loss<double>(p, 0.4);
    const auto r = loss.value_and_grad(za, zb);
    const auto s = loss.value_and_grad(zb, za);
    if (is_symmetric(p)) {
      CHECK(near(s.value, r.value, 1e-13));
      CHECK(near(s.grad_a, r.grad_b, 1e-12));
      CHECK(near(s.grad_b, r.grad_a, 1e-12));
    } else {
      CHECK(std::abs(s.value - r.value) > 1e-3);
    }
  }
}

TEST_CASE("storage order and expression type of the inputs do not matter", "[api]") {
  std::mt19937_64 rng(24);
  const MatD za = uneven_rows(6, 4, rng), zb = uneven_rows(6, 4, rng);
  const contrastive::NTXent<double> loss(0.5);
  const auto r = loss.value_and_grad(za, zb);
  using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const RowMat ra = za, rb = zb;
  // Row-major inputs and row-major outputs, through Maps.
  RowMat ga(6, 4), gb(6, 4);
  contrastive::Workspace<double> ws;
  double gt = 0;
  const double v = loss.value_and_grad(Eigen::Map<const RowMat>(ra.data(), 6, 4), rb, ga, gb, &gt, ws);
  CHECK(v == Approx(r.value).epsilon(1e-14));
  CHECK(near(ga, r.grad_a, 1e-14));
  CHECK(near(gb, r.grad_b, 1e-14));
  CHECK(gt == Approx(r.grad_temperature).epsilon(1e-14));
  // Blocks of a bigger matrix, outputs into blocks, float input cast to double.
  MatD big(10, 8);
  big.setZero();
  big.topLeftCorner(6, 4) = za;
  big.bottomRightCorner(6, 4) = zb;
  MatD out = MatD::Constant(12, 4, 7.0);
  loss.value_and_grad(big.topLeftCorner(6, 4), big.bottomRightCorner(6, 4), out.topRows(6), out.bottomRows(6),
                      nullptr, ws);
  CHECK(near(out.topRows(6), r.grad_a, 1e-14));
  CHECK(near(out.bottomRows(6), r.grad_b, 1e-14));
  CHECK(loss.value(za.cast<float>(), zb) == Approx(r.value).epsilon(1e-6));
}
