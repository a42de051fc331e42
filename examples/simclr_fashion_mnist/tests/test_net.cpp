// The layers of net.hpp: forward passes against direct definitions, every
// backward pass (parameters and inputs) against central differences, whole
// networks (CNN and MLP) under NT-Xent and VRNS against central differences,
// the optimiser, the learning-rate schedule, PCA and the progress line.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <catch2/catch.hpp>
#include <contrastive/contrastive.hpp>

#include "net.hpp"
#include "probe.hpp"
#include "progress.hpp"
#include "train.hpp"

namespace {

using MatD = fmnist::RowMat<double>;
using VecD = fmnist::Vec<double>;

MatD gaussian(Eigen::Index r, Eigen::Index c, unsigned seed, double away_from_zero = 0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> g(0.0, 1.0);
  MatD m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i) {
    double v = g(rng);
    while (std::abs(v) < away_from_zero) v = g(rng);  // keep ReLU inputs off the kink
    m.data()[i] = v;
  }
  return m;
}

/// Checks a layer's backward pass against central differences of
/// L = sum(out .* R) with respect to every parameter and every input.
void check_layer(const fmnist::Layer<double>& layer, Eigen::Index n, unsigned seed, double away_from_zero = 0) {
  MatD in = gaussian(n, layer.in_shape().size(), seed, away_from_zero);
  VecD w = VecD::Zero(layer.num_params());
  std::mt19937 rng(seed + 1);
  layer.init(w.data(), rng);
  w.tail(layer.num_params() - layer.num_weights()) =
      0.1 * gaussian(layer.num_params() - layer.num_weights(), 1, seed + 2);  // non-zero biases
  const MatD r = gaussian(n, layer.out_shape().size(), seed + 3);
  MatD out, work, work2, din;
  const auto loss = [&]() {
    MatD o, scratch;
    layer.forward(in, o, w.data(), scratch);
    return (o.array() * r.array()).sum();
  };
  layer.forward(in, out, w.data(), work);
  REQUIRE(out.rows() == n);
  REQUIRE(out.cols() == layer.out_shape().size());
  VecD g = VecD::Zero(layer.num_params());
  layer.backward(in, out, r, w.data(), g.data(), &din, work, work2);
  REQUIRE(din.rows() == n);
  REQUIRE(din.cols() == layer.in_shape().size());
  // Without din the parameter gradient is the same (the first layer of a network asks for none).
  VecD g2 = VecD::Zero(layer.num_params());
  MatD work3;
  layer.forward(in, out, w.data(), work3);
  layer.backward(in, out, r, w.data(), g2.data(), nullptr, work3, work2);
  CHECK(g == g2);

  const double h = 1e-6;
  const auto numeric = [&](double& x) {
    const double keep = x;
    x = keep + h;
    const double up = loss();
    x = keep - h;
    const double down = loss();
    x = keep;
    return (up - down) / (2 * h);
  };
  for (Eigen::Index i = 0; i < w.size(); ++i) {
    const double num = numeric(w[i]);
    INFO(layer.name() << " parameter " << i << ": analytic " << g[i] << " numeric " << num);
    CHECK(std::abs(g[i] - num) <= 1e-7 + 1e-6 * std::abs(num));
  }
  for (Eigen::Index i = 0; i < in.size(); ++i) {
    const double num = numeric(in.data()[i]);
    INFO(layer.name() << " input " << i << ": analytic " << din.data()[i] << " numeric " << num);
    CHECK(std::abs(din.data()[i] - num) <= 1e-7 + 1e-6 * std::abs(num));
  }
  if (layer.num_params() > 0) CHECK(g.norm() > 1e-3);
  CHECK(din.norm() > 1e-3);
}

