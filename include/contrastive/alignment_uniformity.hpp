// contrastive — alignment and uniformity (Wang & Isola, ICML 2020) as losses
// on the engine.
// SPDX-License-Identifier: MIT
//
// With u_i, v_i the normalised rows of za, zb (the library's normalisation):
//
//   Alignment   L = (1/n) sum_i ||u_i - v_i||^alpha                     (alpha = 2)
//   Uniformity  L = (L_unif(U) + L_unif(V)) / 2,
//               L_unif(U) = log( 1/(n(n-1)) sum_{i != j} e^{-t ||u_i - u_j||^2} )   (t = 2)
//
// as SsnL/align_uniform's align_loss and uniform_loss (torch.pdist over the
// pairs i < j gives the same mean as the ordered pairs i != j).
//
// Alignment is O(n d): its kernel visits no similarity tile; finish() forms
// every pair's distance from the rows themselves, r_i = ||u_i - v_i|| (not
// from 2 - 2 u_i.v_i, which cancels for well-aligned pairs: in float a pair
// at r = 1e-3 would keep about one digit of r^2), and pair_terms() adds
//   dL/du_i = a_i alpha r_i^(alpha-1) (u_i - v_i)/r_i = -dL/dv_i,
//   dL/dalpha = sum_i a_i r_i^alpha ln r_i                    (0 where r_i = 0).
//
// Uniformity runs on the within-view tiles of the engine.  For unit rows
// ||u_i - u_j||^2 = 2 - 2 u_i.u_j, so with logits x = 2t u_i.u_j
//
//   L_unif(U) = -2t + lse_{i != j} x_ij - log(n(n-1)) = log T_U - log(n(n-1)),
//   T_U = sum_{i != j} E_ij,   E_ij = e^{x_ij - 2t} = e^{-t ||u_i - u_j||^2} in (e^{-4t}, 1],
//
// every exponential taken once against the fixed shift 2t (pass 1 keeps E in
// the cached tile), the per-row sums merged and each view's total logged in
// finish().  Pass 2's tile is H = dL/d(u_i.u_j) = (2t / T_U) E_ij (both
// ordered pairs of the symmetric block), and
//   dL/dt = (1/(2t)) (sum_U E (x - 2t) / T_U + sum_V E (x - 2t) / T_V)
//         = -(1/2) (E_pi[||u_i - u_j||^2] over U + the same over V),
// from sums of E (x - 2t) = -t E ||u_i - u_j||^2 taken in pass 1: terms of one
// sign, centred on the shift, so no cancellation however collapsed the batch.
#pragma once

#include <array>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "api.hpp"
#include "detail/checks.hpp"
#include "detail/exp.hpp"
#include "engine.hpp"
#include "infonce_family.hpp"
#include "two_view_loss.hpp"

namespace contrastive {

/// Parameters of Alignment.  check() throws std::invalid_argument naming the field.
struct AlignmentParams {
  /// The power alpha of the distance, in [0.5, 8] (Wang & Isola use 2).
  /// For alpha <= 1 the gradient of a pair with u_i = v_i does not exist
  /// (alpha < 1: it is infinite); the loss returns 0 for it there.
  double alpha = 2.0;

  /// Smallest alpha accepted: the gradient alpha r^(alpha-1) of a pair
  /// grows without bound as it aligns when alpha < 1; at 0.5 float keeps it
  /// to 1e-4 for pairs down to r = 1e-3 (the README's ranges).
  static constexpr double kMinAlpha = 0.5;
  /// Largest alpha accepted: r^alpha of a pair at r = 1e-4 stays a normal
  /// float (1e-32); at alpha = 16 it would be 1e-64, zero in float.
  static constexpr double kMaxAlpha = 8.0;

  /// Throws std::invalid_argument naming the first invalid field.
  void check(const char* where = "contrastive::AlignmentParams") const {
    if (!(std::isfinite(alpha) && alpha >= kMinAlpha && alpha <= kMaxAlpha))
      detail::fail_field(where, "alpha", "must be in [0.5, 8] " + detail::got(alpha));
  }
};

/// Parameters of Uniformity.  check() throws std::invalid_argument naming the field.
struct UniformityParams {
  /// t > 0 in e^{-t ||u_i - u_j||^2} (Wang & Isola use 2).  A loss takes t
  /// in [1e-4, 16] (float) or [1e-4, 150] (double): the exponents -t d^2
  /// span [-4t, 0], which must fit the exponent range of the scalar (one
  /// exponential per pair against a fixed shift); below 1e-4 every term is
  /// within 4e-4 of 1 and the loss is flat.
  double t = 2.0;

