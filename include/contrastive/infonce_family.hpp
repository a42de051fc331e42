// contrastive — the InfoNCE-based family (paper notes, Def. 3.1) as one kernel.
// SPDX-License-Identifier: MIT
//
// Anchor u_i (first view) with positive v_i, for one direction:
//
//   l_i = -s_ii/tau + log( [pos] e^{s_ii/tau}
//                          + c1 * sum_{j != i} e^{u_i.v_j / tau}     cross-view negatives
//                          + c2 * sum_{j != i} e^{u_i.u_j / tau} )   within-view negatives
//
// and, for the symmetric loss, the same with the views swapped.  The loss is
// the mean of l over all anchors (n of them one-way, 2n symmetric).
// A weight c enters as the logit offset log c; c = 0 removes the term.
//
//   preset   direction  [pos]  c1  c2   matches
//   InfoNCE  one-way    yes    1   0    info-nce-pytorch InfoNCE (no negative keys)
//   CLIP     symmetric  yes    1   0    open_clip ClipLoss, logit scale 1/tau
//   NTXent   symmetric  yes    1   1    SimCLR; lightly / pytorch-metric-learning NTXentLoss
//   DCL      symmetric  no     1   1    lightly DCLLoss (value can be negative)
//   DHEL     symmetric  no     0   1    DHEL (within-view negatives only)
//
// Gradient with respect to the similarities (G = dL/dK for the logit tiles):
//   G_ij = a_i / tau * (c_ij e^{K_ij/tau - lse_i} - [j = pos(i)]),
// a_i = 1/(number of anchors), c_ij the weight of the pair; the engine turns
// G into dL/dW with two GEMMs and then into dL/dz through the normalisation.
// dL/dtau = -<G, K>/tau = -(1/(2 tau)) sum_r w_r . dL/dw_r (Euler's identity
// for the bilinear similarities), so the temperature gradient is O(n d).
#pragma once

#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "api.hpp"
#include "detail/checks.hpp"
#include "detail/exp.hpp"
#include "detail/math.hpp"
#include "engine.hpp"
#include "two_view_loss.hpp"

namespace contrastive {

/// One direction (anchors from the first view only) or both.
enum class Direction { OneWay, Symmetric };

/// Parameters of the InfoNCE-based family.  Aggregate with defaults equal to
/// NT-Xent at temperature 0.5; check() throws std::invalid_argument naming
/// the field.
struct InfoNCEFamilyParams {
  /// tau > 0: logits are cosine similarities divided by tau; a loss takes
  /// tau in [1e-3, 1e4] (float) or [1e-6, 1e4] (double).
  double temperature = 0.5;
  /// c1: weight of cross-view negatives (u_i, v_j), j != i; 0 or in [1e-6, 1e6].
  double cross_weight = 1.0;
  /// c2: weight of within-view negatives (u_i, u_j), j != i; 0 or in [1e-6, 1e6].
  double within_weight = 1.0;
  /// true: log(1 + x) form (positive in the denominator); false: decoupled log(x).
  bool positive_in_denominator = true;
  /// OneWay: anchors are the first view; Symmetric: mean over both views as anchors.
  Direction direction = Direction::Symmetric;
  /// eps in [0, 1): label smoothing with the meaning of torch's
  /// cross_entropy(label_smoothing=eps) over each anchor's K logits (its
  /// positive and its negatives):
  ///   l = lse - (1 - eps) x_pos - (eps / K) sum_k x_k.
  /// Needs the positive in the denominator and weights of 0 or 1.
  double label_smoothing = 0.0;

