// contrastive — InfoNCE against explicit negative keys (info-nce-pytorch's
// InfoNCE with negative_keys).
// SPDX-License-Identifier: MIT
//
// Query q_i, positive key p_i, negative keys n_1..n_M (mode Shared: the same
// M for every query, "unpaired") or n_{i,1}..n_{i,k} (mode PerQuery: k of
// its own per query, "paired"); all rows L2-normalised inside the loss:
//
//   l_i = -q_i.p_i/tau + log( e^{q_i.p_i/tau} + sum_j e^{q_i.n_j/tau} )
//       = softplus(lse_i - q_i.p_i/tau),      lse_i = log sum_j e^{q_i.n_j/tau},
//
// reduced as the call says (mean over the n queries by default).  With
// p_ij = e^{q_i.n_j/tau - lse_all_i} the softmax weight of negative j and
// miss_i = 1 - p_pos = sigmoid(lse_i - q_i.p_i/tau), for coefficient a_i:
//
//   dl/dq_i = a_i/tau (sum_j p_ij n_j - miss_i p_i),   dl/dp_i = -a_i/tau miss_i q_i,
//   dl/dn_j = sum_i a_i/tau p_ij q_i,
//   dL/dtau = -(1/tau) sum_i a_i (sum_j p_ij x_ij - miss_i x_ip),   x = q.k / tau,
//
// then back through the normalisation.  No negative keys at all (M = 0, e.g.
// an empty MemoryBank on the first step) is defined: l_i = log(e^x / e^x) = 0
// with zero gradients.
//
// Debiased and hard negatives (tau_plus > 0 or beta > 0): Chuang et al.'s
// corrected negative term and Robinson et al.'s importance weights, as
// tests/data/REFERENCE_LOSSES.md §1-2 define them for the batch losses, with
// N the query's number of negative keys (M shared, k per query):
//
//   R_i  = sum_j e^{x_ij}                                   (beta = 0)
//        = N sum_j w_ij e^{x_ij},  w_ij = e^{beta x_ij} / sum_j' e^{beta x_ij'}   (beta > 0)
//   Ng_i = max( (R_i - tau_plus N e^{x_ip}) / (1 - tau_plus),  N e^{-1/tau} )
//   l_i  = log(e^{x_ip} + Ng_i) - x_ip = softplus(log Ng_i - x_ip).
//
// Nothing is detached (the positive in the correction, the weights).  With
// D_i = R_i - tau_plus N e^{x_ip}, miss_i = sigmoid(log Ng_i - x_ip) and
// phi, omega the softmaxes of (1 + beta) x and beta x over the query's keys:
//
//   unclamped: dl/dx_ij = miss R/D ((1 + beta) phi_ij - beta omega_ij),   dl/dx_ip = -miss R/D,
//              dl/dtau  = -(1/tau) sum_j dl/dx_ij (x_ij - x_ip)     (the x-gradients sum to 0);
//   clamped:   dl/dx_ij = 0,   dl/dx_ip = -miss,   dl/dtau = (miss/tau)(x_ip + 1/tau)
//              (the floor N e^{-1/tau} is differentiated in tau).
//
// tau_plus = 0 and beta = 0 is the loss above exactly (the same code path).
// Every exponential is taken against the query's largest logit, so none
// overflows; R_i, D_i and Ng_i are formed as logarithms (D_i through
// log(-expm1(.)), exact as the correction approaches R_i).  Shared mode costs two GEMMs of n x M x d (one more
// for dl/dN), done in blocks of query rows so memory is O(block * M + (n + M) d),
// never n x M.  PerQuery costs O(n k d).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <sstream>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "api.hpp"
#include "detail/checks.hpp"
#include "detail/math.hpp"
#include "engine.hpp"
#include "two_view_loss.hpp"

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
  /// tau+ in [0, 1): the probability that a negative key shares the query's
  /// class (Chuang et al.'s debiasing; e.g. 1/classes).  0: no correction.
  double tau_plus = 0.0;
  /// beta >= 0: concentration of the importance weights e^{beta x} on hard
  /// negatives (Robinson et al.; their runs use 0.5 to 6).  0: none.  A loss
  /// takes beta with (1 + beta) / tau at most 1/tau's largest value of its
  /// scalar (1e3 in float, 1e6 in double): the weighted sum's exponents
  /// (1 + beta) x are logits at temperature tau / (1 + beta).
  double beta = 0.0;

  /// Throws std::invalid_argument naming the first invalid field.
  void check(const char* where = "contrastive::NegativeKeysParams") const {
    detail::check_positive_finite(where, "temperature", temperature);
    if (!(std::isfinite(tau_plus) && tau_plus >= 0.0 && tau_plus < 1.0))
      detail::fail_field(where, "tau_plus", "must be in [0, 1) " + detail::got(tau_plus));
    if (!(std::isfinite(beta) && beta >= 0.0)) detail::fail_field(where, "beta", "must be finite and >= 0 " + detail::got(beta));
  }
};

