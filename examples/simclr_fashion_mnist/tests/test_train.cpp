// The probes on separable data, and short training runs whose loss must fall
// (the gradients themselves are checked in test_net.cpp).
#include <cmath>
#include <filesystem>
#include <random>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <catch2/catch.hpp>
#include <contrastive/contrastive.hpp>

#include "idx.hpp"
#include "net.hpp"
#include "probe.hpp"
#include "train.hpp"

TEST_CASE("probes classify separable data", "[train]") {
  std::mt19937 rng(2);
  std::normal_distribution<float> g(0.f, 1.f);
  const auto data = [&](int n, std::vector<int>& y) {
    Eigen::MatrixXf f(n, 6);
    y.resize(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      y[static_cast<std::size_t>(i)] = i % 3;
      for (int j = 0; j < 6; ++j) f(i, j) = 0.2f * g(rng) + (j == i % 3 ? 3.f : 0.f) + 1.f;
    }
    return f;
  };
  std::vector<int> ytr, yte;
  const auto ftr = data(300, ytr), fte = data(90, yte);
  CHECK(fmnist::linear_probe_accuracy(ftr, ytr, fte, yte, 3) > 0.99);
  CHECK(fmnist::logistic_probe_accuracy(ftr, ytr, fte, yte, 3, /*epochs=*/300) > 0.99);  // 2 steps per epoch here
  CHECK(fmnist::knn_accuracy(ftr, ytr, fte, yte, 5, 3) > 0.99);
  // Labels unrelated to the features: chance level.
  std::vector<int> shuffled = yte;
  std::shuffle(shuffled.begin(), shuffled.end(), rng);
  CHECK(fmnist::knn_accuracy(ftr, ytr, fte, shuffled, 5, 3) < 0.6);
}

namespace {
/// One thread for Eigen and the OpenMP loops while it lives: on a machine
/// whose cores are busy with other work, two threads made the short runs
/// below 3-10x slower (each parallel region waits for a descheduled thread).
class OneThread {
 public:
  OneThread() : eigen_(Eigen::nbThreads()) {
    Eigen::setNbThreads(1);
#ifdef _OPENMP
    omp_ = omp_get_max_threads();
    omp_set_num_threads(1);
#endif
  }
  ~OneThread() {
    Eigen::setNbThreads(eigen_);
#ifdef _OPENMP
    omp_set_num_threads(omp_);
#endif
  }
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;

 private:
  int eigen_, omp_ = 1;
};
}  // namespace

