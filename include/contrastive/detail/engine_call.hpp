// contrastive — one call of a loss on the engine, in one process or across a
// ProcessGroup (internal).
// SPDX-License-Identifier: MIT
//
// Every loss on the engine is called through EngineCall::run(), which validates
// the call (nothing is written on an exception), loads and normalises the
// views, builds the loss's kernel for the batch and runs the engine.
//
// Across processes (call.process_group with more than one process) each
// process holds n_p pairs; the batch is their concatenation in rank order.
//   1. Every process sizes the exchange's own buffers (a record per
//      process, the row counts), then checks its own part (shapes,
//      finiteness, ids, labels, weights, outputs) without throwing yet,
//      and normalises its rows.
//   2. One all_reduce sums the batch's rows n, the processes that failed
//      in 1 and the bytes of a row (d sizeof(S)), with a failure flag
//      (reduce_or_fail): a process that could not size the exchange's
//      buffers makes every process throw there.
//   3. When no process failed and the rows' widths agree, every process
//      sizes the buffers of the global batch (W: 2 n d scalars; norms, ids,
//      labels, weights).
//   4. All processes exchange a fixed-size record (scalar type, d, n_p, the
//      call's options, the loss's parameters, the first local error of 1
//      or 3) with one all_gather, and all of them throw the same
//      std::invalid_argument if any process's input was bad or the records
//      disagree (another local failure, e.g. std::bad_alloc: that process
//      rethrows it, the others throw std::runtime_error): no process is
//      left waiting in a later collective.
//   5. The normalised rows (and norms, ids, labels, weights) are gathered,
//      so every process holds W of the global batch.
//   6. The engine computes ~1/P of the tiles on each process, merges the
//      per-row statistics (all_reduce) and sums dW over processes keeping
//      each process's rows (reduce_scatter); pair terms and the backward
//      through the normalisation are done for this process's rows only.
//      A failure on one process after the gathers and before the engine's
//      first all_reduce (the batch's id checks, building the kernel, the
//      first pass) or in the second pass rides as a flag on that pass's
//      all_reduce: every process throws there.  After the last collective
//      (a value call's finish(), a gradient's pair terms and backward) a
//      failure throws on its own process only; nobody is left waiting.
// The loss provides: name(), options(), accepts(), anchors(n),
// requires_labels(), signature() and with_kernel(batch, f).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "../api.hpp"
#include "../engine.hpp"
#include "checks.hpp"

