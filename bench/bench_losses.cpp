// Microbenchmarks: the library, a GEMM reference with the loss's minimal
// GEMM work, and a naive materialised Eigen implementation, side by side.
//
// Names: <what>/<preset>/<grad|value>/<float|double>/n/d, what in
// {lib, gemm, naive}.  Counter GFLOPs counts the minimal GEMM work of the loss
// (2 flops per multiply-add), the same number for all three, so the GFLOPs of
// `lib` over that of `gemm` is the fraction of the practical roofline reached.
//
//   ./build/bench/bench_losses --benchmark_filter='/ntxent/grad/float/4096/256$'
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <Eigen/Core>

#include <contrastive/contrastive.hpp>

#include "bench_common.hpp"

using namespace contrastive;
using namespace contrastive_bench;

namespace {

template <typename S>
void bm_lib(benchmark::State& state, Preset p, bool grad) {
  const Eigen::Index n = state.range(0), d = state.range(1);
  using M = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  const M za = deterministic_input<S>(n, d, 0), zb = deterministic_input<S>(n, d, 1);
  const auto loss = make_loss<S>(p);
  Workspace<S> ws;
  M ga(n, d), gb(n, d);
  S gt = 0;
  for (auto _ : state) {
    S v = grad ? loss.value_and_grad(za, zb, ga, gb, &gt, ws) : loss.value(za, zb, ws);
    benchmark::DoNotOptimize(v);
    benchmark::ClobberMemory();
  }
  set_counters(state, minimal_gemm_macs(p, n, d, grad));
  state.counters["streamed"] = ws.last_call_streamed() ? 1 : 0;
}

template <typename S>
void bm_gemm(benchmark::State& state, Preset p, bool grad) {
  const Eigen::Index n = state.range(0), d = state.range(1);
  GemmReference<S> ref(p, n, d);
  for (auto _ : state) {
    ref.run(grad);
    benchmark::ClobberMemory();
  }
  set_counters(state, minimal_gemm_macs(p, n, d, grad));
}

template <typename S>
void bm_naive(benchmark::State& state, Preset p, bool grad) {
  const Eigen::Index n = state.range(0), d = state.range(1);
  using M = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  const M za = deterministic_input<S>(n, d, 0), zb = deterministic_input<S>(n, d, 1);
  M ga(n, d), gb(n, d);
  for (auto _ : state) {
    S v = naive_loss<S>(p, za, zb, grad ? &ga : nullptr, grad ? &gb : nullptr);
    benchmark::DoNotOptimize(v);
    benchmark::ClobberMemory();
  }
  set_counters(state, minimal_gemm_macs(p, n, d, grad));
}

// The additive losses and the composition: `lib/siglip`, `lib/vrns` and
// `lib/ntxent_vrns` (NT-Xent + 30 * VRNS in one call); compare the last with
// `lib/ntxent` of the same run.  GFLOPs counts CLIP's minimal work for SigLIP
// and VRNS (one cross-view block) and NT-Xent's for the composition.
enum class Extra { SigLIP, VRNS, NTXentVRNS };

template <typename S>
void bm_extra(benchmark::State& state, Extra e, bool grad) {
  const Eigen::Index n = state.range(0), d = state.range(1);
  using M = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  const M za = deterministic_input<S>(n, d, 0), zb = deterministic_input<S>(n, d, 1);
  contrastive::VRNSParams vp;
  vp.dataset_size = 50000;
  const contrastive::SigLIP<S> siglip;
  const contrastive::VRNS<S> vrns(vp);
  const contrastive::WithVRNS<S> comb(make_loss<S>(Preset::NTXent), vp, 30.0);
  Workspace<S> ws;
  M ga(n, d), gb(n, d);
  S g1 = 0, g2 = 0;
  for (auto _ : state) {
    S v = 0;
    switch (e) {
      case Extra::SigLIP: v = grad ? siglip.value_and_grad(za, zb, ga, gb, &g1, &g2, ws) : siglip.value(za, zb, ws); break;
      case Extra::VRNS: v = grad ? vrns.value_and_grad(za, zb, ga, gb, ws) : vrns.value(za, zb, ws); break;
      case Extra::NTXentVRNS: v = grad ? comb.value_and_grad(za, zb, ga, gb, &g1, ws) : comb.value(za, zb, ws); break;
    }
    benchmark::DoNotOptimize(v);
    benchmark::ClobberMemory();
  }
  set_counters(state, minimal_gemm_macs(e == Extra::NTXentVRNS ? Preset::NTXent : Preset::CLIP, n, d, grad));
}

template <typename S>
void register_extra(const char* sname) {
  const std::pair<Extra, const char*> extras[] = {
      {Extra::SigLIP, "siglip"}, {Extra::VRNS, "vrns"}, {Extra::NTXentVRNS, "ntxent_vrns"}};
  for (const auto& e : extras)
    for (bool grad : {true, false})
      for (long n : {256L, 1024L, 4096L})
        for (long d : {128L, 512L})
          benchmark::RegisterBenchmark((std::string("lib/") + e.second + (grad ? "/grad/" : "/value/") + sname).c_str(),
                                       bm_extra<S>, e.first, grad)
              ->Args({n, d})
              ->Unit(benchmark::kMillisecond)
              ->UseRealTime();
}

template <typename S>
void register_all(const char* sname) {
  const std::vector<long> ns = {256, 1024, 4096, 16384};
  const std::vector<long> ds = {128, 256, 512};
  for (Preset p : kPresets)
    for (bool grad : {true, false}) {
      const std::string tail = std::string("/") + preset_name(p) + (grad ? "/grad/" : "/value/") + sname;
      for (long n : ns)
        for (long d : ds) {
          benchmark::RegisterBenchmark(("lib" + tail).c_str(), bm_lib<S>, p, grad)->Args({n, d})->Unit(benchmark::kMillisecond)->UseRealTime();
          benchmark::RegisterBenchmark(("gemm" + tail).c_str(), bm_gemm<S>, p, grad)->Args({n, d})->Unit(benchmark::kMillisecond)->UseRealTime();
          // The naive baseline stores 2n x 2n matrices: stop at n = 4096.
          if (n <= 4096)
            benchmark::RegisterBenchmark(("naive" + tail).c_str(), bm_naive<S>, p, grad)->Args({n, d})->Unit(benchmark::kMillisecond)->UseRealTime();
        }
    }
}

}  // namespace

// The naive baseline must compute the same loss as the library.
bool naive_agrees() {
  using M = Eigen::MatrixXd;
  const M za = deterministic_input<double>(37, 16, 0), zb = deterministic_input<double>(37, 16, 1);
  for (Preset p : kPresets) {
    M ga(37, 16), gb(37, 16);
    const double v = naive_loss<double>(p, za, zb, &ga, &gb);
    const auto r = make_loss<double>(p).value_and_grad(za, zb);
    if (std::abs(v - r.value) > 1e-10 * std::abs(r.value) || (ga - r.grad_a).norm() > 1e-10 * r.grad_a.norm() ||
        (gb - r.grad_b).norm() > 1e-10 * r.grad_b.norm()) {
      std::fprintf(stderr, "naive baseline disagrees with the library for %s\n", preset_name(p));
      return false;
    }
  }
  return true;
}

int main(int argc, char** argv) {
  if (!naive_agrees()) return 1;
  register_all<float>("float");
  register_all<double>("double");
  register_extra<float>("float");
  register_extra<double>("double");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
