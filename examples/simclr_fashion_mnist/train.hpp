// The SimCLR training loop: two augmented views of a batch, the network
// (encoder + head) on both, the library's loss and exact gradient on the
// head outputs, backpropagation into one flat gradient vector and an
// optimiser step.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <contrastive/contrastive.hpp>

#include "augment.hpp"
#include "idx.hpp"
#include "net.hpp"

namespace fmnist {

/// The loss on the head outputs: an InfoNCE-family preset, plus lambda * VRNS when lambda > 0.
class Loss {
 public:
  /// name: ntxent, infonce, clip, dcl or dhel; dataset_size: N of the VRNS target -1/(N-1).
  Loss(const std::string& name, double tau, double lambda, long long dataset_size,
       const contrastive::EngineOptions& opt = {})
      : base_(make_base(name, tau, opt)) {
    if (lambda > 0)
      with_vrns_ = std::make_shared<const contrastive::WithVRNS<float>>(base_, contrastive::VRNSParams{dataset_size}, lambda);
  }

  static bool known(const std::string& name) {
    return name == "ntxent" || name == "infonce" || name == "clip" || name == "dcl" || name == "dhel";
  }

  /// Loss value; dL/dza, dL/dzb into ga, gb.  With a process group, za and
  /// zb are this process's rows of the global batch (all processes' rows in
  /// rank order): the value is the global batch's and ga, gb the exact
  /// gradient of the global loss with respect to this process's rows.
  template <typename A, typename B, typename GA, typename GB>
  float operator()(const A& za, const B& zb, GA&& ga, GB&& gb, contrastive::Workspace<float>& ws,
                   const contrastive::ProcessGroup* group = nullptr) const {
    contrastive::CallOptions<float> call;
    call.process_group = group;
    return with_vrns_ ? with_vrns_->value_and_grad(za, zb, ga, gb, nullptr, ws, call)
                      : base_.value_and_grad(za, zb, ga, gb, nullptr, ws, call);
  }
  /// Loss value only.
  template <typename A, typename B>
  float value(const A& za, const B& zb, contrastive::Workspace<float>& ws) const {
    return with_vrns_ ? with_vrns_->value(za, zb, ws) : base_.value(za, zb, ws);
  }

 private:
  static contrastive::InfoNCEFamily<float> make_base(const std::string& name, double tau,
                                                     const contrastive::EngineOptions& o) {
    if (name == "ntxent") return contrastive::NTXent<float>(tau, o);
    if (name == "infonce") return contrastive::InfoNCE<float>(tau, o);
    if (name == "clip") return contrastive::CLIP<float>(tau, o);
    if (name == "dcl") return contrastive::DCL<float>(tau, o);
    if (name == "dhel") return contrastive::DHEL<float>(tau, o);
    throw std::invalid_argument("unknown loss '" + name + "' (ntxent, infonce, clip, dcl, dhel)");
  }
  contrastive::InfoNCEFamily<float> base_;
  // Held by pointer: GCC 12 with -fsanitize flags a false maybe-uninitialized
  // in std::optional's emplace of this type.
  std::shared_ptr<const contrastive::WithVRNS<float>> with_vrns_;
};

struct TrainConfig {
  std::string loss = "ntxent";
  double tau = 0.2;
  double lambda = 0;         ///< weight of the VRNS penalty (0 = off)
  int batch = 256;           ///< pairs per step
  long long samples = 0;     ///< images seen in total (each step sees `batch`)
  double lr = 1e-3;          ///< peak learning rate
  bool cosine = true;        ///< cosine decay of the learning rate to 0 over the run (else constant)
  long long warmup = 0;      ///< steps of linear warm-up before the decay
  bool sgd = false;          ///< SGD with momentum 0.9 instead of Adam
  double weight_decay = 0;
  unsigned seed = 1;
  int threads = 0;           ///< engine threads (0 = OpenMP default)
  AugmentParams aug{};
  /// Data-parallel training: the processes of this group share every batch
  /// (see Shard); null = one process.  Every process of the group runs
  /// train() with the same configuration.
  const contrastive::ProcessGroup* group = nullptr;
};

/// The rows [first, first + count) of a global batch of m pairs that process
/// `rank` of `size` holds: consecutive blocks in rank order, the first
/// m % size processes one row more.
struct Shard {
  Eigen::Index first = 0, count = 0;
  Shard(Eigen::Index m, int rank, int size) {
    const Eigen::Index q = m / size, r = m % size, p = rank;
    first = p * q + std::min(p, r);
    count = q + (p < r ? 1 : 0);
  }
};

/// The learning rate of step s (0-based) of `steps`.
inline double learning_rate(const TrainConfig& cfg, long long s, long long steps) {
  if (s < cfg.warmup) return cfg.lr * static_cast<double>(s + 1) / static_cast<double>(cfg.warmup);
  if (!cfg.cosine) return cfg.lr;
  const double span = static_cast<double>(std::max<long long>(1, steps - cfg.warmup));
  const double pi = 3.14159265358979323846;
  return cfg.lr * 0.5 * (1.0 + std::cos(pi * static_cast<double>(s - cfg.warmup) / span));
}

/// Where the time of the training steps went (seconds).
struct TrainTimes {
  double augment = 0;   ///< making the views
  double forward = 0;   ///< encoder + head on both views
  double loss = 0;      ///< inside the library's value_and_grad
  double backward = 0;  ///< backpropagation into the flat gradient
  double update = 0;    ///< the optimiser
  double reduce = 0;    ///< the all-reduce of the parameter gradient (data-parallel runs)
  double network() const { return forward + backward + update; }
};

/// One SimCLR training step in four parts, so that a data-parallel trainer
/// can put its communication between them: every process runs forward on its
/// own share of the batch, the loss gives each the exact gradient for its
/// rows of the global batch, backward turns that into the process's part of
/// the flat parameter gradient, and the sum over processes of those parts
/// (one all-reduce of `net.grad`) is what the optimiser steps with.
class Stepper {
 public:
  /// With cfg.group, forward takes this process's share of the batch and the
  /// loss and the gradient are those of the global batch.
  Stepper(Network<float>& net, const TrainConfig& cfg, long long dataset_size)
      : net_(net), group_(cfg.group), loss_(cfg.loss, cfg.tau, cfg.lambda, dataset_size, engine_options(cfg)),
        optim_(net.decay_mask(), cfg.sgd ? Optimizer<float>::Kind::SGD : Optimizer<float>::Kind::Adam,
               cfg.weight_decay) {}

