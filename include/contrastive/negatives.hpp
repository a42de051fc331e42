// contrastive — negatives chosen by the caller: explicit negative keys,
// k negatives sampled per anchor, and a FIFO memory bank of past keys.
// SPDX-License-Identifier: MIT
//
// Explicit negative keys (info-nce-pytorch's InfoNCE with negative_keys).
// Query q_i, positive key p_i, negative keys n_1..n_M (mode Shared: the same
// M for every query, "unpaired") or n_{i,1}..n_{i,k} (mode PerQuery: k of
// its own per query, "paired"); all rows L2-normalised inside the loss:
//
//   l_i = -q_i.p_i/tau + log( e^{q_i.p_i/tau} + sum_j e^{q_i.n_j/tau} )
//       = softplus(lse_i - q_i.p_i/tau),      lse_i = log sum_j e^{q_i.n_j/tau},
//
// reduced by Reduce (mean over the n queries by default).  With
// p_ij = e^{q_i.n_j/tau - lse_all_i} the softmax weight of negative j and
// miss_i = 1 - p_pos = sigmoid(lse_i - q_i.p_i/tau), for coefficient a_i:
//
//   dl/dq_i = a_i/tau (sum_j p_ij n_j - miss_i p_i),   dl/dp_i = -a_i/tau miss_i q_i,
//   dl/dn_j = sum_i a_i/tau p_ij q_i,
//   dL/dtau = -(1/tau) sum_i a_i (sum_j p_ij x_ij - miss_i x_ip),   x = q.k / tau,
//
// then back through the normalisation.  Shared mode costs two GEMMs of
// n x M x d (one more for dl/dN), done in blocks of query rows so memory is
// O(block * M + (n + M) d), never n x M.  PerQuery costs O(n k d).
//
// k sampled negatives per anchor (SampledNegatives): the batch losses of the
// InfoNCE family with each anchor's negatives a random subset of its
// candidates (see SampledNegatives for the exact sampling rule):
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
#include <limits>
#include <string>
#include <unordered_map>
#include <vector>

#include <Eigen/Core>

#include "detail/checks.hpp"
#include "engine.hpp"
#include "infonce_family.hpp"

namespace contrastive {

/// Whether every query shares one set of negative keys or has its own.
enum class NegativeMode {
  /// negative_keys is M x d; all n queries use all M rows ("unpaired").
  Shared,
  /// negative_keys is (n k) x d; rows i k .. i k + k - 1 belong to query i ("paired").
  PerQuery
};

/// Parameters of InfoNCEWithNegatives; check() throws std::invalid_argument
/// naming the field.
struct NegativeKeysParams {
  /// tau > 0 (info-nce-pytorch's default 0.1).
  double temperature = 0.1;
  /// Shared (default) or PerQuery.
  NegativeMode mode = NegativeMode::Shared;

  void check(const char* where = "contrastive::NegativeKeysParams") const {
    detail::check_positive_finite(where, "temperature", temperature);
  }
};

/// Value and gradients from the allocating overload of InfoNCEWithNegatives.
template <typename Scalar>
struct NegativeKeysResult {
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  Scalar value{};
  Matrix grad_query;          ///< dL/dquery
  Matrix grad_positive_key;   ///< dL/dpositive_key
  Matrix grad_negative_keys;  ///< dL/dnegative_keys
  Scalar grad_temperature{};  ///< dL/dtau
};

/// InfoNCE of queries against their positive keys and caller-given negative
/// keys (formula at the top of this header).  Inputs are any dense Eigen
/// expressions; rows are samples.  The positive key is always in the
/// denominator, as in info-nce-pytorch.  Instance-id masks do not apply
/// here: the caller chooses the negatives (drop colliding keys first).
template <typename Scalar>
class InfoNCEWithNegatives {
  static_assert(std::is_floating_point<Scalar>::value, "contrastive: Scalar must be float or double");

 public:
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

  explicit InfoNCEWithNegatives(const NegativeKeysParams& params = {}, const EngineOptions& options = {})
      : params_(params), options_(options) {
    params_.check(kName);
    options_.check();
  }

  const NegativeKeysParams& params() const { return params_; }
  /// Changes the temperature; validated as in check().
  void set_temperature(double tau) {
    detail::check_positive_finite(kName, "temperature", tau);
    params_.temperature = tau;
  }