/// Loss of the network's output on 2m stacked rows: NT-Xent (+ lambda VRNS) of the two halves.
double loss_of(const fmnist::Network<double>& net, const MatD& x, double lambda, MatD* dz) {
  const Eigen::Index m = x.rows() / 2;
  fmnist::Network<double>::Cache c;
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

/// Every entry of the flat gradient of a whole network against a central difference.
void check_network(fmnist::Network<double> net, const MatD& x, double lambda) {
  for (Eigen::Index l = 0; l < net.layers(); ++l) {  // non-zero biases are exercised too
    const auto& layer = net.layer(static_cast<int>(l));
    const Eigen::Index nb = layer.num_params() - layer.num_weights();
    net.params.segment(net.offset(static_cast<int>(l)) + layer.num_weights(), nb) = 0.1 * gaussian(nb, 1, 5);
  }
  MatD dz;
  loss_of(net, x, lambda, &dz);
  fmnist::Network<double>::Cache c;
  net.forward(x, c);
  net.grad.setZero();
  net.backward(c, dz);
  const double h = 1e-6;
  for (Eigen::Index i = 0; i < net.params.size(); ++i) {
    const double keep = net.params[i];
    net.params[i] = keep + h;
    const double up = loss_of(net, x, lambda, nullptr);
    net.params[i] = keep - h;
    const double down = loss_of(net, x, lambda, nullptr);
    net.params[i] = keep;
    const double numeric = (up - down) / (2 * h);
    INFO("parameter " << i << " of " << net.params.size() << ": analytic " << net.grad[i] << " numeric " << numeric);
    CHECK(std::abs(net.grad[i] - numeric) <= 1e-7 + 1e-5 * std::abs(numeric));
  }
  CHECK(net.grad.head(net.layer(0).num_params()).norm() > 1e-4);  // the first layer learns too
}

fmnist::CNNSpec tiny_cnn() {
  fmnist::CNNSpec p;
  p.side = 6;  // 6 -> pool 3 -> pool 1: the second pooling drops an odd row and column
  p.k1 = 3;
  p.c1 = 2;
  p.k2 = 3;
  p.c2 = 3;
  p.rep = 6;
  p.hidden = 5;
  p.out = 4;
  return p;
}

}  // namespace

TEST_CASE("dense layer: forward is x W + b, backward matches central differences", "[gradient]") {
  const fmnist::Dense<double> layer(5, 4);
  CHECK(layer.num_params() == 24);
  CHECK(layer.num_weights() == 20);
  VecD w = gaussian(24, 1, 1);
  const MatD x = gaussian(3, 5, 2);
  MatD out, work;
  layer.forward(x, out, w.data(), work);
  for (Eigen::Index i = 0; i < 3; ++i)
    for (Eigen::Index j = 0; j < 4; ++j) {
      double ref = w[20 + j];
      for (Eigen::Index k = 0; k < 5; ++k) ref += x(i, k) * w[k * 4 + j];
      CHECK(out(i, j) == Approx(ref).epsilon(1e-12));
    }
  check_layer(layer, 3, 10);
}

TEST_CASE("ReLU layer: backward matches central differences", "[gradient]") {
  const fmnist::ReLU<double> layer(fmnist::Shape{2, 3, 2});
  check_layer(layer, 3, 20, /*away_from_zero=*/1e-3);
}

TEST_CASE("convolution: forward is the direct zero-padded convolution", "[gradient]") {
  const fmnist::Shape in{5, 6, 2};
  const int k = 3, cout = 3;
  const fmnist::Conv2D<double> layer(in, k, cout);
  REQUIRE(layer.num_params() == k * k * 2 * cout + cout);
  const VecD w = gaussian(layer.num_params(), 1, 3);
  const MatD x = gaussian(2, in.size(), 4);
  MatD out, work;
  layer.forward(x, out, w.data(), work);
  REQUIRE(out.cols() == 5 * 6 * 3);
  for (Eigen::Index s = 0; s < 2; ++s)
    for (int y = 0; y < in.h; ++y)
      for (int xx = 0; xx < in.w; ++xx)
        for (int co = 0; co < cout; ++co) {
          double ref = w[k * k * 2 * cout + co];
          for (int ky = 0; ky < k; ++ky)
            for (int kx = 0; kx < k; ++kx)
              for (int ci = 0; ci < 2; ++ci) {
                const int iy = y + ky - 1, ix = xx + kx - 1;
                if (iy < 0 || ix < 0 || iy >= in.h || ix >= in.w) continue;
                ref += x(s, (iy * in.w + ix) * 2 + ci) * w[((ky * k + kx) * 2 + ci) * cout + co];
              }
          CHECK(out(s, (y * in.w + xx) * cout + co) == Approx(ref).epsilon(1e-12));
        }
}

