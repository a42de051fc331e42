// contrastive — the tiled two-pass engine (internal; include engine.hpp).
// SPDX-License-Identifier: MIT
//
// Work and memory.  W = [U; V] is cut into row blocks of `chunk` rows; a
// tile is the similarity block of two row blocks (symmetric view blocks only
// for I <= J).  Pass 1 computes every tile once and gives the kernel's
// per-row statistics; pass 2 turns every tile into H = dL/dK and applies
// dW_I += H W_J, dW_J += H^T W_I.  dW is one shared 2n x d matrix: no
// thread and no process keeps a private copy of it.
//
// The tiles are ordered in rounds in which no two tiles share a row block
// (build_tiles).  Both passes hand them out in that order, one at a time, to
// whichever thread is free (flow): the thread computes the tile (into the
// tile cache when the tiles fit memory_budget_bytes, "materialised", else
// into its scratch tile, "streamed", and pass 2 computes it again; when
// they total at most twice the budget, as many as fit are cached and the
// others streamed), then adds its statistics (pass 1) or its GEMMs (pass 2)
// into the rows of its two row blocks, each block waiting until the earlier
// tiles' additions are in.  So the sums run in tile order, whatever the
// threads: results are bitwise the same for every thread count.  Memory is
// O(n d + threads tile^2) streamed (Workspace::bytes(), formula in the
// README).
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>
#define CONTRASTIVE_DETAIL_HAVE_MXCSR 1
#endif

#include "checks.hpp"

namespace contrastive {
namespace detail {

/// Norm floor of the normalisation, as torch.nn.functional.normalize.
constexpr double kNormEps = 1e-12;

/// Rows per block when copying between row-major and the caller's storage order.
constexpr Eigen::Index kRowBlock = 32;

template <typename S>
using TileRef = Eigen::Ref<TileArray<S>>;

/// Merge one (max, sum) pair into an online log-sum-exp state where the
/// running total is s * exp(m).  A contribution with st == 0 adds nothing.
template <typename S>
inline void lse_merge(S& m, S& s, S mt, S st) {
  if (!(st > S(0))) return;
  if (!(s > S(0))) {
    m = mt;
    s = st;
  } else if (mt > m) {
    s = s * std::exp(m - mt) + st;
    m = mt;
  } else {
    s += st * std::exp(mt - m);
  }
}

/// Flushes subnormal results to zero and treats subnormal inputs as zero on
/// the calling thread while it lives, restoring the caller's setting after.
/// Exponentials far below the largest term of a sum (float at tau = 0.01)
/// and the masked terms Eigen's exp maps to ~1e-39 instead of 0 would
/// otherwise be subnormal, and every product with one costs a microcode
/// assist (measured: the float NT-Xent gradient at tau = 0.01 was 13-19x
/// slower than at 0.2).  A subnormal term is below 2^-126 of the largest
/// term of its sum: dropping it changes no result beyond round-off.
/// Elsewhere than x86 (SSE's MXCSR) it does nothing: the assist measured is
/// x86's, and the results agree within round-off either way.
class FlushSubnormals {
 public:
#ifdef CONTRASTIVE_DETAIL_HAVE_MXCSR
  FlushSubnormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040u); }  // FTZ | DAZ
  ~FlushSubnormals() { _mm_setcsr(saved_); }
#else
  // (user-provided, so that a guard variable does not read as unused)
  FlushSubnormals() {}
  ~FlushSubnormals() {}
#endif
  FlushSubnormals(const FlushSubnormals&) = delete;
  FlushSubnormals& operator=(const FlushSubnormals&) = delete;

 private:
#ifdef CONTRASTIVE_DETAIL_HAVE_MXCSR
  unsigned int saved_;
#endif
};

/// Writes `fill` into the entries of column j of a tile that are not pairs
/// of the loss: the tile's diagonal when it holds the pairs (i, i) (self
/// pairs, or positives handled per pair), and, with instance ids, every
/// entry whose row carries the column's id (row r of W has ids[r mod n]).
/// The one masking rule of every loss.
template <typename V, typename S>
inline void mask_pairs(V&& column, const Eigen::Index* ids, Eigen::Index n, const Tile& t, Eigen::Index j, S fill) {
  if (ids) {
    const Eigen::Index idj = ids[(t.c0 + j) % n];
    const Eigen::Index r0 = t.r0 % n;
    for (Eigen::Index i = 0; i < t.nr; ++i) column[i] = ids[r0 + i] == idj ? fill : column[i];
  } else if (t.same_chunk) {
    column[j] = fill;
  }
}

