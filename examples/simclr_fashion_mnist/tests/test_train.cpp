// Backpropagation of encoder + head against central finite differences, the
// probes on separable data, and a short training run whose loss must fall.
#include <cmath>
#include <filesystem>
#include <random>
#include <vector>

#include <catch2/catch.hpp>
#include <contrastive/contrastive.hpp>

#include "idx.hpp"
#include "mlp.hpp"
#include "probe.hpp"
#include "train.hpp"

namespace {

using MatD = fmnist::MLP<double>::Mat;

MatD gaussian(Eigen::Index r, Eigen::Index c, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> g(0.0, 1.0);
  return MatD::NullaryExpr(r, c, [&] { return g(rng); });
}

/// Loss of the network's output on 2m stacked rows: NT-Xent (+ lambda VRNS) of the two halves.
double loss_of(const fmnist::MLP<double>& net, const MatD& x, double lambda, MatD* dz) {
  const Eigen::Index m = x.rows() / 2;
  fmnist::MLP<double>::Cache c;
  const MatD z = net.forward(x, c);
  const contrastive::NTXent<double> base(0.5);
  MatD g(z.rows(), z.cols());
  contrastive::Workspace<double> ws;
  double v;
  if (lambda > 0) {
    const contrastive::WithVRNS<double> loss(base, contrastive::VRNSParams{100}, lambda);
    v = loss.value_and_grad(z.topRows(m), z.bottomRows(m), g.topRows(m), g.bottomRows(m), nullptr, ws);
  } else {
    v = base.value_and_grad(z.topRows(m), z.bottomRows(m), g.topRows(m), g.bottomRows(m), nullptr, ws);
  }
  if (dz) *dz = g;
  return v;
}

/// Checks every analytic parameter gradient against a central difference.
void check_gradients(double lambda) {
  fmnist::MLP<double> net({9, 12, 7, 8, 5}, 2, 11);
  for (auto& b : net.b) b = 0.1 * gaussian(1, b.cols(), 5);  // non-zero biases are exercised too
  const MatD x = gaussian(12, 9, 3);                        // 6 pairs
  MatD dz;
  loss_of(net, x, lambda, &dz);
  fmnist::MLP<double>::Cache c;
  net.forward(x, c);
  net.zero_grad();
  net.backward(c, dz);
  const double h = 1e-6;
  int checked = 0;
  const auto compare = [&](double& param, double analytic) {
    const double keep = param;
    param = keep + h;
    const double up = loss_of(net, x, lambda, nullptr);
    param = keep - h;
    const double down = loss_of(net, x, lambda, nullptr);
    param = keep;
    const double numeric = (up - down) / (2 * h);
    INFO("analytic " << analytic << " numeric " << numeric);
    CHECK(std::abs(analytic - numeric) <= 1e-7 + 1e-5 * std::abs(numeric));
    ++checked;
  };
  for (std::size_t l = 0; l < net.W.size(); ++l) {
    for (Eigen::Index i = 0; i < net.W[l].size(); ++i) compare(net.W[l].data()[i], net.gW[l].data()[i]);
    for (Eigen::Index i = 0; i < net.b[l].size(); ++i) compare(net.b[l].data()[i], net.gb[l].data()[i]);
  }
  CHECK(checked == 9 * 12 + 12 + 12 * 7 + 7 + 7 * 8 + 8 + 8 * 5 + 5);
  // The gradient is not trivially zero.
  CHECK(net.gW[0].norm() > 1e-4);
}

}  // namespace

TEST_CASE("encoder + head backprop matches central differences (NT-Xent)", "[gradient]") { check_gradients(0.0); }

TEST_CASE("encoder + head backprop matches central differences (NT-Xent + 30 VRNS)", "[gradient]") {
  check_gradients(30.0);
}

TEST_CASE("encode() is the forward pass up to the encoder, in chunks", "[gradient]") {
  const fmnist::MLP<float> net({784, 32, 16, 8}, 2, 1);
  const fmnist::ImageMatrix x = fmnist::ImageMatrix::Random(10, 784).cwiseAbs();
  fmnist::MLP<float>::Cache c;
  net.forward(x, c);
  const auto h = net.encode(x, 3);
  REQUIRE(h.cols() == 16);
  CHECK((h - c.a[2]).cwiseAbs().maxCoeff() < 1e-5f);
  CHECK(h.minCoeff() >= 0.f);  // the encoder ends in a ReLU
}

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

TEST_CASE("a short SimCLR run lowers the loss on fixed view pairs", "[train]") {
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
  fmnist::MLP<float> net({784, 128, 64, 64, 32}, 2, 4);

  // The loss on fixed pairs (first 64 images, fixed augmentation seed).
  std::vector<Eigen::Index> idx(64);
  for (Eigen::Index i = 0; i < 64; ++i) idx[static_cast<std::size_t>(i)] = i;
  fmnist::ImageMatrix pairs;
  fmnist::make_views(x, idx, cfg.aug, 777, 0, pairs);
  const fmnist::Loss loss("ntxent", cfg.tau, 0.0, 256);
  const auto fixed_loss = [&] {
    fmnist::MLP<float>::Cache c;
    const auto& z = net.forward(pairs, c);
    fmnist::MLP<float>::Mat g(z.rows(), z.cols());
    contrastive::Workspace<float> ws;
    return loss(z.topRows(64), z.bottomRows(64), g.topRows(64), g.bottomRows(64), ws);
  };
  const float before = fixed_loss();
  std::vector<double> steps;
  int reports = 0;
  fmnist::train(net, x, cfg, [&](const fmnist::EpochReport& r) {
    ++reports;
    CHECK(std::isfinite(r.mean_loss));
    CHECK(r.samples_per_second > 0);
  }, &steps);
  const float after = fixed_loss();
  INFO("fixed-pair loss before " << before << " after " << after);
  CHECK(steps.size() == 24);
  CHECK(reports == 6);  // 256 / 64 = 4 steps per epoch
  CHECK(after < before - 0.2f);
  const double first = (steps[0] + steps[1] + steps[2] + steps[3]) / 4;
  const double last = (steps[20] + steps[21] + steps[22] + steps[23]) / 4;
  CHECK(last < first);

  // With the penalty the run still works.
  cfg.lambda = 30;
  cfg.samples = 64 * 4;
  steps.clear();
  fmnist::train(net, x, cfg, {}, &steps);
  CHECK(steps.size() == 4);
  for (double s : steps) CHECK(std::isfinite(s));
}

TEST_CASE("unknown loss names are rejected", "[train]") {
  CHECK(fmnist::Loss::known("dhel"));
  CHECK_FALSE(fmnist::Loss::known("triplet"));
  CHECK_THROWS_AS(fmnist::Loss("triplet", 0.2, 0, 100), std::invalid_argument);
}