  /// Loss value (reduced as `reduce` says; mean over queries by default).
  template <typename DQ, typename DP, typename DN>
  Scalar value(const Eigen::MatrixBase<DQ>& query, const Eigen::MatrixBase<DP>& positive_key,
               const Eigen::MatrixBase<DN>& negative_keys, const Reduce<Scalar>& reduce = {}) const {
    State st;
    prepare(st, query, positive_key, negative_keys, reduce);
    const double v = run(st, false, false);
    publish(st, reduce);
    return static_cast<Scalar>(v);
  }

  /// Value and gradients into caller-owned outputs of the inputs' shapes.
  /// `grad_negative_keys` may be null (no gradient into the negatives, e.g.
  /// keys from a MemoryBank: one GEMM less); otherwise it is resized to the
  /// shape of negative_keys.  `grad_temperature` may be null.  On an
  /// exception no output has been written.
  template <typename DQ, typename DP, typename DN, typename GQ, typename GP>
  Scalar value_and_grad(const Eigen::MatrixBase<DQ>& query, const Eigen::MatrixBase<DP>& positive_key,
                        const Eigen::MatrixBase<DN>& negative_keys, const Eigen::MatrixBase<GQ>& grad_query,
                        const Eigen::MatrixBase<GP>& grad_positive_key, Matrix* grad_negative_keys,
                        Scalar* grad_temperature, const Reduce<Scalar>& reduce = {}) const {
    State st;
    prepare(st, query, positive_key, negative_keys, reduce);
    detail::check_output_shape(kName, "grad_query", grad_query, query.rows(), query.cols());
    detail::check_output_shape(kName, "grad_positive_key", grad_positive_key, positive_key.rows(),
                               positive_key.cols());
    const double v = run(st, true, grad_negative_keys != nullptr);
    const Eigen::Index n = query.rows();
    detail::backprop_rows(st.w, st.inv_norm, st.clamped, st.dw, 0, grad_query);
    detail::backprop_rows(st.w, st.inv_norm, st.clamped, st.dw, n, grad_positive_key);
    if (grad_negative_keys) {
      grad_negative_keys->resize(negative_keys.rows(), negative_keys.cols());
      detail::backprop_rows(st.neg, st.neg_inv_norm, st.neg_clamped, st.dneg, 0, *grad_negative_keys);
    }
    if (grad_temperature) *grad_temperature = static_cast<Scalar>(st.dtau);
    publish(st, reduce);
    return static_cast<Scalar>(v);
  }

  /// Value and every gradient, allocated.
  template <typename DQ, typename DP, typename DN>
  NegativeKeysResult<Scalar> value_and_grad(const Eigen::MatrixBase<DQ>& query,
                                            const Eigen::MatrixBase<DP>& positive_key,
                                            const Eigen::MatrixBase<DN>& negative_keys,
                                            const Reduce<Scalar>& reduce = {}) const {
    NegativeKeysResult<Scalar> out;
    check_inputs(query, positive_key, negative_keys);
    out.grad_query.resize(query.rows(), query.cols());
    out.grad_positive_key.resize(positive_key.rows(), positive_key.cols());
    out.value = value_and_grad(query, positive_key, negative_keys, out.grad_query, out.grad_positive_key,
                               &out.grad_negative_keys, &out.grad_temperature, reduce);
    return out;
  }

 private:
  static constexpr const char* kName = "contrastive::InfoNCEWithNegatives";
  using RowMatrix = detail::RowMatrix<Scalar>;
  using ColArray = detail::ColArray<Scalar>;

  struct State {
    RowMatrix w, dw, neg, dneg;  // [Q; P] and N normalised, and their gradients
    ColArray inv_norm, neg_inv_norm, coef, e;
    std::vector<unsigned char> clamped, neg_clamped;
    std::vector<Scalar> losses;
    Eigen::Index n = 0, k = 0;  // queries; negatives per query (PerQuery)
    double dtau = 0.0;
  };