// Eigen's packet types (__m512 and the like) carry attributes that GCC
// drops, with a warning, when they are template arguments (PacketBlock);
// Eigen silences the same warning in its own headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif
/// dst[p * dst_stride + q] = src[q * src_stride + p] for p < np, q < nq:
/// a transposed copy between a column-major and a row-major layout, in
/// P x P blocks (P the SIMD width of S) transposed in registers by Eigen's
/// ptranspose (the kernel its GEMM packing uses), the edges entry by entry.
/// Both sides are read and written a packet at a time; copying entry by
/// entry (or through Eigen's assignment between storage orders) strides one
/// side by a whole column per entry and measured 4-6x slower.
template <typename S>
void transpose_copy(const S* src, Eigen::Index src_stride, S* dst, Eigen::Index dst_stride, Eigen::Index np,
                    Eigen::Index nq) {
  using Packet = typename Eigen::internal::packet_traits<S>::type;
  constexpr int P = Eigen::internal::unpacket_traits<Packet>::size;
  const Eigen::Index pb = np / P * P, qb = nq / P * P;
  for (Eigen::Index p = 0; p < pb; p += P) {
    for (Eigen::Index q = 0; q < qb; q += P) {
      Eigen::internal::PacketBlock<Packet, P> block;
      for (int k = 0; k < P; ++k) block.packet[k] = Eigen::internal::ploadu<Packet>(src + (q + k) * src_stride + p);
      Eigen::internal::ptranspose(block);
      for (int k = 0; k < P; ++k) Eigen::internal::pstoreu<S>(dst + (p + k) * dst_stride + q, block.packet[k]);
    }
    for (Eigen::Index q = qb; q < nq; ++q)
      for (Eigen::Index k = p; k < p + P; ++k) dst[k * dst_stride + q] = src[q * src_stride + k];
  }
  for (Eigen::Index q = 0; q < nq; ++q)
    for (Eigen::Index k = pb; k < np; ++k) dst[k * dst_stride + q] = src[q * src_stride + k];
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/// True when Z is stored (Matrix, Map, Block, Ref) with scalar S.
template <typename Z, typename S>
constexpr bool is_stored_as() {
  using T = typename std::decay<Z>::type;
  return (int(T::Flags) & Eigen::DirectAccessBit) != 0 && std::is_same<typename T::Scalar, S>::value;
}

/// Rows [r0, r0 + z.rows()) of w = z (cast to S).  Stored z of scalar S with
/// unit inner stride is copied directly (row-major) or by transpose_copy
/// (column-major, when Eigen vectorises S); anything else (an unevaluated
/// expression such as a cast, a strided Map) through an L1-sized
/// column-major buffer of kRowBlock rows, so that a column-major source is
/// still read a cache line at a time.
template <typename S, typename Z>
void copy_rows(RowMatrix<S>& w, Eigen::Index r0, const Z& z) {
  if (z.rows() == 0 || z.cols() == 0) return;
  if constexpr (is_stored_as<Z, S>()) {
    using T = typename std::decay<Z>::type;
    if (z.innerStride() == 1) {
      if constexpr ((int(T::Flags) & Eigen::RowMajorBit) != 0) {
        w.middleRows(r0, z.rows()) = z;
        return;
      } else if constexpr (Eigen::internal::packet_traits<S>::Vectorizable) {
        transpose_copy<S>(z.data(), z.outerStride(), &w.coeffRef(r0, 0), w.outerStride(), z.rows(), z.cols());
        return;
      }
    }
  }
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> buf;
  for (Eigen::Index i0 = 0; i0 < z.rows(); i0 += kRowBlock) {
    const Eigen::Index b = std::min(kRowBlock, z.rows() - i0);
    buf = z.middleRows(i0, b).template cast<S>();
    w.middleRows(r0 + i0, b) = buf;
  }
}

/// The one normalisation rule of the library.  Copies z into rows
/// [r0, r0 + z.rows()) of w (already sized), rejects non-finite entries
/// (naming the argument) and scales every row to unit norm, the norm clamped
/// at kNormEps (inv_norm and clamped record the factor for the backward pass).
template <typename S, typename D>
void load_rows(RowMatrix<S>& w, ColArray<S>& inv_norm, std::vector<unsigned char>& clamped, Eigen::Index r0,
               const Eigen::MatrixBase<D>& z_, const char* where, const char* arg) {
  // An expression (product, sum, ...) is evaluated once; storage (Matrix,
  // Map, Block, Ref) is read in place.
  typename Eigen::internal::nested_eval<D, 2>::type z(z_.derived());
  copy_rows(w, r0, z);
  const S eps = static_cast<S>(kNormEps);
  // Squared norms between these need no scaling (no overflow, no precision
  // lost to subnormals).
  const S ss_lo = std::numeric_limits<S>::min() / std::numeric_limits<S>::epsilon();
  const S ss_hi = std::numeric_limits<S>::max() / S(4);
  for (Eigen::Index i = 0; i < z.rows(); ++i) {
    const Eigen::Index r = r0 + i;
    auto row = w.row(r);
    // The plain squared norm when it is safely in range (a NaN or an
    // infinity makes it NaN or inf, so it is also the finiteness check);
    // otherwise the scaled norm, whose NaN-propagating max checks the row.
    const S ss = row.squaredNorm();
    S nrm;
    if (ss >= ss_lo && ss <= ss_hi) {
      nrm = std::sqrt(ss);
    } else {
      const S amax = row.cwiseAbs().template maxCoeff<Eigen::PropagateNaN>();
      if (!std::isfinite(amax)) fail(where, arg, "contains NaN or infinite entries");
      nrm = amax > S(0) ? amax * (row / amax).norm() : S(0);
    }
    if (nrm > eps) {
      inv_norm[r] = S(1) / nrm;
      clamped[static_cast<std::size_t>(r)] = 0;
    } else {
      inv_norm[r] = S(1) / eps;
      clamped[static_cast<std::size_t>(r)] = 1;
    }
    row *= inv_norm[r];
  }
}

/// Rows [i0, i0 + rows.rows()) of out = rows (a row-major block, cast to
/// out's scalar): transpose_copy into a stored column-major out of scalar S
/// with unit inner stride (when Eigen vectorises S), Eigen's assignment
/// otherwise.
template <typename Out, typename Rows>
void store_rows(Out& out, Eigen::Index i0, const Rows& rows) {
  using O = typename std::decay<Out>::type;
  using S = typename Rows::Scalar;
  static_assert((int(Rows::Flags) & Eigen::RowMajorBit) != 0, "store_rows: rows must be row-major");
  if constexpr (is_stored_as<O, S>() && (int(O::Flags) & Eigen::RowMajorBit) == 0 &&
                Eigen::internal::packet_traits<S>::Vectorizable) {
    if (out.innerStride() == 1 && rows.rows() > 0) {
      transpose_copy<S>(rows.data(), rows.outerStride(), &out.coeffRef(i0, 0), out.outerStride(), rows.cols(),
                        rows.rows());
      return;
    }
  }
  out.middleRows(i0, rows.rows()) = rows.template cast<typename O::Scalar>();
}

/// The row buffer backprop_rows forms `rows` output rows of width d in.
/// A call with several outputs allocates all their buffers before it writes
/// the first, so a failed allocation leaves every output untouched.
template <typename S>
RowMatrix<S> out_buffer(Eigen::Index rows, Eigen::Index d) {
  return RowMatrix<S>(std::min(kRowBlock, rows), d);
}

/// Back through the normalisation for rows [r0, r0 + out.rows()):
/// dz_r = (dw_r - w_r (w_r . dw_r)) / ||z_r||, or dw_r / eps for a clamped
/// row, written into `out` through `buf` (out_buffer).
template <typename S, typename Out>
void backprop_rows(const RowMatrix<S>& w, const ColArray<S>& inv_norm, const std::vector<unsigned char>& clamped,
                   const RowMatrix<S>& dw, Eigen::Index r0, const Eigen::MatrixBase<Out>& out_, RowMatrix<S>& buf) {
  auto& out = const_cast<Eigen::MatrixBase<Out>&>(out_).derived();
  // Rows are formed in a small row-major buffer and stored kRowBlock at a
  // time, so a column-major `out` is written in whole cache lines.
  eigen_assert(buf.rows() >= std::min(kRowBlock, out.rows()) && buf.cols() == w.cols());
  for (Eigen::Index i0 = 0; i0 < out.rows(); i0 += kRowBlock) {
    const Eigen::Index b = std::min(kRowBlock, out.rows() - i0);
    for (Eigen::Index i = 0; i < b; ++i) {
      const Eigen::Index r = r0 + i0 + i;
      const auto wr = w.row(r);
      const auto g = dw.row(r);
      const S inv = inv_norm[r];
      if (clamped[static_cast<std::size_t>(r)]) buf.row(i) = inv * g;
      else buf.row(i) = inv * (g - wr.dot(g) * wr);
    }
    store_rows(out, i0, buf.topRows(b));
  }
}

/// backprop_rows with a buffer of its own (a call with one output).
template <typename S, typename Out>
void backprop_rows(const RowMatrix<S>& w, const ColArray<S>& inv_norm, const std::vector<unsigned char>& clamped,
                   const RowMatrix<S>& dw, Eigen::Index r0, const Eigen::MatrixBase<Out>& out) {
  RowMatrix<S> buf = out_buffer<S>(out.rows(), w.cols());
  backprop_rows(w, inv_norm, clamped, dw, r0, out, buf);
}

inline int resolve_threads(int requested) {
#ifdef _OPENMP
  return requested > 0 ? requested : omp_get_max_threads();
#else
  (void)requested;
  return 1;
#endif
}

/// Runs task(0) and task(1), two independent tasks (the two views' rows in
/// and out of the caller's storage), on two threads when `parallel` (and
/// not inside an enclosing parallel region: there, one after the other).
/// An exception of either is rethrown after both ran, task 0's first, so
/// an error names the same argument as in the serial order.
template <typename F>
void run_two(bool parallel, const F& task) {
#ifdef _OPENMP
  if (parallel && !omp_in_parallel()) {
    std::exception_ptr err[2];
#pragma omp parallel num_threads(2)
    {
      // (a thread limit may give one thread: it runs both)
      for (int k = omp_get_thread_num(); k < 2; k += omp_get_num_threads()) {
        try {
          task(k);
        } catch (...) {
          err[k] = std::current_exception();
        }
      }
    }
    for (const auto& e : err)
      if (e) std::rethrow_exception(e);
    return;
  }
#endif
  (void)parallel;
  task(0);
  task(1);
}

/// backprop_rows into two outputs (rows [ra, ...) into out_a, [rb, ...)
/// into out_b), their buffers allocated before either is written; on two
/// threads with `parallel` (run_two).
template <typename S, typename OA, typename OB>
void backprop_two(const RowMatrix<S>& w, const ColArray<S>& inv_norm, const std::vector<unsigned char>& clamped,
                  const RowMatrix<S>& dw, Eigen::Index ra, const Eigen::MatrixBase<OA>& out_a, Eigen::Index rb,
                  const Eigen::MatrixBase<OB>& out_b, bool parallel = false) {
  RowMatrix<S> buf[2] = {out_buffer<S>(out_a.rows(), w.cols()), out_buffer<S>(out_b.rows(), w.cols())};
  run_two(parallel, [&](int k) {
    if (k == 0) backprop_rows(w, inv_norm, clamped, dw, ra, out_a, buf[0]);
    else backprop_rows(w, inv_norm, clamped, dw, rb, out_b, buf[1]);
  });
}

/// Inside the tile loop Eigen's GEMM must run serially: our threads already
/// occupy the cores.  omp_set_num_threads here changes only the calling
/// thread's setting for the rest of the parallel region.
inline void make_eigen_serial() {
#ifdef _OPENMP
  omp_set_num_threads(1);
#endif
}

// ---- the kernel contract ----------------------------------------------------
//
// A kernel says what a tile means; the engine decides tiles, threads, memory.
// Required members (checked at compile time by check_kernel, with K the
// kernel type and S its scalar):
//
//   bool   visits(int view_r, int view_c) const;
//            which of the view blocks (0,0), (0,1), (1,1) of W W^T it needs
//   S      logit_scale() const;
//            the tiles hold logit_scale() * w_r . w_c
//   int    stat_count() const;
//            number of per-row sums pass 1 gives (0: none)
//   bool   online() const;
//            true when those sums carry per-row shifts (TileOut::rows_m)
//            that must be max-merged; false when they share one fixed shift
//   void   begin(const RowMatrix<S>& W, CallStats<S>& cs) const;
//            before pass 1, O(n d): e.g. every row's positive logit
//   void   pass1(TileRef<S> X, const Tile& t, const CallStats<S>& cs, TileOut<S>& out,
//                bool keep, ThreadSlot<S>& slot) const;
//            X is the fresh tile: writes the tile's statistics into `out`
//            and its pair sums; with `keep` the tile is cached for pass 2
//            and X may be left in whatever form pass 2 wants it (kept).
//            A diagonal tile's columns are its rows: it sets has_cols false
//   double finish(const RowMatrix<S>& W, const RowStats<S>& stats, CallStats<S>& cs) const;
//            after pass 1 (statistics merged over tiles): fills cs, returns
//            the value (the engine adds the pair sums' value)
//   bool   pass2(TileRef<S> P, const Tile& t, bool kept, const CallStats<S>& cs,
//                PairSums& sums, ThreadSlot<S>& slot) const;
//            turns P into H = dL/dK of the tile in place (P is what pass 1
//            kept, or the fresh tile when !kept); false: nothing to add
//   void   pair_terms(const RowMatrix<S>& W, const CallStats<S>& cs, RowMatrix<S>& dW,
//                     Eigen::Index i0, Eigen::Index i1) const;
//            the O(n d) pair contributions (positives) of instances [i0, i1)
//
// Optional:
//
//   bool   lower_diagonal(bool keep) const;
//            true: pass1 (called with this `keep`) reads only the strictly
//            lower triangle (i > j) of a diagonal tile, so the engine need
//            not mirror the upper one.  Declared by the kernel class itself:
//            a kernel deriving from one that declares it does not inherit it
//            (its own pass1 may read the whole tile).

/// A kernel's view of one tile's statistics in pass 1.
template <typename S>
struct TileOut {
  Eigen::Ref<TileArray<S>> rows;  ///< nr x K
  Eigen::Ref<TileArray<S>> cols;  ///< nc x K
  S* rows_m;                      ///< online kernels: nr shifts (else null)
  S* cols_m;                      ///< online kernels: nc shifts (else null)
  bool has_rows = false;          ///< the kernel wrote row statistics
  bool has_cols = false;          ///< the kernel wrote column statistics
  PairSums* sums;                 ///< the tile's pair sums
};

namespace contract {
template <typename...>
using void_t = void;
template <typename K, typename S, typename = void>
struct has_visits : std::false_type {};
template <typename K, typename S>
struct has_visits<K, S, void_t<decltype(bool(std::declval<const K&>().visits(0, 0)))>> : std::true_type {};
template <typename K, typename S, typename = void>
struct has_logit_scale : std::false_type {};
template <typename K, typename S>
struct has_logit_scale<K, S, std::enable_if_t<std::is_same<decltype(std::declval<const K&>().logit_scale()), S>::value>>
    : std::true_type {};
template <typename K, typename S, typename = void>
struct has_stats : std::false_type {};
template <typename K, typename S>
struct has_stats<K, S,
                 void_t<decltype(int(std::declval<const K&>().stat_count())),
                        decltype(bool(std::declval<const K&>().online()))>> : std::true_type {};
template <typename K, typename S, typename = void>
struct has_begin : std::false_type {};
template <typename K, typename S>
struct has_begin<K, S,
                 void_t<decltype(std::declval<const K&>().begin(std::declval<const RowMatrix<S>&>(),
                                                                std::declval<CallStats<S>&>()))>> : std::true_type {};
template <typename K, typename S, typename = void>
struct has_pass1 : std::false_type {};
template <typename K, typename S>
struct has_pass1<K, S,
                 void_t<decltype(std::declval<const K&>().pass1(
                     std::declval<TileRef<S>>(), std::declval<const Tile&>(), std::declval<const CallStats<S>&>(),
                     std::declval<TileOut<S>&>(), true, std::declval<ThreadSlot<S>&>()))>> : std::true_type {};
template <typename K, typename S, typename = void>
struct has_finish : std::false_type {};
template <typename K, typename S>
struct has_finish<K, S,
                  std::enable_if_t<std::is_same<decltype(std::declval<const K&>().finish(
                                                    std::declval<const RowMatrix<S>&>(), std::declval<const RowStats<S>&>(),
                                                    std::declval<CallStats<S>&>())),
                                                double>::value>> : std::true_type {};
template <typename K, typename S, typename = void>
struct has_pass2 : std::false_type {};
template <typename K, typename S>
struct has_pass2<K, S,
                 void_t<decltype(bool(std::declval<const K&>().pass2(
                     std::declval<TileRef<S>>(), std::declval<const Tile&>(), true, std::declval<const CallStats<S>&>(),
                     std::declval<PairSums&>(), std::declval<ThreadSlot<S>&>())))>> : std::true_type {};
template <typename K, typename S, typename = void>
struct has_pair_terms : std::false_type {};
template <typename K, typename S>
struct has_pair_terms<K, S,
                      void_t<decltype(std::declval<const K&>().pair_terms(
                          std::declval<const RowMatrix<S>&>(), std::declval<const CallStats<S>&>(),
                          std::declval<RowMatrix<S>&>(), Eigen::Index(0), Eigen::Index(0)))>> : std::true_type {};

/// K declares lower_diagonal(bool) itself (not inherited from a base kernel).
template <typename K, typename = void>
struct has_lower_diagonal : std::false_type {};
template <typename K>
struct has_lower_diagonal<K, std::enable_if_t<std::is_same<decltype(&K::lower_diagonal), bool (K::*)(bool) const>::value>>
    : std::true_type {};
}  // namespace contract

/// Whether the kernel's pass1 with `keep` reads only the lower triangle of a diagonal tile.
template <typename K>
bool lower_diagonal(const K& kernel, bool keep) {
  if constexpr (contract::has_lower_diagonal<K>::value) return kernel.lower_diagonal(keep);
  (void)kernel;
  (void)keep;
  return false;
}

/// True when K meets the kernel contract for scalar S.
template <typename K, typename S>
constexpr bool is_kernel_v = contract::has_visits<K, S>::value && contract::has_logit_scale<K, S>::value &&
                             contract::has_stats<K, S>::value && contract::has_begin<K, S>::value &&
                             contract::has_pass1<K, S>::value && contract::has_finish<K, S>::value &&
                             contract::has_pass2<K, S>::value && contract::has_pair_terms<K, S>::value;

/// Compile-time check of the contract, one message per missing member.
template <typename K, typename S>
constexpr bool check_kernel() {
  static_assert(contract::has_visits<K, S>::value, "contrastive kernel: missing bool visits(int, int) const");
  static_assert(contract::has_logit_scale<K, S>::value, "contrastive kernel: missing S logit_scale() const");
  static_assert(contract::has_stats<K, S>::value,
                "contrastive kernel: missing int stat_count() const or bool online() const");
  static_assert(contract::has_begin<K, S>::value,
                "contrastive kernel: missing void begin(const RowMatrix<S>&, CallStats<S>&) const");
  static_assert(contract::has_pass1<K, S>::value,
                "contrastive kernel: missing void pass1(TileRef<S>, const Tile&, const CallStats<S>&, TileOut<S>&, "
                "bool, ThreadSlot<S>&) const");
  static_assert(contract::has_finish<K, S>::value,
                "contrastive kernel: missing double finish(const RowMatrix<S>&, const RowStats<S>&, CallStats<S>&) const");
  static_assert(contract::has_pass2<K, S>::value,
                "contrastive kernel: missing bool pass2(TileRef<S>, const Tile&, bool, const CallStats<S>&, PairSums&, "
                "ThreadSlot<S>&) const");
  static_assert(contract::has_pair_terms<K, S>::value,
                "contrastive kernel: missing void pair_terms(const RowMatrix<S>&, const CallStats<S>&, RowMatrix<S>&, "
                "Index, Index) const");
  return true;
}

/// What the engine decided for one call (Engine::plan).
struct Plan {
  Eigen::Index chunk = 1;     // tile edge
  Eigen::Index blocks = 0;    // row blocks per view
  int threads = 1;
  bool cache = false;         // a gradient call keeps some or all tiles between the passes (Buffers::kept)
  bool scratch = false;       // some tile is computed in its thread's scratch tile
  bool gradient = false;      // the gradient pass runs
  int stats = 0;              // per-row statistics of the kernel
  bool online = false;
  int rank = 0, procs = 1;    // this process computes the tiles t with t % procs == rank
  bool owns(std::size_t t) const { return static_cast<int>(t % static_cast<std::size_t>(procs)) == rank; }
  /// How many of `ntiles` tiles this process computes (tiles rank, rank + procs, ...).
  long owned(long ntiles) const { return (ntiles - rank + procs - 1) / procs; }
};

/// This process's share of a call across processes (a null group: the
/// whole batch is here).  Instances [offset, offset + local) of the global
/// batch of n are this process's; rows[p] is process p's count.
struct Distribution {
  const ProcessGroup* group = nullptr;
  int rank = 0, procs = 1;
  Eigen::Index offset = 0, local = 0, n = 0;
  std::vector<long long> rows;
  bool active() const { return group != nullptr && procs > 1; }
};

/// The one failure protocol of a call across processes: a collective that
/// some process may not be able to reach whole (it failed before, e.g. with
/// std::bad_alloc) is preceded by, or carries, an all_reduce (sum) of
/// v[0..k) and a failure flag in v[k] (v holds k + 1 doubles).  Then every
/// process leaves the call at that same all_reduce: the failed ones
/// rethrow their own exception (`err`), the others throw
/// std::runtime_error naming how many failed; none waits in a later
/// collective.
inline void reduce_or_fail(const ProcessGroup& group, double* v, std::size_t k, const std::exception_ptr& err,
                           const char* where) {
  v[k] = err ? 1.0 : 0.0;
  group.all_reduce(v, k + 1, ProcessGroup::Op::Sum);
  if (err) std::rethrow_exception(err);
  if (v[k] > 0)
    throw std::runtime_error(std::string(where) + ": " + std::to_string(static_cast<long>(v[k])) + " of " +
                             std::to_string(group.size()) +
                             " processes failed during the call; every process of the call throws (the failed ones "
                             "their own exception)");
}

/// The smallest diagonal tile formed as a triangle (Engine::similarity_tile);
/// a smaller one is formed whole.
constexpr Eigen::Index kDiagTriangleMin = 64;

/// Columns per block when mirroring a diagonal tile's lower triangle.
constexpr Eigen::Index kMirrorBlock = 64;

/// The largest number of tiles one call may use (tile_size too small for n).
constexpr std::size_t kMaxTiles = std::size_t(1) << 26;

/// The engine: plan -> size -> pass 1 -> finish -> pass 2 -> pair terms.
template <typename S>
class Engine {
 public:
  /// Copies the two views into the workspace as W = [U; V], rejects
  /// non-finite entries (naming the argument) and normalises every row.  An
  /// input that is an expression rather than storage (a product, a sum) is
  /// evaluated once here, never per block of rows.
  /// With `parallel` (views_in_parallel) the two views load on two threads.
  template <typename DA, typename DB>
  static void load(Buffers<S>& b, const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                   const char* where, bool parallel = false) {
    const Eigen::Index n = za.rows();
    b.views = 2;
    resize_buffer(b.w, 2 * n, za.cols());
    resize_buffer(b.inv_norm, 2 * n);
    b.clamped.assign(static_cast<std::size_t>(2 * n), 0);
    run_two(parallel, [&](int view) {
      if (view == 0) load_rows(b.w, b.inv_norm, b.clamped, 0, za, where, "za");
      else load_rows(b.w, b.inv_norm, b.clamped, n, zb, where, "zb");
    });
  }

  /// Whether the two views of a call of n pairs of width d go in and out on
  /// two threads: when the call's tiles would run on several threads
  /// (plan()'s rule for the cross block).  Measured on a 2-core VM at
  /// n = 256, d = 128 (float, CLIP): see bench/README.md.
  static bool views_in_parallel(const EngineOptions& opt, Eigen::Index n, Eigen::Index d) {
    const double work = static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(d);
    return work >= opt.parallel_threshold && resolve_threads(opt.num_threads) > 1;
  }

  /// The same for a loss of one view: W = U.
  template <typename D>
  static void load_one(Buffers<S>& b, const Eigen::MatrixBase<D>& z, const char* where) {
    b.views = 1;
    resize_buffer(b.w, z.rows(), z.cols());
    resize_buffer(b.inv_norm, z.rows());
    b.clamped.assign(static_cast<std::size_t>(z.rows()), 0);
    load_rows(b.w, b.inv_norm, b.clamped, 0, z, where, "z");
  }

  /// Across processes, for a process that failed after the call's rows
  /// were gathered but before it could enter run() (e.g. building the
  /// kernel): joins run()'s first collective with the failure flag set, so
  /// that every process throws there (sum_processes); rethrows `err`.
  [[noreturn]] static void fail_before_run(const Distribution& dist, const std::exception_ptr& err, const char* where) {
    sum_processes(*dist.group, PairSums{}, err, where);
    std::rethrow_exception(err);  // (sum_processes has rethrown it)
  }

  /// Runs the kernel over the tiles.  Returns the loss value; with want_grad
  /// dL/dW is left in b.dw (this process's rows of it, across processes);
  /// the kernel's results are in b.cs.
  template <typename Kernel>
  static double run(const Kernel& kernel, Buffers<S>& b, const EngineOptions& opt, bool want_grad, const char* where,
                    const Distribution& dist = {});

  /// Chooses tiles, threads and the schedule.
  template <typename Kernel>
  static Plan plan(const Kernel& kernel, Buffers<S>& b, const EngineOptions& opt, bool want_grad, const char* where,
                   const Distribution& dist) {
    const Eigen::Index n = b.w.rows() / b.views, d = b.w.cols();
    Plan p;
    p.gradient = want_grad;
    p.rank = dist.active() ? dist.rank : 0;
    p.procs = dist.active() ? dist.procs : 1;
    p.stats = kernel.stat_count();
    p.online = kernel.online();
    // Threads first, from the work of the whole similarity matrix.
    const double pairs = static_cast<double>(n) * static_cast<double>(n) * (kernel.visits(0, 0) ? 2.0 : 1.0);
    int threads = pairs * static_cast<double>(d) < opt.parallel_threshold ? 1 : resolve_threads(opt.num_threads);
#ifdef _OPENMP
    // Inside an enclosing parallel region without nested parallelism a
    // region of ours gets one thread: plan for that one.
    if (omp_in_parallel() && omp_get_max_active_levels() <= omp_get_active_level()) threads = 1;
#endif
    // One thread: tiles as large as allowed (fewer, larger GEMMs).  Several:
    // small batches get at least two chunks per view, so that there are
    // enough tiles for the threads (measured: n = 256 pairs ran 1.4x faster
    // on 2 threads with 128-row tiles than with one 256-row tile per block).
    // Across processes every process must cut the same tiles, so the edge
    // depends on n, tile_size and the number of processes only: at least
    // two chunks per view and process (multiples of 8, at least 32 rows).
    p.chunk = std::min<Eigen::Index>(opt.tile_size, n);
    if (p.procs > 1) {
      const Eigen::Index want = (n + 2 * p.procs - 1) / (2 * p.procs);
      p.chunk = std::min<Eigen::Index>(p.chunk, std::max<Eigen::Index>(32, (want + 7) / 8 * 8));
    } else if (threads > 1 && n < 2 * opt.tile_size && n >= 128) {
      p.chunk = std::min<Eigen::Index>(opt.tile_size, ((n + 1) / 2 + 7) / 8 * 8);
    }
    p.blocks = (n + p.chunk - 1) / p.chunk;
    const double nb = static_cast<double>(p.blocks);
    if (3.0 * nb * nb > static_cast<double>(kMaxTiles))
      fail_field(where, "tile_size",
                 "is too small for a batch of " + std::to_string(n) + " pairs (it would take more than 2^26 tiles) " +
                     got(opt.tile_size));
    build_tiles(kernel, b, n, p.chunk, p.blocks, b.views);
    sequence(b, p);
    const auto ntiles = static_cast<long>(b.tiles.size());
    double cache_bytes = 0;
    for (std::size_t t = 0; t < b.tiles.size(); ++t)
      if (p.owns(t))
        cache_bytes += static_cast<double>(sizeof(S)) * static_cast<double>(b.tiles[t].nr) * static_cast<double>(b.tiles[t].nc);
    // Threads share out this process's tiles: no more threads than tiles
    // (no tile, a kernel of pair terms only: no parallel region).
    p.threads = static_cast<int>(std::max<long>(1, std::min<long>(threads, p.owned(ntiles))));
    const double budget = static_cast<double>(opt.memory_budget_bytes);
    // kept[t]: tile t lives in b.cache[t] during the call.
    b.kept.assign(b.tiles.size(), 0);
    if (want_grad && cache_bytes <= 2.0 * budget) {
      // Keep every tile when they fit; when they total at most twice the
      // budget, keep as many as the budget holds (the full products first:
      // a diagonal tile costs 0.6 of one to form again; a tile larger than
      // what is left is skipped) and form the rest again in pass 2, so that
      // time grows smoothly past the budget instead of by a whole extra
      // pass; beyond that stream them all, and memory stays O(n d + threads
      // tile^2).  The choice depends on the tiles (n, the tile edge, this
      // process's share) and the budget only.
      double used = 0;
      for (const bool diagonal : {false, true})
        for (std::size_t t = 0; t < b.tiles.size(); ++t) {
          const Tile& tile = b.tiles[t];
          if (!p.owns(t) || tile.diagonal() != diagonal) continue;
          const double bytes = static_cast<double>(sizeof(S)) * static_cast<double>(tile.nr) * static_cast<double>(tile.nc);
          if (used + bytes > budget) continue;
          used += bytes;
          b.kept[t] = 1;
        }
    } else if (!want_grad && b.cache.size() == b.tiles.size()) {
      // A value call after a gradient call on the same shapes computes its
      // tiles in that call's cache where it has them: the workspace keeps
      // its size.
      for (std::size_t t = 0; t < b.tiles.size(); ++t)
        b.kept[t] = p.owns(t) && b.cache[t].rows() == b.tiles[t].nr && b.cache[t].cols() == b.tiles[t].nc;
    }
    for (std::size_t t = 0; t < b.tiles.size(); ++t) {
      if (!p.owns(t)) continue;
      if (b.kept[t]) p.cache = want_grad;
      else p.scratch = true;
    }
    return p;
  }

  /// Sizes the shared arrays, the per-thread slots and the tile cache.
  static void size(Buffers<S>& b, const Plan& p) {
    const Eigen::Index n2 = b.w.rows(), d = b.w.cols(), k = p.stats;
    b.threads = p.threads;
    if (p.gradient) b.streamed = p.scratch;  // (a value call leaves the last gradient call's)
    b.slots.resize(static_cast<std::size_t>(p.threads));
    for (auto& sl : b.slots) {
      if (p.scratch) resize_buffer(sl.x, p.chunk, p.chunk);
      resize_buffer(sl.v, 4 * p.chunk);
      sl.chunk = p.chunk;
      size_stats(sl.ts, p.chunk, k, p.online);
    }
    zero_buffer(b.stats.s, n2, k);
    if (p.online) zero_buffer(b.stats.m, n2);
    b.tile_sums.assign(b.tiles.size(), PairSums{});
    b.cs.sums = PairSums{};
    b.cs.dtau = 0;
    if (p.gradient) zero_buffer(b.dw, n2, d);
    if (p.cache) {
      b.cache.resize(b.tiles.size());
      for (std::size_t t = 0; t < b.tiles.size(); ++t)
        resize_buffer(b.cache[t], b.kept[t] ? b.tiles[t].nr : 0, b.kept[t] ? b.tiles[t].nc : 0);
    } else if (p.gradient) {
      // Streaming: give the memory of an earlier, smaller problem's tiles back.
      // (A value-only call keeps them for the next gradient call.)
      b.cache.clear();
      b.cache.shrink_to_fit();
    }
  }

  /// Back through the normalisation into the caller's outputs:
  /// dz_r = (dw_r - w_r (w_r . dw_r)) / ||z_r||, or dw_r / eps for a clamped row.
  /// With `parallel` (views_in_parallel) the two views go out on two threads.
  template <typename GA, typename GB>
  static void backprop(const Buffers<S>& b, const Eigen::MatrixBase<GA>& grad_a, const Eigen::MatrixBase<GB>& grad_b,
                       bool parallel = false) {
    backprop_two(b.w, b.inv_norm, b.clamped, b.dw, 0, grad_a, b.w.rows() / b.views, grad_b, parallel);
  }

 private:
  /// The pair sums of all tiles, added in tile order.
  static PairSums tile_totals(const Buffers<S>& b) {
    PairSums sums;
    for (const auto& t : b.tile_sums) sums.add(t);
    return sums;
  }

  /// Across processes after a pass: the pair sums of all processes, and
  /// whether any process failed in it (`err`: this process's exception).
  /// The flag rides on the pass's one all_reduce of the sums
  /// (reduce_or_fail), so a failure in one process's pass (e.g.
  /// std::bad_alloc) makes every process throw there.
  static PairSums sum_processes(const ProcessGroup& group, const PairSums& sums, const std::exception_ptr& err,
                                const char* where) {
    double v[4] = {sums.value, sums.term_derivative, sums.term_dot, 0.0};
    reduce_or_fail(group, v, 3, err, where);
    return PairSums{v[0], v[1], v[2]};
  }

  /// Across processes after pass 1 (sum_processes first): every process's
  /// statistics become the global ones.  Fixed shifts: an element-wise sum.
  /// Online shifts: the element-wise max of the shifts (rows without a
  /// term of this process's tiles take no part), each process's sums
  /// rescaled to it, then summed.
  static void merge_processes(Buffers<S>& b, const Plan& p, const ProcessGroup& group) {
    RowStats<S>& st = b.stats;
    const Eigen::Index n2 = st.s.rows();
    if (p.stats == 0) return;
    if (p.online) {
      const S ninf = -std::numeric_limits<S>::infinity();
      for (Eigen::Index r = 0; r < n2; ++r)
        if (!(st.s(r, 0) > S(0))) st.m[r] = ninf;
      st.m_local = st.m;
      group.all_reduce(st.m.data(), static_cast<std::size_t>(n2), ProcessGroup::Op::Max);
      for (Eigen::Index r = 0; r < n2; ++r) {
        if (st.s(r, 0) > S(0)) st.s.row(r) *= std::exp(st.m_local[r] - st.m[r]);
        if (st.m[r] == ninf) st.m[r] = S(0);
      }
    }
    group.all_reduce(st.s.data(), static_cast<std::size_t>(st.s.size()), ProcessGroup::Op::Sum);
  }

  /// Across processes after pass 2: dW summed over processes, each keeping
  /// its own rows (of both views) in place in b.dw (b.dw_local, sized by
  /// run() before pass 1, receives them).
  static void scatter_rows(Buffers<S>& b, const Distribution& dist) {
    const Eigen::Index n = b.w.rows() / b.views, d = b.w.cols();
    eigen_assert(b.dw_local.rows() == dist.local && b.dw_local.cols() == d);
    for (Eigen::Index view = 0; view < b.views; ++view) {
      dist.group->reduce_scatter_rows(b.dw.data() + view * n * d, b.dw_local.data(), dist.rows.data(),
                                      static_cast<std::size_t>(d));
      b.dw.middleRows(view * n + dist.offset, dist.local) = b.dw_local;
    }
  }

  static void size_stats(TileStats<S>& ts, Eigen::Index rows, Eigen::Index k, bool online) {
    resize_buffer(ts.rows, rows, k);
    resize_buffer(ts.cols, rows, k);
    resize_buffer(ts.rows_m, online ? rows : 0);
    resize_buffer(ts.cols_m, online ? rows : 0);
  }

  /// Adds one tile's statistics (rows r0..r0+nr of `src`, with shifts `m`
  /// when online) into the merged per-row statistics.
  static void merge(RowStats<S>& st, bool online, Eigen::Index r0, const Eigen::Ref<const TileArray<S>>& src,
                    const S* m) {
    const Eigen::Index nr = src.rows(), k = src.cols();
    if (!online) {
      st.s.middleRows(r0, nr) += src;
      return;
    }
    for (Eigen::Index i = 0; i < nr; ++i) {
      const Eigen::Index r = r0 + i;
      const S st0 = src(i, 0);
      if (!(st0 > S(0))) continue;  // no term of this row in the tile
      if (!(st.s(r, 0) > S(0))) {
        st.m[r] = m[i];
        st.s.row(r) = src.row(i);
      } else if (m[i] > st.m[r]) {
        st.s.row(r) = st.s.row(r) * std::exp(st.m[r] - m[i]) + src.row(i);
        st.m[r] = m[i];
      } else {
        st.s.row(r) += src.row(i) * std::exp(m[i] - st.m[r]);
      }
    }
    (void)k;
  }

  /// The tile's view of its statistics in the thread's `ts`.
  static TileOut<S> tile_out(TileStats<S>& ts, const Tile& t, PairSums& sums) {
    const Eigen::Index k = ts.rows.cols();
    // A kernel without statistics gets empty views (no pointer into an
    // empty array, whose data pointer is null).
    if (k == 0) return TileOut<S>{ts.rows.block(0, 0, 0, 0), ts.cols.block(0, 0, 0, 0), nullptr, nullptr, false, false, &sums};
    return TileOut<S>{ts.rows.topRows(t.nr), ts.cols.topRows(t.nc), ts.rows_m.size() ? ts.rows_m.data() : nullptr,
                      ts.cols_m.size() ? ts.cols_m.data() : nullptr, false, false, &sums};
  }

  /// X = logit_scale * W_I W_J^T.  A diagonal tile (I == J, one view) is
  /// symmetric: its lower triangle is formed by Eigen's triangular product
  /// (GemmSpace::add_lower: about (t + 48) / (2 t) of the square's
  /// multiply-adds for a t-row tile in float with AVX-512) and the upper one mirrored from it (not
  /// with `lower`: the kernel reads only the lower triangle).  Measured on a
  /// 256-row tile (AVX-512, one thread, bench/README.md): 0.56-0.61 of the
  /// square's time, mirrored 0.64-0.73, where four column strips took
  /// 0.65-0.69 and 0.72-0.84.
  template <typename Kernel>
  static void similarity_tile(const Kernel& kernel, const Buffers<S>& b, const Tile& tile, TileRef<S>& X,
                              GemmSpace<S>& gemm, bool lower = false) {
    const S scale = kernel.logit_scale();
    const auto wr = b.w.middleRows(tile.r0, tile.nr);
    if (!tile.diagonal() || tile.nr < kDiagTriangleMin) {
      gemm.assign(X.matrix(), wr, b.w.middleRows(tile.c0, tile.nc).transpose(), scale);
      return;
    }
    const Eigen::Index t = tile.nr;
    for (Eigen::Index j = 0; j < t; ++j) X.col(j).tail(t - j).setZero();
    gemm.add_lower(X.matrix(), wr, scale);
    if (lower) return;
    for (Eigen::Index c0 = 0; c0 < t; c0 += kMirrorBlock) {
      const Eigen::Index cw = std::min(kMirrorBlock, t - c0);
      if (c0 > 0) X.block(0, c0, c0, cw) = X.block(c0, 0, cw, c0).transpose();
      for (Eigen::Index j = 1; j < cw; ++j) X.col(c0 + j).segment(c0, j) = X.row(c0 + j).segment(c0, j).transpose();
    }
  }

  /// Pass 1: every tile once (into its cache entry, or the thread's scratch
  /// tile), its statistics added into the rows and columns it covers, each
  /// row block's in tile order (flow).
  template <typename Kernel>
  static void pass1(const Kernel& kernel, Buffers<S>& b, const Plan& p) {
    flow(
        b, p,
        [&](std::size_t t, ThreadSlot<S>& sl) {
          const Tile& tile = b.tiles[t];
          // keep: pass 2 reads this tile from the cache.
          const bool in_cache = b.kept[t] != 0, keep = in_cache && p.gradient;
          TileRef<S> X = in_cache ? TileRef<S>(b.cache[t]) : TileRef<S>(sl.x.topLeftCorner(tile.nr, tile.nc));
          similarity_tile(kernel, b, tile, X, sl.gemm, lower_diagonal(kernel, keep));
          TileOut<S> out = tile_out(sl.ts, tile, b.tile_sums[t]);
          kernel.pass1(X, tile, b.cs, out, keep, sl);
          eigen_assert(!(tile.diagonal() && out.has_cols));  // (the contract: its rows are its columns)
          return (out.has_rows ? 1 : 0) | (out.has_cols ? 2 : 0);
        },
        [&](std::size_t t, int has, bool as_col, ThreadSlot<S>& sl) {
          const Tile& tile = b.tiles[t];
          if (!as_col && (has & 1))
            merge(b.stats, p.online, tile.r0, sl.ts.rows.topRows(tile.nr), p.online ? sl.ts.rows_m.data() : nullptr);
          if (as_col && (has & 2))
            merge(b.stats, p.online, tile.c0, sl.ts.cols.topRows(tile.nc), p.online ? sl.ts.cols_m.data() : nullptr);
        },
        p.stats > 0);
  }

  /// Pass 2: every tile's H = dL/dK and its two products into dW (one for a
  /// diagonal tile, whose H already holds G + G^T of the symmetric block),
  /// while the tile is in cache: a streamed tile is formed again here, a
  /// cached one is read once.  Each row block gets its products in tile
  /// order (flow).
  template <typename Kernel>
  static void pass2(const Kernel& kernel, Buffers<S>& b, const Plan& p) {
    const auto tile_x = [&](std::size_t t, ThreadSlot<S>& sl) {
      const Tile& tile = b.tiles[t];
      return b.kept[t] ? TileRef<S>(b.cache[t]) : TileRef<S>(sl.x.topLeftCorner(tile.nr, tile.nc));
    };
    flow(
        b, p,
        [&](std::size_t t, ThreadSlot<S>& sl) {
          const Tile& tile = b.tiles[t];
          TileRef<S> X = tile_x(t, sl);
          const bool kept = b.kept[t] != 0;
          if (!kept) similarity_tile(kernel, b, tile, X, sl.gemm);
          return kernel.pass2(X, tile, kept, b.cs, b.tile_sums[t], sl) ? 1 : 0;
        },
        [&](std::size_t t, int active, bool as_col, ThreadSlot<S>& sl) {
          if (!active) return;
          const Tile& tile = b.tiles[t];
          const TileRef<S> X = tile_x(t, sl);
          if (!as_col)
            sl.gemm.add(b.dw.middleRows(tile.r0, tile.nr), X.matrix(), b.w.middleRows(tile.c0, tile.nc), S(1));
          else
            sl.gemm.add(b.dw.middleRows(tile.c0, tile.nc), X.matrix().transpose(), b.w.middleRows(tile.r0, tile.nr), S(1));
        },
        true);
  }

  /// Runs this process's tiles on the plan's threads: handed out in tile
  /// order, one at a time, to whichever thread is free, which calls
  /// `r = form(t, slot)` (the tile's own work, any order), then
  /// `into(t, r, as_column, slot)` once for the tile's row block and once
  /// for its column block (not for a diagonal tile, whose column block is
  /// its row block), in whichever order the blocks become free.
  ///
  /// When `ordered`, `into` for row block q waits until q has had `into` of
  /// every earlier tile of this process (a counter per block checked
  /// against b.seq, release/acquire), so every block sums its contributions
  /// in tile order, as on one thread: the same bits on any number of
  /// threads.  The tile order is the order of the rounds (no two tiles of a
  /// round share a row block), so consecutive tiles rarely wait for each
  /// other, and no thread waits for a round to end.  The thread holding the
  /// lowest unfinished tile never waits (every tile before it is done), so
  /// the loop cannot deadlock.  Without `ordered` (a pass that adds nothing
  /// into the blocks) only `form` runs.
  ///
  /// No exception leaves the parallel region (that would end the program):
  /// the first one thrown in any thread (e.g. std::bad_alloc from the lazy
  /// growth of a thread's packing buffers) is kept, every thread stops
  /// taking tiles and leaves its wait (the failed tile's blocks never get
  /// their turn), and the exception is rethrown here after the region.  The
  /// workspace is left partly written but valid (its buffers change size
  /// through resize_buffer); the next call sizes and zeroes what it uses.
  template <typename Form, typename Into>
  static void flow(Buffers<S>& b, const Plan& p, const Form& form, const Into& into, bool ordered) {
    const long owned = p.owned(static_cast<long>(b.tiles.size()));
    if (owned <= 0) return;
    const auto nq = static_cast<std::size_t>(b.views) * static_cast<std::size_t>(p.blocks);
    std::unique_ptr<std::atomic<std::uint32_t>[]> done(new std::atomic<std::uint32_t>[nq]);
    for (std::size_t q = 0; q < nq; ++q) done[q].store(0, std::memory_order_relaxed);
    std::atomic<long> next(0);
    std::atomic<bool> failed(false);
    std::exception_ptr error;  // the first exception (written once, under `failed`'s exchange)
    // A thread's loop; returns when the tiles run out or another thread failed.
    const auto work = [&](ThreadSlot<S>& sl) {
      for (long k = next.fetch_add(1, std::memory_order_relaxed); k < owned;
           k = next.fetch_add(1, std::memory_order_relaxed)) {
        if (failed.load(std::memory_order_relaxed)) return;
        const auto t = static_cast<std::size_t>(p.rank + k * p.procs);
        const Tile& tile = b.tiles[t];
        const int r = form(t, sl);
        if (!ordered) continue;
        std::atomic<std::uint32_t>* block[2] = {&done[static_cast<std::size_t>(tile.rb)],
                                                &done[static_cast<std::size_t>(tile.cb)]};
        bool left[2] = {true, !tile.diagonal()};
        for (int spins = 0; left[0] || left[1];) {
          bool moved = false;
          for (int c = 0; c < 2; ++c) {
            const std::uint32_t mine = b.seq[2 * t + static_cast<std::size_t>(c)];
            if (!left[c] || block[c]->load(std::memory_order_acquire) != mine) continue;
            into(t, r, c == 1, sl);
            block[c]->store(mine + 1, std::memory_order_release);
            left[c] = false;
            moved = true;
          }
          if (moved) continue;
          if (failed.load(std::memory_order_relaxed)) return;
          if (++spins > 64) std::this_thread::yield();
        }
      }
    };
    // Each thread with subnormals flushed, Eigen's GEMM serial and its own slot.
#ifdef _OPENMP
#pragma omp parallel num_threads(p.threads) if (p.threads > 1)
#endif
    {
      try {
        FlushSubnormals guard;
        make_eigen_serial();
        note_threads(b);
        work(slot(b));
      } catch (...) {
        if (!failed.exchange(true)) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
  }

  /// b.seq[2 t + as_column]: how many of this process's tiles before tile t
  /// add into t's row block (column block): the value of that block's
  /// counter when t's turn comes in flow.
  static void sequence(Buffers<S>& b, const Plan& p) {
    std::vector<std::uint32_t> count(static_cast<std::size_t>(b.views) * static_cast<std::size_t>(p.blocks), 0);
    b.seq.assign(2 * b.tiles.size(), 0);
    for (std::size_t t = 0; t < b.tiles.size(); ++t) {
      if (!p.owns(t)) continue;
      const Tile& tile = b.tiles[t];
      b.seq[2 * t] = count[static_cast<std::size_t>(tile.rb)]++;
      if (!tile.diagonal()) b.seq[2 * t + 1] = count[static_cast<std::size_t>(tile.cb)]++;
    }
  }

  /// Records the threads the region really has (an enclosing region or a
  /// thread limit may give fewer than planned).
  static void note_threads(Buffers<S>& b) {
#ifdef _OPENMP
    if (omp_get_thread_num() == 0) b.threads = omp_get_num_threads();
#else
    b.threads = 1;
#endif
  }

  static ThreadSlot<S>& slot(Buffers<S>& b) {
#ifdef _OPENMP
    return b.slots[static_cast<std::size_t>(omp_get_thread_num())];
#else
    return b.slots[0];
#endif
  }

  /// The tiles of the view blocks the kernel visits, ordered by round (no
  /// two tiles of a round share a row block): flow's order.
  ///
  /// Row blocks are numbered q = view * blocks + chunk index.  Rounds:
  /// cross-view only (CLIP, InfoNCE): tile (a, c) in round (a + c) mod B,
  /// B rounds of B tiles; otherwise the circle method on V' (the smallest
  /// odd number >= the blocks involved): pair {a, b} in round (a + b) mod V',
  /// the diagonal tile of a in round 2a mod V' (the round a sits out).
  template <typename Kernel>
  static void build_tiles(const Kernel& kernel, Buffers<S>& b, Eigen::Index n, Eigen::Index chunk, Eigen::Index nb,
                          int views) {
    struct Entry {
      Tile t;
      Eigen::Index round;
    };
    std::vector<Entry> entries;
    const auto visits = [&](int vr, int vc) { return vr < views && vc < views && kernel.visits(vr, vc); };
    const bool within = visits(0, 0) || visits(1, 1);
    const int blocks[3][2] = {{0, 0}, {0, 1}, {1, 1}};
    // Blocks involved in the circle method: all 2B, or B per view when only
    // within-view blocks are visited (the two views then share rounds).
    const Eigen::Index span = visits(0, 1) ? 2 * nb : nb;
    const Eigen::Index odd = span % 2 == 1 ? span : span + 1;
    for (const auto& bl : blocks) {
      if (!visits(bl[0], bl[1])) continue;
      for (Eigen::Index I = 0; I < nb; ++I)
        for (Eigen::Index J = (bl[0] == bl[1] ? I : 0); J < nb; ++J) {
          Tile t;
          t.r0 = bl[0] * n + I * chunk;
          t.nr = std::min(chunk, n - I * chunk);
          t.c0 = bl[1] * n + J * chunk;
          t.nc = std::min(chunk, n - J * chunk);
          t.view_r = bl[0];
          t.view_c = bl[1];
          t.same_chunk = (I == J);
          t.rb = bl[0] * nb + I;
          t.cb = bl[1] * nb + J;
          Eigen::Index round;
          if (!within) {
            round = (I + J) % nb;
          } else {
            const Eigen::Index a = span == nb ? I : t.rb, c = span == nb ? J : t.cb;
            round = (a + c) % odd;  // a == c: 2a mod odd
          }
          entries.push_back({t, round});
        }
    }
    std::stable_sort(entries.begin(), entries.end(), [](const Entry& x, const Entry& y) { return x.round < y.round; });
    b.tiles.clear();
    for (const auto& e : entries) b.tiles.push_back(e.t);
  }
};

// Defined out of the class, so it is not inline: with CONTRASTIVE_PRECOMPILED
// (detail/precompiled.hpp) its float and double instances for the library's
// kernels are declared extern and compiled once, in the contrastive::precompiled
// library, instead of in every translation unit.
template <typename S>
template <typename Kernel>
double Engine<S>::run(const Kernel& kernel, Buffers<S>& b, const EngineOptions& opt, bool want_grad, const char* where,
                      const Distribution& dist) {
  static_assert(check_kernel<Kernel, S>(), "contrastive: not a kernel");
  // Across processes an exception of a step is held until the step's
  // all_reduce, which tells every process (sum_processes); every buffer the
  // engine's collectives use is sized inside a step, so no process fails in
  // the engine between two of them.  After the last collective (a value
  // call's finish(), a gradient call's pair terms) a failure throws on its
  // own process only: nobody is left waiting.
  std::exception_ptr err;
  const auto guarded = [&](const auto& step) {
    if (!dist.active()) return step();
    try {
      step();
    } catch (...) {
      err = std::current_exception();
    }
  };
  Plan p;
  guarded([&] {
    p = plan(kernel, b, opt, want_grad, where, dist);
    size(b, p);
    if (dist.active()) {
      if (p.online) resize_buffer(b.stats.m_local, b.stats.m.size());
      if (want_grad) resize_buffer(b.dw_local, dist.local, b.w.cols());
    }
    b.cs.online = p.online;
    kernel.begin(b.w, b.cs);
    pass1(kernel, b, p);
  });
  PairSums sums = tile_totals(b);
  if (dist.active()) {
    sums = sum_processes(*dist.group, sums, err, where);
    merge_processes(b, p, *dist.group);
  }
  b.cs.sums.add(sums);
  double value = 0;
  guarded([&] {
    value = kernel.finish(b.w, b.stats, b.cs) + sums.value;
    if (!want_grad) return;
    for (auto& t : b.tile_sums) t = PairSums{};
    pass2(kernel, b, p);
  });
  if (!want_grad) {
    if (err) std::rethrow_exception(err);  // (a value call has no later collective)
    return value;
  }
  sums = tile_totals(b);
  if (dist.active()) {
    sums = sum_processes(*dist.group, sums, err, where);
    scatter_rows(b, dist);
  }
  b.cs.sums.add(sums);
  const Eigen::Index n = b.w.rows() / b.views;
  kernel.pair_terms(b.w, b.cs, b.dw, dist.active() ? dist.offset : 0, dist.active() ? dist.offset + dist.local : n);
  return value;
}


}  // namespace detail
}  // namespace contrastive
