// Thread safety: const losses shared by many threads, each with its own
// Workspace; the engine's own threads inside them and inside an enclosing
// OpenMP region.  Run in CI under ThreadSanitizer (clang, LLVM's OpenMP with
// its Archer annotations), where a data race fails the run.
#include <catch2/catch.hpp>

#include <functional>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "support.hpp"

using namespace testing;

namespace {

struct Case {
  const char* name;
  std::function<contrastive::Result<double>(contrastive::Workspace<double>&)> call;
};

/// Every engine loss and both loss kinds outside it, each computing into a
/// caller's Workspace; the engine itself is allowed two threads.
std::vector<Case> cases(const MatD& za, const MatD& zb, const std::vector<Eigen::Index>& labels) {
  contrastive::EngineOptions o;
  o.num_threads = 2;
  o.parallel_threshold = 0;
  o.tile_size = 24;
  contrastive::EngineOptions streamed = o;
  streamed.memory_budget_bytes = 0;
  const auto grads = [](const auto& loss, const MatD& a, const MatD& b, contrastive::Workspace<double>& ws,
                        contrastive::CallOptions<double> call = {}) {
    contrastive::Result<double> r;
    r.grad_a.resize(a.rows(), a.cols());
    r.grad_b.resize(b.rows(), b.cols());
    r.value = loss.value_and_grad(a, b, r.grad_a, r.grad_b, &r.grad_temperature, ws, call);
    return r;
  };
  const contrastive::NTXent<double> ntxent(0.2, o), ntxent_s(0.2, streamed);
  const contrastive::CLIP<double> clip(0.05, o);
  const contrastive::SupCon<double> supcon(0.1, o);
  const contrastive::WithVRNS<double> vrns(ntxent, {1000}, 30.0);
  const contrastive::SigLIP<double> siglip(contrastive::SigLIPParams{10.0, -10.0, 0.5}, o);
  const contrastive::SampledNegatives<double> sampled(ntxent.params(), {8, false, 3});
  const contrastive::InfoNCEWithNegatives<double> keys({0.1, contrastive::NegativeMode::Shared});
  return {
      {"NTXent", [=](auto& ws) { return grads(ntxent, za, zb, ws); }},
      {"NTXent streamed", [=](auto& ws) { return grads(ntxent_s, za, zb, ws); }},
      {"CLIP", [=](auto& ws) { return grads(clip, za, zb, ws); }},
      {"SupCon", [=](auto& ws) { return grads(supcon, za, zb, ws, labels_call(labels)); }},
      {"WithVRNS", [=](auto& ws) { return grads(vrns, za, zb, ws); }},
      {"SampledNegatives", [=](auto& ws) { return grads(sampled, za, zb, ws); }},
      {"SigLIP",
       [=](auto& ws) {
         contrastive::Result<double> r;
         r.grad_a.resize(za.rows(), za.cols());
         r.grad_b.resize(zb.rows(), zb.cols());
         r.value = siglip.value_and_grad(za, zb, r.grad_a, r.grad_b, &r.grad_logit_scale, &r.grad_logit_bias, ws);
         return r;
       }},
      {"InfoNCEWithNegatives",
       [=](auto& ws) {
         contrastive::Result<double> r;
         r.grad_a.resize(za.rows(), za.cols());
         r.grad_b.resize(zb.rows(), zb.cols());
         r.grad_negative_keys.resize(za.rows(), za.cols());
         r.value = keys.value_and_grad(za, zb, za.reverse(), r.grad_a, r.grad_b, r.grad_negative_keys,
                                       &r.grad_temperature, ws);
         return r;
       }},
  };
}

bool same(const contrastive::Result<double>& a, const contrastive::Result<double>& b) {
  return a.value == b.value && a.grad_a == b.grad_a && a.grad_b == b.grad_b &&
         a.grad_negative_keys == b.grad_negative_keys && a.grad_temperature == b.grad_temperature &&
         a.grad_logit_scale == b.grad_logit_scale && a.grad_logit_bias == b.grad_logit_bias;
}

}  // namespace

TEST_CASE("const losses shared by threads, a Workspace each: the results of a serial run", "[concurrency]") {
  std::mt19937_64 rng(101);
  const MatD za = uneven_rows(70, 8, rng), zb = uneven_rows(70, 8, rng);
  std::vector<Eigen::Index> labels(70);
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<Eigen::Index>(i % 9);
  const auto all = cases(za, zb, labels);
  std::vector<contrastive::Result<double>> ref;
  for (const auto& c : all) {
    contrastive::Workspace<double> ws;
    ref.push_back(c.call(ws));
  }
  constexpr int kThreads = 4;
  std::vector<int> ok(kThreads, 0);
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t)
    pool.emplace_back([&, t] {
      contrastive::Workspace<double> ws;  // reused across losses and calls
      int good = 0;
      for (int rep = 0; rep < 2; ++rep)
        for (std::size_t k = 0; k < all.size(); ++k) good += same(all[(k + static_cast<std::size_t>(t)) % all.size()].call(ws),
                                                                  ref[(k + static_cast<std::size_t>(t)) % all.size()]);
      ok[static_cast<std::size_t>(t)] = good;
    });
  for (auto& th : pool) th.join();
  for (int t = 0; t < kThreads; ++t) CHECK(ok[static_cast<std::size_t>(t)] == static_cast<int>(2 * all.size()));
}

TEST_CASE("the engine inside an enclosing OpenMP region, nested or not", "[concurrency]") {
  std::mt19937_64 rng(102);
  const MatD za = uneven_rows(90, 8, rng), zb = uneven_rows(90, 8, rng);
  std::vector<Eigen::Index> labels(90, 0);
  const auto all = cases(za, zb, labels);
  const auto ref = [&] {
    contrastive::Workspace<double> ws;
    return all[0].call(ws);
  }();
#ifdef _OPENMP
  const int saved = omp_get_max_active_levels();
  for (int levels : {1, 2}) {
    INFO("max active levels " << levels);
    omp_set_max_active_levels(levels);
    int good = 0;
#pragma omp parallel num_threads(2) reduction(+ : good)
    {
      contrastive::Workspace<double> ws;
      good += same(all[0].call(ws), ref) ? 1 : 0;
      if (levels == 1) good += ws.last_call_threads() == 1 ? 1 : 0;
      else good += 1;
    }
    CHECK(good == 4);
  }
  omp_set_max_active_levels(saved);
#else
  contrastive::Workspace<double> ws;
  CHECK(same(all[0].call(ws), ref));
#endif
}