/// InfoNCE of queries against their positive keys and caller-given negative
/// keys (formula at the top of this header).  Inputs are any dense Eigen
/// expressions; rows are samples.  The positive key is always in the
/// denominator, as in info-nce-pytorch.
///
/// Calls (api.hpp):
///
///     value(query, positive_key, negative_keys, [ws,] call)
///     value_and_grad(query, positive_key, negative_keys, grad_query, grad_positive_key,
///                    grad_negative_keys, &grad_temperature, ws, call)
///     value_and_grad(query, positive_key, negative_keys, call) -> Result
///
/// grad_negative_keys is a writable Eigen object of negative_keys' shape, or
/// nullptr for no gradient into the negatives (keys from a MemoryBank: one
/// GEMM less).  CallOptions: reduction, anchor_weights, per_anchor (one
/// anchor per query).  Instance ids do not apply (the caller chooses the
/// negatives: drop colliding keys first) and are rejected.
template <typename Scalar>
class InfoNCEWithNegatives : public LossSettings<NegativeKeysParams> {
  static_assert(std::is_floating_point<Scalar>::value, "contrastive: Scalar must be float or double");

 public:
  /// Column-major dynamic matrix of the loss scalar.
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  /// The options of a call of this loss.
  using Call = CallOptions<Scalar>;

  /// Validates `params` and `options`.
  explicit InfoNCEWithNegatives(const NegativeKeysParams& params = {}, const EngineOptions& options = {})
      : LossSettings<NegativeKeysParams>(params, options, kName) {
    detail::check_temperature<Scalar>(kName, "temperature", params_.temperature);
    check_hardness("beta", params_.temperature, params_.beta);
  }

  /// Changes the temperature; validated as on construction (also against beta).
  void set_temperature(double tau) {
    detail::check_temperature<Scalar>(kName, "temperature", tau);
    check_hardness("temperature", tau, params_.beta);
    params_.temperature = tau;
  }
  /// One anchor per query.
  Eigen::Index anchors(Eigen::Index n) const { return n; }

  /// Loss value with a reused Workspace.
  template <typename DQ, typename DP, typename DN>
  Scalar value(const Eigen::MatrixBase<DQ>& query, const Eigen::MatrixBase<DP>& positive_key,
               const Eigen::MatrixBase<DN>& negative_keys, Workspace<Scalar>& ws, const Call& call = {}) const {
    auto& b = detail::buffers(ws);
    prepare(b, query, positive_key, negative_keys, call);
    double dtau = 0;
    const double v = run(b, false, false, dtau);
    detail::publish_per_anchor(call, b.losses);
    return static_cast<Scalar>(v);
  }
  /// Loss value with a workspace of its own.
  template <typename DQ, typename DP, typename DN>
  Scalar value(const Eigen::MatrixBase<DQ>& query, const Eigen::MatrixBase<DP>& positive_key,
               const Eigen::MatrixBase<DN>& negative_keys, const Call& call = {}) const {
    Workspace<Scalar> ws;
    return value(query, positive_key, negative_keys, ws, call);
  }

