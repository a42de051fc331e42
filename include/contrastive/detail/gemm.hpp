// contrastive — the engine's tile products with packing buffers it owns
// (internal; included by engine.hpp).
//
// Why: Eigen's GEMM allocates its two packing buffers on every product.  Up
// to EIGEN_STACK_ALLOCATION_LIMIT (128 KiB by default) they are on the stack;
// above it they come from malloc, and a buffer of a few hundred KiB is, in
// a process where glibc has not raised its mmap threshold, mapped and
// unmapped (or trimmed off the heap) on every call, so every product page-
// faults its buffers back in.  The engine issues thousands of tile-sized
// products per call (256 x 256 x d): at d = 256 in float, or d = 128 in
// double, the buffers pass the limit, and a plain training process ran
// NT-Xent 3.5x slower than the benchmarks (which happen to raise glibc's
// threshold).  Here every thread keeps one pair of buffers (GemmSpace, in
// its ThreadSlot of the Workspace) that grows to the largest blocking seen
// and is reused by every product of every later call.
//
// With Eigen 3.4 the product is Eigen's own packed kernel
// (internal::general_matrix_matrix_product, the function Eigen's public
// product calls) with the buffers passed in; with any other Eigen the public
// product (`c.noalias() += alpha * a * b`) is used instead: the same result,
// allocation as Eigen decides.
#ifndef CONTRASTIVE_DETAIL_GEMM_HPP
#define CONTRASTIVE_DETAIL_GEMM_HPP

#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include "resize.hpp"

namespace contrastive {
namespace detail {

#if EIGEN_WORLD_VERSION == 3 && EIGEN_MAJOR_VERSION == 4
#define CONTRASTIVE_OWN_GEMM_BUFFERS 1
#else
#define CONTRASTIVE_OWN_GEMM_BUFFERS 0
#endif

/// The c += alpha * a * b of Eigen's public product: the reference the owned-
/// buffer path is tested against, and the path with other Eigen versions.
template <typename S, typename C, typename A, typename B>
void gemm_add_public(C&& c, const A& a, const B& b, S alpha) {
  c.noalias() += (alpha * a) * b;
}

#if CONTRASTIVE_OWN_GEMM_BUFFERS
/// Eigen's blocking description with buffers owned here and kept between
/// products (grown, never shrunk).
template <typename S>
class GemmBlocking : public Eigen::internal::level3_blocking<S, S> {
 public:
  /// Blocking sizes for an m x n result of depth k (in the column-major
  /// orientation Eigen computes in), as Eigen's own product picks them, and
  /// buffers at least that large.
  void prepare(Eigen::Index m, Eigen::Index n, Eigen::Index k) {
    this->m_mc = m;
    this->m_nc = n;
    this->m_kc = k;
    Eigen::internal::computeProductBlockingSizes<S, S, 1>(this->m_kc, this->m_mc, this->m_nc, Eigen::Index(1));
    // Eigen's product clamps mc and nc to the result before sizing its
    // buffers; the same here keeps them within the operands (at most
    // m k + k n entries).
    this->m_mc = std::min(this->m_mc, m);
    this->m_nc = std::min(this->m_nc, n);
    const Eigen::Index size_a = this->m_mc * this->m_kc, size_b = this->m_kc * this->m_nc;
    if (a_.size() < size_a) resize_buffer(a_, size_a);
    if (b_.size() < size_b) resize_buffer(b_, size_b);
    this->m_blockA = a_.data();
    this->m_blockB = b_.data();
  }

  /// The same for the lower triangle of an n x n result of depth k
  /// (Eigen's triangular product packs the whole right operand at once: k n
  /// entries, whatever nc is).
  void prepare_lower(Eigen::Index n, Eigen::Index k) {
    prepare(n, n, k);
    const Eigen::Index size_b = this->m_kc * n;
    if (b_.size() < size_b) resize_buffer(b_, size_b);
    this->m_blockB = b_.data();
  }

  std::size_t bytes() const { return sizeof(S) * static_cast<std::size_t>(a_.size() + b_.size()); }

