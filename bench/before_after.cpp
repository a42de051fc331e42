// The presets' value and value + gradient calls, timed by a plain loop, for
// comparing two versions of the headers: bench/before_after.sh compiles this
// one file against each version's include/ and runs the two programs in
// alternation.  Only the public API both versions share is used (the presets
// with (tau, EngineOptions), value / value_and_grad with a Workspace) and
// bench/inputs.hpp, which needs only Eigen.
//
//   before_after [threads=1] [min_seconds=0.1] [only]
// prints one line per case: <loss>/<grad|value>/<scalar>/n/d/threads:T <ms> <value>
// (with `only`, just the cases whose name contains it: one case in a fresh
// process, as a training program's first calls are, before anything has
// raised glibc's mmap threshold)
// where ms is the median of at least 5 timed calls after one untimed call
// (the Workspace sized and its pages touched, as in a training loop).
#include <contrastive/contrastive.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "inputs.hpp"  // deterministic_input: Eigen only, no project header

namespace {

using Clock = std::chrono::steady_clock;

const char* only = nullptr;

template <typename Loss, typename S>
void run(const char* name, Eigen::Index n, Eigen::Index d, int threads, bool grad, double min_seconds) {
  char label[128];
  std::snprintf(label, sizeof label, "%s/%s/%s/%ld/%ld/threads:%d", name, grad ? "grad" : "value",
                sizeof(S) == 4 ? "float" : "double", static_cast<long>(n), static_cast<long>(d), threads);
  if (only && !std::strstr(label, only)) return;
  contrastive::EngineOptions options;
  options.num_threads = threads;
  const Loss loss(0.2, options);
  const auto za = contrastive_bench::deterministic_input<S>(n, d, 0), zb = contrastive_bench::deterministic_input<S>(n, d, 1);
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> ga(n, d), gb(n, d);
  contrastive::Workspace<S> ws;
  S gt = 0, v = 0;
  const auto call = [&] { v = grad ? loss.value_and_grad(za, zb, ga, gb, &gt, ws) : loss.value(za, zb, ws); };
  call();
  std::vector<double> t;
  double total = 0;
  while (total < min_seconds || t.size() < 5) {
    const auto t0 = Clock::now();
    call();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    total += t.back();
  }
  std::sort(t.begin(), t.end());
  std::printf("%s %.4f %.6f\n", label, 1e3 * t[t.size() / 2], static_cast<double>(v));
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  const double min_seconds = argc > 2 ? std::atof(argv[2]) : 0.1;
  if (argc > 3) only = argv[3];
  for (long n : {256L, 1024L, 4096L})
    for (bool grad : {true, false}) {
      run<contrastive::NTXent<float>, float>("ntxent", n, 128, threads, grad, min_seconds);
      run<contrastive::DCL<float>, float>("dcl", n, 128, threads, grad, min_seconds);
      run<contrastive::DHEL<float>, float>("dhel", n, 128, threads, grad, min_seconds);
      run<contrastive::CLIP<float>, float>("clip", n, 128, threads, grad, min_seconds);
      run<contrastive::InfoNCE<float>, float>("infonce", n, 128, threads, grad, min_seconds);
    }
  for (long n : {256L, 1024L}) {
    run<contrastive::NTXent<float>, float>("ntxent", n, 256, threads, true, min_seconds);
    run<contrastive::CLIP<float>, float>("clip", n, 256, threads, true, min_seconds);
  }
  for (bool grad : {true, false}) {
    run<contrastive::NTXent<double>, double>("ntxent", 1024, 128, threads, grad, min_seconds);
    run<contrastive::CLIP<double>, double>("clip", 1024, 128, threads, grad, min_seconds);
  }
  // Past the default memory budget (298 MB of tiles against 256 MiB).
  run<contrastive::NTXent<double>, double>("ntxent", 4096, 128, threads, true, min_seconds);
  run<contrastive::DCL<double>, double>("dcl", 4096, 128, threads, true, min_seconds);
  return 0;
}