  /// Throws std::invalid_argument naming the first invalid field.
  void check(const char* where = "contrastive::UniformityParams") const {
    detail::check_positive_finite(where, "t", t);
  }
};

namespace detail {

/// Alignment's kernel: no tiles; the value and dL/dalpha in finish(), the
/// gradient in pair_terms().  The per-instance coefficient a_i alpha
/// r_i^(alpha-1) goes to CallStats::alpha, dL/dalpha to CallStats::dtau (the
/// engine's slot for a loss's one scalar gradient).
template <typename S>
class AlignmentKernel {
 public:
  AlignmentKernel(double alpha, Eigen::Index n, const ColArray<S>* coef, S* losses, bool want_dalpha)
      : alpha_(alpha), n_(n), coef_(coef), losses_(losses), dalpha_(want_dalpha) {}

  bool visits(int, int) const { return false; }
  S logit_scale() const { return S(1); }
  int stat_count() const { return 0; }
  bool online() const { return false; }
  void begin(const RowMatrix<S>&, CallStats<S>& cs) const { zero_buffer(cs.alpha, n_); }
  void pass1(TileRef<S>, const Tile&, const CallStats<S>&, TileOut<S>&, bool, ThreadSlot<S>&) const {}

  /// Every pair's r_i^alpha (in double from the rows' difference), the
  /// weighted sum, dL/dalpha and the gradient coefficients.
  double finish(const RowMatrix<S>& W, const RowStats<S>&, CallStats<S>& cs) const {
    double value = 0, dalpha = 0;
    for (Eigen::Index i = 0; i < n_; ++i) {
      const double r2 = distance2(W, i);
      const double l = std::pow(r2, 0.5 * alpha_);  // 0 at r = 0 (alpha > 0)
      if (losses_) losses_[i] = static_cast<S>(l);
      const double a = coef_ ? static_cast<double>((*coef_)[i]) : 1.0 / static_cast<double>(n_);
      if (a == 0.0) continue;
      value += a * l;
      if (r2 > 0.0) {
        dalpha += a * l * 0.5 * std::log(r2);
        cs.alpha[i] = static_cast<S>(a * alpha_ * std::pow(r2, 0.5 * (alpha_ - 1.0)));
      }
    }
    if (dalpha_) cs.dtau = dalpha;
    return value;
  }

  bool pass2(TileRef<S>, const Tile&, bool, const CallStats<S>&, PairSums&, ThreadSlot<S>&) const { return false; }

  /// dL/du_i = c_i (u_i - v_i) / r_i and its opposite for v_i, c_i = a_i alpha r_i^(alpha-1).
  void pair_terms(const RowMatrix<S>& W, const CallStats<S>& cs, RowMatrix<S>& dW, Eigen::Index i0,
                  Eigen::Index i1) const {
    for (Eigen::Index i = i0; i < i1; ++i) {
      if (cs.alpha[i] == S(0)) continue;
      const double scale = static_cast<double>(cs.alpha[i]) / std::sqrt(distance2(W, i));
      const auto g = ((W.row(i) - W.row(i + n_)).template cast<double>() * scale).template cast<S>().eval();
      dW.row(i) += g;
      dW.row(i + n_) -= g;
    }
  }

 private:
  /// ||w_i - w_{n+i}||^2 in double (no underflow of a tiny float difference).
  double distance2(const RowMatrix<S>& W, Eigen::Index i) const {
    return (W.row(i) - W.row(i + n_)).template cast<double>().squaredNorm();
  }

  double alpha_;
  Eigen::Index n_;
  const ColArray<S>* coef_;
  S* losses_;
  bool dalpha_;
};

/// Uniformity's kernel on the within-view tiles (formulas at the top).  Two
/// statistics per row: sum_j E_rj and sum_j E_rj (x_rj - 2t).  finish()
/// leaves L_unif(U), L_unif(V) in CallStats::lse[0], [1], each view's
/// coefficient 2t / T in CallStats::alpha (per row) and dL/dt in
/// CallStats::dtau.
template <typename S>
class UniformityKernel {
 public:
  UniformityKernel(double t, Eigen::Index n, bool want_dt)
      : t_(t), scale_(static_cast<S>(2.0 * t)), n_(n), dt_(want_dt) {}

  bool visits(int vr, int vc) const { return vr == vc; }
  S logit_scale() const { return scale_; }
  int stat_count() const { return 2; }
  bool online() const { return false; }
  void begin(const RowMatrix<S>& W, CallStats<S>& cs) const {
    cs.shift = scale_;
    zero_buffer(cs.lse, 2);
    zero_buffer(cs.alpha, W.rows());
  }

