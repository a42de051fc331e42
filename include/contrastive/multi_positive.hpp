// contrastive — several positives per anchor, by instance id (several
// captions of one image, several views of one instance).
// SPDX-License-Identifier: MIT
//
// One id per row (shared by both views).  Anchor r's candidates C(r) are the
// rows the family's member compares it with (InfoNCE: all of V; CLIP: all of
// the other view; NT-Xent: the 2n - 1 other rows), and its positives P(r)
// are the candidates with its id — its partner always among them, and the
// same-id rows of its own view too when within-view pairs are candidates:
//
//   Form::Sum  (MIL-NCE, the log of the summed positives)
//       l_r = log sum_{C(r)} e^{x} - log sum_{P(r)} e^{x}
//   Form::Mean (SupCon L_out, the mean of per-positive logs)
//       l_r = log sum_{C(r)} e^{x} - 1/|P(r)| sum_{P(r)} x,
//
// x = s / tau, mean over the anchors.  All-distinct ids give the member
// itself; the Mean form of NT-Xent is SupCon with labels = ids.
//
// On the engine the family's kernel forms log sum_C e^x (no pair is
// masked: same-id pairs stay in the denominator), with the partner in
// closed form; Mean adds x_partner - mean_P x through per-class sums of the
// unit vectors (O(n d), in double); Sum keeps two more row statistics, the
// sum and the centred sum of e^x over the same-id pairs of the tiles (there
// are few: an exp each), and takes their share out of the gradient tile.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <tuple>
#include <vector>

#include <Eigen/Core>

#include "api.hpp"
#include "detail/checks.hpp"
#include "detail/math.hpp"
#include "engine.hpp"
#include "infonce_family.hpp"
#include "two_view_loss.hpp"

namespace contrastive {

/// How several positives enter an anchor's loss.
enum class PositivesForm {
  Sum,  ///< -log of the summed probabilities of the positives (MIL-NCE)
  Mean  ///< the mean over the positives of -log p (SupCon's L_out)
};

/// Parameters of MultiPositive; check() throws std::invalid_argument naming
/// the field.
struct MultiPositiveParams {
  /// The member of the family (positive in the denominator, weights 0 or 1),
  /// e.g. `CLIP<S>(0.07).params()`.  Default: CLIP at tau = 0.1.
  InfoNCEFamilyParams family{0.1, 1.0, 0.0, true, Direction::Symmetric, 0.0};
  /// Sum (MIL-NCE, default) or Mean (SupCon L_out).
  PositivesForm form = PositivesForm::Sum;

  /// Throws std::invalid_argument naming the first invalid field.
  void check(const char* where = "contrastive::MultiPositiveParams") const {
    family.check(where);
    if (!family.positive_in_denominator)
      detail::fail_field(where, "family.positive_in_denominator", "must be true: the positives are in the denominator");
    if (family.label_smoothing != 0.0) detail::fail_field(where, "family.label_smoothing", "must be 0 here");
    const auto unit = [](double c) { return c == 0.0 || c == 1.0; };
    if (!unit(family.cross_weight)) detail::fail_field(where, "family.cross_weight", "must be 0 or 1");
    if (!unit(family.within_weight)) detail::fail_field(where, "family.within_weight", "must be 0 or 1");
  }
};

namespace detail {

template <typename S>
class MultiPositiveKernel : public InfoNCEKernel<S> {
  using Base = InfoNCEKernel<S>;
  using Base::anchor_coef;
  using Base::is_anchor;
  using Base::partner;

 public:
  MultiPositiveKernel(const MultiPositiveParams& p, Eigen::Index n, const Eigen::Index* ids, const ColArray<S>* coef,
                      S* losses, bool want_dtau)
      : Base(p.family, n, nullptr, coef, losses, want_dtau), ids_(ids), sum_(p.form == PositivesForm::Sum) {
    std::map<Eigen::Index, Eigen::Index> index;
    cls_.resize(static_cast<std::size_t>(n));
    for (Eigen::Index i = 0; i < n; ++i)
      cls_[static_cast<std::size_t>(i)] = index.emplace(ids[i], static_cast<Eigen::Index>(index.size())).first->second;
    cnt_.assign(index.size(), 0.0);
    for (Eigen::Index c : cls_) cnt_[static_cast<std::size_t>(c)] += 1.0;
    // The instances of each class in increasing order (CSR), so a tile
    // visits its same-id pairs only, not all of its elements.
    first_.assign(index.size() + 1, 0);
    for (std::size_t c = 0; c < index.size(); ++c) first_[c + 1] = first_[c] + static_cast<std::size_t>(cnt_[c]);
    members_.resize(static_cast<std::size_t>(n));
    std::vector<std::size_t> fill(first_.begin(), first_.end() - 1);
    for (Eigen::Index i = 0; i < n; ++i) members_[fill[static_cast<std::size_t>(cls_[static_cast<std::size_t>(i)])]++] = i;
  }