namespace contrastive {
namespace detail {

/// The batch a kernel is built for: the global one across processes.
template <typename S>
struct Batch {
  Eigen::Index n = 0;                  ///< instances (pairs) of the batch
  const Eigen::Index* ids = nullptr;   ///< instance ids (n), or null
  Span<const Eigen::Index> labels;     ///< class labels (n), or not given
  const ColArray<S>* coef = nullptr;   ///< per-anchor coefficients, or null (the mean)
  S* losses = nullptr;                 ///< per-anchor losses out, or null
  bool want_dtau = false;              ///< the call wants dL/dtau
};

/// FNV-1a over bytes (the same on every process of a build).
inline std::uint64_t fnv1a(const void* data, std::size_t bytes, std::uint64_t h = 1469598103934665603ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

/// What every process of a call tells the others before any data moves.
struct CallRecord {
  std::int64_t scalar_bytes = 0, d = 0, rows = 0, tile_size = 0;
  std::int64_t flags = 0;          // gradient, dtau, reduction, ids, labels, weights, per_anchor
  std::uint64_t name_hash = 0, params_hash = 0;
  double params[6] = {0, 0, 0, 0, 0, 0};  // the first parameters, for the message
  std::int64_t error_kind = 0;     // 0 none, 1 bad input (std::invalid_argument), 2 another failure
  char error[456] = {};            // the local error's message
};

/// Throws on every process when any process failed before the exchange or
/// the processes disagree on the call: the same std::invalid_argument for
/// bad input on any process (or a disagreement); for another failure (e.g.
/// std::bad_alloc, `own` on the process where it happened) that process
/// rethrows its own exception and the others throw std::runtime_error.
inline void agree(const char* where, const ProcessGroup& group, const CallRecord& mine, std::vector<CallRecord>& all,
                  const std::exception_ptr& own) {
  eigen_assert(all.size() == static_cast<std::size_t>(group.size()));  // (sized before, EngineCall::run's step 1)
  group.all_gather(&mine, sizeof(CallRecord), all.data());
  if (own) std::rethrow_exception(own);
  for (std::size_t p = 0; p < all.size(); ++p)
    if (all[p].error_kind != 0) {
      std::ostringstream os;
      std::size_t len = 0;
      while (len < sizeof all[p].error && all[p].error[len] != '\0') ++len;
      os << "process " << p << " of " << all.size() << ": " << std::string(all[p].error, len);
      if (all[p].error_kind == 1) throw std::invalid_argument(os.str());
      throw std::runtime_error(std::string(where) + ": " + os.str() +
                               "; every process of the call throws (the failed ones their own exception)");
    }
  const auto disagree = [&](const char* what, auto get) {
    for (std::size_t p = 1; p < all.size(); ++p)
      if (!(get(all[p]) == get(all[0]))) {
        std::ostringstream os;
        os << "processes disagree on " << what << " (process 0: " << get(all[0]) << ", process " << p << ": "
           << get(all[p]) << "): every process must make the same call";
        fail(where, "call.process_group", os.str());
      }
  };
  disagree("the scalar type (bytes)", [](const CallRecord& r) { return r.scalar_bytes; });
  disagree("the loss", [](const CallRecord& r) { return r.name_hash; });
  disagree("the embedding dimension d", [](const CallRecord& r) { return r.d; });
  disagree("the loss parameters", [](const CallRecord& r) { return r.params_hash; });
  disagree("EngineOptions::tile_size", [](const CallRecord& r) { return r.tile_size; });
  disagree("the call (value or gradients, dL/dtau, reduction, ids, labels, weights, per-anchor losses)",
           [](const CallRecord& r) { return r.flags; });
}

/// Views of a loss: Loss::kViews when it declares it (1: one batch), else 2.
template <typename L, typename = void>
struct views_of : std::integral_constant<int, 2> {};
template <typename L>
struct views_of<L, std::void_t<decltype(L::kViews)>> : std::integral_constant<int, L::kViews> {};

/// Smallest batch of a loss: Loss::kMinRows when it declares it, else 2 (a
/// negative needs two samples).
template <typename L, typename = void>
struct min_rows_of : std::integral_constant<Eigen::Index, 2> {};
template <typename L>
struct min_rows_of<L, std::void_t<decltype(L::kMinRows)>> : std::integral_constant<Eigen::Index, L::kMinRows> {};

/// The output overload's null gradients (a value-only call).
template <typename S>
const Eigen::MatrixBase<Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>>* no_gradient() {
  return nullptr;
}

/// The one path of every call of a loss on the engine (losses befriend it
/// to expose accepts(), requires_labels(), signature() and with_kernel()).
/// A loss of one view (views_of<Loss> == 1) is called with za = zb = z and
/// no grad_b.
struct EngineCall {
/// Validates, loads and runs one call of `loss` (gradients when ga, gb are
/// given); returns the value, leaving the kernel's results in b.cs.
/// `prior`: a failure of the caller's own before the call (e.g. allocating
/// a Result); the call then fails with it, across processes after telling
/// the others (join_failed).
template <typename Loss, typename S, typename DA, typename DB, typename GA, typename GB>
static double run(const Loss& loss, Buffers<S>& b, const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                  const Eigen::MatrixBase<GA>* ga, const Eigen::MatrixBase<GB>* gb, bool want_dtau,
                  const CallOptions<S>& call, const std::exception_ptr& prior = nullptr) {
  const char* where = loss.name();
  const bool want_grad = ga != nullptr;
  constexpr int views = views_of<Loss>::value;
  const auto check_inputs = [&](Eigen::Index min_rows) {
    if (views == 2) check_views(where, za, zb, min_rows);
    else check_view(where, za, min_rows);
  };
  const auto check_outputs = [&] {
    if (!want_grad) return;
    check_output_shape(where, views == 2 ? "grad_a" : "grad", *ga, za.rows(), za.cols());
    if (views == 2) {
      check_output_shape(where, "grad_b", *gb, zb.rows(), zb.cols());
      check_distinct_outputs(where, *ga, *gb);
    }
  };
  const ProcessGroup* group = call.process_group;
  Accepts acc = loss.accepts();
  acc.process_group = true;
  const bool per = call.reduction != Reduction::Mean || call.anchor_weights.given() || call.per_anchor.given();
  const auto check_labels = [&](Eigen::Index rows) {
    if (!loss.requires_labels()) return;
    if (!call.labels.given()) fail(where, "call.labels", "is required: one class label per row of 'za'");
    if (static_cast<Eigen::Index>(call.labels.size()) != rows)
      fail(where, "call.labels",
           "has " + std::to_string(call.labels.size()) + " entries but the batch has " + std::to_string(rows) + " rows");
  };

  if (group == nullptr || group->size() == 1) {
    if (prior) std::rethrow_exception(prior);
    check_call(where, call, acc);
    check_inputs(min_rows_of<Loss>::value);
    check_outputs();
    const Eigen::Index n = za.rows();
    Batch<S> batch;
    batch.n = n;
    batch.want_dtau = want_dtau;
    if (call.instance_ids.given()) {
      count_negatives(where, n, call.instance_ids);
      batch.ids = call.instance_ids.data();
    }
    check_labels(n);
    batch.labels = call.labels;
    if (per) {
      const Eigen::Index a = loss.anchors(n);
      anchor_coefficients(where, call, a, b.coef);
      b.losses.assign(static_cast<std::size_t>(a), S(0));
      batch.coef = &b.coef;
      batch.losses = b.losses.data();
    }
    const bool two = views == 2 && Engine<S>::views_in_parallel(loss.options(), n, za.cols());
    if (views == 2) Engine<S>::load(b, za, zb, where, two);
    else Engine<S>::load_one(b, za, where);
    const double v = loss.with_kernel(batch, [&](const auto& k) {
      return Engine<S>::run(k, b, loss.options(), want_grad, where);
    });
    if (want_grad) {
      if (views == 2) Engine<S>::backprop(b, *ga, *gb, two);
      else backprop_rows(b.w, b.inv_norm, b.clamped, b.dw, 0, *ga);
    }
    publish_per_anchor(call, b.losses);
    return v;
  }

  // ---- across processes ----------------------------------------------------
  const int P = group->size(), rank = group->rank();
  const Eigen::Index np = za.rows(), d = za.cols();
  CallRecord mine;
  mine.scalar_bytes = static_cast<std::int64_t>(sizeof(S));
  mine.d = d;
  mine.rows = np;
  mine.tile_size = loss.options().tile_size;
  mine.flags = (want_grad ? 1 : 0) | (want_dtau ? 2 : 0) | (static_cast<int>(call.reduction) << 2) |
               (call.instance_ids.given() ? 16 : 0) | (call.labels.given() ? 32 : 0) |
               (call.anchor_weights.given() ? 64 : 0) | (call.per_anchor.given() ? 128 : 0);
  mine.name_hash = fnv1a(where, std::strlen(where));
  const Eigen::Index a_local = loss.anchors(np);
  // 1. The exchange's own buffers (a record per process, the distribution's
  // row counts): a process that cannot size them cannot take part in the
  // exchange, and says so in the all_reduce before it (step 2).
  std::vector<CallRecord> all;
  Distribution dist;
  std::exception_ptr cannot_exchange;
  try {
    all.resize(static_cast<std::size_t>(P));
    dist.rows.resize(static_cast<std::size_t>(P));
  } catch (...) {
    cannot_exchange = std::current_exception();
  }
  // A failure of this process from here to the exchange rides on its record:
  // bad input as error_kind 1 (every process throws the same
  // std::invalid_argument), any other as 2 (this process rethrows it after
  // the exchange, the others throw std::runtime_error).
  std::exception_ptr own_failure;
  const auto hold = [&](const auto& step) {
    try {
      step();
    } catch (const std::invalid_argument& e) {
      mine.error_kind = 1;
      std::strncpy(mine.error, e.what(), sizeof(mine.error) - 1);
    } catch (const std::exception& e) {
      mine.error_kind = 2;
      std::strncpy(mine.error, e.what(), sizeof(mine.error) - 1);
      own_failure = std::current_exception();
    } catch (...) {
      mine.error_kind = 2;
      std::strncpy(mine.error, "an exception", sizeof(mine.error) - 1);
      own_failure = std::current_exception();
    }
  };
  if (!cannot_exchange) hold([&] {
      if (prior) std::rethrow_exception(prior);
      const std::vector<double> params = loss.signature();
      mine.params_hash = fnv1a(params.data(), params.size() * sizeof(double));
      for (std::size_t k = 0; k < params.size() && k < 6; ++k) mine.params[k] = params[k];
      check_call(where, call, acc);
      check_inputs(1);  // a process may hold a single pair
      check_outputs();
      if (call.instance_ids.given() && static_cast<Eigen::Index>(call.instance_ids.size()) != np)
        fail(where, "call.instance_ids",
             "has " + std::to_string(call.instance_ids.size()) + " entries but this process has " +
                 std::to_string(np) + " rows");
      check_labels(np);
      if (per) anchor_coefficients(where, call, a_local, b.coef);  // validates this process's weights and outputs
      resize_buffer(b.w_local, views * np, d);
      resize_buffer(b.inv_local, views * np);
      b.clamped_local.assign(static_cast<std::size_t>(views * np), 0);
      load_rows(b.w_local, b.inv_local, b.clamped_local, 0, za, where, views == 2 ? "za" : "z");
      if (views == 2) load_rows(b.w_local, b.inv_local, b.clamped_local, np, zb, where, "zb");
    });
  // 2. One all_reduce: the batch's rows n (summed over the processes that
  // did not fail), how many processes failed, the bytes of a row
  // (d sizeof(S), summed), and whether one cannot take part in the exchange
  // (reduce_or_fail: then every process throws here).
  const double width = static_cast<double>(d) * static_cast<double>(sizeof(S));
  double tally[4] = {mine.error_kind == 0 ? static_cast<double>(np) : 0.0, mine.error_kind != 0 ? 1.0 : 0.0, width,
                     0.0};
  reduce_or_fail(*group, tally, 3, cannot_exchange, where);
  // 3. Unless a process failed or the rows' widths differ (the exchange
  // says which: a mismatched d is bad input, not an allocation to try),
  // size every buffer of the global batch before the exchange, which
  // carries a failure here (e.g. std::bad_alloc of the gathered W): no
  // process is left waiting in the gathers.  (The sums are exact: integers
  // below 2^53.)
  const auto n = static_cast<Eigen::Index>(tally[0]);
  const Eigen::Index a_global = loss.anchors(n);
  Batch<S> batch;
  ColArray<S> w_local;
  if (tally[1] == 0 && tally[2] == static_cast<double>(P) * width) hold([&] {
      b.views = views;
      resize_buffer(b.w, views * n, d);
      resize_buffer(b.inv_norm, views * n);
      b.clamped.assign(static_cast<std::size_t>(views * n), 0);
      if (call.instance_ids.given()) b.ids.resize(static_cast<std::size_t>(n));
      if (call.labels.given()) b.labels.resize(static_cast<std::size_t>(n));
      if (per) {
        resize_buffer(b.weights, a_global);
        resize_buffer(b.coef, a_global);
        b.losses.assign(static_cast<std::size_t>(a_global), S(0));
        if (call.anchor_weights.given()) resize_buffer(w_local, a_local);
      }
    });
  // 4. The exchange: every process throws if any failed or they disagree
  // (so from here on the rows' widths agree and the buffers are sized).
  agree(where, *group, mine, all, own_failure);
  // This process's rows start at `offset` in the batch (n, as summed above).
  Eigen::Index offset = 0;
  for (int p = 0; p < P; ++p) {
    const auto rows_p = static_cast<Eigen::Index>(all[static_cast<std::size_t>(p)].rows);
    if (p < rank) offset += rows_p;
    dist.rows[static_cast<std::size_t>(p)] = all[static_cast<std::size_t>(p)].rows;
  }
  eigen_assert(offset + np <= n && b.w.rows() == views * n);
  if (n < min_rows_of<Loss>::value)  // (the same on every process)
    fail(where, views == 2 ? "za" : "z",
         "has " + std::to_string(n) + " rows over all processes: at least " +
             std::to_string(min_rows_of<Loss>::value) + " are needed");
  dist.group = group;
  dist.rank = rank;
  dist.procs = P;
  dist.local = np;
  dist.offset = offset;
  dist.n = n;
  const auto* counts = dist.rows.data();
  const auto gather = [&](const auto* mine_rows, auto* all_rows, std::size_t row_bytes) {
    group->all_gather_rows(mine_rows, all_rows, counts, row_bytes);
  };
  // 5. Gather the normalised rows, their norms and the per-instance options.
  for (Eigen::Index view = 0; view < views; ++view) {
    gather(b.w_local.data() + view * np * d, b.w.data() + view * n * d, sizeof(S) * static_cast<std::size_t>(d));
    gather(b.inv_local.data() + view * np, b.inv_norm.data() + view * n, sizeof(S));
    gather(b.clamped_local.data() + view * np, b.clamped.data() + view * n, 1);
  }
  if (call.instance_ids.given()) gather(call.instance_ids.data(), b.ids.data(), sizeof(Eigen::Index));
  if (call.labels.given()) gather(call.labels.data(), b.labels.data(), sizeof(Eigen::Index));
  // Anchors: this process's are [its rows of za; its rows of zb] (as many
  // as the loss has per instance), the batch's [all za; all zb].
  const Eigen::Index anchor_views = a_local / np;  // 1 one-way, 2 symmetric
  if (per && call.anchor_weights.given()) {
    for (Eigen::Index r = 0; r < a_local; ++r) w_local[r] = call.anchor_weights[static_cast<std::size_t>(r)];
    for (Eigen::Index view = 0; view < anchor_views; ++view)
      gather(w_local.data() + view * np, b.weights.data() + view * n, sizeof(S));
  }
  // 6. The engine, on this process's tiles.  What comes before its first
  // collective (the batch's checks, building the kernel) is guarded: a
  // process that fails there joins that collective failed.
  bool entered = false;
  double v = 0;
  try {
    batch.n = n;
    batch.want_dtau = want_dtau;
    if (call.instance_ids.given()) {
      count_negatives(where, n, Span<const Eigen::Index>(b.ids.data(), b.ids.size()));  // the same on every process
      batch.ids = b.ids.data();
    }
    if (call.labels.given()) batch.labels = Span<const Eigen::Index>(b.labels.data(), b.labels.size());
    if (per) {
      if (!call.anchor_weights.given()) b.weights.setOnes();
      const S scale = call.reduction == Reduction::Mean ? S(1) / static_cast<S>(a_global) : S(1);
      b.coef = scale * b.weights;
      batch.coef = &b.coef;
      batch.losses = b.losses.data();
    }
    v = loss.with_kernel(batch, [&](const auto& k) {
      entered = true;
      return Engine<S>::run(k, b, loss.options(), want_grad, where, dist);
    });
  } catch (...) {
    if (entered) throw;
    Engine<S>::fail_before_run(dist, std::current_exception(), where);
  }
  // 7. This process's rows out.
  if (want_grad) {
    if (views == 2) backprop_two(b.w, b.inv_norm, b.clamped, b.dw, dist.offset, *ga, n + dist.offset, *gb);
    else backprop_rows(b.w, b.inv_norm, b.clamped, b.dw, dist.offset, *ga);
  }
  if (call.per_anchor.given()) {
    for (Eigen::Index v2 = 0; v2 < anchor_views; ++v2)
      for (Eigen::Index i = 0; i < np; ++i)
        call.per_anchor[static_cast<std::size_t>(v2 * np + i)] = b.losses[static_cast<std::size_t>(v2 * n + dist.offset + i)];
  }
  return v;
}

/// A caller's failure before a call of `loss` (e.g. allocating a Result):
/// across processes this process still takes part in the call's first
/// collectives, where every process throws (bad input as the same
/// std::invalid_argument, another failure as this process's own exception
/// here and std::runtime_error on the others); alone it just rethrows.
template <typename Loss, typename S, typename DA, typename DB>
[[noreturn]] static void join_failed(const Loss& loss, Buffers<S>& b, const Eigen::MatrixBase<DA>& za,
                                     const Eigen::MatrixBase<DB>& zb, const CallOptions<S>& call,
                                     const std::exception_ptr& err) {
  run(loss, b, za, zb, no_gradient<S>(), no_gradient<S>(), false, call, err);
  std::rethrow_exception(err);  // (not reached: the call throws)
}
};

}  // namespace detail
}  // namespace contrastive
