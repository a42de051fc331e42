// contrastive — the random numbers of sampled negatives (internal).
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace contrastive {
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

/// The positions a partial Fisher-Yates shuffle of 0, 1, ..., m-1 has moved:
/// an open-addressing table whose storage is reused across shuffles (no
/// allocation once it has seen the largest k).  Unmoved positions map to
/// themselves.
class MovedPositions {
 public:
  /// Forgets every entry; room for `entries` of them.
  void reset(std::size_t entries) {
    std::size_t cap = 16;
    while (cap < 2 * entries) cap <<= 1;
    if (keys_.size() < cap) {
      keys_.assign(cap, kEmpty);
      values_.resize(cap);
      used_.reserve(cap);
    } else {
      for (std::size_t i : used_) keys_[i] = kEmpty;
    }
    used_.clear();
    mask_ = keys_.size() - 1;
  }
  /// The value at position `pos`.
  std::uint64_t at(std::uint64_t pos) const {
    for (std::size_t i = slot(pos);; i = (i + 1) & mask_) {
      if (keys_[i] == kEmpty) return pos;
      if (keys_[i] == pos) return values_[i];
    }
  }
  /// Sets the value at position `pos`.
  void set(std::uint64_t pos, std::uint64_t value) {
    for (std::size_t i = slot(pos);; i = (i + 1) & mask_) {
      if (keys_[i] == kEmpty) {
        keys_[i] = pos;
        values_[i] = value;
        used_.push_back(i);
        return;
      }
      if (keys_[i] == pos) {
        values_[i] = value;
        return;
      }
    }
  }

 private:
  static constexpr std::uint64_t kEmpty = ~std::uint64_t(0);
  std::size_t slot(std::uint64_t pos) const { return static_cast<std::size_t>(mix64(pos)) & mask_; }
  std::vector<std::uint64_t> keys_, values_;
  std::vector<std::size_t> used_;
  std::size_t mask_ = 0;
};

}  // namespace detail
}  // namespace contrastive
