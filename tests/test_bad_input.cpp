// Bad input: a std::invalid_argument naming the argument, outputs untouched.
#include <catch2/catch.hpp>

#include <limits>
#include <string>

#include "support.hpp"

using namespace testing;
using Catch::Matchers::Contains;

namespace {

// Calls the output overload with sentinel-filled outputs, expects an
// invalid_argument whose message contains every `needle`, and checks that
// nothing was written.
template <typename A, typename B>
void expect_rejected(Preset p, const A& za, const B& zb, std::initializer_list<const char*> needles,
                     Eigen::Index grows = -1, Eigen::Index gcols = -1, const contrastive::EngineOptions& o = {}) {
  const bool input_problem = grows < 0;
  const auto loss = make_loss<double>(p, 0.5, o);
  MatD ga = MatD::Constant(grows >= 0 ? grows : za.rows(), gcols >= 0 ? gcols : za.cols(), 42.0);
  MatD gb = MatD::Constant(zb.rows(), zb.cols(), 43.0);
  double gt = 44.0;
  contrastive::Workspace<double> ws;
  std::string msg;
  try {
    loss.value_and_grad(za, zb, ga, gb, &gt, ws);
  } catch (const std::invalid_argument& e) {
    msg = e.what();
  }
  INFO("message: " << msg);
  REQUIRE(!msg.empty());
  for (const char* n : needles) CHECK_THAT(msg, Contains(n));
  CHECK((ga.array() == 42.0).all());
  CHECK((gb.array() == 43.0).all());
  CHECK(gt == 44.0);
  if (input_problem) CHECK_THROWS_AS(loss.value(za, zb), std::invalid_argument);
}

}  // namespace

TEST_CASE("mismatched shapes are rejected", "[bad-input]") {
  for (Preset p : kPresets) {
    expect_rejected(p, MatD::Random(5, 3), MatD::Random(4, 3), {"'zb'", "5x3", "4x3"});
    expect_rejected(p, MatD::Random(5, 3), MatD::Random(5, 2), {"'zb'", "5x2"});
  }
}

TEST_CASE("too few samples and d = 0 are rejected", "[bad-input]") {
  for (Preset p : kPresets) {
    expect_rejected(p, MatD::Random(1, 3), MatD::Random(1, 3), {"'za'", "at least 2"});
    expect_rejected(p, MatD::Random(0, 3), MatD::Random(0, 3), {"'za'", "at least 2"});
    expect_rejected(p, MatD(4, 0), MatD(4, 0), {"'za'", "0 columns"});
  }
}

TEST_CASE("NaN and infinite entries are rejected, naming the input", "[bad-input]") {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  // Serially, and with the two views loaded on two threads (a zero
  // threshold: every call is large enough), where the error of 'za' must
  // still win when both are bad.
  contrastive::EngineOptions two;
  two.num_threads = 2;
  two.parallel_threshold = 0;
  for (const auto& o : {contrastive::EngineOptions{}, two}) {
    for (Preset p : kPresets) {
      MatD za = MatD::Random(4, 3), zb = MatD::Random(4, 3);
      za(2, 1) = nan;
      expect_rejected(p, za, zb, {"'za'", "NaN or infinite"}, -1, -1, o);
      zb(3, 2) = -inf;
      expect_rejected(p, za, zb, {"'za'", "NaN or infinite"}, -1, -1, o);
      za(2, 1) = 0.5;
      expect_rejected(p, za, zb, {"'zb'", "NaN or infinite"}, -1, -1, o);
    }
  }
}

TEST_CASE("outputs of the wrong shape are rejected before anything is written", "[bad-input]") {
  expect_rejected(Preset::NTXent, MatD::Random(4, 3), MatD::Random(4, 3), {"'grad_a'", "3x3", "4x3"}, 3, 3);
  const auto loss = contrastive::NTXent<double>();
  MatD ga = MatD::Constant(4, 3, 1.0), gb(4, 2);
  contrastive::Workspace<double> ws;
  CHECK_THROWS_WITH(loss.value_and_grad(MatD::Random(4, 3), MatD::Random(4, 3), ga, gb, nullptr, ws),
                    Contains("'grad_b'"));
  CHECK((ga.array() == 1.0).all());
}

