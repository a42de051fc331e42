// Shared pieces of the benchmarks: presets and inputs, the minimal GEMM work
// of every loss, the machine's GEMM rate, memory counters, and two
// materialised Eigen baselines (the correct naive one and the bare minimum).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <sys/resource.h>

#include <benchmark/benchmark.h>

#include <Eigen/Core>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <contrastive/contrastive.hpp>

#include "../tests/support.hpp"
#include "inputs.hpp"

namespace contrastive_bench {

using testing::kPresets;
using testing::Preset;
using testing::preset_name;

/// Engine options with a fixed thread count (0: OpenMP's default).
inline contrastive::EngineOptions threads_options(int threads) {
  contrastive::EngineOptions o;
  o.num_threads = threads;
  return o;
}

/// The benchmarks run every preset at tau = 0.2.
template <typename S>
contrastive::InfoNCEFamily<S> make_loss(Preset p, const contrastive::EngineOptions& o = {}) {
  return testing::make_loss<S>(p, 0.2, o);
}

inline contrastive::InfoNCEFamilyParams preset_params(Preset p) { return make_loss<double>(p).params(); }

/// Multiply-adds of the GEMMs the loss cannot avoid: the similarity blocks it
/// needs (half of a symmetric block) and, with the gradient, one product per
/// block and direction.
inline double minimal_gemm_macs(Preset p, Eigen::Index n_, Eigen::Index d_, bool grad) {
  const double n = static_cast<double>(n_), d = static_cast<double>(d_);
  switch (p) {
    case Preset::NTXent:
    case Preset::DCL: return (grad ? 6.0 : 2.0) * n * n * d;  // (2n)^2 d / 2, + (2n)^2 d
    case Preset::DHEL: return (grad ? 3.0 : 1.0) * n * n * d;  // 2 x n^2 d / 2, + 2 n^2 d
    case Preset::CLIP:
    case Preset::InfoNCE: return (grad ? 3.0 : 1.0) * n * n * d;  // n^2 d, + 2 n^2 d
  }
  return 0;
}

/// The same for a gradient call that does not keep its tiles between the two
/// passes (streaming): the similarity blocks are formed twice, NT-Xent 8 n^2 d.
inline double recomputing_gemm_macs(Preset p, Eigen::Index n, Eigen::Index d) {
  return minimal_gemm_macs(p, n, d, false) + minimal_gemm_macs(p, n, d, true);
}

/// Peak resident memory of the process so far (ru_maxrss), MiB.
inline double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

/// Counters of every case: `GFLOPs`, the rate of the minimal GEMM work
/// (2 flops per multiply-add), and `min_GFLOP`, that work per call.
inline void set_counters(benchmark::State& state, double macs) {
  state.counters["GFLOPs"] = benchmark::Counter(2.0 * macs * 1e-9 * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
  state.counters["min_GFLOP"] = 2.0 * macs * 1e-9;
}

/// The process's peak RSS when the case `key` first started (called after
/// building its inputs).  Google Benchmark calls a case's function several
/// times (to find the iteration count, then to measure); the peak the first
/// call reached must not become the baseline of the later ones.
inline double case_baseline_mib(const std::string& key) {
  static std::map<std::string, double> first;
  return first.emplace(key, peak_rss_mib()).first->second;
}

/// A key for case_baseline_mib: a tag and the case's arguments.
inline std::string case_key(const benchmark::State& state, const std::string& tag) {
  std::string k = tag;
  for (int i = 0; i < 3; ++i) k += "/" + std::to_string(state.range(i));
  return k;
}

/// `peak_MiB`: the process's peak RSS; `peak_delta_MiB`: how far the case
/// raised it above `peak_before` (case_baseline_mib).  The delta is the
/// case's own peak only when it is the first thing in the process to need
/// that much memory: run one case per process to measure it.
inline void set_memory_counters(benchmark::State& state, double peak_before) {
  const double peak = peak_rss_mib();
  state.counters["peak_MiB"] = peak;
  state.counters["peak_delta_MiB"] = peak - peak_before;
}

/// Eigen's own GEMM threads while the guard lives; back to Eigen's default
/// (OpenMP's) afterwards, so that the library's tile loop, which makes Eigen
/// serial through OpenMP, is not overridden by a leftover setNbThreads.
class EigenThreads {
 public:
  explicit EigenThreads(int threads) { Eigen::setNbThreads(threads); }
  ~EigenThreads() { Eigen::setNbThreads(0); }
  EigenThreads(const EigenThreads&) = delete;
  EigenThreads& operator=(const EigenThreads&) = delete;
};

/// Eigen's GEMM rate, GFLOP/s, on an m x m x m product with `threads`
/// threads (0: Eigen's default): the best of the repetitions run in at least
/// `min_seconds`.
template <typename S>
double gemm_rate_gflops(Eigen::Index m, int threads, double min_seconds = 1.0) {
  using M = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  using Clock = std::chrono::steady_clock;
  EigenThreads guard(threads);
  const M a = M::Random(m, m), b = M::Random(m, m);
  M c(m, m);
  c.noalias() = a * b;  // warm-up
  double best = 0, total = 0;
  for (int rep = 0; rep < 3 || total < min_seconds; ++rep) {
    const auto t0 = Clock::now();
    c.noalias() = a * b;
    const double t = std::chrono::duration<double>(Clock::now() - t0).count();
    total += t;
    best = std::max(best, 2e-9 * std::pow(static_cast<double>(m), 3.0) / t);
  }
  benchmark::DoNotOptimize(c.data());
  return best;
}

/// Google Benchmark case of the GEMM rate: rate/<scalar>/m/threads:T, an
/// m x m x m product on Eigen's threads; counter GFLOPs.
template <typename S>
void bm_gemm_rate(benchmark::State& state) {
  using M = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  const Eigen::Index m = state.range(0);
  EigenThreads guard(static_cast<int>(state.range(1)));
  const M a = M::Random(m, m), b = M::Random(m, m);
  M c(m, m);
  c.noalias() = a * b;  // warm-up, untimed: c's pages touched, Eigen's blocking buffers sized
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::ClobberMemory();
  }
  set_counters(state, std::pow(static_cast<double>(m), 3.0));
}

/// Runs f(j, thread) for every column j in [0, ncols) on `threads` OpenMP
/// threads (contiguous ranges of columns per thread).
template <typename F>
void for_columns(int threads, Eigen::Index ncols, F&& f) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (Eigen::Index j = 0; j < ncols; ++j) f(j, omp_get_thread_num());
#else
  (void)threads;
  for (Eigen::Index j = 0; j < ncols; ++j) f(j, 0);
#endif
}

