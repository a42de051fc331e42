// The rates of Eigen's GEMM at the shapes the engine issues (issue 14):
// pass 1's similarity tiles X = s W_I W_J^T, pass 2's row products
// dW_I += H W_J and column products dW_J += H^T W_I, against the large
// square product in the same run.  One thread, float, W of 2048 rows.
//
// Not part of the CMake build (a diagnostic, Eigen only):
//   g++ -O3 -march=native -DNDEBUG -I/usr/include/eigen3 bench/gemm_shapes.cpp -o gemm_shapes
//   ./gemm_shapes            # d = 128
//   ./gemm_shapes 256
#include <Eigen/Dense>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ColMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic>;

// Seconds of the fastest of `reps` calls after one untimed call.
template <typename F>
double fastest(F&& f, int reps) {
  f();
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  Eigen::setNbThreads(1);
  const Eigen::Index d = argc > 1 ? std::atol(argv[1]) : 128, rows = 2048, t = 256, T = rows / t;
  const double flop = 2.0 * double(rows) * double(rows) * double(d);
  {
    for (const Eigen::Index m : {512, 2048}) {
      const ColMat a = ColMat::Random(m, m), b = ColMat::Random(m, m);
      ColMat c(m, m);
      const double s = fastest([&] { c.noalias() = a * b; }, m > 1024 ? 3 : 20);
      std::printf("square %4ld^3 product                 %6.1f GFLOP/s\n", long(m), 2.0 * double(m) * double(m) * double(m) / s / 1e9);
    }
  }
  const RowMat w = RowMat::Random(rows, d);
  RowMat dw = RowMat::Zero(rows, d);
  ColMat x(t, t);
  // Pass 2's tiles as the engine keeps them (column-major), and row-major.
  const std::vector<ColMat> hc(static_cast<std::size_t>(T * T), ColMat::Random(t, t));
  const std::vector<RowMat> hr(static_cast<std::size_t>(T * T), RowMat::Random(t, t));
  auto report = [&](const char* what, auto&& f) {
    std::printf("d=%ld %-36s %6.1f GFLOP/s\n", long(d), what, flop / fastest(f, 7) / 1e9);
  };
  auto tile = [&](Eigen::Index i, Eigen::Index j) { return static_cast<std::size_t>(i * T + j); };
  report("pass 1: X = s W_I W_J^T", [&] {
    for (Eigen::Index i = 0; i < T; ++i)
      for (Eigen::Index j = 0; j < T; ++j)
        x.noalias() = (0.5f * w.middleRows(i * t, t)) * w.middleRows(j * t, t).transpose();
  });
  report("pass 2 row:  dW_I += H W_J (H col)", [&] {
    for (Eigen::Index i = 0; i < T; ++i)
      for (Eigen::Index j = 0; j < T; ++j) dw.middleRows(i * t, t).noalias() += hc[tile(i, j)] * w.middleRows(j * t, t);
  });
  report("pass 2 col:  dW_J += H^T W_I (H col)", [&] {
    for (Eigen::Index i = 0; i < T; ++i)
      for (Eigen::Index j = 0; j < T; ++j)
        dw.middleRows(j * t, t).noalias() += hc[tile(i, j)].transpose() * w.middleRows(i * t, t);
  });
  report("pass 2 row:  dW_I += H W_J (H row)", [&] {
    for (Eigen::Index i = 0; i < T; ++i)
      for (Eigen::Index j = 0; j < T; ++j) dw.middleRows(i * t, t).noalias() += hr[tile(i, j)] * w.middleRows(j * t, t);
  });
  report("pass 2 col:  dW_J += H^T W_I (H row)", [&] {
    for (Eigen::Index i = 0; i < T; ++i)
      for (Eigen::Index j = 0; j < T; ++j)
        dw.middleRows(j * t, t).noalias() += hr[tile(i, j)].transpose() * w.middleRows(i * t, t);
  });
  // One product per row block with the depth of the whole batch.
  const ColMat wide = ColMat::Random(t, rows);
  report("pass 2 row, one product of depth 2048", [&] {
    for (Eigen::Index i = 0; i < T; ++i) dw.middleRows(i * t, t).noalias() += wide * w;
  });
  return dw.allFinite() ? 0 : 1;
}
