// Microbenchmarks: the library beside two materialised Eigen baselines, and
// the machine's GEMM rate measured in the same run (the reference: a loss
// cannot be faster than its minimal GEMM work at the best GEMM rate).
//
// Names (Args n, d, threads):
//   rate/<float|double>/m/threads:T                  Eigen m x m x m GEMM on T threads
//   lib/<loss>/<grad|value>/<float|double>/n/d/threads:T
//                                                    the library, EngineOptions::num_threads = T
//   naive/<preset>/...                               correct materialised code (masking,
//                                                    log-sum-exp), n <= 4096
//   naive_min/<preset>/...                           the bare minimum of materialised code:
//                                                    GEMM, one exp pass, GEMM back, n <= 4096
// loss: the presets infonce, clip, ntxent, dcl, dhel, and siglip, vrns,
// ntxent_vrns (NT-Xent + 30 * VRNS in one call).  The baselines run Eigen's
// GEMMs on T threads (Eigen::setNbThreads) and naive_min's element-wise passes
// on T OpenMP threads.
//
// Every case makes one untimed call before its timed loop, as a training loop
// that reuses its Workspace does after its first step: the first call sizes
// the Workspace (up to 149 MB of cached tiles for NT-Xent at n = 4096) and
// touches its pages, which on the 2-core VM took longer than the call itself
// (n = 4096 NT-Xent float, one thread: 785 ms for a first call, 241 ms for
// the following ones).  The baselines and the GEMM rate get the same warm-up.
// The rate cases span m = 512 to 4096; bench/report.py takes the best of them
// as the machine's rate (512^3 and 1024^3 products, whose panels stay in
// cache, run ~15% faster than 2048^3 there).
//
// Counters: GFLOPs (rate of the loss's minimal GEMM work, the same for all
// three), min_GFLOP (that work per call), and for `lib` streamed,
// threads_used, ws_MB (Workspace::bytes()), loss (the value); peak_MiB and
// peak_delta_MiB for all (see set_memory_counters).  bench/report.py turns
// the JSON output into the table of library / limit ratios.
//
//   ./build/bench/bench_losses --benchmark_format=json
//       --benchmark_filter='^rate/float/[0-9]+/threads:1/|^(lib|naive_min)/clip/grad/float/1024/128/threads:1/' > out.json
//   python3 bench/report.py out.json
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <typeinfo>
#include <vector>

#include <Eigen/Core>

#include <contrastive/contrastive.hpp>

#include "bench_common.hpp"

using namespace contrastive_bench;
using contrastive::EngineOptions;
using contrastive::Workspace;