TEST_CASE("convolution: backward matches central differences", "[gradient]") {
  check_layer(fmnist::Conv2D<double>(fmnist::Shape{5, 6, 2}, 3, 3), 2, 30);
  // A kernel wider than the image: most taps are padding.
  check_layer(fmnist::Conv2D<double>(fmnist::Shape{3, 4, 1}, 5, 2), 2, 31);
  CHECK_THROWS_AS(fmnist::Conv2D<double>(fmnist::Shape{4, 4, 1}, 4, 2), std::invalid_argument);
}

TEST_CASE("max-pooling: forward takes each window's maximum, backward matches central differences",
          "[gradient]") {
  const fmnist::MaxPool2<double> layer(fmnist::Shape{4, 6, 2});
  const MatD x = gaussian(2, 48, 5);
  MatD out, work;
  layer.forward(x, out, nullptr, work);
  REQUIRE(out.cols() == 2 * 3 * 2);
  for (Eigen::Index s = 0; s < 2; ++s)
    for (int y = 0; y < 2; ++y)
      for (int xx = 0; xx < 3; ++xx)
        for (int c = 0; c < 2; ++c) {
          double ref = -1e300;
          for (int dy = 0; dy < 2; ++dy)
            for (int dx = 0; dx < 2; ++dx) ref = std::max(ref, x(s, ((2 * y + dy) * 6 + 2 * xx + dx) * 2 + c));
          CHECK(out(s, (y * 3 + xx) * 2 + c) == ref);
        }
  check_layer(layer, 2, 40);
  // Odd sizes: the last row and column are in no window and get no gradient.
  check_layer(fmnist::MaxPool2<double>(fmnist::Shape{5, 3, 1}), 2, 41);
}

TEST_CASE("CNN encoder + head backprop matches central differences (NT-Xent)", "[gradient]") {
  const auto net = fmnist::make_cnn<double>(tiny_cnn(), 7);
  CHECK(net.encoder_size() == 6);  // the dense layer at the end of the encoder
  CHECK(net.output_size() == 4);
  check_network(net, gaussian(8, 36, 8).cwiseAbs(), 0.0);  // 4 pairs of 6 x 6 "images"
}

TEST_CASE("CNN encoder + head backprop matches central differences (NT-Xent + 30 VRNS)", "[gradient]") {
  fmnist::CNNSpec p = tiny_cnn();
  p.rep = 0;  // the default shape: the pooled feature map is the representation
  const auto net = fmnist::make_cnn<double>(p, 9);
  CHECK(net.encoder_size() == 3);
  check_network(net, gaussian(8, 36, 10).cwiseAbs(), 30.0);
}

TEST_CASE("MLP encoder + head backprop matches central differences (NT-Xent, and + 30 VRNS)", "[gradient]") {
  const auto net = fmnist::make_mlp<double>({9, 12, 7, 8, 5}, 2, 11);
  CHECK(net.params.size() == 9 * 12 + 12 + 12 * 7 + 7 + 7 * 8 + 8 + 8 * 5 + 5);
  CHECK(net.encoder_size() == 7);
  check_network(net, gaussian(12, 9, 3), 0.0);
  check_network(net, gaussian(12, 9, 3), 30.0);
}

