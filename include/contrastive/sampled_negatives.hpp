// contrastive — the InfoNCE family with k sampled negatives per anchor.
// SPDX-License-Identifier: MIT
//
// The batch losses of the InfoNCE family with each anchor's negatives a
// random subset S_r of its candidates (see SampledNegatives for the exact
// sampling rule):
//
//   l_r = term( log sum_{j in S_r} c_j e^{w_r.w_j/tau} - w_r.w_p/tau ),
//   term = softplus (positive in the denominator) or identity (decoupled),
//
// with no reweighting, so S_r = all candidates gives the unsampled loss.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "api.hpp"
#include "detail/checks.hpp"
#include "detail/math.hpp"
#include "detail/rng.hpp"
#include "engine.hpp"
#include "two_view_loss.hpp"
#include "infonce_family.hpp"

namespace contrastive {

/// How SampledNegatives draws the negatives; check() throws
/// std::invalid_argument naming the field.
struct SamplingParams {
  /// Largest num_negatives.
  static constexpr Eigen::Index kMaxNegatives = Eigen::Index(1) << 30;
  /// k in [1, 2^30] negatives per anchor (fewer when an anchor has fewer
  /// candidates and sampling is without replacement).  Default 16.
  Eigen::Index num_negatives = 16;
  /// false (default): k distinct candidates; true: k independent draws.
  bool with_replacement = false;
  /// Seed of the draws; the same seed and inputs give the same negatives.
  std::uint64_t seed = 0;

  /// Throws std::invalid_argument naming the first invalid field.
  void check(const char* where = "contrastive::SamplingParams") const {
    if (num_negatives < 1 || num_negatives > kMaxNegatives)
      detail::fail_field(where, "num_negatives", "must be in [1, 2^30] " + detail::got(num_negatives));
  }
};

/// A loss of the InfoNCE family (any InfoNCEFamilyParams, e.g. a preset's
/// params()) where every anchor sees k sampled negatives instead of all of
/// them, k chosen independently of the batch size.
///
/// Rows are numbered as the stacked batch [za; zb] (row r < n is za.row(r),
/// row n + i is zb.row(i)).  Anchor r (instance i = r mod n, view v = r / n)
/// has the candidates, in this order: the other view's rows of the
/// instances j != i (if cross_weight > 0), then its own view's rows of the
/// instances j != i (if within_weight > 0), leaving out every j whose
/// instance id equals i's when ids are given.  Its draws come from its own
/// generator, SplitMix64 started at state mix64(seed + mix64(r + 1)):
/// without replacement the first min(k, |C|) entries of a partial
/// Fisher-Yates shuffle of C (for t = 0, 1, ...: swap C[t] with
/// C[t + below(|C| - t)]); with replacement k entries C[below(|C|)].
/// negatives_of() returns exactly these rows.  With k >= |C| and no
/// replacement the loss equals the InfoNCEFamily loss.  Cost O(A k d) for A
/// anchors (plus O(A n) to list candidates when ids are given); single-threaded.
template <typename Scalar>
class SampledNegatives : public TwoViewLoss<SampledNegatives<Scalar>, Scalar> {
  static_assert(std::is_floating_point<Scalar>::value, "contrastive: Scalar must be float or double");
  friend class TwoViewLoss<SampledNegatives<Scalar>, Scalar>;

 public:
  /// One scalar gradient: dL/dtau.
  static constexpr int kScalarGradients = 1;

  /// Validates both parameter sets (std::invalid_argument naming the field).
  SampledNegatives(const InfoNCEFamilyParams& loss, const SamplingParams& sampling)
      : params_(loss), sampling_(sampling) {
    params_.check(kName);
    detail::check_temperature<Scalar>(kName, "temperature", params_.temperature);
    sampling_.check(kName);
  }