  /// Throws std::invalid_argument naming the first invalid field.
  void check(const char* where = "contrastive::InfoNCEFamilyParams") const {
    detail::check_positive_finite(where, "temperature", temperature);
    detail::check_weight(where, "cross_weight", cross_weight);
    detail::check_weight(where, "within_weight", within_weight);
    if (cross_weight == 0.0 && within_weight == 0.0)
      detail::fail_field(where, "cross_weight",
                         "and field 'within_weight' are both 0: the loss would have no negatives");
    if (!(label_smoothing >= 0.0 && label_smoothing < 1.0))
      detail::fail_field(where, "label_smoothing", "must be in [0, 1) " + detail::got(label_smoothing));
    if (label_smoothing > 0.0 && !positive_in_denominator)
      detail::fail_field(where, "label_smoothing",
                         "needs field 'positive_in_denominator' (a decoupled loss has no probability of the positive)");
    const auto unit = [](double c) { return c == 0.0 || c == 1.0; };
    if (label_smoothing > 0.0 && !(unit(cross_weight) && unit(within_weight)))
      detail::fail_field(where, "label_smoothing", "needs 'cross_weight' and 'within_weight' of 0 or 1 (uniform targets)");
  }
};

namespace detail {

/// Exponent range a fixed shift may span in S with every exponential of a
/// sum a normal number (and room below it for the weights): e^-64 in float,
/// e^-600 in double.
template <typename S>
constexpr double fixed_shift_range() {
  return std::numeric_limits<S>::max_exponent >= 1024 ? 600.0 : 64.0;
}

/// The family's tile kernel (step 3 of the engine).
///
/// Logits x = s / tau lie in [-1/tau, 1/tau], so when 2/tau (plus the log of
/// the smallest weight) fits fixed_shift_range<S>(), every exponential is
/// taken once against the fixed shift sigma = 1/tau: pass 1 computes
/// E = e^{x - sigma} (one exp per element, masked entries 0) and the row and
/// column sums from the same E; the tile is cached as E, and pass 2 forms
/// H_ij = c E_ij (alpha_i + alpha_j), alpha_r = a_r/tau e^{sigma - lse_r},
/// without a single exp.  Otherwise (float at tau < 1/32) each row and
/// column keeps its own running max (online log-sum-exp) and pass 2 takes
/// one exp per anchor direction.
///
/// dL/dtau = -(1/tau) sum_r a_r sum_j p_rj (x_rj - x_r,pos): the sums
/// T_r = sum_j c E_rj (x_rj - x_r,pos) are taken in pass 1 beside the
/// row sums, centred on the anchor's positive logit, so a near-collapsed
/// batch (all x within 1e-2 of each other) keeps its dL/dtau to float
/// precision instead of cancelling sum_j p_rj x_rj against x_r,pos.
template <typename S>
class InfoNCEKernel {
 public:
  /// `coef` (optional): per-anchor coefficients a_r (anchor_coefficients);
  /// `losses` (optional): receives l_r of every anchor in finish();
  /// `want_dtau`: compute dL/dtau (CallStats::dtau).
  InfoNCEKernel(const InfoNCEFamilyParams& p, Eigen::Index n, const Eigen::Index* ids = nullptr,
                const ColArray<S>* coef = nullptr, S* losses = nullptr, bool want_dtau = false)
      : n_(n),
        ids_(ids),
        coef_(coef),
        losses_(losses),
        tau_(p.temperature),
        inv_tau_(static_cast<S>(1.0 / p.temperature)),
        w_{static_cast<S>(p.cross_weight), static_cast<S>(p.within_weight)},
        c1_(p.cross_weight > 0.0),
        c2_(p.within_weight > 0.0),
        pos_(p.positive_in_denominator),
        sym_(p.direction == Direction::Symmetric),
        dtau_(want_dtau),
        eps_(p.label_smoothing) {
    const double anchors = sym_ ? 2.0 * static_cast<double>(n) : static_cast<double>(n);
    a_[0] = 1.0 / anchors;
    a_[1] = sym_ ? a_[0] : 0.0;
    double smallest = 1.0;
    if (c1_) smallest = std::min(smallest, p.cross_weight);
    if (c2_) smallest = std::min(smallest, p.within_weight);
    fast_ = 2.0 / p.temperature - std::log(smallest) <= fixed_shift_range<S>();
  }

  /// The engine's optional lower_diagonal: a value pass (no tile kept) on
  /// the fixed shift without instance ids reads a diagonal tile's strictly
  /// lower triangle only, half its exponentials.  (A kept tile is turned
  /// into E whole, which pass 2 multiplies as it is.)
  bool lower_diagonal(bool keep) const { return fast_ && !keep && ids_ == nullptr; }

  bool visits(int vr, int vc) const {
    if (vr != vc) return c1_;
    return c2_ && is_anchor(vr);
  }
  S logit_scale() const { return inv_tau_; }
  int stat_count() const { return 2; }  // sum of exponentials, centred sum for dL/dtau
  bool online() const { return !fast_; }