TEST_CASE("encode() is the forward pass up to the encoder, in chunks", "[gradient]") {
  fmnist::CNNSpec p = tiny_cnn();
  p.side = 28;
  const auto net = fmnist::make_cnn<float>(p, 1);
  const fmnist::ImageMatrix x = fmnist::ImageMatrix::Random(10, 784).cwiseAbs();
  fmnist::Network<float>::Cache c;
  net.forward(x, c);
  const auto h = net.encode(x, 3);
  REQUIRE(h.cols() == 6);
  CHECK((h - c.a[static_cast<std::size_t>(net.encoder_layers())]).cwiseAbs().maxCoeff() < 1e-5f);
  CHECK(h.minCoeff() >= 0.f);  // the encoder ends in a ReLU
  CHECK(h.maxCoeff() > 0.f);
  CHECK_THROWS_AS(fmnist::Network<float>().add(std::make_shared<fmnist::Dense<float>>(3, 4))
                      .add(std::make_shared<fmnist::Dense<float>>(5, 2)),
                  std::invalid_argument);
}

TEST_CASE("the weight-decay mask covers weights and not biases", "[gradient]") {
  const auto net = fmnist::make_mlp<double>({3, 4, 2, 2}, 1, 1);
  const VecD m = net.decay_mask();
  CHECK(m.sum() == 3 * 4 + 4 * 2 + 2 * 2);
  CHECK(m.segment(12, 4).sum() == 0);  // the first layer's biases
}

TEST_CASE("Adam and SGD steps", "[train]") {
  // Adam's first step moves every parameter by lr against the sign of its gradient.
  fmnist::Optimizer<double> adam(VecD::Ones(3), fmnist::Optimizer<double>::Kind::Adam);
  VecD p(3), g(3);
  p << 1, 2, 3;
  g << 0.5, -2, 0;
  adam.step(p, g, 0.1);
  CHECK(p[0] == Approx(0.9).epsilon(1e-6));
  CHECK(p[1] == Approx(2.1).epsilon(1e-6));
  CHECK(p[2] == 3);
  // SGD with momentum 0.9 and weight decay 0.5 on the masked entry only.
  VecD mask(2);
  mask << 1, 0;
  fmnist::Optimizer<double> sgd(mask, fmnist::Optimizer<double>::Kind::SGD, 0.5);
  VecD q(2), gq(2);
  q << 2, 2;
  gq << 1, 1;
  sgd.step(q, gq, 0.1);  // velocity (1 + 0.5 * 2, 1) = (2, 1)
  CHECK(q[0] == Approx(1.8));
  CHECK(q[1] == Approx(1.9));
  sgd.step(q, gq, 0.1);  // velocity (0.9 * 2 + 1 + 0.9, 0.9 + 1) = (3.7, 1.9)
  CHECK(q[0] == Approx(1.43));
  CHECK(q[1] == Approx(1.71));
}

TEST_CASE("learning-rate schedule: warm-up, then cosine decay to zero", "[train]") {
  fmnist::TrainConfig cfg;
  cfg.lr = 0.01;
  cfg.warmup = 10;
  CHECK(fmnist::learning_rate(cfg, 0, 110) == Approx(0.001));
  CHECK(fmnist::learning_rate(cfg, 9, 110) == Approx(0.01));
  CHECK(fmnist::learning_rate(cfg, 10, 110) == Approx(0.01));
  CHECK(fmnist::learning_rate(cfg, 60, 110) == Approx(0.005));
  CHECK(fmnist::learning_rate(cfg, 109, 110) < 1e-5);
  cfg.cosine = false;
  CHECK(fmnist::learning_rate(cfg, 100, 110) == 0.01);
}