  int stat_count() const { return sum_ ? 4 : 2; }  // + the same-id pairs' sum and centred sum

  void begin(const RowMatrix<S>& W, CallStats<S>& cs) const {
    Base::begin(W, cs);
    const Eigen::Index n = this->instances(), nc = static_cast<Eigen::Index>(cnt_.size());
    csum_.setZero(2 * nc, W.cols());
    for (Eigen::Index r = 0; r < 2 * n; ++r) csum_.row((r / n) * nc + cls(r)) += W.row(r).template cast<double>();
    lse_pos_.setZero(2 * n);
  }

  void pass1(TileRef<S> X, const Tile& t, const CallStats<S>& cs, TileOut<S>& out, bool keep, ThreadSlot<S>& sl) const {
    Base::pass1(X, t, cs, out, keep, sl);
    if (!sum_) return;
    // The same-id pairs of the tile (the partner and self pairs on a
    // chunk's diagonal are not terms of the tile).
    const bool fast = this->fixed_shift();
    const S sigma = this->inverse_temperature();
    same_id_pairs(t, [&](Eigen::Index i, Eigen::Index j) {
        S x, e_row, e_col;
        if (fast) {
          const bool exp_kept = keep;  // the kernel kept E = e^{x - sigma} in the tile
          e_row = exp_kept ? X(i, j) : std::exp(X(i, j) - sigma);
          x = exp_kept ? sigma + std::log(e_row) : X(i, j);
          e_col = e_row;
        } else {
          x = X(i, j);
          e_row = out.has_rows ? std::exp(x - out.rows_m[i]) : S(0);
          e_col = out.has_cols ? std::exp(x - out.cols_m[j]) : S(0);
        }
        if (out.has_rows) {
          out.rows(i, 2) += e_row;
          out.rows(i, 3) += e_row * (x - cs.pos[t.r0 + i]);
        }
        if (out.has_cols) {
          out.cols(j, 2) += e_col;
          out.cols(j, 3) += e_col * (x - cs.pos[t.c0 + j]);
        }
      });
  }

  double finish(const RowMatrix<S>& W, const RowStats<S>& st, CallStats<S>& cs) const {
    double value = Base::finish(W, st, cs);
    const Eigen::Index n = this->instances();
    const double tau = this->temperature();
    double dtau = 0;
    for (Eigen::Index r = 0; r < 2 * n; ++r) {
      if (!is_anchor(r < n ? 0 : 1)) continue;
      const double a = anchor_coef(r), xp = static_cast<double>(cs.pos[r]);
      double corr;
      if (sum_) {
        // -(lse_P - x_pos) = -softplus(lse_P' - x_pos), lse_P' over the
        // positives other than the partner.
        const double shift = this->fixed_shift() ? static_cast<double>(this->inverse_temperature()) : static_cast<double>(st.m[r]);
        const double sp = static_cast<double>(st.s(r, 2));
        const double others = sp > 0 ? shift + std::log(sp) : -std::numeric_limits<double>::infinity();
        lse_pos_[r] = xp + softplus(others - xp);
        corr = -softplus(others - xp);
        if (sp > 0) dtau += a / tau * std::exp(shift - lse_pos_[r]) * static_cast<double>(st.s(r, 3));
      } else {
        const Eigen::RowVectorXd diff = W.row(partner(r)).template cast<double>() - positive_sum(W, r) / positives(r);
        corr = W.row(r).template cast<double>().dot(diff) / tau;
        dtau -= a * corr / tau;
      }
      value += a * corr;
      if (this->losses()) this->losses()[r] += static_cast<S>(corr);
    }
    if (this->wants_dtau()) cs.dtau += dtau;
    return value;
  }

