// The main example: a training loop that calls the library's loss and gradient.
//
// Synthetic data in R^64: the first 10 coordinates hold the class (a class
// centre plus a little per-sample variation), the other 54 are nuisance.  The
// augmentation that makes a view keeps the 10 class coordinates (plus a small
// jitter) and redraws the nuisance, so the only thing two views share is in
// the class subspace.  A linear encoder z = W x (in -> out) is trained
// with plain SGD on a contrastive loss of the library; the gradient dL/dW is
// dL/dZa^T Xa + dL/dZb^T Xb, with dL/dZ exact from the library.
//
// The temperature is learned as CLIP learns it (contrastive::LogitScale):
// the parameter is phi = log(1/tau), its gradient the loss's exact dL/dtau
// through dL/dphi = -tau dL/dtau, and after each SGD step phi is projected
// onto CLIP's [0, ln 100] (tau in [0.01, 1]).  tau is the starting value
// (learn=0 keeps it fixed).
//
// Every epoch it prints the loss, tau, and the mean positive / negative
// cosine similarity of a held-out batch; at the end the nearest-centroid
// accuracy of the learned representation against the raw inputs.
//
//   train_linear_encoder [loss=ntxent|infonce|clip|dcl|dhel] [epochs=30] [batch=256] [tau=0.2] [seed=1] [learn=1]
#include <contrastive/contrastive.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

using Mat = Eigen::MatrixXf;

namespace {

struct Data {
  Mat x;                 // samples as rows
  std::vector<int> y;    // class labels
};

Data make_data(int n, int dim, const Mat& centres, float noise, std::mt19937& rng) {
  std::normal_distribution<float> g(0.f, 1.f);
  std::uniform_int_distribution<int> cls(0, static_cast<int>(centres.rows()) - 1);
  Data d{Mat(n, dim), std::vector<int>(static_cast<std::size_t>(n))};
  for (int i = 0; i < n; ++i) {
    const int c = cls(rng);
    d.y[static_cast<std::size_t>(i)] = c;
    for (int j = 0; j < dim; ++j) d.x(i, j) = centres(c, j) + noise * g(rng);
  }
  return d;
}

// Nearest-centroid accuracy of representation f(x) (rows), centroids from `train`.
double centroid_accuracy(const Mat& ftrain, const std::vector<int>& ytrain, const Mat& ftest,
                         const std::vector<int>& ytest, int classes) {
  Mat c = Mat::Zero(classes, ftrain.cols());
  Eigen::VectorXf cnt = Eigen::VectorXf::Zero(classes);
  for (Eigen::Index i = 0; i < ftrain.rows(); ++i) {
    c.row(ytrain[static_cast<std::size_t>(i)]) += ftrain.row(i).normalized();
    cnt[ytrain[static_cast<std::size_t>(i)]] += 1.f;
  }
  for (int k = 0; k < classes; ++k) c.row(k).normalize();
  int ok = 0;
  for (Eigen::Index i = 0; i < ftest.rows(); ++i) {
    Eigen::Index best;
    (c * ftest.row(i).normalized().transpose()).maxCoeff(&best);
    ok += (best == ytest[static_cast<std::size_t>(i)]);
  }
  return static_cast<double>(ok) / static_cast<double>(ftest.rows());
}

contrastive::InfoNCEFamily<float> make_loss(const std::string& name, double tau) {
  if (name == "ntxent") return contrastive::NTXent<float>(tau);
  if (name == "infonce") return contrastive::InfoNCE<float>(tau);
  if (name == "clip") return contrastive::CLIP<float>(tau);
  if (name == "dcl") return contrastive::DCL<float>(tau);
  if (name == "dhel") return contrastive::DHEL<float>(tau);
  std::fprintf(stderr, "unknown loss '%s' (ntxent, infonce, clip, dcl, dhel)\n", name.c_str());
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string loss_name = argc > 1 ? argv[1] : "ntxent";
  const int epochs = argc > 2 ? std::atoi(argv[2]) : 30;
  const int batch = argc > 3 ? std::atoi(argv[3]) : 256;
  const double tau = argc > 4 ? std::atof(argv[4]) : 0.2;
  const unsigned seed = argc > 5 ? static_cast<unsigned>(std::atoi(argv[5])) : 1u;
  const bool learn = argc > 6 ? std::atoi(argv[6]) != 0 : true;
  const int in = 64, out = 16, classes = 10, ntrain = 4096, ntest = 2000;
  const float lr = 2.0f;
  const double lr_phi = 0.05;  // SGD on phi = log(1/tau)

  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.f, 1.f);
  const int signal = 10;
  const float nuisance = 2.0f, jitter = 0.1f;
  Mat centres = Mat::Zero(classes, in);
  for (int c = 0; c < classes; ++c)
    for (int j = 0; j < signal; ++j) centres(c, j) = g(rng);
  Data train = make_data(ntrain, in, centres, 0.3f, rng), test = make_data(ntest, in, centres, 0.3f, rng);
  // Nuisance coordinates: a fresh draw per sample (and per view in training).
  const auto redraw_nuisance = [&](Eigen::Ref<Mat> x) {
    x.rightCols(in - signal) = nuisance * Mat::NullaryExpr(x.rows(), in - signal, [&] { return g(rng); });
  };
  redraw_nuisance(train.x);
  redraw_nuisance(test.x);
  Mat W(out, in);
  for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = 0.1f * g(rng);
  const Mat W0 = W;

