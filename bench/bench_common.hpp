// Shared pieces of the benchmarks: presets, inputs, the GEMM reference and
// the naive materialised baseline.
#pragma once

#include <cmath>
#include <limits>

#include <benchmark/benchmark.h>

#include <Eigen/Core>

#include <contrastive/contrastive.hpp>

#include "../tests/support.hpp"

namespace contrastive_bench {

using testing::kPresets;
using testing::Preset;
using testing::preset_name;

/// The benchmarks run every preset at tau = 0.2.
template <typename S>
contrastive::InfoNCEFamily<S> make_loss(Preset p, const contrastive::EngineOptions& o = {}) {
  return testing::make_loss<S>(p, 0.2, o);
}

inline contrastive::InfoNCEFamilyParams preset_params(Preset p) { return make_loss<double>(p).params(); }

/// Inputs both the C++ benchmarks and bench/torch_compare.py build:
/// z(i, j) = sin(0.37 (i d + j) + 1.1 view) * (1 + (i mod 7)).
template <typename S>
Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> deterministic_input(Eigen::Index n, Eigen::Index d, int view) {
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> z(n, d);
  for (Eigen::Index i = 0; i < n; ++i)
    for (Eigen::Index j = 0; j < d; ++j)
      z(i, j) = static_cast<S>(std::sin(0.37 * static_cast<double>(i * d + j) + 1.1 * view) * (1.0 + static_cast<double>(i % 7)));
  return z;
}

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

inline void set_counters(benchmark::State& state, double macs) {
  state.counters["GFLOPs"] = benchmark::Counter(2.0 * macs * 1e-9 * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
}

/// Eigen products with exactly the minimal GEMM work of a loss (Eigen's own
/// threads, no element-wise work): the practical roofline of the machine.
template <typename S>
struct GemmReference {
  using M = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  Preset p;
  M a, b, w, k, k2, ga, gb;
  GemmReference(Preset preset, Eigen::Index n, Eigen::Index d) : p(preset) {
    a = deterministic_input<S>(n, d, 0);
    b = deterministic_input<S>(n, d, 1);
    if (p == Preset::NTXent || p == Preset::DCL) {
      w.resize(2 * n, d);
      w << a, b;
      k.setZero(2 * n, 2 * n);
    } else {
      k.setZero(n, n);
      if (p == Preset::DHEL) k2.setZero(n, n);
    }
    ga.resize(w.size() ? 2 * n : n, d);
    gb.resize(n, d);
  }
  void run(bool grad) {
    switch (p) {
      case Preset::NTXent:
      case Preset::DCL:
        k.template triangularView<Eigen::Lower>() = w * w.transpose();
        if (grad) ga.noalias() = k * w;
        break;
      case Preset::DHEL:
        k.template triangularView<Eigen::Lower>() = a * a.transpose();
        k2.template triangularView<Eigen::Lower>() = b * b.transpose();
        if (grad) {
          ga.noalias() = k * a;
          gb.noalias() = k2 * b;
        }
        break;
      case Preset::CLIP:
      case Preset::InfoNCE:
        k.noalias() = a * b.transpose();
        if (grad) {
          ga.noalias() = k * b;
          gb.noalias() = k.transpose() * a;
        }
        break;
    }
  }
};

/// The straightforward implementation: normalise, materialise the 2n x 2n
/// similarity matrix, mask, softmax per anchor, G, (G + G^T) W, back through
/// the normalisation.
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

}  // namespace contrastive_bench