  /// Head outputs z of the stacked views (2m rows: first views, then second views).
  const RowMat<float>& forward(const ImageMatrix& views) { return net_.forward(views, cache_); }

  /// The library's loss of z = [za; zb] and its exact gradient dL/dz (into dz()).
  float loss_and_grad() {
    const auto& z = cache_.a.back();
    const Eigen::Index m = z.rows() / 2;
    dz_.resize(z.rows(), z.cols());
    return loss_(z.topRows(m), z.bottomRows(m), dz_.topRows(m), dz_.bottomRows(m), ws_, group_);
  }

  /// dL/dparams of this step into the flat vector net.grad (overwritten).
  /// With a process group: the part that flows through this process's rows.
  void backward() {
    net_.grad.setZero();
    net_.backward(cache_, dz_);
  }

  /// With a process group of more than one process: net.grad becomes the sum
  /// over the processes of their parts, the gradient of the global loss (one
  /// MPI_Allreduce; the loss is already the mean over the global batch and
  /// dz its exact gradient, so the sum needs no 1/world-size factor).  Every
  /// process then holds the same gradient and makes the same update.
  void all_reduce() {
    if (group_ && group_->size() > 1)
      group_->all_reduce(net_.grad.data(), static_cast<std::size_t>(net_.grad.size()), contrastive::ProcessGroup::Op::Sum);
  }

  /// The optimiser step from net.grad.
  void update(double lr) { optim_.step(net_.params, net_.grad, lr); }

