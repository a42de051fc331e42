// Microbenchmarks of negatives.hpp, each beside its reference in one run.
//
//   lib/shared/<grad|value>/<float|double>/n/M/d   InfoNCEWithNegatives, M shared negative keys
//   gemm/shared/...                                the same minimal GEMM work: Q N^T (+ H N, H^T Q)
//   lib/bank/grad/...                              as lib/shared/grad without dL/dN (memory bank)
//   lib/sampled/<k>/float/n/d                      SampledNegatives over NT-Xent, k per anchor
//   lib/full/float/n/d                             NT-Xent with all 2n - 2 negatives
//
//   ./build-bench/bench/bench_negatives --benchmark_filter='shared/grad/float'
#include <benchmark/benchmark.h>

#include <string>

#include <Eigen/Core>

#include <contrastive/contrastive.hpp>

#include "bench_common.hpp"

using namespace contrastive_bench;

namespace {

template <typename S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;

template <typename S>
void bm_shared(benchmark::State& state, bool grad, bool bank) {
  const Eigen::Index n = state.range(0), m = state.range(1), d = state.range(2);
  const Mat<S> q = deterministic_input<S>(n, d, 0), k = deterministic_input<S>(n, d, 1),
               neg = deterministic_input<S>(m, d, 2);
  const contrastive::InfoNCEWithNegatives<S> loss;
  Mat<S> gq(n, d), gk(n, d), gn(m, d);
  contrastive::Workspace<S> ws;
  for (auto _ : state) {
    S v = !grad  ? loss.value(q, k, neg, ws)
          : bank ? loss.value_and_grad(q, k, neg, gq, gk, nullptr, nullptr, ws)
                 : loss.value_and_grad(q, k, neg, gq, gk, gn, nullptr, ws);
    benchmark::DoNotOptimize(v);
    benchmark::ClobberMemory();
  }
  const double macs = static_cast<double>(n) * static_cast<double>(m) * static_cast<double>(d) *
                      (grad ? (bank ? 2.0 : 3.0) : 1.0);
  set_counters(state, macs);
}

template <typename S>
void bm_shared_gemm(benchmark::State& state, bool grad) {
  const Eigen::Index n = state.range(0), m = state.range(1), d = state.range(2);
  const Mat<S> q = deterministic_input<S>(n, d, 0), neg = deterministic_input<S>(m, d, 2);
  Mat<S> x(n, m), gq(n, d), gn(m, d);
  for (auto _ : state) {
    x.noalias() = q * neg.transpose();
    if (grad) {
      gq.noalias() = x * neg;
      gn.noalias() = x.transpose() * q;
    }
    benchmark::ClobberMemory();
  }
  set_counters(state, static_cast<double>(n) * static_cast<double>(m) * static_cast<double>(d) * (grad ? 3.0 : 1.0));
}

void bm_sampled(benchmark::State& state) {
  const Eigen::Index n = state.range(0), d = state.range(1), k = state.range(2);
  const Mat<float> za = deterministic_input<float>(n, d, 0), zb = deterministic_input<float>(n, d, 1);
  contrastive::SamplingParams sp;
  sp.num_negatives = k;
  const contrastive::SampledNegatives<float> loss(contrastive::NTXent<float>(0.2).params(), sp);
  Mat<float> ga(n, d), gb(n, d);
  contrastive::Workspace<float> ws;
  for (auto _ : state) {
    float v = loss.value_and_grad(za, zb, ga, gb, nullptr, ws);
    benchmark::DoNotOptimize(v);
    benchmark::ClobberMemory();
  }
}

void bm_full(benchmark::State& state) {
  const Eigen::Index n = state.range(0), d = state.range(1);
  const Mat<float> za = deterministic_input<float>(n, d, 0), zb = deterministic_input<float>(n, d, 1);
  const contrastive::NTXent<float> loss(0.2);
  contrastive::Workspace<float> ws;
  Mat<float> ga(n, d), gb(n, d);
  for (auto _ : state) {
    float v = loss.value_and_grad(za, zb, ga, gb, nullptr, ws);
    benchmark::DoNotOptimize(v);
    benchmark::ClobberMemory();
  }
}

template <typename S>
void register_shared(const char* sname) {
  for (bool grad : {true, false})
    for (long n : {256L, 1024L})
      for (long m : {4096L, 65536L}) {
        const std::string tail = std::string(grad ? "/grad/" : "/value/") + sname;
        benchmark::RegisterBenchmark(("lib/shared" + tail).c_str(), bm_shared<S>, grad, false)
            ->Args({n, m, 128})->Unit(benchmark::kMillisecond)->UseRealTime();
        benchmark::RegisterBenchmark(("gemm/shared" + tail).c_str(), bm_shared_gemm<S>, grad)
            ->Args({n, m, 128})->Unit(benchmark::kMillisecond)->UseRealTime();
        if (grad)
          benchmark::RegisterBenchmark((std::string("lib/bank/grad/") + sname).c_str(), bm_shared<S>, true, true)
              ->Args({n, m, 128})->Unit(benchmark::kMillisecond)->UseRealTime();
      }
}

}  // namespace

int main(int argc, char** argv) {
  register_shared<float>("float");
  register_shared<double>("double");
  for (long n : {256L, 1024L, 4096L}) {
    for (long k : {16L, 64L, 256L})
      benchmark::RegisterBenchmark("lib/sampled/float", bm_sampled)->Args({n, 128, k})->Unit(benchmark::kMillisecond)->UseRealTime();
    benchmark::RegisterBenchmark("lib/full/float", bm_full)->Args({n, 128})->Unit(benchmark::kMillisecond)->UseRealTime();
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