  /// The loss's family parameters.
  const InfoNCEFamilyParams& params() const { return params_; }
  /// How negatives are drawn.
  const SamplingParams& sampling() const { return sampling_; }
  /// A new seed, e.g. one per training step.
  void set_seed(std::uint64_t seed) { sampling_.seed = seed; }
  /// Changes the temperature (e.g. a learned one); validated as on construction.
  void set_temperature(double tau) {
    detail::check_temperature<Scalar>(kName, "temperature", tau);
    params_.temperature = tau;
  }
  /// "contrastive::SampledNegatives".
  const char* name() const { return kName; }
  /// Number of anchors for n instances: n one-way, 2n symmetric.
  Eigen::Index anchors(Eigen::Index n) const { return params_.direction == Direction::Symmetric ? 2 * n : n; }

  /// The rows of [za; zb] drawn as anchor r's negatives for a batch of n
  /// instances (with the same instance ids as the loss call, if any).
  std::vector<Eigen::Index> negatives_of(Eigen::Index anchor, Eigen::Index n,
                                         Span<const Eigen::Index> instance_ids = {}) const {
    if (n < 2 || n > kMaxRows)
      detail::fail(kName, "n", "must be in [2, " + std::to_string(kMaxRows) + "] " + detail::got(n));
    if (anchor < 0 || anchor >= anchors(n))
      detail::fail(kName, "anchor", "must be in [0, " + std::to_string(anchors(n)) + ") " + detail::got(anchor));
    if (instance_ids.given()) detail::count_negatives(kName, n, instance_ids);
    Workspace<Scalar> ws;
    auto& b = detail::buffers(ws);
    draw(anchor, n, instance_ids.given() ? instance_ids.data() : nullptr, b);
    return b.drawn;
  }


 private:
  static constexpr const char* kName = "contrastive::SampledNegatives";
  /// Largest batch: 2n candidates and 2n anchors stay far from overflow.
  static constexpr Eigen::Index kMaxRows = Eigen::Index(1) << 40;

  /// A failure before a call (allocating a Result): one process only (this
  /// loss takes no process group).
  template <typename DA, typename DB>
  [[noreturn]] void fail_call(const Eigen::MatrixBase<DA>&, const Eigen::MatrixBase<DB>&, detail::Buffers<Scalar>&,
                              const CallOptions<Scalar>&, const std::exception_ptr& err) const {
    std::rethrow_exception(err);
  }

  template <typename DA, typename DB>
  Scalar evaluate(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb, detail::Buffers<Scalar>& b,
                  const CallOptions<Scalar>& call) const {
    const Eigen::Index* ids = prepare(b, za, zb, call);
    double dtau = 0;
    const double v = run(b, ids, false, dtau);
    detail::publish_per_anchor(call, b.losses);
    return static_cast<Scalar>(v);
  }

  template <typename DA, typename DB, typename GA, typename GB>
  Scalar differentiate(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                       const Eigen::MatrixBase<GA>& grad_a, const Eigen::MatrixBase<GB>& grad_b, Scalar* const* g,
                       detail::Buffers<Scalar>& b, const CallOptions<Scalar>& call) const {
    const Eigen::Index* ids = prepare(b, za, zb, call);
    detail::check_output_shape(kName, "grad_a", grad_a, za.rows(), za.cols());
    detail::check_output_shape(kName, "grad_b", grad_b, zb.rows(), zb.cols());
    detail::check_distinct_outputs(kName, grad_a, grad_b);
    double dtau = 0;
    const double v = run(b, ids, true, dtau);
    const Eigen::Index n = za.rows();
    detail::backprop_two(b.w, b.inv_norm, b.clamped, b.dw, 0, grad_a, n, grad_b);
    if (g[0]) *g[0] = static_cast<Scalar>(dtau);
    detail::publish_per_anchor(call, b.losses);
    return static_cast<Scalar>(v);
  }