namespace {

template <typename S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;

int threads_arg(const benchmark::State& state) { return static_cast<int>(state.range(2)); }

template <typename S>
void bm_lib(benchmark::State& state, Preset p, bool grad) {
  const Eigen::Index n = state.range(0), d = state.range(1);
  const Mat<S> za = deterministic_input<S>(n, d, 0), zb = deterministic_input<S>(n, d, 1);
  const auto loss = make_loss<S>(p, threads_options(threads_arg(state)));
  Workspace<S> ws;
  Mat<S> ga(n, d), gb(n, d);
  S gt = 0, v = 0;
  const double rss0 = case_baseline_mib(case_key(state, std::string("lib/") + preset_name(p) + (grad ? "/g/" : "/v/") + typeid(S).name()));
  const auto call = [&] { return grad ? loss.value_and_grad(za, zb, ga, gb, &gt, ws) : loss.value(za, zb, ws); };
  benchmark::DoNotOptimize(call());  // warm-up, untimed (see the top of this file)
  for (auto _ : state) {
    v = call();
    benchmark::DoNotOptimize(v);
    benchmark::ClobberMemory();
  }
  set_counters(state, minimal_gemm_macs(p, n, d, grad));
  set_memory_counters(state, rss0);
  state.counters["streamed"] = grad && ws.last_call_streamed() ? 1 : 0;
  state.counters["threads_used"] = ws.last_call_threads();
  state.counters["ws_MB"] = static_cast<double>(ws.bytes()) * 1e-6;
  state.counters["loss"] = static_cast<double>(v);
}

template <typename S>
void bm_naive(benchmark::State& state, Preset p, bool grad) {
  const Eigen::Index n = state.range(0), d = state.range(1);
  const Mat<S> za = deterministic_input<S>(n, d, 0), zb = deterministic_input<S>(n, d, 1);
  Mat<S> ga(n, d), gb(n, d);
  const EigenThreads eigen(threads_arg(state));
  const double rss0 = case_baseline_mib(case_key(state, std::string("naive/") + preset_name(p) + (grad ? "/g/" : "/v/") + typeid(S).name()));
  const auto call = [&] { return naive_loss<S>(p, za, zb, grad ? &ga : nullptr, grad ? &gb : nullptr); };
  benchmark::DoNotOptimize(call());  // warm-up
  for (auto _ : state) {
    S v = call();
    benchmark::DoNotOptimize(v);
    benchmark::ClobberMemory();
  }
  set_counters(state, minimal_gemm_macs(p, n, d, grad));
  set_memory_counters(state, rss0);
}

template <typename S>
void bm_naive_min(benchmark::State& state, Preset p, bool grad) {
  const Eigen::Index n = state.range(0), d = state.range(1);
  const Mat<S> za = deterministic_input<S>(n, d, 0), zb = deterministic_input<S>(n, d, 1);
  Mat<S> ga(n, d), gb(n, d);
  const EigenThreads eigen(threads_arg(state));
  NaiveMinimal<S> impl(p, threads_arg(state));
  const double rss0 = case_baseline_mib(case_key(state, std::string("naive_min/") + preset_name(p) + (grad ? "/g/" : "/v/") + typeid(S).name()));
  const auto call = [&] { return impl.run(za, zb, grad ? &ga : nullptr, grad ? &gb : nullptr); };
  benchmark::DoNotOptimize(call());  // warm-up
  for (auto _ : state) {
    S v = call();
    benchmark::DoNotOptimize(v);
    benchmark::ClobberMemory();
  }
  set_counters(state, minimal_gemm_macs(p, n, d, grad));
  set_memory_counters(state, rss0);
}

// The additive losses and the composition: `lib/siglip`, `lib/vrns` and
// `lib/ntxent_vrns` (NT-Xent + 30 * VRNS in one call); compare the last with
// `lib/ntxent` of the same run.  The minimal work is CLIP's for SigLIP and
// VRNS (one cross-view block) and NT-Xent's for the composition.
enum class Extra { SigLIP, VRNS, NTXentVRNS };

template <typename S>
void bm_extra(benchmark::State& state, Extra e, bool grad) {
  const Eigen::Index n = state.range(0), d = state.range(1);
  const Mat<S> za = deterministic_input<S>(n, d, 0), zb = deterministic_input<S>(n, d, 1);
  const EngineOptions opt = threads_options(threads_arg(state));
  contrastive::VRNSParams vp;
  vp.dataset_size = 50000;
  const contrastive::SigLIP<S> siglip(contrastive::SigLIPParams{}, opt);
  const contrastive::VRNS<S> vrns(vp, opt);
  const contrastive::WithVRNS<S> comb(make_loss<S>(Preset::NTXent, opt), vp, 30.0);
  Workspace<S> ws;
  Mat<S> ga(n, d), gb(n, d);
  S g1 = 0, g2 = 0, v = 0;
  const double rss0 = case_baseline_mib(case_key(state, "extra/" + std::to_string(static_cast<int>(e)) + (grad ? "/g/" : "/v/") + typeid(S).name()));
  const auto call = [&]() -> S {
    switch (e) {
      case Extra::SigLIP: return grad ? siglip.value_and_grad(za, zb, ga, gb, &g1, &g2, ws) : siglip.value(za, zb, ws);
      case Extra::VRNS: return grad ? vrns.value_and_grad(za, zb, ga, gb, ws) : vrns.value(za, zb, ws);
      case Extra::NTXentVRNS: return grad ? comb.value_and_grad(za, zb, ga, gb, &g1, ws) : comb.value(za, zb, ws);
    }
    return S(0);
  };
  benchmark::DoNotOptimize(call());  // warm-up
  for (auto _ : state) {
    v = call();
    benchmark::DoNotOptimize(v);
    benchmark::ClobberMemory();
  }
  set_counters(state, minimal_gemm_macs(e == Extra::NTXentVRNS ? Preset::NTXent : Preset::CLIP, n, d, grad));
  set_memory_counters(state, rss0);
  state.counters["streamed"] = grad && ws.last_call_streamed() ? 1 : 0;
  state.counters["threads_used"] = ws.last_call_threads();
  state.counters["ws_MB"] = static_cast<double>(ws.bytes()) * 1e-6;
  state.counters["loss"] = static_cast<double>(v);
}

const std::vector<long> kSizes = {256, 1024, 4096, 16384};
const std::vector<long> kDims = {128, 256};
const std::vector<long> kThreads = {1, 2};
// The materialised baselines store (2n)^2 entries: none from n = 8192 on.
constexpr long kMaxMaterialised = 4096;

benchmark::internal::Benchmark* shape(benchmark::internal::Benchmark* b, long n, long d, long t) {
  return b->Args({n, d, t})->ArgNames({"", "", "threads"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

template <typename S>
void register_rate(const char* sname) {
  for (long m : {512L, 1024L, 2048L, 4096L})
    for (long t : kThreads)
      benchmark::RegisterBenchmark((std::string("rate/") + sname).c_str(), bm_gemm_rate<S>)
          ->Args({m, t})
          ->ArgNames({"", "threads"})
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
}

template <typename S>
void register_presets(const char* sname) {
  for (Preset p : kPresets)
    for (bool grad : {true, false}) {
      const std::string tail = std::string("/") + preset_name(p) + (grad ? "/grad/" : "/value/") + sname;
      for (long n : kSizes)
        for (long d : kDims)
          for (long t : kThreads) {
            shape(benchmark::RegisterBenchmark(("lib" + tail).c_str(), bm_lib<S>, p, grad), n, d, t);
            if (n > kMaxMaterialised) continue;
            shape(benchmark::RegisterBenchmark(("naive" + tail).c_str(), bm_naive<S>, p, grad), n, d, t);
            shape(benchmark::RegisterBenchmark(("naive_min" + tail).c_str(), bm_naive_min<S>, p, grad), n, d, t);
          }
    }
}

template <typename S>
void register_extra(const char* sname) {
  const std::pair<Extra, const char*> extras[] = {
      {Extra::SigLIP, "siglip"}, {Extra::VRNS, "vrns"}, {Extra::NTXentVRNS, "ntxent_vrns"}};
  for (const auto& e : extras)
    for (bool grad : {true, false})
      for (long n : kSizes)
        for (long d : kDims)
          for (long t : kThreads)
            shape(benchmark::RegisterBenchmark((std::string("lib/") + e.second + (grad ? "/grad/" : "/value/") + sname).c_str(),
                                               bm_extra<S>, e.first, grad),
                  n, d, t);
}

// Both baselines must compute the library's loss and gradients.
template <typename F>
bool agrees(const char* what, Preset p, F&& f) {
  using M = Eigen::MatrixXd;
  const M za = deterministic_input<double>(37, 16, 0), zb = deterministic_input<double>(37, 16, 1);
  M ga(37, 16), gb(37, 16);
  const double v = f(za, zb, &ga, &gb), v_only = f(za, zb, nullptr, nullptr);
  const auto r = make_loss<double>(p).value_and_grad(za, zb);
  const auto off = [](double a, double b) { return std::abs(a - b) > 1e-10 * std::max(1.0, std::abs(b)); };
  if (off(v, r.value) || off(v_only, r.value) || (ga - r.grad_a).norm() > 1e-10 * r.grad_a.norm() ||
      (gb - r.grad_b).norm() > 1e-10 * r.grad_b.norm()) {
    std::fprintf(stderr, "%s baseline disagrees with the library for %s\n", what, preset_name(p));
    return false;
  }
  return true;
}

bool baselines_agree() {
  using M = Eigen::MatrixXd;
  for (Preset p : kPresets) {
    if (!agrees("naive", p, [&](const M& a, const M& b, M* ga, M* gb) { return naive_loss<double>(p, a, b, ga, gb); }))
      return false;
    for (int t : {1, 2}) {
      NaiveMinimal<double> nm(p, t);
      if (!agrees("naive_min", p, [&](const M& a, const M& b, M* ga, M* gb) { return nm.run(a, b, ga, gb); }))
        return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (!baselines_agree()) return 1;
  register_rate<float>("float");
  register_rate<double>("double");
  register_presets<float>("float");
  register_presets<double>("double");
  register_extra<float>("float");
  register_extra<double>("double");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