  /// Value and gradients into caller-owned outputs of the inputs' shapes;
  /// `grad_temperature` may be null.  On an exception no output has been
  /// written.
  template <typename DQ, typename DP, typename DN, typename GQ, typename GP, typename GN>
  Scalar value_and_grad(const Eigen::MatrixBase<DQ>& query, const Eigen::MatrixBase<DP>& positive_key,
                        const Eigen::MatrixBase<DN>& negative_keys, const Eigen::MatrixBase<GQ>& grad_query,
                        const Eigen::MatrixBase<GP>& grad_positive_key, const Eigen::MatrixBase<GN>& grad_negative_keys,
                        Scalar* grad_temperature, Workspace<Scalar>& ws, const Call& call = {}) const {
    detail::check_output_shape(kName, "grad_negative_keys", grad_negative_keys, negative_keys.rows(),
                               negative_keys.cols());
    return gradients(query, positive_key, negative_keys, grad_query, grad_positive_key, &grad_negative_keys,
                     grad_temperature, ws, call);
  }

  /// The same without a gradient into the negative keys.
  template <typename DQ, typename DP, typename DN, typename GQ, typename GP>
  Scalar value_and_grad(const Eigen::MatrixBase<DQ>& query, const Eigen::MatrixBase<DP>& positive_key,
                        const Eigen::MatrixBase<DN>& negative_keys, const Eigen::MatrixBase<GQ>& grad_query,
                        const Eigen::MatrixBase<GP>& grad_positive_key, std::nullptr_t /*grad_negative_keys*/,
                        Scalar* grad_temperature, Workspace<Scalar>& ws, const Call& call = {}) const {
    return gradients(query, positive_key, negative_keys, grad_query, grad_positive_key,
                     static_cast<const Eigen::MatrixBase<Matrix>*>(nullptr), grad_temperature, ws, call);
  }

  /// Value and every gradient, allocated: grad_a = dL/dquery, grad_b =
  /// dL/dpositive_key, grad_negative_keys, grad_temperature, per_anchor.
  template <typename DQ, typename DP, typename DN>
  Result<Scalar> value_and_grad(const Eigen::MatrixBase<DQ>& query, const Eigen::MatrixBase<DP>& positive_key,
                                const Eigen::MatrixBase<DN>& negative_keys, const Call& call = {}) const {
    Workspace<Scalar> ws;
    Result<Scalar> out;
    check_inputs(query, positive_key, negative_keys);
    out.grad_a.resize(query.rows(), query.cols());
    out.grad_b.resize(positive_key.rows(), positive_key.cols());
    out.grad_negative_keys.resize(negative_keys.rows(), negative_keys.cols());
    Call c = call;
    if (!call.per_anchor.given()) {
      out.per_anchor.assign(static_cast<std::size_t>(query.rows()), Scalar(0));
      c.per_anchor = out.per_anchor;
    }
    out.value = value_and_grad(query, positive_key, negative_keys, out.grad_a, out.grad_b, out.grad_negative_keys,
                               &out.grad_temperature, ws, c);
    if (call.per_anchor.given()) out.per_anchor.assign(call.per_anchor.begin(), call.per_anchor.end());
    return out;
  }

 private:
  static constexpr const char* kName = "contrastive::InfoNCEWithNegatives";
  using RowMatrix = detail::RowMatrix<Scalar>;

  /// (1 + beta) / tau within the logit scales S computes correctly.
  static void check_hardness(const char* field, double tau, double beta) {
    const double hi = 1.0 / detail::Limits<Scalar>::min_temperature;
    if (!((1.0 + beta) / tau <= hi)) {
      std::ostringstream os;
      os << "gives (1 + beta) / tau = " << (1.0 + beta) / tau << " (beta = " << beta << ", tau = " << tau
         << "): it must be at most " << hi << " for " << (sizeof(Scalar) <= 4 ? "float" : "double")
         << " (the hard-negative weights are logits at temperature tau / (1 + beta))";
      detail::fail_field(kName, field, os.str());
    }
  }
  /// Neither debiasing nor hard-negative weights: the plain loss.
  bool plain() const { return params_.tau_plus == 0.0 && params_.beta == 0.0; }