  void begin(const RowMatrix<S>& W, CallStats<S>& cs) const {
    const Eigen::Index n2 = W.rows();
    resize_buffer(cs.pos, n2);
    for (Eigen::Index r = 0; r < n2; ++r) cs.pos[r] = inv_tau_ * W.row(r).dot(W.row(partner(r)));
    cs.shift = inv_tau_;
    for (ColArray<S>* a : {&cs.lse, &cs.lse_neg, &cs.alpha}) zero_buffer(*a, n2);
    if (sigma_ > 0.0) dclw_weights(W);
    if (eps_ > 0.0) smoothing_sums(W);
  }

  void pass1(TileRef<S> X, const Tile& t, const CallStats<S>& cs, TileOut<S>& out, bool keep,
             ThreadSlot<S>& sl) const {
    const bool rows = is_anchor(t.view_r), cols = is_anchor(t.view_c) && !t.diagonal();
    out.has_rows = rows;
    out.has_cols = cols;
    if (rows) out.rows.setZero();
    if (cols) out.cols.setZero();
    const auto xp = cs.pos.segment(t.r0, t.nr);
    if (fast_ && t.diagonal() && lower_diagonal(keep)) {
      // A diagonal tile is symmetric and its diagonal masked: each E_ij of
      // the strictly lower triangle is a term of anchor i and of anchor j.
      auto rs = out.rows.col(0);
      auto rt = out.rows.col(1);
      for (Eigen::Index j = 0; j + 1 < t.nc; ++j) {
        const Eigen::Index len = t.nr - j - 1;
        const auto x = X.col(j).tail(len);
        auto e = sl.v.head(len);
        e = exp_normal(x - inv_tau_);
        rs.tail(len) += e;
        rs[j] += e.sum();
        if (dtau_) {
          rt.tail(len) += e * (x - xp.tail(len));
          rt[j] += (e * (x - xp[j])).sum();
        }
      }
    } else if (fast_) {
      auto rs = out.rows.col(0);
      auto rt = out.rows.col(1);
      auto e = sl.v.head(t.nr);
      for (Eigen::Index j = 0; j < t.nc; ++j) {
        auto x = X.col(j);
        e = exp_normal(x - inv_tau_);
        mask_pairs(e, ids_, n_, t, j, S(0));
        if (rows) {
          rs += e;
          if (dtau_) rt += e * (x - xp);
        }
        if (cols) {
          out.cols(j, 0) = e.sum();
          if (dtau_) out.cols(j, 1) = (e * (x - cs.pos[t.c0 + j])).sum();
        }
        if (keep) x = e;
      }
    } else {
      const S ninf = -std::numeric_limits<S>::infinity();
      for (Eigen::Index j = 0; j < t.nc; ++j) mask_pairs(X.col(j), ids_, n_, t, j, ninf);
      auto e = sl.v.segment(t.nr, t.nr);
      auto dx = sl.v.segment(2 * t.nr, t.nr);
      if (rows) {
        auto mx = sl.v.head(t.nr);
        mx = X.col(0);
        for (Eigen::Index j = 1; j < t.nc; ++j) mx = mx.max(X.col(j));
        mx = (mx == ninf).select(S(0), mx);  // a fully masked row
        auto rs = out.rows.col(0);
        auto rt = out.rows.col(1);
        for (Eigen::Index j = 0; j < t.nc; ++j) {
          e = (X.col(j) - mx).exp();
          mask_pairs(e, ids_, n_, t, j, S(0));  // Eigen's exp(-inf) is a subnormal, not 0
          rs += e;
          if (dtau_) {
            dx = X.col(j) - xp;
            mask_pairs(dx, ids_, n_, t, j, S(0));
            rt += e * dx;
          }
        }
        Eigen::Map<ColArray<S>>(out.rows_m, t.nr) = mx;
      }
      if (cols) {
        for (Eigen::Index j = 0; j < t.nc; ++j) {
          const S mj = X.col(j).maxCoeff();
          out.cols_m[j] = mj == ninf ? S(0) : mj;
          if (mj == ninf) continue;  // a fully masked column
          e = (X.col(j) - mj).exp();
          mask_pairs(e, ids_, n_, t, j, S(0));
          out.cols(j, 0) = e.sum();
          if (dtau_) {
            dx = X.col(j) - cs.pos[t.c0 + j];
            mask_pairs(dx, ids_, n_, t, j, S(0));
            out.cols(j, 1) = (e * dx).sum();
          }
        }
      }
    }
    const S c = block_weight(t);
    if (c != S(1)) {
      if (rows) out.rows *= c;
      if (cols) out.cols *= c;
    }
  }

