// The SimCLR training loop: two augmented views of a batch, the MLP
// (encoder + head) on both, the library's loss and exact gradient on the
// head outputs, backpropagation and an optimiser step.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <numeric>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <contrastive/contrastive.hpp>

#include "augment.hpp"
#include "idx.hpp"
#include "mlp.hpp"

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

  /// Loss value; dL/dza, dL/dzb into ga, gb.
  template <typename A, typename B, typename GA, typename GB>
  float operator()(const A& za, const B& zb, GA&& ga, GB&& gb, contrastive::Workspace<float>& ws) const {
    return with_vrns_ ? with_vrns_->value_and_grad(za, zb, ga, gb, nullptr, ws)
                      : base_.value_and_grad(za, zb, ga, gb, nullptr, ws);
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
  double lr = 1e-3;
  bool sgd = false;          ///< SGD with momentum 0.9 instead of Adam
  double weight_decay = 0;
  unsigned seed = 1;
  int threads = 0;           ///< engine threads (0 = OpenMP default)
  AugmentParams aug{};
};

/// What one reporting period ("epoch" = one pass over the training images) measured.
struct EpochReport {
  int epoch;
  double mean_loss, samples_per_second;
};

struct TrainTimes {
  double loss = 0;     ///< inside the library's value_and_grad
  double augment = 0;  ///< making the views
  double network = 0;  ///< forward, backward and the optimiser
};

/// Trains `net` on the rows of x; calls on_epoch after each pass over the
/// data (and after the last step).  Returns the time breakdown; the loss of
/// every step goes to *step_losses if given.
inline TrainTimes train(MLP<float>& net, const ImageMatrix& x, const TrainConfig& cfg,
                        const std::function<void(const EpochReport&)>& on_epoch = {},
                        std::vector<double>* step_losses = nullptr) {
  using clock = std::chrono::steady_clock;
  const auto secs = [](clock::time_point a, clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
  const Eigen::Index n = x.rows(), m = cfg.batch;
  if (m < 2 || m > n) throw std::invalid_argument("batch must be in [2, number of training images]");
  contrastive::EngineOptions opt;
  opt.num_threads = cfg.threads;
  const Loss loss(cfg.loss, cfg.tau, cfg.lambda, static_cast<long long>(n), opt);
  Optimizer<float> optim(net, cfg.sgd ? Optimizer<float>::Kind::SGD : Optimizer<float>::Kind::Adam, cfg.lr,
                         cfg.weight_decay);
  contrastive::Workspace<float> ws;
  MLP<float>::Cache cache;
  MLP<float>::Mat grad(2 * m, net.output_size());
  ImageMatrix views;
  std::vector<Eigen::Index> perm(static_cast<std::size_t>(n)), idx(static_cast<std::size_t>(m));
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
    std::copy_n(perm.begin() + pos * m, m, idx.begin());
    const auto t0 = clock::now();
    make_views(x, idx, cfg.aug, cfg.seed, static_cast<std::uint64_t>(s), views);
    const auto t1 = clock::now();
    const auto& z = net.forward(views, cache);  // both views stacked: 2m rows
    const auto t2 = clock::now();
    const float l = loss(z.topRows(m), z.bottomRows(m), grad.topRows(m), grad.bottomRows(m), ws);
    const auto t3 = clock::now();
    net.backward(cache, grad);
    optim.step(net);
    const auto t4 = clock::now();
    t.augment += secs(t0, t1);
    t.loss += secs(t2, t3);
    t.network += secs(t1, t2) + secs(t3, t4);
    sum += l;
    ++in_epoch;
    if (step_losses) step_losses->push_back(l);
    if ((pos == steps_per_epoch - 1 || s == steps - 1) && on_epoch) {
      const auto now = clock::now();
      on_epoch({static_cast<int>(s / steps_per_epoch) + 1, sum / static_cast<double>(in_epoch),
                static_cast<double>(in_epoch * m) / secs(epoch_start, now)});
      sum = 0;
      in_epoch = 0;
      epoch_start = clock::now();
    }
  }
  return t;
}

}  // namespace fmnist