  /// The draw of `anchor` into out.  With ids the candidates are listed and
  /// shuffled in place; without, candidate t is computed from t (O(1)) and
  /// the partial Fisher-Yates shuffle keeps only the positions it moved, so
  /// a draw costs O(k) instead of O(n) -- the same draws either way.
  void draw(Eigen::Index anchor, Eigen::Index n, const Eigen::Index* ids, detail::Buffers<Scalar>& b) const {
    std::vector<Eigen::Index>& out = b.drawn;
    const Eigen::Index i = anchor % n, v = anchor / n;
    const bool cross = params_.cross_weight > 0.0, within = params_.within_weight > 0.0;
    out.clear();
    detail::SplitMix64 rng(detail::mix64(sampling_.seed + detail::mix64(static_cast<std::uint64_t>(anchor) + 1)));
    const auto k = static_cast<std::uint64_t>(sampling_.num_negatives);
    if (ids) {
      auto& cand = b.cand;
      cand.clear();
      const auto add_view = [&](Eigen::Index view) {
        for (Eigen::Index j = 0; j < n; ++j)
          if (j != i && ids[j] != ids[i]) cand.push_back(view * n + j);
      };
      if (cross) add_view(1 - v);
      if (within) add_view(v);
      if (cand.empty()) return;
      const auto m = static_cast<std::uint64_t>(cand.size());
      if (sampling_.with_replacement) {
        for (std::uint64_t t = 0; t < k; ++t) out.push_back(cand[static_cast<std::size_t>(rng.below(m))]);
        return;
      }
      const std::uint64_t take = std::min(k, m);
      for (std::uint64_t t = 0; t < take; ++t) {
        const std::uint64_t j = t + rng.below(m - t);
        std::swap(cand[static_cast<std::size_t>(t)], cand[static_cast<std::size_t>(j)]);
      }
      out.assign(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(take));
      return;
    }
    // Candidate t: block (other view if cross, then own view if within) of
    // the n - 1 instances j != i in order.
    const auto per = static_cast<std::uint64_t>(n - 1);
    const auto row_of = [&](std::uint64_t t) {
      const Eigen::Index view = (cross && t < per) ? 1 - v : v;
      const auto j = static_cast<Eigen::Index>(t % per);
      return view * n + (j < i ? j : j + 1);
    };
    const std::uint64_t m = per * ((cross ? 1u : 0u) + (within ? 1u : 0u));
    if (sampling_.with_replacement) {
      for (std::uint64_t t = 0; t < k; ++t) out.push_back(row_of(rng.below(m)));
      return;
    }
    const std::uint64_t take = std::min(k, m);
    auto& moved = b.moved;
    moved.reset(static_cast<std::size_t>(take));
    for (std::uint64_t t = 0; t < take; ++t) {
      const std::uint64_t j = t + rng.below(m - t);
      const std::uint64_t vj = moved.at(j);
      moved.set(j, moved.at(t));  // position t is never read again
      out.push_back(row_of(vj));
    }
  }

  template <typename DA, typename DB>
  const Eigen::Index* prepare(detail::Buffers<Scalar>& b, const Eigen::MatrixBase<DA>& za,
                              const Eigen::MatrixBase<DB>& zb, const CallOptions<Scalar>& call) const {
    detail::check_call(kName, call, detail::Accepts{true, true, false});
    detail::check_views(kName, za, zb);
    const Eigen::Index n = za.rows(), d = za.cols();
    if (n > kMaxRows) detail::fail(kName, "za", "has more than " + std::to_string(kMaxRows) + " rows");
    const Eigen::Index* ids = detail::checked_ids(kName, za, zb, call.instance_ids);
    const Eigen::Index a = anchors(n);
    detail::anchor_coefficients(kName, call, a, b.coef);
    if (!params_.positive_in_denominator && ids) {
      // Decoupled: an anchor without candidates would have log(0) = -inf.
      for (Eigen::Index r = 0; r < a; ++r) {
        bool any = false;
        for (Eigen::Index j = 0; j < n && !any; ++j) any = ids[j] != ids[r % n];
        if (!any)
          detail::fail(kName, "call.instance_ids",
                       "leave anchor " + std::to_string(r) + " without any negative (the decoupled loss would be -inf)");
      }
    }
    detail::resize_buffer(b.w, 2 * n, d);
    detail::resize_buffer(b.inv_norm, 2 * n);
    b.clamped.assign(static_cast<std::size_t>(2 * n), 0);
    detail::load_rows(b.w, b.inv_norm, b.clamped, 0, za, kName, "za");
    detail::load_rows(b.w, b.inv_norm, b.clamped, n, zb, kName, "zb");
    b.losses.assign(static_cast<std::size_t>(a), Scalar(0));
    // The most any anchor draws (its candidates number below 2n), twice:
    // logits with and without the weights' offsets.
    detail::resize_buffer(b.scratch, 2 * max_draws(n));
    b.threads = 1;
    b.streamed = false;
    return ids;
  }