TEST_CASE("bad temperatures, weights and engine options are rejected by name", "[bad-input]") {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  for (double tau : {0.0, -0.1, nan, inf}) {
    CHECK_THROWS_WITH(contrastive::NTXent<double>(tau), Contains("'temperature'") && Contains("contrastive::NTXent"));
    CHECK_THROWS_WITH(contrastive::InfoNCE<float>(tau), Contains("'temperature'"));
    CHECK_THROWS_WITH(contrastive::CLIP<double>(tau), Contains("'temperature'"));
    CHECK_THROWS_WITH(contrastive::DCL<double>(tau), Contains("'temperature'"));
    CHECK_THROWS_WITH(contrastive::DHEL<double>(tau), Contains("'temperature'"));
    contrastive::NTXent<double> loss(0.5);
    CHECK_THROWS_WITH(loss.set_temperature(tau), Contains("'temperature'"));
    CHECK(loss.params().temperature == 0.5);
  }
  contrastive::InfoNCEFamilyParams p;
  p.cross_weight = -1;
  CHECK_THROWS_WITH(p.check(), Contains("'cross_weight'"));
  p.cross_weight = 1;
  p.within_weight = nan;
  CHECK_THROWS_WITH(p.check(), Contains("'within_weight'"));
  p.cross_weight = 0;
  p.within_weight = 0;
  CHECK_THROWS_WITH(contrastive::InfoNCEFamily<double>(p), Contains("no negatives"));
  contrastive::EngineOptions o;
  o.tile_size = 0;
  CHECK_THROWS_WITH(contrastive::NTXent<double>(0.5, o), Contains("'tile_size'"));
  o.tile_size = 16;
  o.num_threads = -2;
  CHECK_THROWS_WITH(contrastive::NTXent<double>(0.5, o), Contains("'num_threads'"));
}

TEST_CASE("zero rows give finite values and gradients (norm clamp)", "[bad-input]") {
  for (Preset p : kPresets) {
    INFO(preset_name(p));
    MatD za = MatD::Random(5, 3), zb = MatD::Random(5, 3);
    za.row(1).setZero();
    zb.row(1).setZero();
    zb.row(4).setZero();
    const auto rd = make_loss<double>(p, 0.1).value_and_grad(za, zb);
    CHECK(std::isfinite(rd.value));
    CHECK(rd.grad_a.allFinite());
    CHECK(rd.grad_b.allFinite());
    CHECK(std::isfinite(rd.grad_temperature));
    const auto rf = make_loss<float>(p, 0.1).value_and_grad(za.cast<float>(), zb.cast<float>());
    CHECK(std::isfinite(rf.value));
    CHECK(rf.grad_a.allFinite());
    CHECK(rf.grad_b.allFinite());
    // All-zero batch: every similarity is 0.
    const auto rz = make_loss<double>(p, 0.1).value_and_grad(MatD::Zero(3, 2), MatD::Zero(3, 2));
    CHECK(std::isfinite(rz.value));
    CHECK(rz.grad_a.allFinite());
  }
}

TEST_CASE("instance ids of the wrong length or all equal are rejected", "[bad-input]") {
  const MatD za = MatD::Random(4, 3), zb = MatD::Random(4, 3);
  const std::vector<Eigen::Index> short_ids = {0, 1, 2}, same = {7, 7, 7, 7};
  for (Preset p : kPresets) {
    const auto loss = make_loss<double>(p, 0.5);
    MatD ga = MatD::Constant(4, 3, 42.0), gb = MatD::Constant(4, 3, 43.0);
    contrastive::Workspace<double> ws;
    CHECK_THROWS_WITH(loss.value_and_grad(za, zb, ga, gb, nullptr, ws, ids_call(short_ids)),
                      Contains("'call.instance_ids'") && Contains("3 entries"));
    CHECK_THROWS_WITH(loss.value(za, zb, ids_call(same)), Contains("'call.instance_ids'") && Contains("no negative"));
    CHECK((ga.array() == 42.0).all());
    CHECK((gb.array() == 43.0).all());
  }
}
