// contrastive — resizing the buffers a Workspace keeps, so that a failed
// allocation leaves them valid (internal).
// SPDX-License-Identifier: MIT
//
// Eigen 3.4's resize() of a dynamic matrix frees the old storage before it
// allocates the new one.  When that allocation throws (std::bad_alloc), the
// object keeps its old size and a pointer to the freed storage, which its
// destructor, or the next resize, frees a second time.  A buffer that
// outlives the call (the Workspace's, a thread slot's, the GEMM packing
// buffers) is therefore emptied before it changes size: a failed growth
// leaves it empty, the exception reaches the caller, and the Workspace can
// be used again (or destroyed).  Growing an empty object is safe as it is.
#pragma once

#include <Eigen/Core>

namespace contrastive {
namespace detail {

/// x.resize(rows, cols), leaving x empty (not dangling) if the allocation throws.
template <typename X>
void resize_buffer(X& x, Eigen::Index rows, Eigen::Index cols) {
  if (x.rows() * x.cols() != rows * cols) x.resize(0, 0);
  x.resize(rows, cols);
}

/// x.resize(size) of a vector, leaving x empty (not dangling) if the allocation throws.
template <typename X>
void resize_buffer(X& x, Eigen::Index size) {
  if (x.size() != size) x.resize(0);
  x.resize(size);
}

/// resize_buffer(x, size...), then every entry zero.
template <typename X, typename... Size>
void zero_buffer(X& x, Size... size) {
  resize_buffer(x, size...);
  x.setZero();
}

}  // namespace detail
}  // namespace contrastive