  template <typename DQ, typename DP, typename DN>
  void check_inputs(const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DP>& p,
                    const Eigen::MatrixBase<DN>& nk) const {
    if (q.rows() < 1) detail::fail(kName, "query", "has 0 rows: at least one query is needed");
    if (q.cols() < 1) detail::fail(kName, "query", "has 0 columns: the embedding dimension d must be >= 1");
    if (p.rows() != q.rows() || p.cols() != q.cols())
      detail::fail(kName, "positive_key",
                   "has shape " + shape(p) + " but 'query' has " + shape(q) + " (row i is the key of query i)");
    if (nk.cols() != q.cols())
      detail::fail(kName, "negative_keys",
                   "has " + std::to_string(nk.cols()) + " columns but 'query' has " + std::to_string(q.cols()));
    if (nk.rows() < 1) detail::fail(kName, "negative_keys", "has 0 rows: at least one negative key is needed");
    if (params_.mode == NegativeMode::PerQuery && nk.rows() % q.rows() != 0)
      detail::fail(kName, "negative_keys",
                   "has " + std::to_string(nk.rows()) + " rows, not a multiple of the " + std::to_string(q.rows()) +
                       " queries (mode PerQuery: rows i k .. i k + k - 1 belong to query i)");
  }

  template <typename D>
  static std::string shape(const Eigen::MatrixBase<D>& m) {
    return std::to_string(m.rows()) + "x" + std::to_string(m.cols());
  }

  template <typename DQ, typename DP, typename DN>
  void prepare(State& st, const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DP>& p,
               const Eigen::MatrixBase<DN>& nk, const Reduce<Scalar>& reduce) const {
    check_inputs(q, p, nk);
    const Eigen::Index n = q.rows(), d = q.cols(), m = nk.rows();
    detail::anchor_coefficients(kName, reduce, n, st.coef);
    st.n = n;
    st.k = params_.mode == NegativeMode::PerQuery ? m / n : m;
    st.w.resize(2 * n, d);
    st.inv_norm.resize(2 * n);
    st.clamped.assign(static_cast<std::size_t>(2 * n), 0);
    detail::load_rows(st.w, st.inv_norm, st.clamped, 0, q, kName, "query");
    detail::load_rows(st.w, st.inv_norm, st.clamped, n, p, kName, "positive_key");
    st.neg.resize(m, d);
    st.neg_inv_norm.resize(m);
    st.neg_clamped.assign(static_cast<std::size_t>(m), 0);
    detail::load_rows(st.neg, st.neg_inv_norm, st.neg_clamped, 0, nk, kName, "negative_keys");
    st.losses.assign(static_cast<std::size_t>(n), Scalar(0));
    st.e.resize(st.k);
  }

  void publish(const State& st, const Reduce<Scalar>& reduce) const {
    if (reduce.per_anchor) *reduce.per_anchor = st.losses;
  }

  /// Per query i with logits x (its negatives' row of L): loss term, and,
  /// when `grad`, turns x into the gradient weights a_i/tau p_ij in place and
  /// returns the coefficient of the positive.  Accumulates dtau.  One exp
  /// per logit: e = exp(x - max) gives both the log-sum-exp and, rescaled by
  /// exp(max - lse_all), the softmax weights p.
  template <typename Row>
  Scalar query_terms(State& st, Eigen::Index i, Row&& x, bool grad, double& value) const {
    const Scalar inv_tau = static_cast<Scalar>(1.0 / params_.temperature);
    const Scalar sp = inv_tau * st.w.row(i).dot(st.w.row(st.n + i));
    const Scalar mx = x.maxCoeff();
    auto e = st.e.head(x.size());
    e = (x - mx).exp();
    const Scalar lse = mx + std::log(e.sum());
    const Scalar term = detail::softplus(lse - sp);
    st.losses[static_cast<std::size_t>(i)] = term;
    const Scalar a = st.coef[i];
    value += static_cast<double>(a) * static_cast<double>(term);
    if (!grad) return Scalar(0);
    const Scalar miss = detail::sigmoid(lse - sp);
    const Scalar scale = std::exp(mx - (sp + term));  // p_j = scale * e_j
    const Scalar c = a * inv_tau;
    // dL/dtau = -(1/tau) a_i (sum_j p_ij x_ij - miss x_ip)
    const Scalar px = scale * (e * x).sum();
    st.dtau -= static_cast<double>(a) / params_.temperature * static_cast<double>(px - miss * sp);
    x = (c * scale) * e;
    return -c * miss;
  }