  void pass1(TileRef<S> X, const Tile& t, const CallStats<S>&, TileOut<S>& out, bool keep, ThreadSlot<S>& sl) const {
    const bool cols = !t.diagonal();  // a diagonal tile's rows already see every ordered pair
    out.has_rows = true;
    out.has_cols = cols;
    out.rows.setZero();
    if (cols) out.cols.setZero();
    auto rs = out.rows.col(0);
    auto rt = out.rows.col(1);
    auto e = sl.v.head(t.nr);
    auto dx = sl.v.segment(t.nr, t.nr);
    for (Eigen::Index j = 0; j < t.nc; ++j) {
      auto x = X.col(j);
      dx = x - scale_;  // -t ||u_r - u_c||^2
      e = exp_normal(dx);
      mask_pairs(e, nullptr, n_, t, j, S(0));  // the self pair
      rs += e;
      if (dt_) rt += e * dx;
      if (cols) {
        out.cols(j, 0) = e.sum();
        if (dt_) out.cols(j, 1) = (e * dx).sum();
      }
      if (keep) x = e;
    }
  }

  double finish(const RowMatrix<S>& W, const RowStats<S>& st, CallStats<S>& cs) const {
    const Eigen::Index n2 = W.rows();
    const double pairs = std::log(static_cast<double>(n_) * static_cast<double>(n_ - 1));
    double value = 0, dt = 0;
    for (int view = 0; view < 2; ++view) {
      double total = 0, centred = 0;
      for (Eigen::Index r = view * n_; r < (view + 1) * n_ && r < n2; ++r) {
        total += static_cast<double>(st.s(r, 0));
        centred += static_cast<double>(st.s(r, 1));
      }
      const double lv = std::log(total) - pairs;
      cs.lse[view] = static_cast<S>(lv);
      value += 0.5 * lv;
      cs.alpha.segment(view * n_, n_).setConstant(static_cast<S>(2.0 * t_ / total));
      dt += centred / (2.0 * t_ * total);
    }
    if (dt_) cs.dtau = dt;
    return value;
  }

  bool pass2(TileRef<S> P, const Tile& t, bool kept, const CallStats<S>& cs, PairSums&, ThreadSlot<S>&) const {
    const S c = cs.alpha[t.r0];
    for (Eigen::Index j = 0; j < t.nc; ++j) {
      auto x = P.col(j);
      if (!kept) {
        x = exp_normal(x - scale_);
        mask_pairs(x, nullptr, n_, t, j, S(0));
      }
      x *= c;
    }
    return true;
  }

  void pair_terms(const RowMatrix<S>&, const CallStats<S>&, RowMatrix<S>&, Eigen::Index, Eigen::Index) const {}

 private:
  double t_;
  S scale_;
  Eigen::Index n_;
  bool dt_;
};

/// The largest t of Uniformity in S: 4t (the span of the exponents) fits
/// fixed_shift_range<S>(): 16 in float, 150 in double.
template <typename S>
constexpr double max_uniformity_t() {
  return fixed_shift_range<S>() / 4.0;
}

}  // namespace detail

/// Alignment of positive pairs, L = (1/n) sum_i ||u_i - v_i||^alpha (Wang &
/// Isola's align_loss on the normalised rows; formulas at the top of this
/// header).  Called as every TwoViewLoss with one scalar gradient, dL/dalpha:
///
///     value(za, zb, [ws,] call = {})
///     value_and_grad(za, zb, grad_a, grad_b, &grad_alpha, ws, call = {})
///     value_and_grad(za, zb, call = {})  -> Result (grad_a, grad_b, grad_alpha, per_anchor)
///
/// Its "anchors" are the n pairs: CallOptions reduction, anchor_weights and
/// per_anchor (l_i = ||u_i - v_i||^alpha) are defined; instance ids and labels
/// are not (there are no negatives).  O(n d); no similarity tile.
template <typename Scalar>
class Alignment : public TwoViewLoss<Alignment<Scalar>, Scalar>, public LossSettings<AlignmentParams> {
  static_assert(std::is_floating_point<Scalar>::value, "contrastive: Scalar must be float or double");
  friend class TwoViewLoss<Alignment<Scalar>, Scalar>;

 public:
  /// One scalar gradient: dL/dalpha (Result::grad_alpha).
  static constexpr int kScalarGradients = 1;

  /// Validates `params` and `options` (std::invalid_argument naming the field).
  explicit Alignment(const AlignmentParams& params = {}, const EngineOptions& options = {})
      : LossSettings<AlignmentParams>(params, options, "contrastive::Alignment") {}