  bool pass2(TileRef<S> P, const Tile& t, bool kept, const CallStats<S>& cs, PairSums& sums, ThreadSlot<S>& sl) const {
    if (!sum_) return Base::pass2(P, t, kept, cs, sums, sl);
    // The same-id pairs' share, -e^{x - lse_P} a / tau per anchor
    // direction, from the tile before the family's kernel turns it into H.
    static thread_local std::vector<std::tuple<Eigen::Index, Eigen::Index, S>> corr;
    corr.clear();
    const bool fast = this->fixed_shift();
    const S sigma = this->inverse_temperature(), inv_tau = this->inverse_temperature();
    const bool rows = is_anchor(t.view_r), cols = is_anchor(t.view_c) && !t.diagonal();
    same_id_pairs(t, [&](Eigen::Index i, Eigen::Index j) {
        const S x = (fast && kept) ? sigma + std::log(P(i, j)) : P(i, j);
        S h = 0;
        if (rows) h += static_cast<S>(anchor_coef(t.r0 + i)) * inv_tau * std::exp(x - static_cast<S>(lse_pos_[t.r0 + i]));
        if (cols || t.diagonal())
          h += static_cast<S>(anchor_coef(t.c0 + j)) * inv_tau * std::exp(x - static_cast<S>(lse_pos_[t.c0 + j]));
        corr.emplace_back(i, j, h);
      });
    Base::pass2(P, t, kept, cs, sums, sl);
    for (const auto& c : corr) P(std::get<0>(c), std::get<1>(c)) -= std::get<2>(c);
    return true;
  }

  void pair_terms(const RowMatrix<S>& W, const CallStats<S>& cs, RowMatrix<S>& dW, Eigen::Index i0,
                  Eigen::Index i1) const {
    Base::pair_terms(W, cs, dW, i0, i1);
    const Eigen::Index n = this->instances();
    const S inv_tau = this->inverse_temperature();
    if (sum_) {
      // The partner is a positive: dl/dx_pos gains 1 - q_pos.
      for (Eigen::Index i = i0; i < i1; ++i)
        for (const Eigen::Index r : {i, i + n}) {
          if (!is_anchor(r < n ? 0 : 1)) continue;
          const S g = static_cast<S>(anchor_coef(r) * (1.0 - std::exp(static_cast<double>(cs.pos[r]) - lse_pos_[r]))) * inv_tau;
          dW.row(r) += g * W.row(partner(r));
          dW.row(partner(r)) += g * W.row(r);
        }
      return;
    }
    // Mean: x_partner - mean_P x gives the anchor a/tau (w_partner - P_sum/|P|),
    // its partner a/tau w_r, and each positive -a/(tau |P|) w_r.
    weighted_sums(W);
    const Eigen::Index nc = static_cast<Eigen::Index>(cnt_.size());
    for (Eigen::Index i = i0; i < i1; ++i)
      for (const Eigen::Index k : {i, i + n}) {
        const Eigen::Index v = k < n ? 0 : 1, c = cls(k);
        Eigen::RowVectorXd g = Eigen::RowVectorXd::Zero(W.cols());
        if (is_anchor(v))
          g += anchor_coef(k) * (W.row(partner(k)).template cast<double>() - positive_sum(W, k) / positives(k));
        if (is_anchor(1 - v)) g += anchor_coef(partner(k)) * W.row(partner(k)).template cast<double>();
        if (this->cross()) g -= q_.row((1 - v) * nc + c);
        if (this->within()) {
          g -= q_.row(v * nc + c);
          if (is_anchor(v)) g += anchor_coef(k) / positives(k) * W.row(k).template cast<double>();
        }
        dW.row(k) += inv_tau * g.template cast<S>();
      }
  }

 private:
  /// Calls f(i, j) for every element (i, j) of the tile whose row and
  /// column have the same id (the pairs of a chunk's diagonal excluded), row
  /// by row, the columns of a row in increasing order: O(rows + pairs).
  template <typename F>
  void same_id_pairs(const Tile& t, F&& f) const {
    const Eigen::Index n = this->instances(), c0 = t.c0 % n;
    for (Eigen::Index i = 0; i < t.nr; ++i) {
      const std::size_t c = static_cast<std::size_t>(cls(t.r0 + i));
      const auto b = members_.begin() + static_cast<std::ptrdiff_t>(first_[c]);
      const auto e = members_.begin() + static_cast<std::ptrdiff_t>(first_[c + 1]);
      for (auto it = std::lower_bound(b, e, c0); it != e && *it < c0 + t.nc; ++it) {
        const Eigen::Index j = *it - c0;
        if (!(t.same_chunk && i == j)) f(i, j);
      }
    }
  }