TEST_CASE("a short SimCLR run lowers the loss on fixed view pairs", "[train]") {
  const OneThread one;
  // 256 real images when the data are installed (they are in CI), else synthetic ones.
  fmnist::ImageMatrix x;
  const std::string dir = fmnist::data_dir();
  if (std::filesystem::exists(dir + "/t10k-images-idx3-ubyte.gz")) {
    x = fmnist::read_images(dir + "/t10k-images-idx3-ubyte.gz").topRows(256);
  } else {
    WARN("Fashion-MNIST not found in " << dir << ": synthetic images");
    std::mt19937 rng(9);
    std::uniform_real_distribution<float> u(0.f, 1.f);
    x = fmnist::ImageMatrix::Zero(256, 784);
    for (Eigen::Index i = 0; i < 256; ++i) {
      const int cls = static_cast<int>(i % 8), top = 3 + 2 * cls;
      for (int r = top; r < top + 10; ++r)
        for (int c = 6; c < 22; ++c) x(i, r * 28 + c) = 0.4f + 0.6f * u(rng);
    }
  }
  fmnist::TrainConfig cfg;
  cfg.batch = 64;
  cfg.samples = 64 * 24;  // 24 steps
  cfg.lr = 1e-3;
  cfg.cosine = false;
  // A small CNN (the example's shape, fewer channels) and an MLP.
  fmnist::CNNSpec spec;
  spec.c1 = 4;
  spec.c2 = 4;
  spec.hidden = 32;
  spec.out = 16;
  for (const bool cnn : {true, false}) {
    INFO((cnn ? "CNN" : "MLP"));
    fmnist::Network<float> net = cnn ? fmnist::make_cnn<float>(spec, 4) : fmnist::make_mlp<float>({784, 128, 64, 64, 32}, 2, 4);

    // The loss on fixed pairs (first 64 images, fixed augmentation seed).
    std::vector<Eigen::Index> idx(64);
    for (Eigen::Index i = 0; i < 64; ++i) idx[static_cast<std::size_t>(i)] = i;
    fmnist::ImageMatrix pairs;
    fmnist::make_views(x, idx, cfg.aug, 777, 0, pairs);
    const fmnist::Loss loss("ntxent", cfg.tau, 0.0, 256);
    const auto fixed_loss = [&] {
      fmnist::Network<float>::Cache c;
      const auto& z = net.forward(pairs, c);
      contrastive::Workspace<float> ws;
      return loss.value(z.topRows(64), z.bottomRows(64), ws);
    };
    const float before = fixed_loss();
    std::vector<double> steps;
    int reports = 0;
    long long step_calls = 0;
    fmnist::train(
        net, x, cfg,
        [&](const fmnist::EpochReport& r) {
          ++reports;
          CHECK(std::isfinite(r.mean_loss));
          CHECK(r.samples_per_second > 0);
        },
        &steps,
        [&](const fmnist::StepReport& r) {
          ++step_calls;
          CHECK(r.steps == 4);
          CHECK(r.step == (step_calls - 1) % 4 + 1);
          CHECK(r.epoch == (step_calls - 1) / 4 + 1);
          CHECK(r.samples == 64 * r.step);
          CHECK(r.seconds > 0);
        });
    const float after = fixed_loss();
    INFO("fixed-pair loss before " << before << " after " << after);
    CHECK(steps.size() == 24);
    CHECK(step_calls == 24);
    CHECK(reports == 6);  // 256 / 64 = 4 steps per epoch
    CHECK(after < before - 0.2f);
    const double first = (steps[0] + steps[1] + steps[2] + steps[3]) / 4;
    const double last = (steps[20] + steps[21] + steps[22] + steps[23]) / 4;
    CHECK(last < first);

    // With the penalty the run still works.
    fmnist::TrainConfig c2 = cfg;
    c2.lambda = 30;
    c2.samples = 64 * 4;
    steps.clear();
    fmnist::train(net, x, c2, {}, &steps);
    CHECK(steps.size() == 4);
    for (double s : steps) CHECK(std::isfinite(s));
  }
}

TEST_CASE("a training step is forward, the library's loss and gradient, backward and the update", "[train]") {
  // The parts of Stepper compose to step(): same loss, same parameters after.
  fmnist::CNNSpec spec;
  spec.side = 28;
  spec.c1 = 2;
  spec.c2 = 3;
  spec.rep = 8;
  spec.hidden = 8;
  spec.out = 4;
  fmnist::Network<float> a = fmnist::make_cnn<float>(spec, 3), b = a;
  fmnist::TrainConfig cfg;
  const fmnist::ImageMatrix views = fmnist::ImageMatrix::Random(16, 784).cwiseAbs();
  fmnist::Stepper sa(a, cfg, 100), sb(b, cfg, 100);
  fmnist::TrainTimes t;
  const float la = sa.step(views, 1e-3, t);
  const auto& z = sb.forward(views);
  CHECK(z.rows() == 16);
  const float lb = sb.loss_and_grad();
  CHECK(sb.dz().rows() == 16);
  CHECK(sb.dz().norm() > 0);
  sb.backward();
  const fmnist::Vec<float> grad = b.grad;
  CHECK(grad.norm() > 0);
  sb.update(1e-3);
  CHECK(la == lb);
  CHECK(a.params == b.params);
  CHECK(a.grad == grad);  // step() leaves the step's gradient in net.grad, where an all-reduce would sum it
  CHECK(t.forward > 0);
  CHECK(t.loss > 0);
  CHECK(t.backward > 0);
}

TEST_CASE("unknown loss names are rejected", "[train]") {
  CHECK(fmnist::Loss::known("dhel"));
  CHECK_FALSE(fmnist::Loss::known("triplet"));
  CHECK_THROWS_AS(fmnist::Loss("triplet", 0.2, 0, 100), std::invalid_argument);
}
