// Data-parallel training of the example across MPI processes against the
// one-process training it must reproduce.  Run under mpiexec with any number
// of processes; every process also runs the one-process reference itself
// (no communication), so one launch compares P processes with one.
//
//   * the views a process makes for its shard are, bit for bit, the rows of
//     the whole batch's views of the one-process run;
//   * the first step's parameter gradient, summed over the processes, is the
//     one-process gradient of the global batch (relative 2-norm error below
//     1e-5: no world-size factor is missing or extra);
//   * a short training run (Adam, cosine schedule) gives per-step losses
//     equal to the one-process run's within 1e-4 relative, and leaves the
//     same parameters on every process, bit for bit;
// for the CNN with NT-Xent and the MLP with NT-Xent + VRNS, with a batch that
// does not divide evenly over 2 or 3 processes.
//
// Prints "fmnist-dp: P processes, all passed" on rank 0 when every process passed.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <mpi.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <contrastive/contrastive.hpp>
#include <contrastive/mpi.hpp>

#include "idx.hpp"
#include "net.hpp"
#include "train.hpp"

namespace {

int failures = 0;
int g_rank = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "rank %d: FAILED: %s\n", g_rank, what.c_str());
  }
}

/// 256 real test images when the data are installed, else synthetic ones
/// (bright rectangles at one of eight heights).
fmnist::ImageMatrix images() {
  const std::string dir = fmnist::data_dir();
  if (std::filesystem::exists(dir + "/t10k-images-idx3-ubyte.gz"))
    return fmnist::read_images(dir + "/t10k-images-idx3-ubyte.gz").topRows(256);
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  fmnist::ImageMatrix x = fmnist::ImageMatrix::Zero(256, 784);
  for (Eigen::Index i = 0; i < 256; ++i) {
    const int top = 3 + 2 * static_cast<int>(i % 8);
    for (int r = top; r < top + 10; ++r)
      for (int c = 6; c < 22; ++c) x(i, r * 28 + c) = 0.4f + 0.6f * u(rng);
  }
  return x;
}

struct Case {
  const char* name;
  bool cnn;
  double lambda;
};

fmnist::Network<float> make_net(bool cnn) {
  fmnist::CNNSpec spec;  // the example's shape with fewer channels
  spec.c1 = 4;
  spec.c2 = 8;
  spec.hidden = 32;
  spec.out = 16;
  return cnn ? fmnist::make_cnn<float>(spec, 3) : fmnist::make_mlp<float>({784, 64, 32, 32, 16}, 2, 3);
}

