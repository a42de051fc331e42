// Would pre-packed operands speed up the engine's tile products (issue 14)?
// Times, on 256-row tiles of a 2048-row W, one thread, Eigen 3.4 internals:
//   pass 1, X = s W_I W_J^T: Eigen's packed product with its buffers passed
//     in (as detail/gemm.hpp runs it, packing both operands every product)
//     against gebp_kernel on W packed once per call (lhs and rhs layouts);
//   pass 2, dW_I += H W_J and dW_J += H^T W_I: the same, with W packed once
//     as the left operand and only the tile H packed per product;
// beside the square 512^3 product, and checks the results against Eigen's.
//
// Not part of the CMake build (a diagnostic; it uses Eigen's internal API):
//   g++ -std=c++17 -O3 -march=native -DNDEBUG -I/usr/include/eigen3 bench/gemm_prepacked.cpp -o gemm_prepacked
//   ./gemm_prepacked 128 && ./gemm_prepacked 256
#include <Eigen/Dense>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
using namespace Eigen;
using namespace Eigen::internal;
template <typename F> double fastest(F&& f, int reps) {
  f(); double best = 1e300;
  for (int r = 0; r < reps; ++r) { auto t0 = std::chrono::steady_clock::now(); f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()); }
  return best;
}
template <typename S> struct Blk : level3_blocking<S, S> {
  std::vector<S, aligned_allocator<S>> a, b;
  void prep(Index m, Index n, Index k) {
    this->m_mc = m; this->m_nc = n; this->m_kc = k;
    computeProductBlockingSizes<S, S, 1>(this->m_kc, this->m_mc, this->m_nc, Index(1));
    this->m_mc = std::min(this->m_mc, m); this->m_nc = std::min(this->m_nc, n);
    a.resize(this->m_mc * this->m_kc); b.resize(this->m_kc * this->m_nc);
    this->m_blockA = a.data(); this->m_blockB = b.data();
  }
};
template <typename S> void run(Index d) {
  using RowMat = Matrix<S, Dynamic, Dynamic, RowMajor>; using ColMat = Matrix<S, Dynamic, Dynamic>;
  const Index rows = 2048, t = 256, T = rows / t;
  const double flop = 2.0 * double(rows) * double(rows) * double(d);
  { const Index m = 512; ColMat a = ColMat::Random(m, m), b = ColMat::Random(m, m), c(m, m);
    double s = fastest([&] { c.noalias() = a * b; }, 20);
    std::printf("%s d=%ld square 512^3 %.1f GFLOP/s\n", sizeof(S) == 4 ? "float" : "double", long(d), 2.0 * m * m * m / s / 1e9); }
  RowMat w = RowMat::Random(rows, d);
  ColMat x(t, t);
  Blk<S> blk;
  const S alpha = S(0.5);
  const auto pass1_gmmp = [&] {
    for (Index i = 0; i < T; ++i) for (Index j = 0; j < T; ++j) {
      x.setZero(); blk.prep(t, t, d);
      general_matrix_matrix_product<Index, S, RowMajor, false, S, ColMajor, false, ColMajor, 1>::run(
        t, t, d, w.data() + i * t * d, d, w.data() + j * t * d, d, x.data(), 1, t, alpha, blk, nullptr);
    } };
  typedef gebp_traits<S, S> Traits;
  typedef const_blas_data_mapper<S, Index, RowMajor> LM;
  typedef const_blas_data_mapper<S, Index, ColMajor> RM;
  typedef blas_data_mapper<S, Index, ColMajor, Unaligned, 1> ResM;
  gemm_pack_lhs<S, Index, LM, Traits::mr, Traits::LhsProgress, typename Traits::LhsPacket4Packing, RowMajor> pack_lhs;
  gemm_pack_rhs<S, Index, RM, Traits::nr, ColMajor> pack_rhs;
  gebp_kernel<S, S, Index, ResM, Traits::mr, Traits::nr, false, false> gebp;
  std::vector<S, aligned_allocator<S>> pa(rows * d), pb(rows * d);
  double s_pack = fastest([&] {
    for (Index i = 0; i < T; ++i) {
      pack_lhs(pa.data() + i * t * d, LM(w.data() + i * t * d, d), d, t);
      pack_rhs(pb.data() + i * t * d, RM(w.data() + i * t * d, d), d, t);
    } }, 9);
  const auto pass1_prepacked = [&] {
    for (Index i = 0; i < T; ++i) for (Index j = 0; j < T; ++j) {
      x.setZero();
      gebp(ResM(x.data(), t), pa.data() + i * t * d, pb.data() + j * t * d, t, d, t, alpha);
    } };
  // The two in alternation (the VM's speed drifts), the fastest of each.
  double s_a = 1e300, s_b = 1e300;
  for (int round = 0; round < 5; ++round) {
    s_a = std::min(s_a, fastest(pass1_gmmp, 5));
    s_b = std::min(s_b, fastest(pass1_prepacked, 5));
  }
  // check
  ColMat ref = alpha * w.middleRows(3 * t, t) * w.middleRows(5 * t, t).transpose();
  x.setZero(); gebp(ResM(x.data(), t), pa.data() + 3 * t * d, pb.data() + 5 * t * d, t, d, t, alpha);
  std::printf("  pass1 via gmmp(own buffers): %.1f GFLOP/s; prepacked gebp: %.1f GFLOP/s (pack all once %.3f ms = %.1f%% of gmmp); err %.2g\n",
              flop / s_a / 1e9, flop / s_b / 1e9, s_pack * 1e3, 100 * s_pack / s_a, double((ref - x).cwiseAbs().maxCoeff()));
  // pass 2 row: dW_I^T (d x t colmajor) += W_J^T (d x t, ColMajor view of rowmajor, stride d) * H^T (RowMajor view of colmajor H)
  std::vector<ColMat> h(T * T, ColMat::Random(t, t));
  RowMat dw = RowMat::Zero(rows, d);
  typedef const_blas_data_mapper<S, Index, ColMajor> LM2;
  typedef const_blas_data_mapper<S, Index, RowMajor> RM2;
  gemm_pack_lhs<S, Index, LM2, Traits::mr, Traits::LhsProgress, typename Traits::LhsPacket4Packing, ColMajor> pack_lhs2;
  gemm_pack_rhs<S, Index, RM2, Traits::nr, RowMajor> pack_rhs2;
  gemm_pack_rhs<S, Index, RM, Traits::nr, ColMajor> pack_rhs3;
  const auto pass2_gmmp = [&] {
    for (Index i = 0; i < T; ++i) for (Index j = 0; j < T; ++j) {
      blk.prep(d, t, t);
      general_matrix_matrix_product<Index, S, ColMajor, false, S, RowMajor, false, ColMajor, 1>::run(
        d, t, t, w.data() + j * t * d, d, h[i * T + j].data(), t, dw.data() + i * t * d, 1, d, S(1), blk, nullptr);
      blk.prep(d, t, t);
      general_matrix_matrix_product<Index, S, ColMajor, false, S, ColMajor, false, ColMajor, 1>::run(
        d, t, t, w.data() + i * t * d, d, h[i * T + j].data(), t, dw.data() + j * t * d, 1, d, S(1), blk, nullptr);
    } };
  std::vector<S, aligned_allocator<S>> pl(rows * d), pr(t * t);
  for (Index i = 0; i < T; ++i) pack_lhs2(pl.data() + i * t * d, LM2(w.data() + i * t * d, d), t, d);
  const auto pass2_prepacked = [&] {
    for (Index i = 0; i < T; ++i) for (Index j = 0; j < T; ++j) {
      pack_rhs2(pr.data(), RM2(h[i * T + j].data(), t), t, t);
      gebp(ResM(dw.data() + i * t * d, d), pl.data() + j * t * d, pr.data(), d, t, t, S(1));
      pack_rhs3(pr.data(), RM(h[i * T + j].data(), t), t, t);
      gebp(ResM(dw.data() + j * t * d, d), pl.data() + i * t * d, pr.data(), d, t, t, S(1));
    } };
  double s_c = 1e300, s_d = 1e300;
  for (int round = 0; round < 5; ++round) {
    s_c = std::min(s_c, fastest(pass2_gmmp, 4));
    s_d = std::min(s_d, fastest(pass2_prepacked, 4));
  }
  std::printf("  pass2 row+col via gmmp: %.1f GFLOP/s; W prepacked: %.1f GFLOP/s\n", 2 * flop / s_c / 1e9, 2 * flop / s_d / 1e9);
  // check pass2
  RowMat dw2 = RowMat::Zero(rows, d), dw3 = RowMat::Zero(rows, d);
  for (Index i = 0; i < T; ++i) for (Index j = 0; j < T; ++j) {
    dw2.middleRows(i * t, t) += h[i * T + j] * w.middleRows(j * t, t);
    dw2.middleRows(j * t, t) += h[i * T + j].transpose() * w.middleRows(i * t, t);
    pack_rhs2(pr.data(), RM2(h[i * T + j].data(), t), t, t);
    gebp(ResM(dw3.data() + i * t * d, d), pl.data() + j * t * d, pr.data(), d, t, t, S(1));
    pack_rhs3(pr.data(), RM(h[i * T + j].data(), t), t, t);
    gebp(ResM(dw3.data() + j * t * d, d), pl.data() + i * t * d, pr.data(), d, t, t, S(1));
  }
  std::printf("  pass2 err %.2g\n", double((dw2 - dw3).cwiseAbs().maxCoeff()));
}
int main(int argc, char** argv) {
  Index d = argc > 1 ? std::atol(argv[1]) : 128;
  run<float>(d); run<double>(d);
}