  /// All four, timed into t; returns the loss.
  float step(const ImageMatrix& views, double lr, TrainTimes& t) {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    forward(views);
    const auto t1 = clock::now();
    const float l = loss_and_grad();
    const auto t2 = clock::now();
    backward();
    const auto t3 = clock::now();
    all_reduce();
    const auto t3r = clock::now();
    update(lr);
    const auto t4 = clock::now();
    const auto secs = [](clock::time_point a, clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
    t.forward += secs(t0, t1);
    t.loss += secs(t1, t2);
    t.backward += secs(t2, t3);
    t.reduce += secs(t3, t3r);
    t.update += secs(t3r, t4);
    return l;
  }

  const RowMat<float>& dz() const { return dz_; }

 private:
  static contrastive::EngineOptions engine_options(const TrainConfig& cfg) {
    contrastive::EngineOptions o;
    o.num_threads = cfg.threads;
    return o;
  }
  Network<float>& net_;
  const contrastive::ProcessGroup* group_;
  Loss loss_;
  Optimizer<float> optim_;
  contrastive::Workspace<float> ws_;
  Network<float>::Cache cache_;
  RowMat<float> dz_;
};

/// Progress inside an epoch, after each step.
struct StepReport {
  int epoch;                ///< 1-based
  long long step, steps;    ///< steps done in this epoch, and its number of steps
  double seconds;           ///< since the epoch started
  long long samples;        ///< images seen in this epoch
  double mean_loss;         ///< over this epoch's steps so far
};

/// What one reporting period ("epoch" = one pass over the training images) measured.
struct EpochReport {
  int epoch;
  double mean_loss, samples_per_second;
};

/// Trains `net` on the rows of x; calls on_step after every step and
/// on_epoch after each pass over the data (and after the last step).
/// Returns the time breakdown; the loss of every step goes to *step_losses if given.
///
/// With cfg.group every process of the group calls train() with the same
/// x, cfg and initial net.  Every process shuffles the whole training set
/// with the shared seed and so knows the whole batch, but makes the views
/// and runs the network only for its Shard of it; the views of a sample
/// depend on its place in the global batch, not on the process (make_views),
/// so the global batch of each step -- images and augmentations -- is that
/// of the one-process run with the same seed, and so are the loss and the
/// gradient up to the order of floating-point sums.  The reported losses
/// and sample counts are those of the global batch.
inline TrainTimes train(Network<float>& net, const ImageMatrix& x, const TrainConfig& cfg,
                        const std::function<void(const EpochReport&)>& on_epoch = {},
                        std::vector<double>* step_losses = nullptr,
                        const std::function<void(const StepReport&)>& on_step = {}) {
  using clock = std::chrono::steady_clock;
  const auto secs = [](clock::time_point a, clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
  const Eigen::Index n = x.rows(), m = cfg.batch;
  if (m < 2 || m > n) throw std::invalid_argument("batch must be in [2, number of training images]");
  const int rank = cfg.group ? cfg.group->rank() : 0, size = cfg.group ? cfg.group->size() : 1;
  if (m < size) throw std::invalid_argument("batch must be at least the number of processes");
  const Shard mine(m, rank, size);
  Stepper stepper(net, cfg, static_cast<long long>(n));
  ImageMatrix views;
  std::vector<Eigen::Index> perm(static_cast<std::size_t>(n)), idx(static_cast<std::size_t>(mine.count));
  std::iota(perm.begin(), perm.end(), Eigen::Index{0});
  std::mt19937 shuffler(cfg.seed);

  const long long steps = std::max<long long>(1, cfg.samples / m), steps_per_epoch = std::max<Eigen::Index>(1, n / m);
  TrainTimes t;
  double sum = 0;
  long long in_epoch = 0;
  auto epoch_start = clock::now();
  for (long long s = 0; s < steps; ++s) {
    const long long pos = s % steps_per_epoch;
    if (pos == 0) std::shuffle(perm.begin(), perm.end(), shuffler);
    std::copy_n(perm.begin() + pos * m + mine.first, mine.count, idx.begin());
    const auto t0 = clock::now();
    make_views(x, idx, cfg.aug, cfg.seed, static_cast<std::uint64_t>(s), views, mine.first);
    t.augment += secs(t0, clock::now());
    const float l = stepper.step(views, learning_rate(cfg, s, steps), t);
    sum += l;
    ++in_epoch;
    if (step_losses) step_losses->push_back(l);
    const int epoch = static_cast<int>(s / steps_per_epoch) + 1;
    const long long in_this = std::min(steps_per_epoch, steps - (epoch - 1) * steps_per_epoch);
    if (on_step)
      on_step({epoch, in_epoch, in_this, secs(epoch_start, clock::now()), in_epoch * m,
               sum / static_cast<double>(in_epoch)});
    if ((pos == steps_per_epoch - 1 || s == steps - 1) && on_epoch) {
      on_epoch({epoch, sum / static_cast<double>(in_epoch),
                static_cast<double>(in_epoch * m) / secs(epoch_start, clock::now())});
    }
    if (pos == steps_per_epoch - 1 || s == steps - 1) {
      sum = 0;
      in_epoch = 0;
      epoch_start = clock::now();
    }
  }
  return t;
}

}  // namespace fmnist