  template <typename DQ, typename DP, typename DN, typename GQ, typename GP, typename GN>
  Scalar gradients(const Eigen::MatrixBase<DQ>& query, const Eigen::MatrixBase<DP>& positive_key,
                   const Eigen::MatrixBase<DN>& negative_keys, const Eigen::MatrixBase<GQ>& grad_query,
                   const Eigen::MatrixBase<GP>& grad_positive_key, const Eigen::MatrixBase<GN>* grad_negative_keys,
                   Scalar* grad_temperature, Workspace<Scalar>& ws, const Call& call) const {
    auto& b = detail::buffers(ws);
    prepare(b, query, positive_key, negative_keys, call);
    detail::check_output_shape(kName, "grad_query", grad_query, query.rows(), query.cols());
    detail::check_output_shape(kName, "grad_positive_key", grad_positive_key, positive_key.rows(), positive_key.cols());
    detail::check_distinct_outputs(kName, grad_query, grad_positive_key, "grad_query", "grad_positive_key");
    if (grad_negative_keys) {
      detail::check_distinct_outputs(kName, grad_query, *grad_negative_keys, "grad_query", "grad_negative_keys");
      detail::check_distinct_outputs(kName, grad_positive_key, *grad_negative_keys, "grad_positive_key",
                                     "grad_negative_keys");
    }
    double dtau = 0;
    const double v = run(b, true, grad_negative_keys != nullptr, dtau);
    const Eigen::Index n = query.rows();
    const RowMatrix& dw = b.dw;
    const bool keys_out = grad_negative_keys && negative_keys.rows() > 0;
    RowMatrix buf[3] = {detail::out_buffer<Scalar>(n, b.w.cols()), detail::out_buffer<Scalar>(n, b.w.cols()),
                        detail::out_buffer<Scalar>(keys_out ? negative_keys.rows() : 0, b.w.cols())};
    detail::backprop_rows(b.w, b.inv_norm, b.clamped, dw, 0, grad_query, buf[0]);
    detail::backprop_rows(b.w, b.inv_norm, b.clamped, dw, n, grad_positive_key, buf[1]);
    if (keys_out) detail::backprop_rows(b.keys, b.keys_inv_norm, b.keys_clamped, b.dkeys, 0, *grad_negative_keys, buf[2]);
    if (grad_temperature) *grad_temperature = static_cast<Scalar>(dtau);
    detail::publish_per_anchor(call, b.losses);
    return static_cast<Scalar>(v);
  }

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
  void prepare(detail::Buffers<Scalar>& b, const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DP>& p,
               const Eigen::MatrixBase<DN>& nk, const Call& call) const {
    detail::check_call(kName, call, detail::Accepts{true, false, false});
    check_inputs(q, p, nk);
    const Eigen::Index n = q.rows(), d = q.cols(), m = nk.rows();
    detail::anchor_coefficients(kName, call, n, b.coef);
    detail::resize_buffer(b.w, 2 * n, d);
    detail::resize_buffer(b.inv_norm, 2 * n);
    b.clamped.assign(static_cast<std::size_t>(2 * n), 0);
    detail::load_rows(b.w, b.inv_norm, b.clamped, 0, q, kName, "query");
    detail::load_rows(b.w, b.inv_norm, b.clamped, n, p, kName, "positive_key");
    detail::resize_buffer(b.keys, m, d);
    detail::resize_buffer(b.keys_inv_norm, m);
    b.keys_clamped.assign(static_cast<std::size_t>(m), 0);
    if (m > 0) detail::load_rows(b.keys, b.keys_inv_norm, b.keys_clamped, 0, nk, kName, "negative_keys");
    b.losses.assign(static_cast<std::size_t>(n), Scalar(0));
    detail::resize_buffer(b.scratch, (params_.beta > 0.0 ? 2 : 1) * per_query(n, m));
    b.threads = 1;
    b.streamed = false;
  }

  Eigen::Index per_query(Eigen::Index n, Eigen::Index m) const {
    return params_.mode == NegativeMode::PerQuery ? m / n : m;
  }

