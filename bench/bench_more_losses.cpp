// Microbenchmarks of the losses of issue 15 (items 7 and the explicit-keys
// part of 1-2), each beside NT-Xent in the same run: value + every gradient,
// one thread (the engine's and Eigen's), default EngineOptions otherwise.
//
//   lib/<loss>/grad/<float|double>/n/d
//     ntxent         NT-Xent, tau = 0.2 (the reference row)
//     alignment      Alignment, alpha = 2 (O(n d), no tile)
//     uniformity     Uniformity, t = 2 (the within-view tiles, half of NT-Xent's)
//     clip           CLIP, tau = 0.2 (the reference of the one-block losses)
//     debiased       Debiased NT-Xent, tau+ = 0.1, beta = 1
//     multipos_sum   MultiPositive (Sum form) on NT-Xent, ids in groups of 4
//     multipos_mean  MultiPositive (Mean form), the same ids
//     dclw           DCLW, sigma = 0.5
//     smooth_clip    CLIP with label smoothing 0.1
//     supcon_one     SupConOneView on za with 10 labels (one view: n rows)
//   lib/keys_<form>/grad/<float|double>/n/M/d
//     InfoNCEWithNegatives, M = 2n - 2 shared keys (NT-Xent's negatives per
//     anchor), tau = 0.2, with dL/dkeys; form plain, debiased (tau+ = 0.1),
//     hard (beta = 1) or debiased_hard (both)
//
//   ./build-bench/bench/bench_more_losses --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include <Eigen/Core>

#include <contrastive/contrastive.hpp>

#include "bench_common.hpp"

using namespace contrastive_bench;