  double run(State& st, bool grad, bool grad_neg) const {
    const Eigen::Index n = st.n, d = st.w.cols(), m = st.neg.rows();
    const Scalar inv_tau = static_cast<Scalar>(1.0 / params_.temperature);
    st.dtau = 0.0;
    if (grad) {
      st.dw.setZero(2 * n, d);
      if (grad_neg) st.dneg.setZero(m, d);
    }
    double value = 0.0;
    if (params_.mode == NegativeMode::PerQuery) {
      const Eigen::Index k = st.k;
      Eigen::Array<Scalar, Eigen::Dynamic, 1> x(k);
      for (Eigen::Index i = 0; i < n; ++i) {
        const auto keys = st.neg.middleRows(i * k, k);
        x = (inv_tau * (keys * st.w.row(i).transpose())).array();
        const Scalar cp = query_terms(st, i, x, grad, value);
        if (!grad) continue;
        st.dw.row(i).noalias() += x.matrix().transpose() * keys;
        st.dw.row(i) += cp * st.w.row(n + i);
        st.dw.row(n + i) += cp * st.w.row(i);
        if (grad_neg) st.dneg.middleRows(i * k, k).noalias() += x.matrix() * st.w.row(i);
      }
      return value;
    }
    // Shared: blocks of query rows.  A block's logits (b x M) aim at 4 MiB,
    // so they stay in cache between the exp pass and the two GEMMs that read
    // them (a whole 1024 x 4096 double block was 4x slower, mostly page
    // faults and cache misses), with at least 64 rows for GEMM efficiency,
    // and never more than memory_budget_bytes.
    const std::size_t row_bytes = sizeof(Scalar) * static_cast<std::size_t>(m);
    const auto cache_rows = static_cast<Eigen::Index>((std::size_t(4) << 20) / row_bytes);
    const auto budget_rows = static_cast<Eigen::Index>(options_.memory_budget_bytes / row_bytes);
    const Eigen::Index block =
        std::max<Eigen::Index>(1, std::min({n, std::max<Eigen::Index>(64, cache_rows), budget_rows}));
    Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> x;
    for (Eigen::Index r0 = 0; r0 < n; r0 += block) {
      const Eigen::Index b = std::min(block, n - r0);
      const auto qb = st.w.middleRows(r0, b);
      x.resize(b, m);
      x.noalias() = inv_tau * (qb * st.neg.transpose());
      for (Eigen::Index i = 0; i < b; ++i) {
        auto xi = x.row(i).transpose().array();
        const Scalar cp = query_terms(st, r0 + i, xi, grad, value);
        if (!grad) continue;
        st.dw.row(r0 + i) += cp * st.w.row(n + r0 + i);
        st.dw.row(n + r0 + i) += cp * st.w.row(r0 + i);
      }
      if (!grad) continue;
      st.dw.middleRows(r0, b).noalias() += x * st.neg;
      if (grad_neg) st.dneg.noalias() += x.transpose() * qb;
    }
    return value;
  }

  NegativeKeysParams params_;
  EngineOptions options_;
};

/// How SampledNegatives draws the negatives; check() throws
/// std::invalid_argument naming the field.
struct SamplingParams {
  /// k >= 1 negatives per anchor (fewer when an anchor has fewer candidates
  /// and sampling is without replacement).  Default 16.
  Eigen::Index num_negatives = 16;
  /// false (default): k distinct candidates; true: k independent draws.
  bool with_replacement = false;
  /// Seed of the draws; the same seed and inputs give the same negatives.
  std::uint64_t seed = 0;

  void check(const char* where = "contrastive::SamplingParams") const {
    if (num_negatives < 1) detail::fail_field(where, "num_negatives", "must be >= 1 " + detail::got(num_negatives));
  }
};

namespace detail {

/// SplitMix64's output function (a bijection of 64-bit words).
inline std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// The SplitMix64 generator, and uniform integers in [0, m) by rejection
/// (no modulo bias): draws below (2^64 - m) mod m are redrawn.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t state) : state_(state) {}
  std::uint64_t next() { return mix64(state_ += 0x9E3779B97F4A7C15ull); }
  std::uint64_t below(std::uint64_t m) {
    const std::uint64_t threshold = (0 - m) % m;
    std::uint64_t x = next();
    while (x < threshold) x = next();
    return x % m;
  }