  /// Per query i with logits x (its negatives' row of L): loss term, and,
  /// when `grad`, turns x into the gradient weights a_i/tau p_ij in place and
  /// returns the coefficient of the positive.  Accumulates dtau.  One exp
  /// per logit: e = exp(x - max) gives both the log-sum-exp and, rescaled by
  /// exp(max - lse_all), the softmax weights p.
  template <typename Row>
  Scalar query_terms(detail::Buffers<Scalar>& b, Eigen::Index i, Row&& x, bool grad, double& value,
                     double& dtau) const {
    const Eigen::Index n = b.w.rows() / 2;
    const Scalar inv_tau = static_cast<Scalar>(1.0 / params_.temperature);
    const Scalar sp = inv_tau * b.w.row(i).dot(b.w.row(n + i));
    const Scalar mx = x.maxCoeff();
    auto e = b.scratch.head(x.size());
    e = (x - mx).exp();
    const Scalar lse = mx + std::log(e.sum());
    const Scalar term = detail::softplus(lse - sp);
    b.losses[static_cast<std::size_t>(i)] = term;
    const Scalar a = b.coef[i];
    value += static_cast<double>(a) * static_cast<double>(term);
    if (!grad) return Scalar(0);
    const Scalar miss = detail::sigmoid(lse - sp);
    const Scalar scale = std::exp(mx - (sp + term));  // p_j = scale * e_j
    const Scalar c = a * inv_tau;
    // dL/dtau = -(1/tau) a_i (sum_j p_ij x_ij - miss x_ip) = -(1/tau) a_i sum_j p_ij (x_ij - x_ip)
    // (miss = sum_j p_ij), centred on x_ip so near-equal logits do not cancel.
    const Scalar px = scale * (e * (x - sp)).sum();
    dtau -= static_cast<double>(a) / params_.temperature * static_cast<double>(px);
    x = (c * scale) * e;
    return -c * miss;
  }

  /// query_terms() of the debiased / hard-negative loss (formulas at the top).
  template <typename Row>
  Scalar debiased_terms(detail::Buffers<Scalar>& b, Eigen::Index i, Row&& x, bool grad, double& value,
                        double& dtau) const {
    const Eigen::Index n = b.w.rows() / 2, k = x.size();
    const double tau = params_.temperature, tp = params_.tau_plus, beta = params_.beta;
    const Scalar inv_tau = static_cast<Scalar>(1.0 / tau);
    const Scalar s_pos = b.w.row(i).dot(b.w.row(n + i));
    const Scalar sp = inv_tau * s_pos;
    const Scalar mx = x.maxCoeff();
    auto g = b.scratch.head(k);  // e^{x - m}; with beta > 0 then e^{(1 + beta)(x - m)}
    auto e = b.scratch.segment(beta > 0.0 ? k : 0, beta > 0.0 ? k : 0);  // e^{beta (x - m)}
    g = (x - mx).exp();
    const double log_n = std::log(static_cast<double>(k));
    double log_r, sg, se = 0;
    if (beta > 0.0) {
      e = (static_cast<Scalar>(beta) * (x - mx)).exp();
      g *= e;
      sg = static_cast<double>(g.sum());
      se = static_cast<double>(e.sum());
      log_r = log_n + static_cast<double>(mx) + std::log(sg) - std::log(se);
    } else {
      sg = static_cast<double>(g.sum());
      log_r = static_cast<double>(mx) + std::log(sg);
    }
    // D = R - tau_plus N e^{x_p} (as log D, and R / D), then the clamp.
    double log_d = log_r, r_over_d = 1.0;
    bool clamped = false;
    if (tp > 0.0) {
      const double delta = std::log(tp) + log_n + static_cast<double>(sp) - log_r;  // log(tau_plus N e^{x_p} / R)
      if (delta >= 0.0) {
        clamped = true;
      } else {
        const double q = -std::expm1(delta);  // D / R in (0, 1]
        log_d = log_r + std::log(q);
        r_over_d = 1.0 / q;
      }
    }
    const double log_floor = log_n - 1.0 / tau;
    const double log_raw = log_d - std::log1p(-tp);
    clamped = clamped || log_raw < log_floor;
    const double gap = (clamped ? log_floor : log_raw) - static_cast<double>(sp);  // log Ng - x_p
    const Scalar term = static_cast<Scalar>(detail::softplus(gap));
    b.losses[static_cast<std::size_t>(i)] = term;
    const double a = static_cast<double>(b.coef[i]);
    value += a * static_cast<double>(term);
    if (!grad) return Scalar(0);
    const double miss = detail::sigmoid(gap);
    if (clamped) {
      // Only the positive and the floor's tau: dl/dtau = (miss/tau)(x_p + 1/tau) = miss (s_p + 1) / tau^2.
      dtau += a * miss * (static_cast<double>(s_pos) + 1.0) / (tau * tau);
      x.setZero();
      return static_cast<Scalar>(-a / tau * miss);
    }
    const double m = miss * r_over_d;  // dl/dx_p = -m; the x-gradients of the keys sum to m
    // dL/dtau = -(a/tau) sum_j dl/dx_ij (x_ij - x_ip), centred on the positive.
    double centred = (beta > 0.0 ? 1.0 + beta : 1.0) * static_cast<double>((g * (x - sp)).sum()) / sg;
    if (beta > 0.0) centred -= beta * static_cast<double>((e * (x - sp)).sum()) / se;
    dtau -= a / tau * m * centred;
    const double c = a / tau * m;
    if (beta > 0.0)
      x = static_cast<Scalar>(c * (1.0 + beta) / sg) * g - static_cast<Scalar>(c * beta / se) * e;
    else
      x = static_cast<Scalar>(c / sg) * g;
    return static_cast<Scalar>(-c);
  }

