// contrastive — the vocabulary every loss shares: the options of a call, the
// allocated result, and a non-owning view of a caller's array.
// SPDX-License-Identifier: MIT
//
// The one calling convention of the library (every loss, every overload):
//
//   loss.value(inputs..., [workspace,] call = {})
//   loss.value_and_grad(inputs..., outputs..., scalar-gradient pointers..., workspace, call = {})
//   loss.value_and_grad(inputs..., call = {})            -> Result<Scalar>
//
// inputs   any dense Eigen expressions, rows are samples;
// outputs  any writable dense Eigen objects of the inputs' shapes (an optional
//          one may be nullptr);
// scalar gradients  Scalar* (each may be nullptr): dL/dtau, or SigLIP's
//          dL/dt and dL/db;
// call     a CallOptions<Scalar>: reduction, anchor weights, per-anchor
//          losses, instance ids, labels.  A loss rejects an option it does
//          not define with std::invalid_argument naming it.
#pragma once

#include <array>
#include <cstddef>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

namespace contrastive {

/// A non-owning view of a contiguous array: pointer and size, as the caller's
/// std::vector, std::array, raw buffer or contiguous Eigen vector provides.
/// A default-constructed Span is "not given"; a Span made from an empty
/// container is given and empty (and then checked like any other).
template <typename T>
class Span {
 public:
  /// The element type without const.
  using value_type = std::remove_const_t<T>;

  /// Not given.
  constexpr Span() = default;
  /// `size` entries at `data` (given, even when size is 0).
  constexpr Span(T* data, std::size_t size) : data_(data), size_(size), given_(true) {}
  /// The entries of a std::vector (its storage must outlive the call).
  template <typename A, typename U = T, typename = std::enable_if_t<std::is_const<U>::value>>
  Span(const std::vector<value_type, A>& v) : Span(v.data(), v.size()) {}  // NOLINT: implicit by design
  /// The entries of a writable std::vector.
  template <typename A>
  Span(std::vector<value_type, A>& v) : Span(v.data(), v.size()) {}  // NOLINT: implicit by design
  /// The entries of a std::array.
  template <std::size_t N>
  Span(std::array<value_type, N>& a) : Span(a.data(), N) {}  // NOLINT: implicit by design
  /// The entries of a const std::array (read-only spans only).
  template <std::size_t N, typename U = T, typename = std::enable_if_t<std::is_const<U>::value>>
  Span(const std::array<value_type, N>& a) : Span(a.data(), N) {}  // NOLINT: implicit by design
  /// The coefficients of a contiguous Eigen vector (Matrix, Array or Map of
  /// one column or one row, with inner stride 1).
  template <typename D, typename = std::enable_if_t<(D::IsVectorAtCompileTime != 0)>>
  Span(const Eigen::PlainObjectBase<D>& v)  // NOLINT: implicit by design
      : Span(const_cast<T*>(v.data()), static_cast<std::size_t>(v.size())) {
    static_assert(std::is_const<T>::value, "contrastive::Span: a const Eigen vector gives a Span<const T>");
  }
  /// The coefficients of a writable contiguous Eigen vector.
  template <typename D, typename = std::enable_if_t<(D::IsVectorAtCompileTime != 0)>>
  Span(Eigen::PlainObjectBase<D>& v)  // NOLINT: implicit by design
      : Span(v.data(), static_cast<std::size_t>(v.size())) {}

  /// A writable span converts to a read-only one.
  template <typename U, typename = std::enable_if_t<std::is_same<const U, T>::value && !std::is_same<U, T>::value>>
  constexpr Span(const Span<U>& other)  // NOLINT: implicit by design
      : data_(other.data()), size_(other.size()), given_(other.given()) {}