 private:
  std::uint64_t state_;
};

}  // namespace detail

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
class SampledNegatives {
  static_assert(std::is_floating_point<Scalar>::value, "contrastive: Scalar must be float or double");

 public:
  using Ids = std::vector<Eigen::Index>;

  SampledNegatives(const InfoNCEFamilyParams& loss, const SamplingParams& sampling)
      : params_(loss), sampling_(sampling) {
    params_.check(kName);
    sampling_.check(kName);
  }

  const InfoNCEFamilyParams& params() const { return params_; }
  const SamplingParams& sampling() const { return sampling_; }
  /// A new seed, e.g. one per training step.
  void set_seed(std::uint64_t seed) { sampling_.seed = seed; }
  /// Number of anchors for n instances: n one-way, 2n symmetric.
  Eigen::Index anchors(Eigen::Index n) const { return params_.direction == Direction::Symmetric ? 2 * n : n; }

  /// The rows of [za; zb] drawn as anchor r's negatives for a batch of n instances.
  std::vector<Eigen::Index> negatives_of(Eigen::Index anchor, Eigen::Index n, const Ids* instance_ids = nullptr) const {
    if (n < 2) detail::fail(kName, "n", "must be >= 2 " + detail::got(n));
    if (anchor < 0 || anchor >= anchors(n))
      detail::fail(kName, "anchor", "must be in [0, " + std::to_string(anchors(n)) + ") " + detail::got(anchor));
    if (instance_ids) detail::count_negatives(kName, n, instance_ids);
    Scratch sc;
    std::vector<Eigen::Index> out;
    draw(anchor, n, instance_ids ? instance_ids->data() : nullptr, sc, out);
    return out;
  }

  /// Loss value (reduced as `reduce` says).
  template <typename DA, typename DB>
  Scalar value(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb, const Reduce<Scalar>& reduce = {},
               const Ids* instance_ids = nullptr) const {
    State st;
    prepare(st, za, zb, reduce, instance_ids);
    const double v = run(st, false);
    if (reduce.per_anchor) *reduce.per_anchor = st.losses;
    return static_cast<Scalar>(v);
  }

  /// Value and gradients into caller-owned outputs of the inputs' shape;
  /// `grad_temperature` may be null.  On an exception nothing is written.
  template <typename DA, typename DB, typename GA, typename GB>
  Scalar value_and_grad(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                        const Eigen::MatrixBase<GA>& grad_a, const Eigen::MatrixBase<GB>& grad_b,
                        Scalar* grad_temperature, const Reduce<Scalar>& reduce = {},
                        const Ids* instance_ids = nullptr) const {
    State st;
    prepare(st, za, zb, reduce, instance_ids);
    detail::check_output_shape(kName, "grad_a", grad_a, za.rows(), za.cols());
    detail::check_output_shape(kName, "grad_b", grad_b, zb.rows(), zb.cols());
    const double v = run(st, true);
    const double euler = detail::backprop_rows(st.w, st.inv_norm, st.clamped, st.dw, 0, grad_a) +
                         detail::backprop_rows(st.w, st.inv_norm, st.clamped, st.dw, st.n, grad_b);
    if (grad_temperature) *grad_temperature = static_cast<Scalar>(-euler / (2.0 * params_.temperature));
    if (reduce.per_anchor) *reduce.per_anchor = st.losses;
    return static_cast<Scalar>(v);
  }

  /// Value and gradients, allocated.
  template <typename DA, typename DB>
  LossAndGradient<Scalar> value_and_grad(const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                                         const Reduce<Scalar>& reduce = {}, const Ids* instance_ids = nullptr) const {
    LossAndGradient<Scalar> out;
    detail::size_result(out, kName, za, zb);
    out.value = value_and_grad(za, zb, out.grad_a, out.grad_b, &out.grad_temperature, reduce, instance_ids);
    return out;
  }

 private:
  static constexpr const char* kName = "contrastive::SampledNegatives";
  using RowMatrix = detail::RowMatrix<Scalar>;
  using ColArray = detail::ColArray<Scalar>;