void run_case(const Case& c, const fmnist::ImageMatrix& x, const contrastive::mpi::ProcessGroup& group) {
  const int size = group.size();
  fmnist::TrainConfig cfg;
  cfg.batch = 23;  // uneven over 2 (12 + 11) and 3 (8 + 8 + 7) processes
  cfg.samples = 23 * 8;
  cfg.lr = 3e-3;
  cfg.lambda = c.lambda;
  cfg.threads = 1;
  cfg.aug.max_shift = 1;
  const std::string name = std::string(c.name) + ", " + std::to_string(size) + " processes";

  // 1. The first step: views and the summed parameter gradient.
  {
    const Eigen::Index m = cfg.batch;
    std::vector<Eigen::Index> all(static_cast<std::size_t>(m));
    std::iota(all.begin(), all.end(), Eigen::Index{40});
    fmnist::ImageMatrix whole, mine_views;
    fmnist::make_views(x, all, cfg.aug, cfg.seed, 0, whole);
    const fmnist::Shard mine(m, group.rank(), size);
    const std::vector<Eigen::Index> idx(all.begin() + mine.first, all.begin() + mine.first + mine.count);
    fmnist::make_views(x, idx, cfg.aug, cfg.seed, 0, mine_views, mine.first);
    check(mine_views.topRows(mine.count) == whole.middleRows(mine.first, mine.count) &&
              mine_views.bottomRows(mine.count) == whole.middleRows(m + mine.first, mine.count),
          name + ": the shard's views are the whole batch's rows");

    fmnist::Network<float> ref_net = make_net(c.cnn), net = make_net(c.cnn);
    fmnist::TrainConfig one = cfg;
    fmnist::Stepper ref(ref_net, one, x.rows());
    ref.forward(whole);
    const float ref_loss = ref.loss_and_grad();
    ref.backward();
    cfg.group = &group;
    fmnist::Stepper dp(net, cfg, x.rows());
    dp.forward(mine_views);
    const float loss = dp.loss_and_grad();
    dp.backward();
    dp.all_reduce();
    cfg.group = nullptr;
    const double rel = static_cast<double>((net.grad - ref_net.grad).norm() / ref_net.grad.norm());
    check(std::abs(loss - ref_loss) <= 1e-5f * std::abs(ref_loss), name + ": first-step loss");
    check(rel < 1e-5, name + ": summed gradient vs one process, relative error " + std::to_string(rel));
    if (g_rank == 0)
      std::printf("%s: first step: loss %.7f (one process %.7f), gradient relative error %.2e\n", name.c_str(),
                  static_cast<double>(loss), static_cast<double>(ref_loss), rel);
  }

  // 2. A short run: per-step losses and the parameters on every process.
  std::vector<double> ref_losses, losses;
  fmnist::Network<float> ref_net = make_net(c.cnn), net = make_net(c.cnn);
  fmnist::train(ref_net, x, cfg, {}, &ref_losses);
  cfg.group = &group;
  fmnist::train(net, x, cfg, {}, &losses);
  check(losses.size() == ref_losses.size() && losses.size() == 8, name + ": 8 steps");
  double worst = 0;
  for (std::size_t s = 0; s < std::min(losses.size(), ref_losses.size()); ++s)
    worst = std::max(worst, std::abs(losses[s] - ref_losses[s]) / std::abs(ref_losses[s]));
  check(worst <= 1e-4, name + ": per-step losses within 1e-4 relative, worst " + std::to_string(worst));
  check(ref_losses.back() < ref_losses.front(), name + ": the loss falls");
  fmnist::Vec<float> hi = net.params, lo = -net.params;
  group.all_reduce(hi.data(), static_cast<std::size_t>(hi.size()), contrastive::ProcessGroup::Op::Max);
  group.all_reduce(lo.data(), static_cast<std::size_t>(lo.size()), contrastive::ProcessGroup::Op::Max);
  check((hi.array() == -lo.array()).all(), name + ": parameters identical on every process");
  if (g_rank == 0) {
    std::printf("%s: step  one process   %d processes  relative difference\n", name.c_str(), size);
    for (std::size_t s = 0; s < losses.size(); ++s)
      std::printf("  %4zu  %.7f  %.7f  %.1e\n", s + 1, ref_losses[s], losses[s],
                  std::abs(losses[s] - ref_losses[s]) / std::abs(ref_losses[s]));
  }
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  int size = 1, worst = 0;
  {
    const contrastive::mpi::ProcessGroup group(MPI_COMM_WORLD);
    g_rank = group.rank();
    size = group.size();
    Eigen::setNbThreads(1);
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    const fmnist::ImageMatrix x = images();
    for (const Case& c : {Case{"CNN, NT-Xent", true, 0.0}, Case{"MLP, NT-Xent + 30 VRNS", false, 30.0}}) {
      try {
        run_case(c, x, group);
      } catch (const std::exception& e) {
        check(false, std::string(c.name) + ": " + e.what());
        MPI_Abort(MPI_COMM_WORLD, 1);  // the others may wait in a collective
      }
    }
    MPI_Allreduce(&failures, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  }
  if (g_rank == 0) std::printf("fmnist-dp: %d processes, %s\n", size, worst == 0 ? "all passed" : "FAILED");
  MPI_Finalize();
  return worst == 0 ? 0 : 1;
}