  /// Per anchor: lse_neg = shift + log S (the negatives' weighted sum), the
  /// loss l_r = softplus(lse_neg - x_pos) (or lse_neg - x_pos when
  /// decoupled) with the positive in closed form, so a well-separated
  /// anchor keeps its tiny loss and gradient to full relative precision
  /// instead of cancelling 1 - p to zero; alpha_r; dL/dtau.  The logs and
  /// softplus of all rows are taken first as array operations, vectorised
  /// (a per-anchor loop of scalar std::log and log1p took 10 us of a
  /// 160 us CLIP value call at n = 256, d = 128, float, on two threads).
  double finish(const RowMatrix<S>& W, const RowStats<S>& st, CallStats<S>& cs) const {
    const Eigen::Index n2 = W.rows();
    const S ninf = -std::numeric_limits<S>::infinity();
    const auto sneg_all = st.s.col(0);
    // lse_neg = shift + log S (-inf: no negative); with the positive in the
    // denominator, sp = softplus(lse_neg - x_pos), kept in alpha until the
    // loop below replaces it by alpha_r.
    if (fast_) cs.lse_neg = (sneg_all > S(0)).select(inv_tau_ + sneg_all.log(), ninf);
    else cs.lse_neg = (sneg_all > S(0)).select(st.m + sneg_all.log(), ninf);
    if (pos_) {
      cs.alpha = softplus_array(cs.lse_neg - cs.pos);
      cs.lse = cs.pos + cs.alpha;
    } else {
      cs.lse = cs.lse_neg;
    }
    double value = 0.0, dtau = 0.0;
    for (Eigen::Index r = 0; r < n2; ++r) {
      if (!is_anchor(r < n_ ? 0 : 1)) {
        cs.lse[r] = cs.lse_neg[r] = cs.alpha[r] = S(0);
        continue;
      }
      const S shift = fast_ ? inv_tau_ : st.m[r];
      const S sneg = st.s(r, 0);
      const S neg = cs.lse_neg[r];
      const S xp = cs.pos[r];
      const double pw = pos_weight(r);
      const S lse = cs.lse[r];
      const S sp = pos_ ? cs.alpha[r] : S(0);
      cs.alpha[r] = S(0);
      // The positive's own term: -w x_pos (w = 1 but for DCLW), and with
      // label smoothing + eps (x_pos - mean_k x_k), formed from the vectors
      // in double (x_pos and the mean are close near collapse).
      double extra = 0;
      if (eps_ > 0.0) {
        const Eigen::RowVectorXd diff = W.row(partner(r)).template cast<double>() - candidate_sum(W, r) / candidates(r);
        extra = eps_ * W.row(r).template cast<double>().dot(diff) / tau_;
      }
      const double term =
          (pos_ ? static_cast<double>(sp) : static_cast<double>(neg) - pw * static_cast<double>(xp)) + extra;
      if (losses_) losses_[r] = static_cast<S>(term);
      const double a = anchor_coef(r);
      if (a == 0.0) continue;  // weight 0: no share (not even of an infinite term)
      value += a * term;
      cs.alpha[r] = static_cast<S>(a) * inv_tau_ * (fast_ ? std::exp(shift - lse) : S(1));
      if (dtau_ && sneg > S(0))
        dtau -= a / tau_ * std::exp(static_cast<double>(shift) - static_cast<double>(lse)) *
                static_cast<double>(st.s(r, 1));
      if (dtau_) dtau -= a / tau_ * ((1.0 - pw) * static_cast<double>(xp) + extra);
    }
    cs.dtau = dtau;
    return value;
  }

