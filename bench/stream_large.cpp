// NT-Xent value + gradient at a size whose similarity matrix cannot be stored
// (n = 65536 pairs: 2n x 2n floats = 64 GiB), against a blocked GEMM
// reference with the same minimal GEMM work (6 n^2 d multiply-adds) and
// against the limit of the streamed path: its GEMM work, 8 n^2 d
// multiply-adds (the similarity tiles are formed in both passes), at the
// machine's best sgemm rate (a 2048^3 Eigen product with the same threads,
// measured first in this run).
//
//   stream_large [n=65536] [d=128] [what=both|lib|gemm]
// Threads: OpenMP's default for both (set OMP_NUM_THREADS).
// Peak resident memory of the library alone:
//   /usr/bin/time -v ./build-bench/bench/stream_large 65536 128 lib
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <sys/resource.h>

#include <Eigen/Core>

#include <contrastive/contrastive.hpp>

#include "bench_common.hpp"

using namespace contrastive_bench;
using Mat = Eigen::MatrixXf;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  const Eigen::Index n = argc > 1 ? std::atol(argv[1]) : 65536, d = argc > 2 ? std::atol(argv[2]) : 128;
  const std::string what = argc > 3 ? argv[3] : "both";
  const double macs = minimal_gemm_macs(Preset::NTXent, n, d, true);
  double t_lib = 0, t_gemm = 0;
  // The rate first, with Eigen's default threads (OpenMP's, as the library's).
  const double rate = gemm_rate_gflops<float>(2048, 0);
  const double limit = 2e-9 * recomputing_gemm_macs(Preset::NTXent, n, d) / rate;
  std::printf("sgemm 2048^3: %.1f GFLOP/s on %d threads; limit of the streamed path (8 n^2 d): %.1f s\n", rate,
              Eigen::nbThreads(), limit);
  if (what != "gemm") {
    const Mat za = deterministic_input<float>(n, d, 0), zb = deterministic_input<float>(n, d, 1);
    Mat ga(n, d), gb(n, d);
    contrastive::Workspace<float> ws;
    const auto loss = make_loss<float>(Preset::NTXent);
    const auto t0 = Clock::now();
    const float v = loss.value_and_grad(za, zb, ga, gb, nullptr, ws);
    t_lib = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("library: NT-Xent %.6f, %.1f s, %.1f GFLOP/s, streamed %d, threads %d, workspace %.0f MiB, peak RSS %.0f MiB\n",
                static_cast<double>(v), t_lib, 2e-9 * macs / t_lib, ws.last_call_streamed() ? 1 : 0,
                ws.last_call_threads(), static_cast<double>(ws.bytes()) / 1048576.0, peak_rss_mib());
  }
  if (what != "lib") {
    // The same GEMM work in row stripes, with no n x n storage: the upper
    // half of W W^T (2 n^2 d), then a (2n x 2n) x (2n x d) product (4 n^2 d)
    // whose left factor is the stripe buffer (its values do not matter here).
    Mat w(2 * n, d);
    w << deterministic_input<float>(n, d, 0), deterministic_input<float>(n, d, 1);
    const Eigen::Index stripe = 2048;
    Mat k = Mat::Zero(stripe, 2 * n), dw(2 * n, d);
    const auto t0 = Clock::now();
    for (Eigen::Index r = 0; r < 2 * n; r += stripe) {
      const Eigen::Index rows = std::min(stripe, 2 * n - r);
      k.topLeftCorner(rows, 2 * n - r).noalias() = w.middleRows(r, rows) * w.bottomRows(2 * n - r).transpose();
    }
    for (Eigen::Index r = 0; r < 2 * n; r += stripe) {
      const Eigen::Index rows = std::min(stripe, 2 * n - r);
      dw.middleRows(r, rows).noalias() = k.topRows(rows) * w;
    }
    t_gemm = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("GEMM reference: %.1f s, %.1f GFLOP/s\n", t_gemm, 2e-9 * macs / t_gemm);
  }
  if (what != "gemm") std::printf("library / limit = %.2f\n", t_lib / limit);
  if (what == "both") std::printf("library / GEMM reference = %.2f\n", t_lib / t_gemm);
  return 0;
}
