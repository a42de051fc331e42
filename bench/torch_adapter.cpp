// The libtorch adapter (contrastive/torch.hpp) against the same loss written
// plainly with libtorch ops (normalize, one matmul, the diagonal filled,
// cross_entropy), float32, d = 128, a learned temperature (a tensor that
// requires grad) in both: forward + backward, the median of several
// repetitions, both measured in this process back to back (alternating);
// then the peak memory of one step of each, measured in a fresh child
// process (this binary, --memory ...): its peak resident set after one
// forward + backward minus the peak after setting up the inputs and warming
// the code path up on a small batch (so thread pools and BLAS buffers are
// not counted).  The thread count T sets torch::set_num_threads(T) and
// OMP_NUM_THREADS (the library's tile loop) alike.
//
//   ./build-bench/bench/torch_adapter [--threads T] [--sizes 256,1024,4096] [--reps R]
//
// Prints a Markdown table (bench/README.md, README "libtorch"); "library
// alone" is the same loss called directly on the tensors' storage, without
// autograd.
#include <contrastive/torch.hpp>

#include <torch/torch.h>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

namespace F = torch::nn::functional;
using Step = std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&)>;

torch::Tensor normalize(const torch::Tensor& z) { return F::normalize(z, F::NormalizeFuncOptions().dim(1)); }

/// NT-Xent in libtorch ops: one (2n x 2n) matmul, the diagonal filled with
/// -inf in place, one cross entropy against the other view.
torch::Tensor ntxent_ops(const torch::Tensor& za, const torch::Tensor& zb, const torch::Tensor& tau) {
  const int64_t n = za.size(0);
  const torch::Tensor w = torch::cat({normalize(za), normalize(zb)}, 0);
  torch::Tensor logits = torch::matmul(w, w.t()) / tau;
  logits.fill_diagonal_(-std::numeric_limits<float>::infinity());
  return F::cross_entropy(logits, torch::cat({torch::arange(n, 2 * n), torch::arange(0, n)}));
}

/// CLIP in libtorch ops: one (n x n) matmul, the two cross entropies.
torch::Tensor clip_ops(const torch::Tensor& za, const torch::Tensor& zb, const torch::Tensor& tau) {
  const torch::Tensor logits = torch::matmul(normalize(za), normalize(zb).t()) / tau;
  const torch::Tensor labels = torch::arange(za.size(0));
  return 0.5 * (F::cross_entropy(logits, labels) + F::cross_entropy(logits.t(), labels));
}

Step make_step(const std::string& loss, const std::string& impl) {
  using contrastive::tch::Options;
  if (loss == "ntxent" && impl == "adapter")
    return [](const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& tau) {
      static const contrastive::NTXent<float> l;
      return contrastive::tch::apply(l, a, b, Options{}.with_temperature(tau));
    };
  if (loss == "clip" && impl == "adapter")
    return [](const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& tau) {
      static const contrastive::CLIP<float> l;
      return contrastive::tch::apply(l, a, b, Options{}.with_temperature(tau));
    };
  if (loss == "ntxent" && impl == "ops") return ntxent_ops;
  if (loss == "clip" && impl == "ops") return clip_ops;
  throw std::invalid_argument("unknown loss/implementation " + loss + "/" + impl);
}

struct Leaves {
  torch::Tensor za, zb, tau;
};

Leaves leaves(int64_t n, int64_t d) {
  torch::manual_seed(n);
  const torch::Tensor x = torch::randn({n, d});
  return {x.clone().requires_grad_(true), (x + 0.5 * torch::randn({n, d})).requires_grad_(true),
          torch::full({}, 0.2f).requires_grad_(true)};
}

/// The library called directly on the tensors' storage (value, dL/dza,
/// dL/dzb, dL/dtau into preallocated Eigen matrices, one reused workspace):
/// what the adapter adds is the rest of the adapter's time.
struct Direct {
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Mat ga, gb;
  contrastive::Workspace<float> ws;
  float run(const std::string& loss, const torch::Tensor& za, const torch::Tensor& zb) {
    const Eigen::Map<const Mat> a(za.data_ptr<float>(), za.size(0), za.size(1)), b(zb.data_ptr<float>(), zb.size(0), zb.size(1));
    ga.resize(a.rows(), a.cols());
    gb.resize(b.rows(), b.cols());
    float dtau = 0;
    static const contrastive::NTXent<float> ntxent(0.2);
    static const contrastive::CLIP<float> clip(0.2);
    if (loss == "ntxent") return ntxent.value_and_grad(a, b, ga, gb, &dtau, ws);
    return clip.value_and_grad(a, b, ga, gb, &dtau, ws);
  }
};

/// One training step's worth of loss work: forward + backward, grads cleared first.
void step(const Step& f, Leaves& in) {
  for (torch::Tensor* t : {&in.za, &in.zb, &in.tau}) t->mutable_grad().reset();
  f(in.za, in.zb, in.tau).backward();
}

double seconds(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

double max_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) * 1024.0;  // KiB on Linux
}

/// Child mode: the extra peak memory of one step.
int memory_mode(const std::string& loss, const std::string& impl, int64_t n, int64_t d) {
  const Step f = make_step(loss, impl);
  Leaves warm = leaves(64, d);
  step(f, warm);
  step(f, warm);
  Leaves in = leaves(n, d);
  const double base = max_rss_bytes();
  step(f, in);
  std::printf("peak_bytes %.0f\n", max_rss_bytes() - base);
  return 0;
}