  bool pass2(TileRef<S> P, const Tile& t, bool kept, const CallStats<S>& cs, PairSums&, ThreadSlot<S>& sl) const {
    const S c = block_weight(t);
    const bool rows = is_anchor(t.view_r), cols = is_anchor(t.view_c);
    auto a = sl.v.head(t.nr);
    a = c * cs.alpha.segment(t.r0, t.nr);
    if (fast_) {
      for (Eigen::Index j = 0; j < t.nc; ++j) {
        auto x = P.col(j);
        if (!kept) {
          x = exp_normal(x - inv_tau_);
          mask_pairs(x, ids_, n_, t, j, S(0));
        }
        if (cols) x *= a + c * cs.alpha[t.c0 + j];
        else x *= a;
      }
      return true;
    }
    auto l = sl.v.segment(t.nr, t.nr);
    auto h = sl.v.segment(2 * t.nr, t.nr);
    l = cs.lse.segment(t.r0, t.nr);
    for (Eigen::Index j = 0; j < t.nc; ++j) {
      auto x = P.col(j);
      if (rows) h = a * (x - l).exp();
      else h.setZero();
      if (cols) h += (c * cs.alpha[t.c0 + j]) * (x - cs.lse[t.c0 + j]).exp();
      mask_pairs(h, ids_, n_, t, j, S(0));
      x = h;
    }
    return true;
  }

  /// The positive pair of every anchor of instances [i0, i1):
  /// G_{r,p} = -a/tau (1 - p_pos), with 1 - p_pos = sigmoid(lse_neg - x_pos)
  /// (1 when decoupled).
  void pair_terms(const RowMatrix<S>& W, const CallStats<S>& cs, RowMatrix<S>& dW, Eigen::Index i0,
                  Eigen::Index i1) const {
    for (Eigen::Index i = i0; i < i1; ++i)
      for (const Eigen::Index r : {i, i + n_}) {
        if (!is_anchor(r < n_ ? 0 : 1)) continue;
        const Eigen::Index p = partner(r);
        if (anchor_coef(r) == 0.0) continue;
        const S miss = pos_ ? sigmoid(cs.lse_neg[r] - cs.pos[r]) : static_cast<S>(pos_weight(r));
        const S g = -static_cast<S>(anchor_coef(r)) * inv_tau_ * miss;
        dW.row(r) += g * W.row(p);
        dW.row(p) += g * W.row(r);
      }
    if (eps_ > 0.0) smoothing_terms(W, dW, i0, i1);
  }

  /// Label smoothing's share of dL/dW for the rows of instances [i0, i1):
  /// eps (x_pos - S_r . w_r / (K_r tau)) gives the anchor
  /// a eps / tau (w_pos - S_r / K_r), its positive a eps / tau w_r, and each
  /// of its candidates -a eps / (K_r tau) w_r, summed through the per-view
  /// and per-class sums.
  void smoothing_terms(const RowMatrix<S>& W, RowMatrix<S>& dW, Eigen::Index i0, Eigen::Index i1) const {
    const Eigen::Index nc = static_cast<Eigen::Index>(cnt_.size());
    for (Eigen::Index i = i0; i < i1; ++i)
      for (const Eigen::Index k : {i, i + n_}) {
        const Eigen::Index v = k < n_ ? 0 : 1, c = cls_[static_cast<std::size_t>(i)];
        Eigen::RowVectorXd g = Eigen::RowVectorXd::Zero(W.cols());
        if (is_anchor(v)) {
          const double a = anchor_coef(k);
          g += a * (W.row(partner(k)).template cast<double>() - candidate_sum(W, k) / candidates(k));
        }
        // As a candidate of the anchors of the other view (cross) and of its own (within).
        // As the positive of its partner's anchor (the x_pos of eps x_pos).
        if (is_anchor(1 - v)) g += anchor_coef(partner(k)) * W.row(partner(k)).template cast<double>();
        if (c1_) {
          const Eigen::Index p = partner(k);
          const double qp = is_anchor(1 - v) ? anchor_coef(p) / candidates(p) : 0.0;
          g -= qv_.row(1 - v) - qc_.row((1 - v) * nc + c) + qp * W.row(p).template cast<double>();
        }
        if (c2_) g -= qv_.row(v) - qc_.row(v * nc + c);
        dW.row(k) += (static_cast<S>(eps_) * inv_tau_) * g.template cast<S>();
      }
  }

 protected:
  bool is_anchor(Eigen::Index view) const { return view == 0 || sym_; }
  double anchor_coef(Eigen::Index r) const {
    return coef_ ? static_cast<double>((*coef_)[r]) : a_[r < n_ ? 0 : 1];
  }
  Eigen::Index partner(Eigen::Index r) const { return r < n_ ? r + n_ : r - n_; }
  double temperature() const { return tau_; }
  bool fixed_shift() const { return fast_; }
  S inverse_temperature() const { return inv_tau_; }
  bool wants_dtau() const { return dtau_; }
  bool cross() const { return c1_; }
  bool within() const { return c2_; }
  Eigen::Index instances() const { return n_; }
  S* losses() const { return losses_; }