  struct State {
    RowMatrix w, dw;
    ColArray inv_norm, coef;
    std::vector<unsigned char> clamped;
    std::vector<Scalar> losses;
    const Eigen::Index* ids = nullptr;
    Eigen::Index n = 0;
  };

  /// Buffers of draw(), reused across anchors.
  struct Scratch {
    std::vector<Eigen::Index> cand;                      // listed candidates (with ids)
    std::unordered_map<std::uint64_t, std::uint64_t> moved;  // sparse shuffle (without ids)
  };

  /// The draw of `anchor` into out.  With ids the candidates are listed and
  /// shuffled in place; without, candidate t is computed from t (O(1)) and
  /// the partial Fisher-Yates shuffle keeps only the positions it moved, so
  /// a draw costs O(k) instead of O(n) -- the same draws either way.
  void draw(Eigen::Index anchor, Eigen::Index n, const Eigen::Index* ids, Scratch& sc,
            std::vector<Eigen::Index>& out) const {
    const Eigen::Index i = anchor % n, v = anchor / n;
    const bool cross = params_.cross_weight > 0.0, within = params_.within_weight > 0.0;
    out.clear();
    detail::SplitMix64 rng(detail::mix64(sampling_.seed + detail::mix64(static_cast<std::uint64_t>(anchor) + 1)));
    const auto k = static_cast<std::uint64_t>(sampling_.num_negatives);
    if (ids) {
      auto& cand = sc.cand;
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
    auto& moved = sc.moved;
    moved.clear();
    const auto at = [&](std::uint64_t pos) {
      const auto it = moved.find(pos);
      return it == moved.end() ? pos : it->second;
    };
    for (std::uint64_t t = 0; t < take; ++t) {
      const std::uint64_t j = t + rng.below(m - t);
      const std::uint64_t vj = at(j);
      moved[j] = at(t);  // position t is never read again
      out.push_back(row_of(vj));
    }
  }

  template <typename DA, typename DB>
  void prepare(State& st, const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
               const Reduce<Scalar>& reduce, const Ids* ids) const {
    detail::check_views(kName, za, zb);
    const Eigen::Index n = za.rows(), d = za.cols();
    st.ids = detail::checked_ids(kName, za, zb, ids);
    st.n = n;
    const Eigen::Index a = anchors(n);
    detail::anchor_coefficients(kName, reduce, a, st.coef);
    st.w.resize(2 * n, d);
    st.inv_norm.resize(2 * n);
    st.clamped.assign(static_cast<std::size_t>(2 * n), 0);
    detail::load_rows(st.w, st.inv_norm, st.clamped, 0, za, kName, "za");
    detail::load_rows(st.w, st.inv_norm, st.clamped, n, zb, kName, "zb");
    st.losses.assign(static_cast<std::size_t>(a), Scalar(0));
    if (!params_.positive_in_denominator && st.ids) {
      // Decoupled: an anchor without candidates would have log(0) = -inf.
      for (Eigen::Index r = 0; r < a; ++r) {
        bool any = false;
        for (Eigen::Index j = 0; j < n && !any; ++j) any = st.ids[j] != st.ids[r % n];
        if (!any)
          detail::fail(kName, "instance_ids",
                       "leave anchor " + std::to_string(r) + " without any negative (the decoupled loss would be -inf)");
      }
    }
  }

  double run(State& st, bool grad) const {
    const Eigen::Index n = st.n, a = anchors(n);
    const Scalar inv_tau = static_cast<Scalar>(1.0 / params_.temperature);
    const Scalar lw[2] = {static_cast<Scalar>(params_.cross_weight > 0 ? std::log(params_.cross_weight) : 0.0),
                          static_cast<Scalar>(params_.within_weight > 0 ? std::log(params_.within_weight) : 0.0)};
    if (grad) st.dw.setZero(st.w.rows(), st.w.cols());
    Scratch sc;
    std::vector<Eigen::Index> neg;
    Eigen::Array<Scalar, Eigen::Dynamic, 1> x;
    double value = 0.0;
    for (Eigen::Index r = 0; r < a; ++r) {
      draw(r, n, st.ids, sc, neg);
      const Eigen::Index p = r < n ? r + n : r - n, view = r / n;
      const auto wr = st.w.row(r);
      const Scalar sp = inv_tau * wr.dot(st.w.row(p));
      const auto k = static_cast<Eigen::Index>(neg.size());
      x.resize(k);
      for (Eigen::Index t = 0; t < k; ++t) {
        const Eigen::Index j = neg[static_cast<std::size_t>(t)];
        x[t] = inv_tau * wr.dot(st.w.row(j)) + lw[j / n == view ? 1 : 0];
      }
      const Scalar lse = k == 0 ? -std::numeric_limits<Scalar>::infinity()
                                : x.maxCoeff() + std::log((x - x.maxCoeff()).exp().sum());
      const bool pos = params_.positive_in_denominator;
      const Scalar term = pos ? detail::softplus(lse - sp) : lse - sp;
      st.losses[static_cast<std::size_t>(r)] = term;
      const Scalar c = st.coef[r];
      value += static_cast<double>(c) * static_cast<double>(term);
      if (!grad || k == 0) continue;
      const Scalar miss = pos ? detail::sigmoid(lse - sp) : Scalar(1);
      const Scalar denom = pos ? sp + term : lse;
      const Scalar g = c * inv_tau;
      x = g * (x - denom).exp();  // dl/d(w_r . w_j) for each drawn j
      for (Eigen::Index t = 0; t < k; ++t) {
        const Eigen::Index j = neg[static_cast<std::size_t>(t)];
        st.dw.row(r) += x[t] * st.w.row(j);
        st.dw.row(j) += x[t] * wr;
      }
      st.dw.row(r) -= g * miss * st.w.row(p);
      st.dw.row(p) -= g * miss * wr;
    }
    return value;
  }

  InfoNCEFamilyParams params_;
  SamplingParams sampling_;
};

/// A FIFO queue of past keys to use as negatives (MoCo).  Keys are copied in;
/// the bank holds at most `capacity` rows and drops the oldest first.
///
/// Order within a training step: compute the loss with the bank's current
/// keys as negative_keys (pass grad_negative_keys = nullptr: no gradient
/// flows into stored keys), then enqueue() this step's keys.  The current
/// batch therefore never serves as its own negatives.
template <typename Scalar>
class MemoryBank {
 public:
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

