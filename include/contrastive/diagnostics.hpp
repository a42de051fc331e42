// contrastive — what the first paper measures: similarity statistics of a
// batch and the full-batch / mini-batch theory (paper notes, Sec. 5).
// SPDX-License-Identifier: MIT
#pragma once

#include <cmath>
#include <functional>
#include <limits>

#include <Eigen/Core>

#include "alignment_uniformity.hpp"
#include "detail/checks.hpp"
#include "detail/math.hpp"
#include "engine.hpp"

namespace contrastive {

/// Mean and population variance of one kind of similarity.
struct Moments {
  double mean = 0;      ///< mean similarity
  double variance = 0;  ///< population variance
  double count = 0;  ///< number of (ordered) pairs
};

/// Statistics of the cosine similarities of a batch of pairs.
struct SimilarityStats {
  Moments positive;         ///< s_ii = u_i . v_i
  Moments cross_negative;   ///< u_i . v_j, i != j
  Moments within_negative;  ///< u_i . u_j and v_i . v_j, i != j
};

namespace detail {
inline Moments moments(double sum, double sum_sq, double count) {
  Moments m;
  m.count = count;
  m.mean = sum / count;
  m.variance = std::max(0.0, sum_sq / count - m.mean * m.mean);
  return m;
}
}  // namespace detail

/// Similarity statistics in O(n d^2) time and O(d^2) extra memory, with no
/// n x n matrix:  sum_{ij} u_i.v_j = (sum u).(sum v) and
/// sum_{ij} (u_i.v_j)^2 = <U^T U, V^T V>_F, minus the diagonal terms.
/// Rows are normalised by the engine, as the losses do (norm clamped at
/// 1e-12); computed in double.  Throws std::invalid_argument as the losses do.
template <typename DA, typename DB>
SimilarityStats similarity_stats(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb) {
  const char* where = "contrastive::similarity_stats";
  detail::check_views(where, za, zb);
  // The losses' own normalisation (and finiteness check), in double.
  detail::Buffers<double> buf;
  detail::Engine<double>::load(buf, za, zb, where);
  const auto& w = buf.w;
  using M = Eigen::MatrixXd;
  const M u = w.topRows(za.rows()), v = w.bottomRows(zb.rows());
  const double n = static_cast<double>(u.rows());
  const Eigen::VectorXd sii = (u.array() * v.array()).rowwise().sum();
  const Eigen::VectorXd nu = u.rowwise().squaredNorm(), nv = v.rowwise().squaredNorm();
  const M gu = u.transpose() * u, gv = v.transpose() * v;
  SimilarityStats st;
  st.positive = detail::moments(sii.sum(), sii.squaredNorm(), n);
  st.cross_negative = detail::moments(u.colwise().sum().dot(v.colwise().sum()) - sii.sum(),
                                      (gu.array() * gv.array()).sum() - sii.squaredNorm(), n * (n - 1));
  st.within_negative = detail::moments(u.colwise().sum().squaredNorm() - nu.sum() + v.colwise().sum().squaredNorm() - nv.sum(),
                                       gu.squaredNorm() - nu.squaredNorm() + gv.squaredNorm() - nv.squaredNorm(),
                                       2 * n * (n - 1));
  return st;
}

/// Wang & Isola's two measures of a batch of pairs: the values of the
/// Alignment and Uniformity losses (alignment_uniformity.hpp).
struct AlignmentUniformity {
  double alignment = 0;     ///< (1/n) sum_i ||u_i - v_i||^alpha
  double uniformity_u = 0;  ///< L_unif(U) = log of the mean over i != j of e^{-t ||u_i - u_j||^2}
  double uniformity_v = 0;  ///< L_unif(V), the same over the rows of zb
  double uniformity = 0;    ///< (uniformity_u + uniformity_v) / 2, the Uniformity loss
};

/// Alignment (power alpha, default 2) and uniformity (scale t, default 2)
/// of a batch, beside similarity_stats(): the values of Alignment<double>
/// and Uniformity<double> on (za, zb), computed in double, and each view's
/// L_unif from the same call.  No gradients.  Throws std::invalid_argument
/// as the losses do (naming 'za', 'zb', 'alpha' or 't').
template <typename DA, typename DB>
AlignmentUniformity alignment_uniformity(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                                         double alpha = 2.0, double t = 2.0) {
  const Alignment<double> align(AlignmentParams{alpha});
  const Uniformity<double> unif(UniformityParams{t});
  Workspace<double> ws;
  AlignmentUniformity r;
  r.alignment = align.value(za, zb, ws);
  r.uniformity = unif.value(za, zb, ws);
  const auto& lse = detail::buffers(ws).cs.lse;  // the two views' L_unif (UniformityKernel::finish)
  r.uniformity_u = lse[0];
  r.uniformity_v = lse[1];
  return r;
}

/// The full-batch and mini-batch theory of the paper notes (Sec. 5).
namespace theory {

/// Negative similarity of the regular simplex of n points: -1/(n-1).
inline double simplex_similarity(double n) {
  if (!(n >= 2 && std::isfinite(n)))
    detail::fail("contrastive::theory::simplex_similarity", "n", "must be finite and >= 2 " + detail::got(n));
  return -1.0 / (n - 1.0);
}

/// An inequality evaluated on data: lhs <= rhs holds iff slack = rhs - lhs >= 0.
struct Inequality {
  double lhs = 0;  ///< left-hand side on the data
  double rhs = 0;  ///< right-hand side on the data
  /// rhs - lhs (>= 0 when the inequality holds).
  double slack() const { return rhs - lhs; }
  /// True when slack() >= -tol.
  bool holds(double tol = 1e-12) const { return slack() >= -tol; }
};

/// Thm 5.2: E[s_pos] <= 1 + E[s_neg] + 1/(n-1) (cross-view negatives), for
/// any normalised embeddings of n >= 2 pairs.
inline Inequality alignment_bound(const SimilarityStats& st) {
  const double n = st.positive.count;
  return {st.positive.mean, 1.0 + st.cross_negative.mean + 1.0 / (n - 1.0)};
}

/// The tight form (Lemma C.6):
/// (n-2)/(2(n-1)) E[s_pos] - n/(2(n-1)) <= E[s_neg].
inline Inequality tight_alignment_bound(const SimilarityStats& st) {
  const double n = st.positive.count;
  return {(n - 2.0) / (2.0 * (n - 1.0)) * st.positive.mean - n / (2.0 * (n - 1.0)), st.cross_negative.mean};
}

/// alignment_bound() evaluated directly on a batch of embeddings.
template <typename DA, typename DB>
Inequality alignment_bound(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb) {
  return alignment_bound(similarity_stats(za, zb));
}
/// tight_alignment_bound() evaluated directly on a batch of embeddings.
template <typename DA, typename DB>
Inequality tight_alignment_bound(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb) {
  return tight_alignment_bound(similarity_stats(za, zb));
}

/// Thm 5.5: the variance of negative similarities at the optimum of fixed
/// mini-batches of size m out of n (d >= m-1) lies in [lower, upper].
struct VarianceBounds {
  double lower = 0;  ///< (n - m) / ((m - 1)(n - 1)^2)
  double upper = 0;  ///< n times the lower bound
};
/// The bounds of Thm 5.5 for n samples in batches of m (2 <= m <= n).
inline VarianceBounds minibatch_variance_bounds(double n, double m) {
  const char* where = "contrastive::theory::minibatch_variance_bounds";
  if (!(m >= 2 && std::isfinite(m))) detail::fail(where, "m", "must be finite and >= 2 " + detail::got(m));
  if (!(n >= m && std::isfinite(n))) detail::fail(where, "n", "must be finite and >= m " + detail::got(n));
  const double base = (n - m) / ((m - 1.0) * (n - 1.0) * (n - 1.0));
  return {base, n * base};
}

/// The pair terms of the independently additive family (Def. 3.2), for the
/// theory: L = -1/m sum phi(s_ii) + c1/(m(m-1)) sum psi(s_ij).
struct AdditiveTerms {
  std::function<double(double)> phi;   ///< positive term phi(x)
  std::function<double(double)> dphi;  ///< phi'(x)
  std::function<double(double)> psi;   ///< negative term psi(x)
  std::function<double(double)> dpsi;  ///< psi'(x)
};

/// SigLIP's terms for n pairs, with open_clip's bias b (logits t s + b):
/// phi(x) = -softplus(-(t x + b)), psi(x) = (n-1) softplus(t x + b).
inline AdditiveTerms siglip_terms(double n, double logit_scale, double logit_bias) {
  const char* where = "contrastive::theory::siglip_terms";
  if (!(n >= 2 && std::isfinite(n))) detail::fail(where, "n", "must be finite and >= 2 " + detail::got(n));
  detail::check_positive_finite(where, "logit_scale", logit_scale);
  if (!std::isfinite(logit_bias)) detail::fail(where, "logit_bias", "must be finite " + detail::got(logit_bias));
  using detail::sigmoid;
  using detail::softplus;
  const double t = logit_scale, b = logit_bias;
  return {[=](double x) { return -softplus(-(t * x + b)); }, [=](double x) { return t * sigmoid(-(t * x + b)); },
          [=](double x) { return (n - 1.0) * softplus(t * x + b); },
          [=](double x) { return (n - 1.0) * t * sigmoid(t * x + b); }};
}

/// Thm 5.3: with (c1, c2) = (1, 0) and d >= n, excessive separation happens
/// iff phi'(1) < (n-2)/(2(n-1)) psi'(-1/(n-1)).
inline bool excessive_separation(const AdditiveTerms& terms, double n) {
  if (!(terms.phi && terms.dphi && terms.psi && terms.dpsi))
    detail::fail("contrastive::theory::excessive_separation", "terms", "must give all four of phi, dphi, psi, dpsi");
  return terms.dphi(1.0) < (n - 2.0) / (2.0 * (n - 1.0)) * terms.dpsi(simplex_similarity(n));
}

/// The full-batch optimum of Thm 5.3: every positive = x*, every negative
/// = ((n-2) x* - n) / (2(n-1)); without excessive separation x* = 1 and the
/// negatives are -1/(n-1).
struct FullBatchOptimum {
  double positive = 1;     ///< x*, every positive similarity at the optimum
  double negative = 0;     ///< every negative similarity at the optimum
  bool excessive = false;  ///< excessive_separation(): x* < 1 and the negatives fall below -1/(n-1)
};

/// x* minimises the convex h(x) = -phi(x) + psi(((n-2) x - n) / (2(n-1)))
/// on [-1, 1] (golden-section search to 1e-12).
inline FullBatchOptimum full_batch_optimum(const AdditiveTerms& terms, double n) {
  FullBatchOptimum o;
  o.excessive = excessive_separation(terms, n);
  const auto neg = [n](double x) { return ((n - 2.0) * x - n) / (2.0 * (n - 1.0)); };
  if (!o.excessive) {
    o.positive = 1.0;
    o.negative = simplex_similarity(n);
    return o;
  }
  const auto h = [&](double x) { return -terms.phi(x) + terms.psi(neg(x)); };
  const double g = (std::sqrt(5.0) - 1.0) / 2.0;
  double a = -1.0, b = 1.0, c = b - g * (b - a), d = a + g * (b - a);
  double hc = h(c), hd = h(d);
  while (b - a > 1e-12) {
    if (hc < hd) {
      b = d;
      d = c;
      hd = hc;
      c = b - g * (b - a);
      hc = h(c);
    } else {
      a = c;
      c = d;
      hc = hd;
      d = a + g * (b - a);
      hd = h(d);
    }
  }
  o.positive = 0.5 * (a + b);
  o.negative = neg(o.positive);
  return o;
}

}  // namespace theory
}  // namespace contrastive