 public:
  /// DCLW: the positive of instance i weighted by w_i = 2 - n softmax_i(s_ii
  /// / sigma), a constant of the call (decoupled losses only).
  void positive_weights(double sigma) { sigma_ = sigma; }

 private:
  S block_weight(const Tile& t) const { return t.view_r == t.view_c ? w_[1] : w_[0]; }

 private:
  // The weights of the positives (DCLW), from s_ii of the batch, in double.
  void dclw_weights(const RowMatrix<S>& W) const {
    pw_.resize(static_cast<std::size_t>(n_));
    double mx = -std::numeric_limits<double>::infinity();
    for (Eigen::Index i = 0; i < n_; ++i) {
      pw_[static_cast<std::size_t>(i)] = W.row(i).template cast<double>().dot(W.row(i + n_).template cast<double>()) / sigma_;
      mx = std::max(mx, pw_[static_cast<std::size_t>(i)]);
    }
    double z = 0;
    for (double& x : pw_) z += (x = std::exp(x - mx));
    for (double& x : pw_) x = 2.0 - static_cast<double>(n_) * x / z;
  }
  double pos_weight(Eigen::Index r) const { return sigma_ > 0.0 ? pw_[static_cast<std::size_t>(r % n_)] : 1.0; }

  // Label smoothing: per anchor its candidates' count K_r and sum S_r of
  // unit vectors; per view the sums of (a_r / K_r) w_r of its anchors, per
  // class of ids too (in double, O(n d)).
  void smoothing_sums(const RowMatrix<S>& W) const {
    const Eigen::Index d = W.cols();
    cls_.resize(static_cast<std::size_t>(n_));
    std::map<Eigen::Index, Eigen::Index> index;
    for (Eigen::Index i = 0; i < n_; ++i)
      cls_[static_cast<std::size_t>(i)] =
          ids_ ? index.emplace(ids_[i], static_cast<Eigen::Index>(index.size())).first->second : i;
    const Eigen::Index nc = ids_ ? static_cast<Eigen::Index>(index.size()) : n_;
    cnt_.assign(static_cast<std::size_t>(nc), 0.0);
    for (Eigen::Index c : cls_) cnt_[static_cast<std::size_t>(c)] += 1.0;
    vsum_.setZero(2, d);
    csum_.setZero(2 * nc, d);
    for (Eigen::Index r = 0; r < 2 * n_; ++r) {
      vsum_.row(r / n_) += W.row(r).template cast<double>();
      csum_.row((r / n_) * nc + cls_[static_cast<std::size_t>(r % n_)]) += W.row(r).template cast<double>();
    }
    qv_.setZero(2, d);
    qc_.setZero(2 * nc, d);
    for (Eigen::Index r = 0; r < 2 * n_; ++r) {
      if (!is_anchor(r < n_ ? 0 : 1)) continue;
      const double q = anchor_coef(r) / candidates(r);
      qv_.row(r / n_) += q * W.row(r).template cast<double>();
      qc_.row((r / n_) * nc + cls_[static_cast<std::size_t>(r % n_)]) += q * W.row(r).template cast<double>();
    }
  }
  double candidates(Eigen::Index r) const {
    const double cnt = cnt_[static_cast<std::size_t>(cls_[static_cast<std::size_t>(r % n_)])];
    const double n = static_cast<double>(n_);
    return (c1_ ? n - cnt + 1.0 : 0.0) + (c2_ ? n - cnt : 0.0);
  }
  // S_r: the sum of anchor r's candidates (positive and negatives).
  Eigen::RowVectorXd candidate_sum(const RowMatrix<S>& W, Eigen::Index r) const {
    const Eigen::Index v = r < n_ ? 0 : 1, nc = static_cast<Eigen::Index>(cnt_.size());
    const Eigen::Index c = cls_[static_cast<std::size_t>(r % n_)];
    Eigen::RowVectorXd sum = Eigen::RowVectorXd::Zero(W.cols());
    if (c1_) sum += vsum_.row(1 - v) - csum_.row((1 - v) * nc + c) + W.row(partner(r)).template cast<double>();
    if (c2_) sum += vsum_.row(v) - csum_.row(v * nc + c);
    return sum;
  }