/// The straightforward implementation: normalise, materialise the 2n x 2n
/// similarity matrix, mask, softmax per anchor, G, (G + G^T) W, back through
/// the normalisation.  Eigen's GEMMs run on Eigen's threads (the caller sets
/// them); the element-wise work is serial, as plain Eigen code is.
template <typename S>
S naive_loss(Preset p, const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>& za,
             const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>& zb,
             Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>* ga, Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>* gb) {
  using M = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  using A = Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic>;
  const auto prm = preset_params(p);
  const Eigen::Index n = za.rows(), n2 = 2 * n;
  const S tau = static_cast<S>(prm.temperature), inf = std::numeric_limits<S>::infinity();
  M z(n2, za.cols());
  z << za, zb;
  const Eigen::Array<S, Eigen::Dynamic, 1> norms = z.rowwise().norm().array().max(S(1e-12));
  const M w = (z.array().colwise() / norms).matrix();
  A logits = (w * w.transpose()).array() / tau;
  // log-weights: within-view blocks c2, cross-view c1, self excluded, positive separate
  const S lc1 = prm.cross_weight > 0 ? std::log(static_cast<S>(prm.cross_weight)) : -inf;
  const S lc2 = prm.within_weight > 0 ? std::log(static_cast<S>(prm.within_weight)) : -inf;
  A offs(n2, n2);
  offs.topLeftCorner(n, n).setConstant(lc2);
  offs.bottomRightCorner(n, n).setConstant(lc2);
  offs.topRightCorner(n, n).setConstant(lc1);
  offs.bottomLeftCorner(n, n).setConstant(lc1);
  for (Eigen::Index i = 0; i < n2; ++i) offs(i, i) = -inf;
  for (Eigen::Index i = 0; i < n; ++i) offs(i, i + n) = offs(i + n, i) = prm.positive_in_denominator ? S(0) : -inf;
  const A x = logits + offs;
  const Eigen::Array<S, Eigen::Dynamic, 1> mx = x.rowwise().maxCoeff();
  const Eigen::Array<S, Eigen::Dynamic, 1> lse = mx + (x.colwise() - mx).exp().rowwise().sum().log();
  const bool sym = prm.direction == contrastive::Direction::Symmetric;
  const Eigen::Index anchors = sym ? n2 : n;
  double value = 0;
  for (Eigen::Index r = 0; r < anchors; ++r) value += static_cast<double>(lse[r] - logits(r, (r + n) % n2));
  value /= static_cast<double>(anchors);
  if (!ga) return static_cast<S>(value);
  A g = (x.colwise() - lse).exp();
  for (Eigen::Index r = 0; r < n2; ++r) g(r, (r + n) % n2) -= S(1);
  if (!sym) g.bottomRows(n).setZero();
  g *= S(1) / (tau * static_cast<S>(anchors));
  const M dw = (g.matrix() + g.matrix().transpose()) * w;
  M dz(n2, za.cols());
  for (Eigen::Index r = 0; r < n2; ++r)
    dz.row(r) = (dw.row(r) - w.row(r).dot(dw.row(r)) * w.row(r)) / norms[r];
  *ga = dz.topRows(n);
  *gb = dz.bottomRows(n);
  return static_cast<S>(value);
}