  /// First entry (null when not given).
  constexpr T* data() const { return data_; }
  /// Number of entries.
  constexpr std::size_t size() const { return size_; }
  /// True when there are no entries.
  constexpr bool empty() const { return size_ == 0; }
  /// True unless default-constructed.
  constexpr bool given() const { return given_; }
  /// Entry i (unchecked).
  constexpr T& operator[](std::size_t i) const { return data_[i]; }
  /// Iterator to the first entry.
  constexpr T* begin() const { return data_; }
  /// Iterator past the last entry.
  constexpr T* end() const { return data_ + size_; }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
  bool given_ = false;
};

/// The processes that together hold one batch, for losses computed across
/// processes (the global batch is the concatenation of every process's rows,
/// in rank order).  The library's core knows only this interface;
/// contrastive/mpi.hpp implements it on an MPI communicator.  Every call
/// here is collective: all processes of the group make it, in the same
/// order.  Counts are rows; a row is `row_bytes` bytes (or `row_len`
/// scalars), so no count exceeds the rows of the batch.
class ProcessGroup {
 public:
  /// Element-wise reductions.
  enum class Op { Sum, Max };
  virtual ~ProcessGroup() = default;
  /// This process's index, 0 .. size() - 1.
  virtual int rank() const = 0;
  /// Number of processes.
  virtual int size() const = 0;
  /// Every process gives `bytes` bytes (the same number everywhere); `all`
  /// receives them in rank order (size() * bytes bytes).
  virtual void all_gather(const void* mine, std::size_t bytes, void* all) const = 0;
  /// Process p gives rows[p] rows of row_bytes bytes; `all` receives every
  /// process's rows in rank order.
  virtual void all_gather_rows(const void* mine, void* all, const long long* rows, std::size_t row_bytes) const = 0;
  /// In place, element-wise over processes, `count` floats.
  virtual void all_reduce(float* data, std::size_t count, Op op) const = 0;
  /// In place, element-wise over processes, `count` doubles.
  virtual void all_reduce(double* data, std::size_t count, Op op) const = 0;
  /// `all` holds sum_p rows[p] rows of row_len floats on every process; their
  /// element-wise sum over processes is formed and process p receives its
  /// rows[p] rows (the p-th block) in `mine`.
  virtual void reduce_scatter_rows(const float* all, float* mine, const long long* rows, std::size_t row_len) const = 0;
  /// The same for doubles.
  virtual void reduce_scatter_rows(const double* all, double* mine, const long long* rows,
                                   std::size_t row_len) const = 0;
};

/// How the per-anchor losses l_r become the loss value.
enum class Reduction {
  Mean,  ///< (1/A) sum_r w_r l_r over the A anchors (the default; w_r = 1 unless given)
  Sum,   ///< sum_r w_r l_r
  None   ///< the l_r go to CallOptions::per_anchor (required); the value is sum_r w_r l_r
};

/// The options of one call, the last argument of every loss call.  An
/// aggregate of documented defaults (everything "not given"), with chainable
/// setters:
///
///     contrastive::CallOptions<float> call;
///     call.instance_ids = ids;                       // or
///     loss.value(za, zb, ws, contrastive::CallOptions<float>{}.with_ids(ids));
///
/// Anchors are numbered as rows of the stacked batch [za; zb]: anchor r < n is
/// row r of `za` (the queries), n + i is row i of `zb` (symmetric losses).
/// The returned value is always the quantity whose gradients are returned.
/// A loss that does not define an option throws std::invalid_argument naming
/// it ("argument 'call.labels' ...") instead of ignoring it.
template <typename Scalar>
struct CallOptions {
  /// Mean (default), Sum or None (see Reduction).
  Reduction reduction = Reduction::Mean;
  /// Optional per-anchor weights w_r, finite and >= 0, one per anchor (n
  /// one-way, 2n symmetric).  With the upstream gradient of per-anchor losses
  /// as weights the returned gradients are their exact chain rule.
  Span<const Scalar> anchor_weights{};
  /// Optional output of the per-anchor losses l_r: exactly one entry per
  /// anchor (required with Reduction::None).  Written only on success.
  Span<Scalar> per_anchor{};
  /// Optional instance ids, one per row of `za` (shared by both views):
  /// pairs of equal ids are never negatives (the pair (i, i) stays positive).
  Span<const Eigen::Index> instance_ids{};
  /// Class labels, one per row of `za` (losses with label-defined positives:
  /// SupCon, where they are required).
  Span<const Eigen::Index> labels{};
  /// Optional group of processes holding the rest of the batch: the loss is
  /// that of the global batch (every process's rows, in rank order), the
  /// value and scalar gradients are the global ones on every process, and
  /// the gradients are those of this process's rows.  Ids, labels, weights
  /// and per-anchor losses are this process's.  Losses on the engine only.
  const ProcessGroup* process_group = nullptr;

  /// Sets #reduction; returns *this for chaining.
  CallOptions& with_reduction(Reduction r) {
    reduction = r;
    return *this;
  }
  /// Sets #anchor_weights; returns *this.
  CallOptions& with_weights(Span<const Scalar> w) {
    anchor_weights = w;
    return *this;
  }
  /// Sets #per_anchor; returns *this.
  CallOptions& with_per_anchor(Span<Scalar> out) {
    per_anchor = out;
    return *this;
  }
  /// Sets #instance_ids; returns *this.
  CallOptions& with_ids(Span<const Eigen::Index> ids) {
    instance_ids = ids;
    return *this;
  }
  /// Sets #labels; returns *this.
  CallOptions& with_labels(Span<const Eigen::Index> l) {
    labels = l;
    return *this;
  }
  /// Sets #process_group; returns *this.
  CallOptions& with_process_group(const ProcessGroup& g) {
    process_group = &g;
    return *this;
  }
};

/// Everything the allocating `value_and_grad(inputs..., call)` of any loss
/// returns.  Fields a loss does not have stay empty / zero.
template <typename Scalar>
struct Result {
  /// Column-major dynamic matrix of the loss scalar.
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  Scalar value{};               ///< the loss (reduced as the call says)
  Matrix grad_a;                ///< dL/d(first input): za, or the queries
  Matrix grad_b;                ///< dL/d(second input): zb, or the positive keys
  Matrix grad_negative_keys;    ///< dL/dnegative_keys (InfoNCEWithNegatives only)
  Scalar grad_temperature{};    ///< dL/dtau (losses with a temperature)
  Scalar grad_logit_scale{};    ///< dL/dt (SigLIP)
  Scalar grad_logit_bias{};     ///< dL/db (SigLIP)
  std::vector<Scalar> per_anchor;  ///< l_r of every anchor (losses with anchors)
};

}  // namespace contrastive
