// Central-difference and directional (Taylor) checks of every preset.
#include <catch2/catch.hpp>

#include "fd_check.hpp"

using namespace testing;

TEST_CASE("gradients match central differences for every preset (double)", "[gradient]") {
  std::mt19937_64 rng(7);
  const struct { Eigen::Index n, d; double tau; } shapes[] = {{2, 1, 0.5}, {2, 3, 0.2}, {3, 1, 0.3},
                                                              {5, 4, 0.1}, {9, 6, 0.7}, {4, 11, 1.5}};
  for (Preset p : kPresets) {
    for (const auto& s : shapes) {
      INFO(preset_name(p) << " n=" << s.n << " d=" << s.d << " tau=" << s.tau);
      contrastive::EngineOptions opt;
      opt.tile_size = 2;  // several tiles, cross-tile reductions
      const auto loss = make_loss<double>(p, s.tau, opt);
      const MatD za = uneven_rows(s.n, s.d, rng), zb = uneven_rows(s.n, s.d, rng);
      const auto r = loss.value_and_grad(za, zb);
      check_central_differences([&](const MatD& a, const MatD& b) { return loss.value(a, b); }, za, zb, r.grad_a,
                                r.grad_b);
      // Fourth-order central difference in tau: truncation error ~ (h/tau)^4
      // ~ 1e-12 relative, round-off ~ eps |L| / h ~ 1e-13 (a second-order one
      // with h = 1e-6 tau has round-off ~ 1e-10, above the 1e-12 floor below
      // when the exact dL/dtau is 0, e.g. DHEL at d = 1).
      const double h = 1e-3 * s.tau;
      const auto f = [&](double tau) { return make_loss<double>(p, tau).value(za, zb); };
      const double ft = (8 * (f(s.tau + h) - f(s.tau - h)) - (f(s.tau + 2 * h) - f(s.tau - 2 * h))) / (12 * h);
      CHECK(near(r.grad_temperature, ft, 1e-6, 1e-6));
    }
  }
}

TEST_CASE("directional Taylor check: the remainder shrinks quadratically", "[gradient]") {
  std::mt19937_64 rng(11);
  for (Preset p : kPresets) {
    INFO(preset_name(p));
    const auto loss = make_loss<double>(p, 0.25);
    const MatD za = uneven_rows(6, 5, rng, 0.5), zb = uneven_rows(6, 5, rng, 0.5);
    const MatD da = uneven_rows(6, 5, rng, 0.0), db = uneven_rows(6, 5, rng, 0.0);
    const auto r = loss.value_and_grad(za, zb);
    const double slope = (r.grad_a.array() * da.array()).sum() + (r.grad_b.array() * db.array()).sum();
    double prev = 0;
    for (int k = 0; k < 4; ++k) {
      const double t = 1e-2 / std::pow(4.0, k);
      const double rem = std::abs(loss.value(za + t * da, zb + t * db) - r.value - t * slope);
      if (k > 0) CHECK(rem < prev / 8.0);  // O(t^2): a factor 16 per step, 8 with margin
      prev = rem;
    }
  }
}

TEST_CASE("float gradients agree with double", "[gradient][float]") {
  std::mt19937_64 rng(3);
  for (Preset p : kPresets) {
    INFO(preset_name(p));
    const MatD za = uneven_rows(37, 19, rng), zb = uneven_rows(37, 19, rng);
    contrastive::EngineOptions opt;
    opt.tile_size = 8;
    const auto rd = make_loss<double>(p, 0.1, opt).value_and_grad(za, zb);
    const auto rf = make_loss<float>(p, 0.1, opt).value_and_grad(za.cast<float>(), zb.cast<float>());
    CHECK(near(rf.value, rd.value, 1e-5));
    CHECK(near(rf.grad_a, rd.grad_a, 1e-4, 1e-30));
    CHECK(near(rf.grad_b, rd.grad_b, 1e-4, 1e-30));
    CHECK(near(rf.grad_temperature, rd.grad_temperature, 1e-4));
  }
}

TEST_CASE("gradients with a false-negative mask match central differences", "[gradient]") {
  std::mt19937_64 rng(9);
  const std::vector<Eigen::Index> ids = {4, 1, 4, 2, 1, 0, 4};
  for (Preset p : kPresets) {
    INFO(preset_name(p));
    contrastive::EngineOptions opt;
    opt.tile_size = 3;
    const auto loss = make_loss<double>(p, 0.3, opt);
    const MatD za = uneven_rows(7, 4, rng), zb = uneven_rows(7, 4, rng);
    const auto r = loss.value_and_grad(za, zb, ids_call(ids));
    check_central_differences([&](const MatD& a, const MatD& b) { return loss.value(a, b, ids_call(ids)); }, za, zb,
                              r.grad_a, r.grad_b);
    // Distinct ids change nothing.
    const std::vector<Eigen::Index> distinct = {9, 8, 7, 6, 5, 4, 3};
    CHECK(near(loss.value(za, zb, ids_call(distinct)), loss.value(za, zb), 1e-14));
  }
}

TEST_CASE("SupCon: central differences; distinct labels give NT-Xent; bad labels", "[gradient][supcon]") {
  std::mt19937_64 rng(10);
  const std::vector<Eigen::Index> labels = {3, 1, 3, 2, 1, 3, 0};
  contrastive::EngineOptions opt;
  opt.tile_size = 2;
  const contrastive::SupCon<double> loss(0.2, opt);
  const MatD za = uneven_rows(7, 4, rng), zb = uneven_rows(7, 4, rng);
  const auto r = loss.value_and_grad(za, zb, labels_call(labels));
  check_central_differences([&](const MatD& a, const MatD& b) { return loss.value(a, b, labels_call(labels)); }, za, zb, r.grad_a,
                            r.grad_b);
  const double h = 1e-7;
  CHECK(near(r.grad_temperature,
             (contrastive::SupCon<double>(0.2 + h).value(za, zb, labels_call(labels)) - contrastive::SupCon<double>(0.2 - h).value(za, zb, labels_call(labels))) / (2 * h),
             1e-6, 1e-6));
  const std::vector<Eigen::Index> distinct = {0, 1, 2, 3, 4, 5, 6};
  const auto s = loss.value_and_grad(za, zb, labels_call(distinct));
  const auto nt = contrastive::NTXent<double>(0.2).value_and_grad(za, zb);
  CHECK(near(s.value, nt.value, 1e-13));
  CHECK(near(s.grad_a, nt.grad_a, 1e-12));
  CHECK(near(s.grad_temperature, nt.grad_temperature, 1e-12));
  MatD ga = MatD::Constant(7, 4, 42.0), gb = MatD::Constant(7, 4, 43.0);
  contrastive::Workspace<double> ws;
  const std::vector<Eigen::Index> short_labels = {0, 1};
  CHECK_THROWS_WITH(loss.value_and_grad(za, zb, ga, gb, nullptr, ws, labels_call(short_labels)),
                    Catch::Matchers::Contains("'call.labels'") && Catch::Matchers::Contains("2 entries"));
  CHECK_THROWS_WITH(contrastive::SupCon<double>(-1.0), Catch::Matchers::Contains("'temperature'"));
  CHECK((ga.array() == 42.0).all());
}