namespace {

template <typename S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;

enum class Loss { NTXent, Alignment, Uniformity, CLIP, Debiased, MultiPosSum, MultiPosMean, DCLW, SmoothCLIP, SupConOne };

contrastive::EngineOptions one_thread() {
  contrastive::EngineOptions o;
  o.num_threads = 1;
  return o;
}

template <typename S>
void bm_pair(benchmark::State& state, Loss which) {
  Eigen::setNbThreads(1);
  const Eigen::Index n = state.range(0), d = state.range(1);
  const Mat<S> za = deterministic_input<S>(n, d, 0), zb = deterministic_input<S>(n, d, 1);
  const contrastive::NTXent<S> ntxent(0.2, one_thread());
  const contrastive::Alignment<S> align({2.0}, one_thread());
  const contrastive::Uniformity<S> unif({2.0}, one_thread());
  const contrastive::CLIP<S> clip(0.2, one_thread());
  contrastive::DebiasedParams dp;
  dp.family = contrastive::NTXent<S>(0.2).params();
  dp.tau_plus = 0.1;
  dp.beta = 1.0;
  const contrastive::Debiased<S> debiased(dp, one_thread());
  contrastive::MultiPositiveParams mp;
  mp.family = contrastive::NTXent<S>(0.2).params();
  mp.form = contrastive::PositivesForm::Sum;
  const contrastive::MultiPositive<S> mpos_sum(mp, one_thread());
  mp.form = contrastive::PositivesForm::Mean;
  const contrastive::MultiPositive<S> mpos_mean(mp, one_thread());
  const contrastive::DCLW<S> dclw(0.2, 0.5, one_thread());
  auto sp = contrastive::CLIP<S>(0.2).params();
  sp.label_smoothing = 0.1;
  const contrastive::InfoNCEFamily<S> smooth(sp, one_thread());
  const contrastive::SupConOneView<S> supcon_one(0.2, one_thread());
  std::vector<Eigen::Index> ids(static_cast<std::size_t>(n)), labels(static_cast<std::size_t>(n));
  for (Eigen::Index i = 0; i < n; ++i) {
    ids[static_cast<std::size_t>(i)] = i / 4;
    labels[static_cast<std::size_t>(i)] = i % 10;
  }
  const auto with_ids = contrastive::CallOptions<S>{}.with_ids(ids);
  const auto with_labels = contrastive::CallOptions<S>{}.with_labels(labels);
  contrastive::Workspace<S> ws;
  Mat<S> ga(n, d), gb(n, d);
  S g = 0;
  for (auto _ : state) {
    S v = 0;
    switch (which) {
      case Loss::NTXent: v = ntxent.value_and_grad(za, zb, ga, gb, &g, ws); break;
      case Loss::Alignment: v = align.value_and_grad(za, zb, ga, gb, &g, ws); break;
      case Loss::Uniformity: v = unif.value_and_grad(za, zb, ga, gb, &g, ws); break;
      case Loss::CLIP: v = clip.value_and_grad(za, zb, ga, gb, &g, ws); break;
      case Loss::Debiased: v = debiased.value_and_grad(za, zb, ga, gb, &g, ws); break;
      case Loss::MultiPosSum: v = mpos_sum.value_and_grad(za, zb, ga, gb, &g, ws, with_ids); break;
      case Loss::MultiPosMean: v = mpos_mean.value_and_grad(za, zb, ga, gb, &g, ws, with_ids); break;
      case Loss::DCLW: v = dclw.value_and_grad(za, zb, ga, gb, &g, ws); break;
      case Loss::SmoothCLIP: v = smooth.value_and_grad(za, zb, ga, gb, &g, ws); break;
      case Loss::SupConOne: v = supcon_one.value_and_grad(za, ga, &g, ws, with_labels); break;
    }
    benchmark::DoNotOptimize(v);
    benchmark::ClobberMemory();
  }
}

template <typename S>
void bm_keys(benchmark::State& state, double tau_plus, double beta) {
  Eigen::setNbThreads(1);
  const Eigen::Index n = state.range(0), m = state.range(1), d = state.range(2);
  const Mat<S> q = deterministic_input<S>(n, d, 0), k = deterministic_input<S>(n, d, 1),
               neg = deterministic_input<S>(m, d, 2);
  const contrastive::InfoNCEWithNegatives<S> loss({0.2, contrastive::NegativeMode::Shared, tau_plus, beta}, one_thread());
  Mat<S> gq(n, d), gk(n, d), gn(m, d);
  contrastive::Workspace<S> ws;
  S g = 0;
  for (auto _ : state) {
    S v = loss.value_and_grad(q, k, neg, gq, gk, gn, &g, ws);
    benchmark::DoNotOptimize(v);
    benchmark::ClobberMemory();
  }
}

template <typename S>
void register_all(const char* sname) {
  const std::pair<Loss, const char*> pairs[] = {
      {Loss::NTXent, "ntxent"},          {Loss::Alignment, "alignment"},        {Loss::Uniformity, "uniformity"},
      {Loss::CLIP, "clip"},              {Loss::Debiased, "debiased"},          {Loss::MultiPosSum, "multipos_sum"},
      {Loss::MultiPosMean, "multipos_mean"}, {Loss::DCLW, "dclw"},              {Loss::SmoothCLIP, "smooth_clip"},
      {Loss::SupConOne, "supcon_one"}};
  for (const auto& p : pairs)
    benchmark::RegisterBenchmark((std::string("lib/") + p.second + "/grad/" + sname).c_str(), bm_pair<S>, p.first)
        ->Args({1024, 128})
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  const struct {
    const char* name;
    double tau_plus, beta;
  } forms[] = {{"plain", 0.0, 0.0}, {"debiased", 0.1, 0.0}, {"hard", 0.0, 1.0}, {"debiased_hard", 0.1, 1.0}};
  for (const auto& f : forms)
    benchmark::RegisterBenchmark((std::string("lib/keys_") + f.name + "/grad/" + sname).c_str(), bm_keys<S>, f.tau_plus,
                                 f.beta)
        ->Args({1024, 2046, 128})
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
}

}  // namespace

int main(int argc, char** argv) {
  register_all<float>("float");
  register_all<double>("double");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