  /// Changes alpha (e.g. a learned one); validated as on construction.
  void set_alpha(double alpha) {
    AlignmentParams p = params_;
    p.alpha = alpha;
    p.check(name_);
    params_ = p;
  }
  /// alpha.
  double alpha() const { return params_.alpha; }
  /// One "anchor" per pair: n.
  Eigen::Index anchors(Eigen::Index n) const { return n; }
  /// Where value_and_grad(za, zb, call) -> Result puts the scalar gradient:
  /// Result::grad_alpha.
  static std::array<Scalar*, 2> result_fields(Result<Scalar>& r) { return {&r.grad_alpha, nullptr}; }

 private:
  friend struct detail::EngineCall;
  detail::Accepts accepts() const { return {true, false, false}; }
  bool requires_labels() const { return false; }
  std::vector<double> signature() const { return {params_.alpha}; }
  template <typename F>
  double with_kernel(const detail::Batch<Scalar>& batch, F&& f) const {
    return f(detail::AlignmentKernel<Scalar>(params_.alpha, batch.n, batch.coef, batch.losses, batch.want_dtau));
  }
  void scalar_gradients(const detail::CallStats<Scalar>& cs, Scalar* const* g) const {
    if (g[0]) *g[0] = static_cast<Scalar>(cs.dtau);
  }
};

/// Uniformity of both views, L = (L_unif(U) + L_unif(V)) / 2 with L_unif(U)
/// the log of the mean over pairs i != j of e^{-t ||u_i - u_j||^2} (Wang &
/// Isola's uniform_loss on each view, averaged as their training script
/// does; formulas at the top of this header).  On the engine's within-view
/// tiles, one exponential per pair.  Called as every TwoViewLoss with one
/// scalar gradient, dL/dt:
///
///     value(za, zb, [ws,] call = {})
///     value_and_grad(za, zb, grad_a, grad_b, &grad_t, ws, call = {})
///     value_and_grad(za, zb, call = {})  -> Result (grad_a, grad_b, grad_t)
///
/// No CallOptions but process_group (the value is a log of a mean over pairs,
/// not a sum over anchors).  Rows are unit vectors after the normalisation,
/// where ||u_i - u_j||^2 = 2 - 2 u_i.u_j; that identity defines the loss also
/// for a row below the norm clamp (1e-12).  For the two views' values
/// separately see alignment_uniformity() in diagnostics.hpp.
template <typename Scalar>
class Uniformity : public TwoViewLoss<Uniformity<Scalar>, Scalar>, public LossSettings<UniformityParams> {
  static_assert(std::is_floating_point<Scalar>::value, "contrastive: Scalar must be float or double");
  friend class TwoViewLoss<Uniformity<Scalar>, Scalar>;

 public:
  /// One scalar gradient: dL/dt (Result::grad_t).
  static constexpr int kScalarGradients = 1;

  /// Validates `params` (t in [1e-4, 16] for float, [1e-4, 150] for double)
  /// and `options` (std::invalid_argument naming the field).
  explicit Uniformity(const UniformityParams& params = {}, const EngineOptions& options = {})
      : LossSettings<UniformityParams>(params, options, "contrastive::Uniformity") {
    check_t(params_.t);
  }

  /// Changes t; validated as on construction.
  void set_t(double t) {
    UniformityParams p = params_;
    p.t = t;
    p.check(name_);
    check_t(t);
    params_ = p;
  }
  /// t.
  double t() const { return params_.t; }
  /// Uniformity has no per-anchor losses (0).
  Eigen::Index anchors(Eigen::Index) const { return 0; }
  /// Where value_and_grad(za, zb, call) -> Result puts the scalar gradient:
  /// Result::grad_t.
  static std::array<Scalar*, 2> result_fields(Result<Scalar>& r) { return {&r.grad_t, nullptr}; }

 private:
  friend struct detail::EngineCall;
  void check_t(double t) const {
    const double hi = detail::max_uniformity_t<Scalar>();
    if (!(t >= 1e-4 && t <= hi)) {
      std::ostringstream os;
      os << "must be in [1e-4, " << hi << "] for " << (sizeof(Scalar) <= 4 ? "float" : "double")
         << " (the exponents -t ||u_i - u_j||^2 span [-4t, 0]) " << detail::got(t);
      detail::fail_field(name_, "t", os.str());
    }
  }
  detail::Accepts accepts() const { return {false, false, false}; }
  bool requires_labels() const { return false; }
  std::vector<double> signature() const { return {params_.t}; }
  template <typename F>
  double with_kernel(const detail::Batch<Scalar>& batch, F&& f) const {
    return f(detail::UniformityKernel<Scalar>(params_.t, batch.n, batch.want_dtau));
  }
  void scalar_gradients(const detail::CallStats<Scalar>& cs, Scalar* const* g) const {
    if (g[0]) *g[0] = static_cast<Scalar>(cs.dtau);
  }
};

}  // namespace contrastive
