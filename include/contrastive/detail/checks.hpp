// contrastive — argument validation shared by every loss.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <utility>
#include <map>
#include <vector>
#include <sstream>
#include <stdexcept>
#include <string>

#include <Eigen/Core>

#include "../api.hpp"
#include "resize.hpp"

namespace contrastive {
namespace detail {

/// Throws std::invalid_argument with "<where>: argument '<arg>' <problem>".
[[noreturn]] inline void fail(const char* where, const char* arg, const std::string& problem) {
  std::ostringstream os;
  os << where << ": argument '" << arg << "' " << problem;
  throw std::invalid_argument(os.str());
}

/// Same message shape for fields of a parameter struct ("field 'x' ...").
[[noreturn]] inline void fail_field(const char* where, const char* field, const std::string& problem) {
  std::ostringstream os;
  os << where << ": field '" << field << "' " << problem;
  throw std::invalid_argument(os.str());
}

template <typename T>
std::string got(const T& value) {
  std::ostringstream os;
  os << "(got " << value << ")";
  return os.str();
}

/// The parameter ranges the library computes correctly (README, "Promises").
/// Logits s / tau of unit vectors differ by up to 2 / tau, and a float
/// similarity carries an absolute error of about sqrt(d) 6e-8: at tau = 1e-3
/// that is ~1e-3 in a logit, the edge of useful float accuracy; double keeps
/// the same accuracy down to tau = 1e-6.  Above tau = 1e4 every logit is
/// within 1e-4 of 0 and the loss is flat.
template <typename S>
struct Limits {
  /// Smallest temperature (and 1 / the largest logit scale): 1e-3 in float, 1e-6 in double.
  static constexpr double min_temperature = sizeof(S) <= 4 ? 1e-3 : 1e-6;
  /// Largest temperature (and 1 / the smallest logit scale).
  static constexpr double max_temperature = 1e4;
};
/// Largest weight of a term (c1, c2, a LossTerm's weight, lambda); a
/// positive weight is at least 1 / kMaxWeight.
constexpr double kMaxWeight = 1e6;
/// Largest per-anchor weight of a call.
constexpr double kMaxAnchorWeight = 1e12;
/// Largest magnitude of SigLIP's bias.
constexpr double kMaxBias = 1e4;

/// A temperature: finite and in [Limits<double>] (the widest range; the
/// losses check their scalar's own with check_temperature<S>).
inline void check_positive_finite(const char* where, const char* field, double value) {
  if (!(std::isfinite(value) && value > 0.0))
    fail_field(where, field, "must be finite and > 0 " + got(value));
}

/// A temperature in the range computed correctly in S.
template <typename S>
void check_temperature(const char* where, const char* field, double tau) {
  check_positive_finite(where, field, tau);
  if (tau < Limits<S>::min_temperature || tau > Limits<S>::max_temperature) {
    std::ostringstream os;
    os << "must be in [" << Limits<S>::min_temperature << ", " << Limits<S>::max_temperature << "] for "
       << (sizeof(S) <= 4 ? "float" : "double") << " (logits 1/tau beyond are not computed accurately) "
       << got(tau);
    fail_field(where, field, os.str());
  }
}

/// A logit scale t (logits t s): 1 / t in the temperature range of S.
template <typename S>
void check_logit_scale(const char* where, const char* field, double t) {
  check_positive_finite(where, field, t);
  const double lo = 1.0 / Limits<S>::max_temperature, hi = 1.0 / Limits<S>::min_temperature;
  if (t < lo || t > hi) {
    std::ostringstream os;
    os << "must be in [" << lo << ", " << hi << "] for " << (sizeof(S) <= 4 ? "float" : "double") << " " << got(t);
    fail_field(where, field, os.str());
  }
}

/// A weight: 0, or in [1 / kMaxWeight, kMaxWeight].
inline void check_weight(const char* where, const char* field, double value) {
  if (!(std::isfinite(value) && value >= 0.0))
    fail_field(where, field, "must be finite and >= 0 " + got(value));
  if (value > kMaxWeight || (value > 0.0 && value < 1.0 / kMaxWeight))
    fail_field(where, field, "must be 0 or in [1e-6, 1e6] " + got(value));
}

/// Shape of one caller-owned output.
template <typename Derived>
void check_output_shape(const char* where, const char* arg, const Eigen::MatrixBase<Derived>& out,
                        Eigen::Index rows, Eigen::Index cols) {
  if (out.rows() != rows || out.cols() != cols) {
    std::ostringstream os;
    os << "has shape " << out.rows() << "x" << out.cols() << " but must be " << rows << "x" << cols
       << " (the shape of the embeddings)";
    fail(where, arg, os.str());
  }
}

/// Where an Eigen object with direct access keeps its entries: entry
/// (inner k, outer l) at data + k * inner_stride + l * outer_stride.
struct Layout {
  const char* data = nullptr;  ///< null: not direct access, or empty
  std::ptrdiff_t inner = 0, outer = 0, inner_stride = 0, outer_stride = 0, bytes = 0;
};
template <typename D>
Layout layout(const Eigen::MatrixBase<D>& m) {
  Layout l;
  if constexpr ((Eigen::internal::traits<D>::Flags & Eigen::DirectAccessBit) != 0) {
    if (m.size() == 0) return l;
    const D& x = m.derived();
    l.data = reinterpret_cast<const char*>(x.data());
    l.inner = x.innerSize();
    l.outer = x.outerSize();
    l.inner_stride = x.innerStride();
    l.outer_stride = x.outerStride();
    l.bytes = static_cast<std::ptrdiff_t>(sizeof(typename D::Scalar));
  }
  return l;
}

/// True when two layouts share an entry: exactly for two blocks of one
/// storage (same scalar size and strides, unit inner stride, e.g. the top
/// and bottom rows of one column-major matrix), conservatively (their byte
/// ranges overlap) otherwise.
inline bool overlap(const Layout& a, const Layout& b) {
  if (!a.data || !b.data) return false;
  const auto end = [](const Layout& l) {
    return l.data + ((l.outer - 1) * l.outer_stride + (l.inner - 1) * l.inner_stride + 1) * l.bytes;
  };
  const std::less<const char*> lt;
  if (!(lt(a.data, end(b)) && lt(b.data, end(a)))) return false;
  const std::ptrdiff_t diff = b.data - a.data;
  if (a.bytes != b.bytes || a.inner_stride != 1 || b.inner_stride != 1 || a.outer_stride != b.outer_stride ||
      diff % a.bytes != 0 || a.inner > a.outer_stride || b.inner > b.outer_stride)
    return true;
  const std::ptrdiff_t s = a.outer_stride, d = diff / a.bytes;
  const std::ptrdiff_t ob = d >= 0 ? d / s : -((-d + s - 1) / s);  // floor division
  const std::ptrdiff_t ib = d - ob * s;                            // in [0, s)
  const bool inner = ib < a.inner && 0 < ib + b.inner;
  const bool inner_wrap = ib + b.inner > s && ib + b.inner - s > 0;  // b's rows spill past the stride
  const bool outer = ob < a.outer && 0 < ob + b.outer;
  const bool outer_next = ob + 1 < a.outer && 0 < ob + 1 + b.outer;
  return (inner && outer) || (inner_wrap && outer_next);
}

/// Two caller-owned outputs must not share memory (the later write would
/// silently overwrite the earlier).
template <typename A, typename B>
void check_distinct_outputs(const char* where, const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b,
                            const char* a_name = "grad_a", const char* b_name = "grad_b") {
  if (overlap(layout(a), layout(b)))
    fail(where, b_name, std::string("shares memory with '") + a_name + "': every gradient needs its own storage");
}

/// The two views of a batch: same shape, d >= 1, at least `min_rows` rows.
template <typename DA, typename DB>
void check_views(const char* where, const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                 Eigen::Index min_rows = 2) {
  if (za.rows() != zb.rows() || za.cols() != zb.cols()) {
    std::ostringstream os;
    os << "has shape " << zb.rows() << "x" << zb.cols() << " but 'za' has " << za.rows() << "x" << za.cols()
       << " (row i of both views is instance i)";
    fail(where, "zb", os.str());
  }
  if (za.cols() < 1) fail(where, "za", "has 0 columns: the embedding dimension d must be >= 1");
  if (za.rows() < min_rows) {
    std::ostringstream os;
    os << "has " << za.rows() << " rows: at least " << min_rows << " samples are needed for a negative";
    fail(where, "za", os.str());
  }
}

/// The one view of a batch: d >= 1, at least `min_rows` rows.
template <typename D>
void check_view(const char* where, const Eigen::MatrixBase<D>& z, Eigen::Index min_rows) {
  if (z.cols() < 1) fail(where, "z", "has 0 columns: the embedding dimension d must be >= 1");
  if (z.rows() < min_rows) {
    std::ostringstream os;
    os << "has " << z.rows() << " rows: at least " << min_rows << " are needed";
    fail(where, "z", os.str());
  }
}

/// Validates optional instance ids and returns the number of ordered
/// cross-view negative pairs: n^2 - sum over ids of (count)^2 (n(n-1) without ids).
inline double count_negatives(const char* where, Eigen::Index n, Span<const Eigen::Index> ids) {
  if (!ids.given()) return static_cast<double>(n) * static_cast<double>(n - 1);
  if (static_cast<Eigen::Index>(ids.size()) != n)
    fail(where, "call.instance_ids",
         "has " + std::to_string(ids.size()) + " entries but the batch has " + std::to_string(n) + " rows");
  std::map<Eigen::Index, double> counts;
  for (Eigen::Index id : ids) counts[id] += 1.0;
  double same = 0;
  for (const auto& c : counts) same += c.second * c.second;
  const double negatives = static_cast<double>(n) * static_cast<double>(n) - same;
  if (negatives <= 0) fail(where, "call.instance_ids", "gives every pair the same id: there is no negative pair");
  return negatives;
}

/// Optional instance ids of a batch, validated after the views (so shape
/// errors come first); returns their data, or null without ids.
template <typename DA, typename DB>
const Eigen::Index* checked_ids(const char* where, const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                                Span<const Eigen::Index> ids) {
  if (!ids.given()) return nullptr;
  check_views(where, za, zb);
  count_negatives(where, za.rows(), ids);
  return ids.data();
}

/// Which CallOptions fields a loss defines.
struct Accepts {
  bool reduction = false;  ///< reduction, anchor_weights and per_anchor
  bool ids = false;
  bool labels = false;
  bool process_group = false;  ///< computed across processes (losses on the engine)
};

/// Rejects every option of `call` that the loss does not define (rather than
/// silently ignoring it).
template <typename S>
void check_call(const char* where, const CallOptions<S>& call, Accepts a) {
  if (!a.reduction) {
    if (call.reduction != Reduction::Mean)
      fail(where, "call.reduction", "must be Reduction::Mean: this loss has no per-anchor losses to sum or return");
    if (call.anchor_weights.given())
      fail(where, "call.anchor_weights", "is not defined for this loss (it has no per-anchor losses)");
    if (call.per_anchor.given())
      fail(where, "call.per_anchor", "is not defined for this loss (it has no per-anchor losses)");
  }
  if (!a.ids && call.instance_ids.given())
    fail(where, "call.instance_ids", "is not defined for this loss (the caller chooses its negatives)");
  if (!a.labels && call.labels.given())
    fail(where, "call.labels", "is not defined for this loss (use call.instance_ids to mask same-class pairs)");
  if (!a.process_group && call.process_group)
    fail(where, "call.process_group",
         "is not supported by this loss: it runs per process (see the README, 'Across processes')");
}

/// Validates the reduction of a call for `anchors` anchors and returns the
/// coefficient a_r of every anchor in `coef` (mean: w_r / A, sum and none: w_r).
template <typename S, typename Coef>
void anchor_coefficients(const char* where, const CallOptions<S>& call, Eigen::Index anchors, Coef& coef) {
  if (call.reduction == Reduction::None && !call.per_anchor.given())
    fail(where, "call.per_anchor", "is required with Reduction::None (it receives the per-anchor losses)");
  if (call.per_anchor.given() && static_cast<Eigen::Index>(call.per_anchor.size()) != anchors)
    fail(where, "call.per_anchor",
         "has " + std::to_string(call.per_anchor.size()) + " entries but the loss has " + std::to_string(anchors) +
             " anchors");
  const S scale = call.reduction == Reduction::Mean ? S(1) / static_cast<S>(anchors) : S(1);
  resize_buffer(coef, anchors);
  coef.setConstant(scale);
  if (!call.anchor_weights.given()) return;
  const auto& w = call.anchor_weights;
  if (static_cast<Eigen::Index>(w.size()) != anchors)
    fail(where, "call.anchor_weights",
         "has " + std::to_string(w.size()) + " entries but the loss has " + std::to_string(anchors) + " anchors");
  for (Eigen::Index r = 0; r < anchors; ++r) {
    const S wr = w[static_cast<std::size_t>(r)];
    if (!(std::isfinite(wr) && wr >= S(0) && wr <= S(kMaxAnchorWeight)))
      fail(where, "call.anchor_weights", "entry " + std::to_string(r) + " must be in [0, 1e12] " + got(wr));
    coef[r] *= wr;
  }
}

/// Copies the per-anchor losses of a successful call to the caller.
template <typename S>
void publish_per_anchor(const CallOptions<S>& call, const std::vector<S>& losses) {
  if (!call.per_anchor.given()) return;
  std::copy(losses.begin(), losses.end(), call.per_anchor.begin());
}

/// Checks the views and sizes the gradients of an allocating result.
template <typename Result, typename DA, typename DB>
void size_result(Result& out, const char* where, const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb) {
  check_views(where, za, zb, 1);  // (the call checks the batch's rows: across processes one may hold a single pair)
  out.grad_a.resize(za.rows(), za.cols());
  out.grad_b.resize(zb.rows(), zb.cols());
}

}  // namespace detail
}  // namespace contrastive
