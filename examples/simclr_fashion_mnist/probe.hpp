// Evaluations of a frozen representation: linear probes (multinomial
// logistic regression trained by minibatch Adam, and ridge regression onto
// one-hot labels in closed form) and a k-nearest-neighbour classifier
// (cosine similarity, similarity-weighted votes).
#pragma once

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <Eigen/QR>

namespace fmnist {

/// Runs Eigen's products on one thread while it lives.  The logistic probe
/// and PCA make thousands of small products; threading each of them made
/// the probes ten times slower on a machine whose cores were also busy with
/// other work (every product ends in a barrier that waits for a descheduled
/// thread), and gained little on an idle one.
class EigenSingleThread {
 public:
  EigenSingleThread() : saved_(Eigen::nbThreads()) { Eigen::setNbThreads(1); }
  ~EigenSingleThread() { Eigen::setNbThreads(saved_); }
  EigenSingleThread(const EigenSingleThread&) = delete;
  EigenSingleThread& operator=(const EigenSingleThread&) = delete;

 private:
  int saved_;
};

/// Fraction of rows whose largest score is at the row's label.
template <typename D>
double argmax_accuracy(const Eigen::MatrixBase<D>& scores, const std::vector<int>& labels) {
  Eigen::Index ok = 0;
  for (Eigen::Index i = 0; i < scores.rows(); ++i) {
    Eigen::Index best;
    scores.row(i).maxCoeff(&best);
    ok += best == labels[static_cast<std::size_t>(i)];
  }
  return static_cast<double>(ok) / static_cast<double>(scores.rows());
}

/// Accuracy of ridge regression onto one-hot labels: features standardised
/// with the training mean and standard deviation, a bias column appended,
/// W = (A^T A + ridge * n I)^-1 A^T Y solved in double; the class is argmax.
template <typename DTr, typename DTe>
double linear_probe_accuracy(const Eigen::MatrixBase<DTr>& ftrain, const std::vector<int>& ytrain,
                             const Eigen::MatrixBase<DTe>& ftest, const std::vector<int>& ytest, int classes = 10,
                             double ridge = 1e-3) {
  using M = Eigen::MatrixXd;
  const Eigen::Index n = ftrain.rows(), d = ftrain.cols();
  const Eigen::RowVectorXd mean = ftrain.template cast<double>().colwise().mean();
  Eigen::RowVectorXd sd =
      ((ftrain.template cast<double>().rowwise() - mean).colwise().squaredNorm() / static_cast<double>(n)).cwiseSqrt();
  for (Eigen::Index j = 0; j < d; ++j)
    if (sd[j] < 1e-8) sd[j] = 1;  // constant feature (e.g. an always-black pixel)
  const auto design = [&](const auto& f) {
    M a(f.rows(), d + 1);
    a.leftCols(d) = (f.template cast<double>().rowwise() - mean).array().rowwise() / sd.array();
    a.col(d).setOnes();
    return a;
  };
  const M a = design(ftrain);
  M y = M::Zero(n, classes);
  for (Eigen::Index i = 0; i < n; ++i) y(i, ytrain[static_cast<std::size_t>(i)]) = 1;
  M gram = a.transpose() * a;
  gram.diagonal().array() += ridge * static_cast<double>(n);
  const M w = gram.ldlt().solve(a.transpose() * y);
  const M scores = design(ftest) * w;
  return argmax_accuracy(scores, ytest);
}

/// Accuracy of multinomial logistic regression on features standardised with
/// the training mean and standard deviation: `epochs` passes of minibatch
/// Adam (batch 256, step lr, fixed shuffling seed) on the mean cross-entropy
/// plus l2 / 2 ||W||^2.
template <typename DTr, typename DTe>
double logistic_probe_accuracy(const Eigen::MatrixBase<DTr>& ftrain, const std::vector<int>& ytrain,
                               const Eigen::MatrixBase<DTe>& ftest, const std::vector<int>& ytest, int classes = 10,
                               int epochs = 20, float lr = 2e-3f, float l2 = 1e-4f) {
  const EigenSingleThread one_thread;
  using M = Eigen::MatrixXf;
  using RM = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;  // rows gathered into batches
  using RowV = Eigen::RowVectorXf;
  const Eigen::Index n = ftrain.rows(), d = ftrain.cols(), bs = 256;
  const RowV mean = ftrain.template cast<float>().colwise().mean();
  RowV sd = ((ftrain.template cast<float>().rowwise() - mean).colwise().squaredNorm() / static_cast<float>(n)).cwiseSqrt();
  for (Eigen::Index j = 0; j < d; ++j)
    if (sd[j] < 1e-6f) sd[j] = 1;
  const auto standardise = [&](const auto& f) {
    RM a = (f.template cast<float>().rowwise() - mean).array().rowwise() / sd.array();
    return a;
  };
  const RM a = standardise(ftrain);
  M w = M::Zero(d, classes), mw = w, vw = w, g;
  RowV b = RowV::Zero(classes), mb = b, vb = b;
  std::vector<Eigen::Index> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), Eigen::Index{0});
  std::mt19937 rng(12345);
  RM xb;
  M p;
  int t = 0;
  for (int e = 0; e < epochs; ++e) {
    std::shuffle(order.begin(), order.end(), rng);
    for (Eigen::Index s = 0; s < n; s += bs) {
      const Eigen::Index m = std::min(bs, n - s);
      xb.resize(m, d);
      for (Eigen::Index i = 0; i < m; ++i) xb.row(i) = a.row(order[static_cast<std::size_t>(s + i)]);
      p = (xb * w).rowwise() + b;  // logits -> softmax - onehot
      for (Eigen::Index i = 0; i < m; ++i) {
        p.row(i).array() = (p.row(i).array() - p.row(i).maxCoeff()).exp();
        p.row(i) /= p.row(i).sum();
        p(i, ytrain[static_cast<std::size_t>(order[static_cast<std::size_t>(s + i)])]) -= 1.f;
      }
      p /= static_cast<float>(m);
      g = xb.transpose() * p + l2 * w;
      const RowV gb = p.colwise().sum();
      ++t;
      const float c1 = 1.f - std::pow(0.9f, static_cast<float>(t)), c2 = 1.f - std::pow(0.999f, static_cast<float>(t));
      mw = 0.9f * mw + 0.1f * g;
      vw = 0.999f * vw + 0.001f * g.cwiseProduct(g);
      mb = 0.9f * mb + 0.1f * gb;
      vb = 0.999f * vb + 0.001f * gb.cwiseProduct(gb);
      w.array() -= lr * (mw.array() / c1) / ((vw.array() / c2).sqrt() + 1e-8f);
      b.array() -= lr * (mb.array() / c1) / ((vb.array() / c2).sqrt() + 1e-8f);
    }
  }
  const M scores = (standardise(ftest) * w).rowwise() + b;
  return argmax_accuracy(scores, ytest);
}