/// The fastest materialised code: one GEMM for the similarities, one
/// exponential pass (with the row / column sums), one pass forming dL/dK and
/// the GEMM(s) back, and nothing else: no masking pass, no max shift (the
/// logits of unit vectors are bounded by 1/tau, so exp cannot overflow for
/// tau >= 0.012 in float), the self-similarities and positives are fixed in
/// O(n).  Buffers are kept between calls.  GEMMs run on Eigen's threads (the
/// caller sets them); the element-wise passes on `threads` OpenMP threads.
///
///   NT-Xent / DCL  K = W W^T (2n x 2n, a full GEMM: 4 n^2 d, not the
///                  symmetric half), dW = H W (4 n^2 d)
///   CLIP / InfoNCE K = U V^T, dU = H V, dV = H^T U (3 n^2 d, the minimum)
///   DHEL           K_u = U U^T, K_v = V V^T, dU = H_u U, dV = H_v V (4 n^2 d)
template <typename S>
class NaiveMinimal {
 public:
  using M = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  using V = Eigen::Array<S, Eigen::Dynamic, 1>;

  NaiveMinimal(Preset p, int threads) : prm_(preset_params(p)), threads_(threads) {}

  S run(const M& za, const M& zb, M* ga, M* gb) {
    const Eigen::Index n = za.rows(), d = za.cols();
    it_ = static_cast<S>(1.0 / prm_.temperature);
    w_.resize(2 * n, d);
    w_ << za, zb;
    nrm_ = w_.rowwise().norm().array().max(S(1e-12));
    w_.array().colwise() /= nrm_;
    pos_ = it_ * (w_.topRows(n).array() * w_.bottomRows(n).array()).rowwise().sum();
    const bool grad = ga != nullptr;
    if (grad) dw_.resize(2 * n, d);
    double value;
    if (prm_.cross_weight > 0 && prm_.within_weight > 0) value = stacked(n, grad);
    else if (prm_.within_weight > 0) value = within(n, grad);
    else value = cross(n, grad);
    if (grad) {
      const V dots = (w_.array() * dw_.array()).rowwise().sum();
      ga->array() = (dw_.topRows(n).array() - w_.topRows(n).array().colwise() * dots.head(n)).colwise() / nrm_.head(n);
      gb->array() = (dw_.bottomRows(n).array() - w_.bottomRows(n).array().colwise() * dots.tail(n)).colwise() / nrm_.tail(n);
    }
    return static_cast<S>(value);
  }

 private:
  // exp in place over a symmetric K with a zero diagonal; column sums (= row sums).
  void exp_symmetric(M& k, V& sums) {
    sums.resize(k.cols());
    for_columns(threads_, k.cols(), [&](Eigen::Index j, int) {
      auto c = k.col(j).array();
      c = c.exp();
      c[j] = S(0);
      sums[j] = c.sum();
    });
  }
  // H_rc = E_rc (a_r + a_c) in place.
  void scale_symmetric(M& k, const V& a) {
    for_columns(threads_, k.cols(), [&](Eigen::Index j, int) { k.col(j).array() *= a + a[j]; });
  }