  Eigen::Index cls(Eigen::Index r) const { return cls_[static_cast<std::size_t>(r % this->instances())]; }
  double positives(Eigen::Index r) const {
    const double cnt = cnt_[static_cast<std::size_t>(cls(r))];
    return (this->cross() ? cnt : 0.0) + (this->within() ? cnt - 1.0 : 0.0);
  }
  Eigen::RowVectorXd positive_sum(const RowMatrix<S>& W, Eigen::Index r) const {
    const Eigen::Index n = this->instances(), nc = static_cast<Eigen::Index>(cnt_.size());
    const Eigen::Index v = r < n ? 0 : 1, c = cls(r);
    Eigen::RowVectorXd sum = Eigen::RowVectorXd::Zero(W.cols());
    if (this->cross()) sum += csum_.row((1 - v) * nc + c);
    if (this->within()) sum += csum_.row(v * nc + c) - W.row(r).template cast<double>();
    return sum;
  }
  // Per view and class: sum of (a_r / |P_r|) w_r over its anchors.
  void weighted_sums(const RowMatrix<S>& W) const {
    const Eigen::Index n = this->instances(), nc = static_cast<Eigen::Index>(cnt_.size());
    q_.setZero(2 * nc, W.cols());
    for (Eigen::Index r = 0; r < 2 * n; ++r)
      if (is_anchor(r < n ? 0 : 1))
        q_.row((r / n) * nc + cls(r)) += anchor_coef(r) / positives(r) * W.row(r).template cast<double>();
  }

  const Eigen::Index* ids_;
  bool sum_;
  std::vector<Eigen::Index> cls_;
  std::vector<double> cnt_;
  std::vector<std::size_t> first_;     // class c's instances: members_[first_[c] .. first_[c + 1])
  std::vector<Eigen::Index> members_;
  mutable Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> csum_, q_;
  mutable Eigen::ArrayXd lse_pos_;
};

}  // namespace detail

/// Several positives across views by instance id (formula at the top of
/// this header), called as every TwoViewLoss with one scalar gradient,
/// dL/dtau.  `call.instance_ids` is required: rows of equal id are each
/// other's positives (not masked negatives).  CallOptions: reduction,
/// anchor_weights, per_anchor, instance_ids.
template <typename Scalar>
class MultiPositive : public TwoViewLoss<MultiPositive<Scalar>, Scalar>, public LossSettings<MultiPositiveParams> {
  friend class TwoViewLoss<MultiPositive<Scalar>, Scalar>;
  friend struct detail::EngineCall;

 public:
  /// One scalar gradient: dL/dtau.
  static constexpr int kScalarGradients = 1;

  /// Validates the parameters (the family's temperature in the range of
  /// Scalar) and the options.
  explicit MultiPositive(const MultiPositiveParams& params = {}, const EngineOptions& options = {})
      : LossSettings<MultiPositiveParams>(params, options, "contrastive::MultiPositive") {
    detail::check_temperature<Scalar>(name_, "temperature", params_.family.temperature);
  }
  /// Number of anchors: n one-way, 2n symmetric.
  Eigen::Index anchors(Eigen::Index n) const { return params_.family.direction == Direction::Symmetric ? 2 * n : n; }

 private:
  detail::Accepts accepts() const { return {true, true, false}; }
  bool requires_labels() const { return false; }
  std::vector<double> signature() const {
    const auto& f = params_.family;
    return {f.temperature, f.cross_weight, f.within_weight, f.direction == Direction::Symmetric ? 1.0 : 0.0,
            params_.form == PositivesForm::Sum ? 1.0 : 0.0};
  }
  template <typename F>
  double with_kernel(const detail::Batch<Scalar>& batch, F&& f) const {
    if (!batch.ids) detail::fail(name_, "call.instance_ids", "is required: rows of equal id are each other's positives");
    return f(detail::MultiPositiveKernel<Scalar>(params_, batch.n, batch.ids, batch.coef, batch.losses, batch.want_dtau));
  }
  void scalar_gradients(const detail::CallStats<Scalar>& cs, Scalar* const* g) const {
    if (g[0]) *g[0] = static_cast<Scalar>(cs.dtau);
  }
};

}  // namespace contrastive