TEST_CASE("PCA finds the direction of largest variance", "[train]") {
  std::mt19937 rng(4);
  std::normal_distribution<double> g(0.0, 1.0);
  Eigen::MatrixXd f(500, 3);
  Eigen::VectorXd t(500);
  const Eigen::RowVector3d dir = Eigen::RowVector3d(1, -2, 0).normalized();
  for (Eigen::Index i = 0; i < 500; ++i) {
    t[i] = 5 * g(rng);
    f.row(i) = t[i] * dir + Eigen::RowVector3d(0.3 * g(rng), 0.3 * g(rng), 0.1 * g(rng)) + Eigen::RowVector3d(1, 1, 1);
  }
  std::vector<double> explained;
  const Eigen::MatrixXd p = fmnist::pca_project(f, 2, &explained);
  REQUIRE(p.rows() == 500);
  REQUIRE(p.cols() == 2);
  REQUIRE(explained.size() == 2);
  CHECK(explained[0] > 0.98);
  CHECK(explained[1] < 0.02);
  CHECK(explained[1] > 0.0);
  // The first coordinate is -t up to noise: the sign makes -2 (the largest coefficient) positive.
  const double corr = (p.col(0).array() * t.array()).sum() / (p.col(0).norm() * t.norm());
  CHECK(corr < -0.99);
  CHECK(std::abs(p.col(0).mean()) < 1e-9);  // centred
  CHECK(std::abs(p.col(0).dot(p.col(1))) < 1e-6 * p.col(0).norm() * p.col(1).norm());  // uncorrelated

  // Against a full eigendecomposition of the covariance: 40-d data with
  // distinct variances, the first 3 components.
  Eigen::MatrixXd h(300, 40);
  for (Eigen::Index i = 0; i < 300; ++i)
    for (Eigen::Index j = 0; j < 40; ++j) h(i, j) = g(rng) * (j < 3 ? 6.0 - 1.5 * static_cast<double>(j) : 0.5);
  h = h * Eigen::MatrixXd(Eigen::HouseholderQR<Eigen::MatrixXd>(Eigen::MatrixXd::Random(40, 40)).householderQ());
  const Eigen::MatrixXd hc = h.rowwise() - h.colwise().mean();
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> full(hc.transpose() * hc / 299.0);
  const Eigen::MatrixXd q = fmnist::pca_project(h, 3, &explained);
  for (Eigen::Index j = 0; j < 3; ++j) {
    const Eigen::VectorXd u = full.eigenvectors().col(39 - j);
    const Eigen::VectorXd ref = hc * u;
    INFO("component " << j);
    CHECK(explained[static_cast<std::size_t>(j)] ==
          Approx(full.eigenvalues()[39 - j] / full.eigenvalues().sum()).epsilon(1e-9));
    CHECK(std::abs(ref.dot(q.col(j))) == Approx(ref.norm() * q.col(j).norm()).epsilon(1e-9));  // same axis
  }
}

TEST_CASE("progress line: bar, counts, measured rate, time left and loss", "[progress]") {
  CHECK(fmnist::clock_time(0) == "0:00");
  CHECK(fmnist::clock_time(59.2) == "1:00");
  CHECK(fmnist::clock_time(61) == "1:01");
  CHECK(fmnist::clock_time(3725) == "1:02:05");
  // 50 of 200 batches of 256 in 4 s: 3200 samples/s, 150 batches left take 12 s.
  CHECK(fmnist::progress_line(2, 5, 50, 200, 50 * 256, 4.0, 3.14159, 8) ==
        "epoch 2/5 [##......] 50/200 batches, 3200 samples/s, ETA 0:12, loss 3.1416");
  CHECK(fmnist::progress_line(1, 1, 200, 200, 200 * 256, 16.0, 2.5, 4) ==
        "epoch 1/1 [####] 200/200 batches, 3200 samples/s, ETA 0:00, loss 2.5000");
  CHECK(fmnist::progress_line(3, 10, 1, 234, 256, 0.125, 6.0, 0) ==
        "epoch 3/10 1/234 batches, 2048 samples/s, ETA 0:30, loss 6.0000");
}

TEST_CASE("plain progress lines come about every tenth of an epoch", "[progress]") {
  const auto count = [](long long total) {
    int lines = 0;
    long long last = 0, widest = 0;
    for (long long d = 1; d <= total; ++d)
      if (fmnist::crosses_tenth(d, total)) {
        ++lines;
        widest = std::max(widest, d - last);
        last = d;
      }
    return std::pair<int, long long>(lines, widest);
  };
  CHECK(count(234).first == 9);  // the epoch's own row reports the end
  CHECK(count(234).second == 24);
  CHECK(count(1000).first == 9);
  CHECK(count(5).first == 4);
  CHECK(count(1).first == 0);
  CHECK_FALSE(fmnist::crosses_tenth(0, 10));
}