  Eigen::Index n_;
  const Eigen::Index* ids_;
  const ColArray<S>* coef_;
  S* losses_;
  double tau_;
  S inv_tau_;
  S w_[2];
  bool c1_, c2_, pos_, sym_, dtau_, fast_ = true;
  double a_[2];
  double eps_ = 0.0, sigma_ = 0.0;
  mutable std::vector<double> pw_, cnt_;
  mutable std::vector<Eigen::Index> cls_;
  mutable Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> vsum_, csum_, qv_, qc_;
};

}  // namespace detail

/// A loss of the InfoNCE-based family.  Rows of the inputs are samples; row i
/// of `za` and row i of `zb` are the two views of instance i.  Inputs are any
/// dense Eigen expression (Matrix, Map, Block; row- or column-major; any real
/// scalar, cast to Scalar).  Embeddings are L2-normalised inside the loss with
/// the norm clamped at 1e-12; gradients are with respect to the raw inputs.
///
/// Calls (the library's one convention, see api.hpp):
///
///     value(za, zb, [ws,] call = {})
///     value_and_grad(za, zb, grad_a, grad_b, &grad_temperature, ws, call = {})
///     value_and_grad(za, zb, call = {})  -> Result (grad_a, grad_b, grad_temperature, per_anchor)
///
/// CallOptions: reduction, anchor_weights, per_anchor (anchors r < n are the
/// rows of za, n + i the rows of zb for symmetric members), instance_ids.
template <typename Scalar>
class InfoNCEFamily : public TwoViewLoss<InfoNCEFamily<Scalar>, Scalar>, public LossSettings<InfoNCEFamilyParams> {
  static_assert(std::is_floating_point<Scalar>::value, "contrastive: Scalar must be float or double");
  friend class TwoViewLoss<InfoNCEFamily<Scalar>, Scalar>;

 public:
  /// One scalar gradient: dL/dtau (for a learned logit scale t = 1/tau,
  /// dL/dt = -tau^2 dL/dtau).
  static constexpr int kScalarGradients = 1;

  /// Validates `params` and `options` (std::invalid_argument naming the field).
  explicit InfoNCEFamily(const InfoNCEFamilyParams& params, const EngineOptions& options = {},
                         const char* name = "contrastive::InfoNCEFamily")
      : LossSettings<InfoNCEFamilyParams>(params, options, name) {
    detail::check_temperature<Scalar>(name_, "temperature", params_.temperature);
  }

  /// Changes the temperature (e.g. a learned one); validated as on construction.
  void set_temperature(double tau) {
    detail::check_temperature<Scalar>(name_, "temperature", tau);
    params_.temperature = tau;
  }
  /// Number of anchors: n one-way, 2n symmetric.
  Eigen::Index anchors(Eigen::Index n) const { return params_.direction == Direction::Symmetric ? 2 * n : n; }

 private:
  friend struct detail::EngineCall;
  detail::Accepts accepts() const { return {true, true, false}; }
  bool requires_labels() const { return false; }
  std::vector<double> signature() const {
    return {params_.temperature,    params_.cross_weight,
            params_.within_weight,  params_.positive_in_denominator ? 1.0 : 0.0,
            params_.direction == Direction::Symmetric ? 1.0 : 0.0, params_.label_smoothing, sigma_};
  }
  template <typename F>
  double with_kernel(const detail::Batch<Scalar>& batch, F&& f) const {
    detail::InfoNCEKernel<Scalar> k(params_, batch.n, batch.ids, batch.coef, batch.losses, batch.want_dtau);
    k.positive_weights(sigma_);
    return f(k);
  }

  void scalar_gradients(const detail::CallStats<Scalar>& cs, Scalar* const* g) const {
    if (g[0]) *g[0] = static_cast<Scalar>(cs.dtau);
  }