double child_peak(const std::string& self, const std::string& loss, const std::string& impl, int64_t n, int64_t d,
                  int threads) {
  std::ostringstream cmd;
  cmd << "'" << self << "' --memory " << loss << " " << impl << " " << n << " " << d << " --threads " << threads;
  FILE* p = popen(cmd.str().c_str(), "r");
  if (!p) throw std::runtime_error("cannot run " + cmd.str());
  char line[256];
  double bytes = -1;
  while (std::fgets(line, sizeof line, p))
    if (std::sscanf(line, "peak_bytes %lf", &bytes) == 1) break;
  pclose(p);
  if (bytes < 0) throw std::runtime_error("no peak_bytes from " + cmd.str());
  return bytes;
}

std::string self_path() {
  char buf[4096];
  const ssize_t len = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (len <= 0) throw std::runtime_error("readlink(/proc/self/exe) failed");
  return std::string(buf, static_cast<std::size_t>(len));
}

/// The adapter and the ops compute the same loss and gradients (float32).
void check_agreement(int64_t d) {
  for (const std::string loss : {"ntxent", "clip"}) {
    Leaves a = leaves(256, d), b = leaves(256, d);
    const torch::Tensor va = make_step(loss, "adapter")(a.za, a.zb, a.tau), vb = make_step(loss, "ops")(b.za, b.zb, b.tau);
    va.backward();
    vb.backward();
    const auto rel = [](const torch::Tensor& x, const torch::Tensor& y) {
      return (x - y).abs().max().item<double>() / std::max(y.abs().max().item<double>(), 1e-30);
    };
    const double worst = std::max({rel(va, vb), rel(a.za.grad(), b.za.grad()), rel(a.zb.grad(), b.zb.grad()),
                                   rel(a.tau.grad(), b.tau.grad())});
    std::printf("# %s: adapter and libtorch ops agree to %.1e (value, dL/dza, dL/dzb, dL/dtau; float32)\n",
                loss.c_str(), worst);
    if (!(worst < 1e-4)) throw std::runtime_error(loss + ": the adapter and the libtorch ops disagree");
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    int threads = 2, reps = 0;
    std::vector<int64_t> sizes = {256, 1024, 4096};
    const int64_t d = 128;
    std::vector<std::string> args(argv + 1, argv + argc);
    for (std::size_t i = 0; i < args.size(); ++i) {
      if (args[i] == "--threads" && i + 1 < args.size()) threads = std::stoi(args[++i]);
      else if (args[i] == "--reps" && i + 1 < args.size()) reps = std::stoi(args[++i]);
      else if (args[i] == "--sizes" && i + 1 < args.size()) {
        sizes.clear();
        std::stringstream ss(args[++i]);
        for (std::string s; std::getline(ss, s, ',');) sizes.push_back(std::stoll(s));
      }
    }
    setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);
    torch::set_num_threads(threads);
    if (args.size() >= 5 && args[0] == "--memory")
      return memory_mode(args[1], args[2], std::stoll(args[3]), std::stoll(args[4]));

    double load[3] = {0, 0, 0};
    getloadavg(load, 3);
    std::printf("# threads %d (torch::get_num_threads() = %d), d = %ld, float32, load average %.2f at start\n", threads,
                torch::get_num_threads(), static_cast<long>(d), load[0]);
    check_agreement(d);
    const std::string self = self_path();
    std::printf("\n| loss | n | library alone ms | adapter ms | libtorch ops ms | ops / adapter | adapter peak MiB | "
                "ops peak MiB | ops / adapter |\n");
    std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (const std::string loss : {"ntxent", "clip"}) {
      for (const int64_t n : sizes) {
        const Step adapter = make_step(loss, "adapter"), ops = make_step(loss, "ops");
        Leaves in = leaves(n, d);
        step(adapter, in);  // warm-up of both
        step(ops, in);
        const int r = reps > 0 ? reps : (n >= 4096 ? 3 : n >= 1024 ? 7 : 15);
        Direct direct;
        const torch::Tensor za = in.za.detach(), zb = in.zb.detach();
        direct.run(loss, za, zb);
        std::vector<double> ta, to, td;
        for (int k = 0; k < r; ++k) {  // alternating, so drifting load hits all alike
          ta.push_back(seconds([&] { step(adapter, in); }));
          to.push_back(seconds([&] { step(ops, in); }));
          td.push_back(seconds([&] { direct.run(loss, za, zb); }));
        }
        const double ma = median(ta) * 1e3, mo = median(to) * 1e3, md = median(td) * 1e3;
        const double pa = child_peak(self, loss, "adapter", n, d, threads) / (1 << 20);
        const double po = child_peak(self, loss, "ops", n, d, threads) / (1 << 20);
        std::printf("| %s | %ld | %.2f | %.2f | %.2f | %.1f | %.1f | %.1f | %.1f |\n", loss == "ntxent" ? "NT-Xent" : "CLIP",
                    static_cast<long>(n), md, ma, mo, mo / ma, pa, po, po / std::max(pa, 1e-9));
        std::fflush(stdout);
      }
    }
    getloadavg(load, 3);
    std::printf("\n# load average %.2f at the end\n", load[0]);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "torch_adapter: %s\n", e.what());
    return 1;
  }
}
