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
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
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
    ColArray inv_norm, neg_inv_norm, coef;
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
  }

  void publish(const State& st, const Reduce<Scalar>& reduce) const {
    if (reduce.per_anchor) *reduce.per_anchor = st.losses;
  }

  /// Per query i with logits x (its negatives' row of L): loss term, and,
  /// when `grad`, turns x into the gradient weights a_i/tau p_ij in place and
  /// returns the coefficient of the positive.  Accumulates dtau.
  template <typename Row>
  Scalar query_terms(State& st, Eigen::Index i, Row&& x, bool grad, double& value) const {
    const Scalar inv_tau = static_cast<Scalar>(1.0 / params_.temperature);
    const Scalar sp = inv_tau * st.w.row(i).dot(st.w.row(st.n + i));
    const Scalar mx = x.maxCoeff();
    const Scalar lse = mx + std::log((x - mx).exp().sum());
    const Scalar term = detail::softplus(lse - sp);
    st.losses[static_cast<std::size_t>(i)] = term;
    const Scalar a = st.coef[i];
    value += static_cast<double>(a) * static_cast<double>(term);
    if (!grad) return Scalar(0);
    const Scalar miss = detail::sigmoid(lse - sp);
    const Scalar lse_all = sp + term;
    const Scalar c = a * inv_tau;
    // dL/dtau = -(1/tau) a_i (sum_j p_ij x_ij - miss x_ip)
    const Scalar px = ((x - lse_all).exp() * x).sum();
    st.dtau -= static_cast<double>(a) / params_.temperature * static_cast<double>(px - miss * sp);
    x = c * (x - lse_all).exp();
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
    // Shared: blocks of query rows, each block's logits b x M within the budget.
    const auto budget_rows = static_cast<Eigen::Index>(
        options_.memory_budget_bytes / (sizeof(Scalar) * static_cast<std::size_t>(m)));
    const Eigen::Index block = std::max<Eigen::Index>(1, std::min(n, budget_rows));
    Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> x;
    for (Eigen::Index r0 = 0; r0 < n; r0 += block) {
      const Eigen::Index b = std::min(block, n - r0);
      const auto qb = st.w.middleRows(r0, b);
      x.resize(b, m);
      x.noalias() = inv_tau * (qb * st.neg.transpose());
      for (Eigen::Index i = 0; i < b; ++i) {
        auto xi = x.row(i).array();
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
