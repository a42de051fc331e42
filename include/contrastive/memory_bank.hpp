// contrastive — a FIFO memory bank of past keys (MoCo).
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <string>

#include <Eigen/Core>

#include "detail/checks.hpp"

namespace contrastive {

/// A FIFO queue of past keys to use as negatives (MoCo).  Keys are copied in;
/// the bank holds at most `capacity` rows and drops the oldest first.
///
/// Order within a training step: compute the loss with the bank's current
/// keys as negative_keys (pass grad_negative_keys = nullptr: no gradient
/// flows into stored keys), then enqueue() this step's keys.  The current
/// batch therefore never serves as its own negatives.  On the first step the
/// bank is empty and keys() has 0 rows: InfoNCEWithNegatives defines that
/// loss as 0 with zero gradients (only the positive is in the denominator),
/// so the loop needs no special first step.
template <typename Scalar>
class MemoryBank {
 public:
  /// Column-major dynamic matrix of the key scalar.
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

  /// A bank of at most `capacity` keys of width `dim` (both >= 1; checked
  /// before anything is allocated).
  MemoryBank(Eigen::Index capacity, Eigen::Index dim) : keys_(checked(capacity, "capacity"), checked(dim, "dim")) {}

  /// Largest number of stored keys.
  Eigen::Index capacity() const { return keys_.rows(); }
  /// Width of a key.
  Eigen::Index dim() const { return keys_.cols(); }
  /// Number of stored keys (<= capacity).
  Eigen::Index size() const { return size_; }
  /// True before the first enqueue() (and after clear()).
  bool empty() const { return size_ == 0; }
  /// Forgets every key (the storage stays).
  void clear() { size_ = head_ = 0; }

  /// Appends the rows of `keys` (oldest dropped when full); throws, leaving
  /// the bank unchanged, if the width differs or an entry is not finite.
  template <typename D>
  void enqueue(const Eigen::MatrixBase<D>& keys_in) {
    // An expression (e.g. a product) is evaluated once, not once per row.
    typename Eigen::internal::nested_eval<D, 2>::type keys(keys_in.derived());
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
  static Eigen::Index checked(Eigen::Index v, const char* field) {
    if (v < 1) detail::fail_field(kName, field, "must be >= 1 " + detail::got(v));
    return v;
  }
  Matrix keys_;
  Eigen::Index size_ = 0, head_ = 0;
};

}  // namespace contrastive