  Eigen::Index max_draws(Eigen::Index n) const {
    return sampling_.with_replacement ? sampling_.num_negatives : std::min<Eigen::Index>(sampling_.num_negatives, 2 * n);
  }

  /// Value; with `grad` dL/dW in b.dw and dL/dtau in dtau, from the centred
  /// sums -(1/tau) sum_r a_r sum_t p_rt (s_rt / tau - x_r,pos).
  double run(detail::Buffers<Scalar>& b, const Eigen::Index* ids, bool grad, double& dtau) const {
    const Eigen::Index n = b.w.rows() / 2, a = anchors(n), kmax = max_draws(n);
    auto& dw = b.dw;
    const Scalar inv_tau = static_cast<Scalar>(1.0 / params_.temperature);
    // (A weight of 0 removes its candidates, so -inf is never drawn.)
    const Scalar lw[2] = {detail::log_weight<Scalar>(params_.cross_weight), detail::log_weight<Scalar>(params_.within_weight)};
    if (grad) detail::zero_buffer(dw, b.w.rows(), b.w.cols());
    const std::vector<Eigen::Index>& neg = b.drawn;
    double value = 0.0;
    for (Eigen::Index r = 0; r < a; ++r) {
      draw(r, n, ids, b);
      const Eigen::Index p = r < n ? r + n : r - n, view = r / n;
      const auto wr = b.w.row(r);
      const Scalar sp = inv_tau * wr.dot(b.w.row(p));
      const auto k = static_cast<Eigen::Index>(neg.size());
      auto x = b.scratch.head(k);
      auto xs = b.scratch.segment(kmax, k);  // without the weights' offsets
      for (Eigen::Index t = 0; t < k; ++t) {
        const Eigen::Index j = neg[static_cast<std::size_t>(t)];
        xs[t] = inv_tau * wr.dot(b.w.row(j));
        x[t] = xs[t] + lw[j / n == view ? 1 : 0];
      }
      const Scalar lse = k == 0 ? -std::numeric_limits<Scalar>::infinity()
                                : x.maxCoeff() + std::log((x - x.maxCoeff()).exp().sum());
      const bool pos = params_.positive_in_denominator;
      const Scalar term = pos ? detail::softplus(lse - sp) : lse - sp;
      b.losses[static_cast<std::size_t>(r)] = term;
      const Scalar c = b.coef[r];
      value += static_cast<double>(c) * static_cast<double>(term);
      if (!grad || k == 0) continue;
      const Scalar miss = pos ? detail::sigmoid(lse - sp) : Scalar(1);
      const Scalar denom = pos ? sp + term : lse;
      const Scalar g = c * inv_tau;
      x = (x - denom).exp();  // p_rt
      dtau -= static_cast<double>(c) / params_.temperature * static_cast<double>((x * (xs - sp)).sum());
      x *= g;  // dl/d(w_r . w_j) for each drawn j
      for (Eigen::Index t = 0; t < k; ++t) {
        const Eigen::Index j = neg[static_cast<std::size_t>(t)];
        dw.row(r) += x[t] * b.w.row(j);
        dw.row(j) += x[t] * wr;
      }
      dw.row(r) -= g * miss * b.w.row(p);
      dw.row(p) -= g * miss * wr;
    }
    return value;
  }

  InfoNCEFamilyParams params_;
  SamplingParams sampling_;
};

}  // namespace contrastive