  MemoryBank(Eigen::Index capacity, Eigen::Index dim) : keys_(std::max<Eigen::Index>(capacity, 0), std::max<Eigen::Index>(dim, 0)) {
    if (capacity < 1) detail::fail_field(kName, "capacity", "must be >= 1 " + detail::got(capacity));
    if (dim < 1) detail::fail_field(kName, "dim", "must be >= 1 " + detail::got(dim));
  }

  Eigen::Index capacity() const { return keys_.rows(); }
  Eigen::Index dim() const { return keys_.cols(); }
  /// Number of stored keys (<= capacity).
  Eigen::Index size() const { return size_; }
  bool empty() const { return size_ == 0; }
  void clear() { size_ = head_ = 0; }

  /// Appends the rows of `keys` (oldest dropped when full); throws, leaving
  /// the bank unchanged, if the width differs or an entry is not finite.
  template <typename D>
  void enqueue(const Eigen::MatrixBase<D>& keys) {
    if (keys.cols() != dim())
      detail::fail(kName, "keys", "has " + std::to_string(keys.cols()) + " columns but the bank stores " +
                                      std::to_string(dim()));
    if (!keys.template cast<Scalar>().allFinite()) detail::fail(kName, "keys", "contains NaN or infinite entries");
    const Eigen::Index r = keys.rows(), skip = std::max<Eigen::Index>(0, r - capacity());
    for (Eigen::Index i = skip; i < r; ++i) {
      keys_.row(head_) = keys.row(i).template cast<Scalar>();
      head_ = (head_ + 1) % capacity();
    }
    size_ = std::min(capacity(), size_ + (r - skip));
  }

  /// The stored keys, oldest first (a copy, size() x dim()).
  Matrix keys() const {
    Matrix out(size_, dim());
    const Eigen::Index start = size_ < capacity() ? 0 : head_;
    for (Eigen::Index i = 0; i < size_; ++i) out.row(i) = keys_.row((start + i) % capacity());
    return out;
  }

 private:
  static constexpr const char* kName = "contrastive::MemoryBank";
  Matrix keys_;
  Eigen::Index size_ = 0, head_ = 0;
};

}  // namespace contrastive