 private:
  Eigen::Matrix<S, Eigen::Dynamic, 1> a_, b_;  // Eigen-aligned storage
};
#endif

/// Per-thread packing buffers of the engine's products.
template <typename S>
class GemmSpace {
 public:
  /// c += alpha * a * b.  a, b and c are dense blocks with unit inner
  /// stride (row- or column-major, transposed views included); c must not
  /// alias a or b.
  template <typename C, typename A, typename B>
  void add(C&& c, const A& a, const B& b, S alpha) {
    eigen_assert(c.rows() == a.rows() && c.cols() == b.cols() && a.cols() == b.rows());
    if (c.rows() == 0 || c.cols() == 0 || a.cols() == 0) return;
#if CONTRASTIVE_OWN_GEMM_BUFFERS
    using CT = typename std::decay<C>::type;
    constexpr int ao = (A::Flags & Eigen::RowMajorBit) ? Eigen::RowMajor : Eigen::ColMajor;
    constexpr int bo = (B::Flags & Eigen::RowMajorBit) ? Eigen::RowMajor : Eigen::ColMajor;
    constexpr int co = (CT::Flags & Eigen::RowMajorBit) ? Eigen::RowMajor : Eigen::ColMajor;
    // Unit inner strides: the packed kernel reads and writes columns (rows)
    // as contiguous runs.
    if (a.innerStride() != 1 || b.innerStride() != 1 || c.innerStride() != 1) {
      gemm_add_public(std::forward<C>(c), a, b, alpha);
      return;
    }
    // A row-major result is computed by Eigen as its column-major transpose.
    if (co == Eigen::RowMajor)
      blocking_.prepare(c.cols(), c.rows(), a.cols());
    else
      blocking_.prepare(c.rows(), c.cols(), a.cols());
    Eigen::internal::general_matrix_matrix_product<Eigen::Index, S, ao, false, S, bo, false, co, 1>::run(
        c.rows(), c.cols(), a.cols(), a.data(), a.outerStride(), b.data(), b.outerStride(), c.data(), 1,
        c.outerStride(), alpha, blocking_, nullptr);
#else
    gemm_add_public(std::forward<C>(c), a, b, alpha);
#endif
  }

  /// The lower triangle, diagonal included, of c += alpha * a * a^T: the
  /// multiply-adds of that triangle and of Eigen's m x m blocks on the
  /// diagonal (m = its kernel's row count: 48 in float and 24 in double with
  /// AVX-512), about (n + m) n k / 2 where the square takes n^2 k.  The strictly upper triangle of c is not
  /// touched.  c is column-major, a has a unit inner stride.
  template <typename C, typename A>
  void add_lower(C&& c, const A& a, S alpha) {
    using CT = typename std::decay<C>::type;
    static_assert(!(CT::Flags & Eigen::RowMajorBit), "add_lower: c is column-major");
    eigen_assert(c.rows() == a.rows() && c.cols() == a.rows());
    if (a.rows() == 0 || a.cols() == 0) return;
#if CONTRASTIVE_OWN_GEMM_BUFFERS
    constexpr int ao = (A::Flags & Eigen::RowMajorBit) ? Eigen::RowMajor : Eigen::ColMajor;
    constexpr int bo = ao == Eigen::RowMajor ? Eigen::ColMajor : Eigen::RowMajor;  // a^T: the same storage
    if (a.innerStride() != 1 || c.innerStride() != 1) {
      c.template triangularView<Eigen::Lower>() += (alpha * a) * a.transpose();
      return;
    }
    blocking_.prepare_lower(a.rows(), a.cols());
    using Product = Eigen::internal::general_matrix_matrix_triangular_product<Eigen::Index, S, ao, false, S, bo, false,
                                                                              Eigen::ColMajor, 1, Eigen::Lower>;
    Product::run(a.rows(), a.cols(), a.data(), a.outerStride(), a.data(), a.outerStride(), c.data(), 1, c.outerStride(),
                 alpha, blocking_);
#else
    c.template triangularView<Eigen::Lower>() += (alpha * a) * a.transpose();
#endif
  }

  /// Bytes of the buffers kept (0 with the public product).  For the
  /// engine's products (tiles of edge t, depth d) at most t (max(t, d) + d)
  /// entries.
  std::size_t bytes() const {
#if CONTRASTIVE_OWN_GEMM_BUFFERS
    return blocking_.bytes();
#else
    return 0;
#endif
  }

  /// c = alpha * a * b.
  template <typename C, typename A, typename B>
  void assign(C&& c, const A& a, const B& b, S alpha) {
    c.setZero();
    add(std::forward<C>(c), a, b, alpha);
  }

 private:
#if CONTRASTIVE_OWN_GEMM_BUFFERS
  GemmBlocking<S> blocking_;
#endif
};

}  // namespace detail
}  // namespace contrastive

#endif  // CONTRASTIVE_DETAIL_GEMM_HPP