/// Accuracy of the k nearest training rows by cosine similarity, each
/// neighbour voting with its similarity.
template <typename DTr, typename DTe>
double knn_accuracy(const Eigen::MatrixBase<DTr>& ftrain, const std::vector<int>& ytrain,
                    const Eigen::MatrixBase<DTe>& ftest, const std::vector<int>& ytest, int k = 20, int classes = 10) {
  using M = Eigen::MatrixXf;
  const auto normalise = [](const auto& f) {
    M u = f.template cast<float>();
    for (Eigen::Index i = 0; i < u.rows(); ++i) u.row(i) /= std::max(u.row(i).norm(), 1e-12f);
    return u;
  };
  const M tr = normalise(ftrain), te = normalise(ftest);
  const Eigen::Index chunk = 256, kk = std::min<Eigen::Index>(k, tr.rows());
  std::vector<Eigen::Index> order(static_cast<std::size_t>(tr.rows()));
  Eigen::Index ok = 0;
  M sim;
  for (Eigen::Index r = 0; r < te.rows(); r += chunk) {
    const Eigen::Index m = std::min(chunk, te.rows() - r);
    sim.noalias() = te.middleRows(r, m) * tr.transpose();
    for (Eigen::Index i = 0; i < m; ++i) {
      std::iota(order.begin(), order.end(), Eigen::Index{0});
      std::nth_element(order.begin(), order.begin() + (kk - 1), order.end(),
                       [&](Eigen::Index p, Eigen::Index q) { return sim(i, p) > sim(i, q); });
      std::vector<double> votes(static_cast<std::size_t>(classes), 0.0);
      for (Eigen::Index j = 0; j < kk; ++j) {
        const Eigen::Index t = order[static_cast<std::size_t>(j)];
        votes[static_cast<std::size_t>(ytrain[static_cast<std::size_t>(t)])] += 1.0 + static_cast<double>(sim(i, t));
      }
      const auto best = std::max_element(votes.begin(), votes.end()) - votes.begin();
      ok += best == ytest[static_cast<std::size_t>(r + i)];
    }
  }
  return static_cast<double>(ok) / static_cast<double>(te.rows());
}

/// Principal components: the rows of f (centred) projected on the k
/// directions of largest variance, largest first, each direction's sign
/// fixed so that its largest-magnitude coefficient is positive; the share of
/// the total variance of each goes to *explained if given.  The directions
/// come from subspace iteration on the covariance (never formed: it is
/// applied as X^T (X V) / (n - 1)) with a block of k + 8 vectors, then
/// Rayleigh-Ritz: Eigen's SelfAdjointEigenSolver on the small projected
/// matrix.  A full eigendecomposition of a 1568 x 1568 covariance took
/// seconds; this takes milliseconds and agrees to the precision a picture needs.
template <typename D>
Eigen::MatrixXd pca_project(const Eigen::MatrixBase<D>& f, Eigen::Index k, std::vector<double>* explained = nullptr,
                            int iterations = 60) {
  const EigenSingleThread one_thread;
  using M = Eigen::MatrixXd;
  const M x = f.template cast<double>().rowwise() - f.template cast<double>().colwise().mean();
  const Eigen::Index d = x.cols();
  const double scale = 1.0 / static_cast<double>(std::max<Eigen::Index>(1, x.rows() - 1));
  k = std::min(k, d);
  const Eigen::Index b = std::min(d, k + 8);
  std::mt19937 rng(7);
  std::normal_distribution<double> g(0.0, 1.0);
  M v = M::NullaryExpr(d, b, [&] { return g(rng); });
  for (int it = 0; it < iterations; ++it) {
    const M cv = x.transpose() * (x * v) * scale;
    v = Eigen::HouseholderQR<M>(cv).householderQ() * M::Identity(d, b);
  }
  const M t = v.transpose() * (x.transpose() * (x * v)) * scale;
  const Eigen::SelfAdjointEigenSolver<M> eig(t);  // eigenvalues ascending
  const double total = std::max(x.squaredNorm() * scale, 1e-300);  // the trace of the covariance
  M dirs(d, k);
  if (explained) explained->clear();
  for (Eigen::Index j = 0; j < k; ++j) {
    Eigen::VectorXd u = v * eig.eigenvectors().col(b - 1 - j);
    Eigen::Index big;
    u.cwiseAbs().maxCoeff(&big);
    if (u[big] < 0) u = -u;
    dirs.col(j) = u;
    if (explained) explained->push_back(std::max(0.0, eig.eigenvalues()[b - 1 - j]) / total);
  }
  return x * dirs;
}

}  // namespace fmnist