  /// The terms of query i: the plain loss's or the debiased one's.
  template <typename Row>
  Scalar terms(detail::Buffers<Scalar>& b, Eigen::Index i, Row&& x, bool grad, double& value, double& dtau) const {
    return plain() ? query_terms(b, i, x, grad, value, dtau) : debiased_terms(b, i, x, grad, value, dtau);
  }

  double run(detail::Buffers<Scalar>& b, bool grad, bool grad_neg, double& dtau) const {
    const Eigen::Index n = b.w.rows() / 2, d = b.w.cols(), m = b.keys.rows();
    const Scalar inv_tau = static_cast<Scalar>(1.0 / params_.temperature);
    RowMatrix& dw = b.dw;
    if (grad) {
      detail::zero_buffer(dw, 2 * n, d);
      if (grad_neg) detail::zero_buffer(b.dkeys, m, d);
    }
    // No negative keys: every l_i = 0 with zero gradients (see the top).
    if (m == 0) return 0.0;
    double value = 0.0;
    if (params_.mode == NegativeMode::PerQuery) {
      const Eigen::Index k = m / n;
      detail::resize_buffer(b.logits, 1, k);
      for (Eigen::Index i = 0; i < n; ++i) {
        const auto keys = b.keys.middleRows(i * k, k);
        auto x = b.logits.row(0).transpose().array();
        x = (inv_tau * (keys * b.w.row(i).transpose())).array();
        const Scalar cp = terms(b, i, x, grad, value, dtau);
        if (!grad) continue;
        dw.row(i).noalias() += b.logits.row(0) * keys;
        dw.row(i) += cp * b.w.row(n + i);
        dw.row(n + i) += cp * b.w.row(i);
        if (grad_neg) b.dkeys.middleRows(i * k, k).noalias() += b.logits.row(0).transpose() * b.w.row(i);
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
    detail::resize_buffer(b.logits, block, m);  // the last block uses its top rows: no reallocation
    for (Eigen::Index r0 = 0; r0 < n; r0 += block) {
      const Eigen::Index nb = std::min(block, n - r0);
      const auto qb = b.w.middleRows(r0, nb);
      auto x = b.logits.topRows(nb);
      x.noalias() = inv_tau * (qb * b.keys.transpose());
      for (Eigen::Index i = 0; i < nb; ++i) {
        auto xi = x.row(i).transpose().array();
        const Scalar cp = terms(b, r0 + i, xi, grad, value, dtau);
        if (!grad) continue;
        dw.row(r0 + i) += cp * b.w.row(n + r0 + i);
        dw.row(n + r0 + i) += cp * b.w.row(r0 + i);
      }
      if (!grad) continue;
      dw.middleRows(r0, nb).noalias() += x * b.keys;
      if (grad_neg) b.dkeys.noalias() += x.transpose() * qb;
    }
    return value;
  }

};

}  // namespace contrastive