 protected:
  /// DCLW's sigma (0: every positive weighs 1).
  double sigma_ = 0.0;
};

// ---- presets ---------------------------------------------------------------

/// The named members of the family (see the table at the top of this header).
enum class PresetKind { InfoNCE, CLIP, NTXent, DCL, DHEL };

namespace detail {
struct PresetRow {
  const char* name;
  double default_temperature, cross_weight, within_weight;
  bool positive_in_denominator;
  Direction direction;
};
/// The one table of the presets: name, default tau, c1, c2, [pos], direction.
constexpr PresetRow preset_row(PresetKind k) {
  switch (k) {
    case PresetKind::InfoNCE: return {"contrastive::InfoNCE", 0.1, 1.0, 0.0, true, Direction::OneWay};
    case PresetKind::CLIP: return {"contrastive::CLIP", 0.07, 1.0, 0.0, true, Direction::Symmetric};
    case PresetKind::NTXent: return {"contrastive::NTXent", 0.5, 1.0, 1.0, true, Direction::Symmetric};
    case PresetKind::DCL: return {"contrastive::DCL", 0.1, 1.0, 1.0, false, Direction::Symmetric};
    case PresetKind::DHEL: break;
  }
  return {"contrastive::DHEL", 0.1, 0.0, 1.0, false, Direction::Symmetric};
}
}  // namespace detail

/// A preset of the family: the InfoNCEFamily with the parameters of its row
/// of the table and temperature tau (default: the row's).
template <typename Scalar, PresetKind Kind>
class Preset : public InfoNCEFamily<Scalar> {
 public:
  /// Validates tau (finite, > 0) and the options.
  explicit Preset(double temperature = detail::preset_row(Kind).default_temperature, const EngineOptions& options = {})
      : InfoNCEFamily<Scalar>(row_params(temperature), options, detail::preset_row(Kind).name) {}

 private:
  static InfoNCEFamilyParams row_params(double tau) {
    const detail::PresetRow r = detail::preset_row(Kind);
    return InfoNCEFamilyParams{tau, r.cross_weight, r.within_weight, r.positive_in_denominator, r.direction};
  }
};

/// One-directional InfoNCE (CPC / MoCo form; info-nce-pytorch's InfoNCE without
/// negative keys): queries za, positive keys zb, the other keys as negatives,
/// mean over the n queries.  Default tau = 0.1.
template <typename Scalar>
using InfoNCE = Preset<Scalar, PresetKind::InfoNCE>;

/// Symmetric InfoNCE of CLIP (open_clip ClipLoss with logit scale 1/tau): the
/// mean of the image->text and text->image cross entropies.  Default tau = 0.07.
template <typename Scalar>
using CLIP = Preset<Scalar, PresetKind::CLIP>;

/// NT-Xent of SimCLR: every one of the 2n samples is an anchor, with its other
/// view as positive and the 2n-2 others as negatives.  Default tau = 0.5.
template <typename Scalar>
using NTXent = Preset<Scalar, PresetKind::NTXent>;

/// Decoupled contrastive loss: NT-Xent with the positive removed from the
/// denominator (one log-sum-exp over the 2n-2 negatives).  Default tau = 0.1.
template <typename Scalar>
using DCL = Preset<Scalar, PresetKind::DCL>;

/// DHEL: decoupled, within-view negatives only (n-1 per anchor).  Default tau = 0.1.
template <typename Scalar>
using DHEL = Preset<Scalar, PresetKind::DHEL>;

/// DCLW (lightly's DCLWLoss): DCL whose positive term of instance i is
/// weighted by w_i = 2 - n softmax_i(s_ii / sigma), the softmax over the
/// batch's positive similarities, taken as a constant (lightly detaches it):
///
///     l_r = -w_i s_ii / tau + log sum_{q in neg(r)} e^{w_r . w_q / tau},
///
/// mean over the 2n anchors.  Weights can be negative: that is the loss.
/// sigma -> infinity gives DCL.  dL/dsigma = 0 by this definition; the
/// scalar gradient is dL/dtau.  Defaults tau = 0.1, sigma = 0.5 (lightly's).
template <typename Scalar>
class DCLW : public InfoNCEFamily<Scalar> {
 public:
  /// Validates tau (as every preset) and sigma (finite, > 0).
  explicit DCLW(double temperature = 0.1, double sigma = 0.5, const EngineOptions& options = {})
      : InfoNCEFamily<Scalar>(InfoNCEFamilyParams{temperature, 1.0, 1.0, false, Direction::Symmetric}, options,
                              "contrastive::DCLW") {
    detail::check_positive_finite(this->name_, "sigma", sigma);
    this->sigma_ = sigma;
  }
  /// sigma.
  double sigma() const { return this->sigma_; }
};

}  // namespace contrastive
