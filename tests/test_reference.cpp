// Values and gradients against PyTorch autograd (tests/data/make_reference.py).
#include <catch2/catch.hpp>


#include "support.hpp"

using namespace testing;

namespace {

std::vector<ReferenceCase> load_cases() {
  auto cases = read_reference(CONTRASTIVE_TEST_DATA_DIR "/infonce_family_reference.txt");
  REQUIRE(!cases.empty());
  return cases;
}

Preset preset_of(const std::string& s) {
  for (Preset p : kPresets)
    if (s == preset_name(p)) return p;
  FAIL("unknown loss " << s);
  return Preset::NTXent;
}

}  // namespace

TEST_CASE("InfoNCE family matches PyTorch autograd to 1e-10 (double)", "[reference]") {
  const auto cases = load_cases();
  REQUIRE(cases.size() == 44);
  // Each case under three engine set-ups: one tile, small tiles cached, small tiles streamed.
  contrastive::EngineOptions one_tile, cached, streamed;
  cached.tile_size = 2;
  streamed.tile_size = 3;
  streamed.memory_budget_bytes = 0;
  for (const auto& c : cases) {
    if (c.loss == "supcon") continue;  // its own test case below
    for (const auto& opt : {one_tile, cached, streamed}) {
      INFO(c.name << " tile " << opt.tile_size << " budget " << opt.memory_budget_bytes);
      const auto loss = make_loss<double>(preset_of(c.loss), c.param.at("temperature"), opt);
      const std::vector<Eigen::Index>* ids = c.ids.empty() ? nullptr : &c.ids;
      const auto r = loss.value_and_grad(c.za, c.zb, ids_call(ids));
      CHECK(near(r.value, c.value, 1e-10));
      CHECK(near(loss.value(c.za, c.zb, ids_call(ids)), c.value, 1e-10));
      // The floor only matters for d = 1, where the exact gradient is 0 and
      // both sides hold round-off of ~1e-16 (absolute floor 1e-14, while
      // the gradients of every other case are O(1e-2) or larger).
      CHECK(near(r.grad_a, c.grad_a, 1e-10, 1e-4));
      CHECK(near(r.grad_b, c.grad_b, 1e-10, 1e-4));
      CHECK(near(r.grad_temperature, c.grad.at("temperature"), 1e-10));
    }
  }
}

TEST_CASE("float agrees with the PyTorch double reference to 1e-4", "[reference][float]") {
  for (const auto& c : load_cases()) {
    if (c.name.find("degenerate") != std::string::npos) continue;  // 1/eps-sized gradients
    if (c.d == 1) continue;  // exact gradient 0: float round-off of the tangent projection only
    if (c.loss == "supcon") continue;
    INFO(c.name);
    const auto loss = make_loss<float>(preset_of(c.loss), c.param.at("temperature"));
    const auto r = loss.value_and_grad(c.za.cast<float>(), c.zb.cast<float>(), ids_call<float>(c.ids));
    CHECK(near(r.value, c.value, 1e-4));
    CHECK(near(r.grad_a, c.grad_a, 1e-4, 1e-30));
    CHECK(near(r.grad_b, c.grad_b, 1e-4, 1e-30));
    CHECK(near(r.grad_temperature, c.grad.at("temperature"), 1e-4));
  }
}

TEST_CASE("SupCon matches pytorch-metric-learning's SupConLoss (PyTorch autograd) to 1e-10", "[reference][supcon]") {
  int seen = 0;
  contrastive::EngineOptions one_tile, streamed;
  streamed.tile_size = 3;
  streamed.memory_budget_bytes = 0;
  streamed.num_threads = 2;
  streamed.parallel_threshold = 0;  // thread even these tiny batches
  for (const auto& c : load_cases()) {
    if (c.loss != "supcon") continue;
    ++seen;
    for (const auto& opt : {one_tile, streamed}) {
      INFO(c.name << " tile " << opt.tile_size);
      const contrastive::SupCon<double> loss(c.param.at("temperature"), opt);
      const auto r = loss.value_and_grad(c.za, c.zb, labels_call(c.ids));
      CHECK(near(r.value, c.value, 1e-10));
      CHECK(near(loss.value(c.za, c.zb, labels_call(c.ids)), c.value, 1e-10));
      CHECK(near(r.grad_a, c.grad_a, 1e-10));
      CHECK(near(r.grad_b, c.grad_b, 1e-10));
      CHECK(near(r.grad_temperature, c.grad.at("temperature"), 1e-10));
    }
    const auto rf = contrastive::SupCon<float>(c.param.at("temperature")).value_and_grad(c.za.cast<float>(), c.zb.cast<float>(), labels_call<float>(c.ids));
    CHECK(near(rf.value, c.value, 1e-4));
    CHECK(near(rf.grad_a, c.grad_a, 1e-4));
  }
  CHECK(seen == 4);
}