  auto loss = make_loss(loss_name, tau);
  contrastive::LogitScale phi = contrastive::LogitScale::from_temperature(tau);  // learned in log space
  contrastive::Workspace<float> ws;  // reused every step
  Mat xa(batch, in), xb(batch, in), za(batch, out), zb(batch, out), ga(batch, out), gb(batch, out);
  std::uniform_int_distribution<int> pick(0, ntrain - 1);
  double loss_seconds = 0, total_seconds = 0;
  std::printf("loss=%s tau=%.3g (%s) batch=%d epochs=%d\n", loss_name.c_str(), tau, learn ? "learned" : "fixed", batch,
              epochs);
  std::printf("%6s %10s %10s %10s %10s\n", "epoch", "loss", "tau", "pos sim", "neg sim");
  for (int epoch = 1; epoch <= epochs; ++epoch) {
    double sum = 0;
    const int steps = ntrain / batch;
    for (int s = 0; s < steps; ++s) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < batch; ++i) {
        const auto r = train.x.row(pick(rng));
        for (int j = 0; j < signal; ++j) {
          xa(i, j) = r[j] + jitter * g(rng);
          xb(i, j) = r[j] + jitter * g(rng);
        }
      }
      redraw_nuisance(xa);
      redraw_nuisance(xb);
      za.noalias() = xa * W.transpose();
      zb.noalias() = xb * W.transpose();
      const auto t1 = std::chrono::steady_clock::now();
      float dtau = 0;
      sum += loss.value_and_grad(za, zb, ga, gb, learn ? &dtau : nullptr, ws);
      const auto t2 = std::chrono::steady_clock::now();
      W.noalias() -= lr * (ga.transpose() * xa + gb.transpose() * xb);
      if (learn) {
        // The exact dL/dphi = -tau dL/dtau; CLIP's projection after the step, not inside the loss.
        phi.set_log_scale(phi.log_scale() - lr_phi * phi.grad_log_scale(dtau));
        phi.clamp();
        loss.set_temperature(phi.temperature());
      }
      const auto t3 = std::chrono::steady_clock::now();
      loss_seconds += std::chrono::duration<double>(t2 - t1).count();
      total_seconds += std::chrono::duration<double>(t3 - t0).count();
    }
    // Similarities of a held-out batch of view pairs, by the library's diagnostics.
    Mat va = test.x.topRows(256), vb = test.x.topRows(256);
    redraw_nuisance(va);
    redraw_nuisance(vb);
    const auto st = contrastive::similarity_stats(va * W.transpose(), vb * W.transpose());
    std::printf("%6d %10.4f %10.4f %10.4f %10.4f\n", epoch, sum / steps, loss.params().temperature, st.positive.mean,
                st.cross_negative.mean);
  }
  const double acc_raw = centroid_accuracy(train.x, train.y, test.x, test.y, classes);
  const double acc_init = centroid_accuracy(train.x * W0.transpose(), train.y, test.x * W0.transpose(), test.y, classes);
  const double acc = centroid_accuracy(train.x * W.transpose(), train.y, test.x * W.transpose(), test.y, classes);
  std::printf("nearest-centroid accuracy: raw inputs %.3f, random encoder %.3f, trained encoder %.3f\n", acc_raw,
              acc_init, acc);
  std::printf("time: %.2f s in steps, of which %.2f s (%.0f%%) in the loss and its gradient\n", total_seconds,
              loss_seconds, 100.0 * loss_seconds / total_seconds);
  return acc > acc_init ? 0 : 1;
}