  // NT-Xent, DCL: the stacked W = [U; V].
  double stacked(Eigen::Index n, bool grad) {
    const Eigen::Index n2 = 2 * n;
    k_.resize(n2, n2);
    k_.noalias() = (it_ * w_) * w_.transpose();
    exp_symmetric(k_, rs_);
    const bool pos = prm_.positive_in_denominator;
    if (!pos)
      for (Eigen::Index r = 0; r < n2; ++r) rs_[r] -= k_(r, (r + n) % n2);
    const double alpha = 1.0 / static_cast<double>(n2);
    double value = 0;
    for (Eigen::Index r = 0; r < n2; ++r) value += std::log(static_cast<double>(rs_[r])) - static_cast<double>(pos_[r % n]);
    if (!grad) return alpha * value;
    const S ai = static_cast<S>(alpha) * it_;
    scale_symmetric(k_, ai / rs_);
    for (Eigen::Index i = 0; i < n; ++i) {
      const S h = pos ? k_(i, i + n) - 2 * ai : -2 * ai;
      k_(i, i + n) = k_(i + n, i) = h;
    }
    dw_.noalias() = k_ * w_;
    return alpha * value;
  }

  // DHEL: the two within-view blocks.
  double within(Eigen::Index n, bool grad) {
    const auto u = w_.topRows(n), v = w_.bottomRows(n);
    k_.resize(n, n);
    k2_.resize(n, n);
    k_.noalias() = (it_ * u) * u.transpose();
    k2_.noalias() = (it_ * v) * v.transpose();
    exp_symmetric(k_, rs_);
    exp_symmetric(k2_, cs_);
    const double alpha = 0.5 / static_cast<double>(n);
    double value = 0;
    for (Eigen::Index i = 0; i < n; ++i)
      value += std::log(static_cast<double>(rs_[i])) + std::log(static_cast<double>(cs_[i])) - 2.0 * static_cast<double>(pos_[i]);
    if (!grad) return alpha * value;
    const S ai = static_cast<S>(alpha) * it_;
    scale_symmetric(k_, ai / rs_);
    scale_symmetric(k2_, ai / cs_);
    dw_.topRows(n).noalias() = k_ * u;
    dw_.bottomRows(n).noalias() = k2_ * v;
    dw_.topRows(n) -= (2 * ai) * v;
    dw_.bottomRows(n) -= (2 * ai) * u;
    return alpha * value;
  }

  // CLIP (both directions), InfoNCE (rows only): the cross-view block.
  double cross(Eigen::Index n, bool grad) {
    const auto u = w_.topRows(n), v = w_.bottomRows(n);
    const bool sym = prm_.direction == contrastive::Direction::Symmetric;
    k_.resize(n, n);
    k_.noalias() = (it_ * u) * v.transpose();
    cs_.resize(n);
    part_.setZero(n, threads_);
    for_columns(threads_, n, [&](Eigen::Index j, int t) {
      auto c = k_.col(j).array();
      c = c.exp();
      part_.col(t) += c;
      if (sym) cs_[j] = c.sum();
    });
    rs_ = part_.rowwise().sum();
    const double alpha = 1.0 / static_cast<double>(sym ? 2 * n : n);
    double value = 0;
    for (Eigen::Index i = 0; i < n; ++i) {
      value += std::log(static_cast<double>(rs_[i])) - static_cast<double>(pos_[i]);
      if (sym) value += std::log(static_cast<double>(cs_[i])) - static_cast<double>(pos_[i]);
    }
    if (!grad) return alpha * value;
    const S ai = static_cast<S>(alpha) * it_;
    const V ar = ai / rs_;
    if (sym) {
      const V ac = ai / cs_;
      for_columns(threads_, n, [&](Eigen::Index j, int) { k_.col(j).array() *= ar + ac[j]; });
    } else {
      for_columns(threads_, n, [&](Eigen::Index j, int) { k_.col(j).array() *= ar; });
    }
    k_.diagonal().array() -= (sym ? 2 : 1) * ai;
    dw_.topRows(n).noalias() = k_ * v;
    dw_.bottomRows(n).noalias() = k_.transpose() * u;
    return alpha * value;
  }

  contrastive::InfoNCEFamilyParams prm_;
  int threads_;
  S it_ = 1;
  M w_, dw_, k_, k2_;
  Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic> part_;
  V nrm_, pos_, rs_, cs_;
};

}  // namespace contrastive_bench
