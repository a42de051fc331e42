// The collision-coverage trade-off of the number of negatives (paper notes:
// ../shared/papers/role-of-negatives.md, "A synthetic experiment").
//
// N latent classes; an instance has a class c and an instance code s ~ N(0, I8);
// a view is x = [onehot(c) ; 0.8 s + 0.5 e] with e fresh per view.  Anchor
// and positive are two views of one instance; its k negatives are fresh
// instances of uniformly random classes, so some share the anchor's class
// (collisions).  Encoder z = W x, W = [E | V] (8 x (N + 8)), init N(0, 0.1^2);
// loss: the library's InfoNCEWithNegatives (per-query negatives, tau 0.1),
// whose exact dL/dz gives dL/dW = dL/dZ^T X; Adam (lr 0.02), 64 anchors a
// step, 60 steps.  Score: nearest-centroid error on fresh instances
// (centroids of 10 per class, in the normalised representation).
//
// Controls: "no code" drops the instance code (x = [onehot(c) ; 0.5 e]);
// "collision-free" draws every negative from a class other than the anchor's.
//
//   negatives_tradeoff [--seeds S] [--quick] [--check]
//     --quick   reduced grid (N in {8, 128}, k in {1, 4, ..., 1024}, 2 seeds)
//     --check   exit 1 unless best k(largest N) > best k(smallest N) and the
//               collision-free control (smallest N) does not rise at the largest k
#include <contrastive/contrastive.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

using Mat = Eigen::MatrixXd;
constexpr int kCode = 8;  // instance-code width and embedding width

enum class Variant { Standard, NoCode, CollisionFree };
const char* variant_name(Variant v) {
  return v == Variant::Standard ? "standard" : v == Variant::NoCode ? "no instance code" : "collision-free negatives";
}

// A view x = [onehot(c) ; u] is kept as its class c and its code part u
// (8 numbers): W x = E_c + V u, and dL/dW = [dL/dE | dL/dV] with
// dL/dE_c = sum over rows of class c of dL/dz, dL/dV = dL/dZ^T U.
struct Views {
  std::vector<int> cls;
  Mat u;  // rows x 8
  explicit Views(Eigen::Index rows) : cls(static_cast<std::size_t>(rows)), u(rows, kCode) {}
  Mat embed(const Mat& w) const {
    Mat z = u * w.rightCols(kCode).transpose();
    for (Eigen::Index r = 0; r < z.rows(); ++r) z.row(r) += w.col(cls[static_cast<std::size_t>(r)]).transpose();
    return z;
  }
  void add_grad(const Mat& g, Mat& dw) const {
    dw.rightCols(kCode).noalias() += g.transpose() * u;
    for (Eigen::Index r = 0; r < g.rows(); ++r) dw.col(cls[static_cast<std::size_t>(r)]) += g.row(r).transpose();
  }
};

struct Sampler {
  int classes;
  Variant variant;
  std::mt19937_64 rng;
  std::normal_distribution<double> g{0.0, 1.0};

  int random_class() { return std::uniform_int_distribution<int>(0, classes - 1)(rng); }
  int other_class(int c) {  // uniform over the N - 1 classes != c
    const int o = std::uniform_int_distribution<int>(0, classes - 2)(rng);
    return o >= c ? o + 1 : o;
  }
  void code(double* s) {
    for (int j = 0; j < kCode; ++j) s[j] = variant == Variant::NoCode ? 0.0 : g(rng);
  }
  /// Row r of v becomes a view of the instance (c, s): u = 0.8 s + 0.5 e.
  void view(Views& v, Eigen::Index r, int c, const double* s) {
    v.cls[static_cast<std::size_t>(r)] = c;
    for (int j = 0; j < kCode; ++j) v.u(r, j) = 0.8 * s[j] + 0.5 * g(rng);
  }
  /// One view of a fresh instance of class c: 0.8 s + 0.5 e with s, e
  /// independent is N(0, 0.89 I), drawn in one go (0.25 I without the code).
  void fresh_view(Views& v, Eigen::Index r, int c) {
    const double sd = variant == Variant::NoCode ? 0.5 : std::sqrt(0.89);
    v.cls[static_cast<std::size_t>(r)] = c;
    for (int j = 0; j < kCode; ++j) v.u(r, j) = sd * g(rng);
  }
};

struct Adam {
  Mat m, v;
  int t = 0;
  void step(Mat& w, const Mat& grad, double lr) {
    if (m.size() == 0) m = v = Mat::Zero(w.rows(), w.cols());
    ++t;
    m = 0.9 * m + 0.1 * grad;
    v = 0.999 * v + 0.001 * grad.cwiseProduct(grad);
    const double c1 = 1.0 - std::pow(0.9, t), c2 = 1.0 - std::pow(0.999, t);
    w.array() -= lr * (m.array() / c1) / ((v.array() / c2).sqrt() + 1e-8);
  }
};

Mat normalise_rows(Mat z) {
  for (Eigen::Index i = 0; i < z.rows(); ++i) z.row(i) /= std::max(z.row(i).norm(), 1e-12);
  return z;
}

/// Trains one encoder and returns its nearest-centroid error.
double run(int classes, int k, Variant variant, unsigned seed) {
  const int anchors = 64, steps = 60;
  Sampler smp{classes, variant, std::mt19937_64(seed * 1000003ull + static_cast<unsigned>(classes) * 7919ull +
                                                static_cast<unsigned>(k) * 31ull + static_cast<unsigned>(variant))};
  Mat w(kCode, classes + kCode);  // [E | V]
  for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = 0.1 * smp.g(smp.rng);
  contrastive::NegativeKeysParams params;
  params.temperature = 0.1;
  params.mode = contrastive::NegativeMode::PerQuery;
  const contrastive::InfoNCEWithNegatives<double> loss(params);
  Views xa(anchors), xp(anchors), xn(static_cast<Eigen::Index>(anchors) * k);
  Mat gq(anchors, kCode), gp(anchors, kCode), gn(static_cast<Eigen::Index>(anchors) * k, kCode), dw;
  contrastive::Workspace<double> ws;
  Adam adam;
  double s[kCode];
  for (int step = 0; step < steps; ++step) {
    for (int i = 0; i < anchors; ++i) {
      const int c = smp.random_class();
      smp.code(s);
      smp.view(xa, i, c, s);
      smp.view(xp, i, c, s);
      for (int j = 0; j < k; ++j)
        smp.fresh_view(xn, static_cast<Eigen::Index>(i) * k + j,
                       variant == Variant::CollisionFree ? smp.other_class(c) : smp.random_class());
    }
    loss.value_and_grad(xa.embed(w), xp.embed(w), xn.embed(w), gq, gp, gn, nullptr, ws);
    dw.setZero(w.rows(), w.cols());
    xa.add_grad(gq, dw);
    xp.add_grad(gp, dw);
    xn.add_grad(gn, dw);
    adam.step(w, dw, 0.02);
  }
  // Nearest centroid: centroids of 10 fresh instances per class, 20 test instances per class.
  const auto embed_class = [&](int c, int count) {
    Views v(count);
    for (int i = 0; i < count; ++i) smp.fresh_view(v, i, c);
    return normalise_rows(v.embed(w));
  };
  Mat centroids(classes, kCode);
  for (int c = 0; c < classes; ++c) centroids.row(c) = embed_class(c, 10).colwise().mean();
  int wrong = 0, total = 0;
  for (int c = 0; c < classes; ++c) {
    const Mat z = embed_class(c, 20);
    for (Eigen::Index i = 0; i < z.rows(); ++i) {
      Eigen::Index best = 0;
      (centroids.rowwise() - z.row(i)).rowwise().squaredNorm().minCoeff(&best);
      wrong += best != c;
      ++total;
    }
  }
  return static_cast<double>(wrong) / total;
}

struct Grid {
  std::vector<int> classes, ks;
  int seeds;
};

/// Mean error over seeds for every (N, k) of the grid, runs spread over threads.
std::vector<std::vector<double>> sweep(const Grid& g, Variant variant, const std::vector<int>& classes) {
  std::vector<std::vector<double>> err(classes.size(), std::vector<double>(g.ks.size(), 0.0));
  const int jobs = static_cast<int>(classes.size() * g.ks.size()) * g.seeds;
  std::vector<double> out(static_cast<std::size_t>(jobs));
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
  for (int j = 0; j < jobs; ++j) {
#ifdef _OPENMP
    omp_set_num_threads(1);  // one run per thread; Eigen serial inside
#endif
    const int s = j % g.seeds, kk = (j / g.seeds) % static_cast<int>(g.ks.size()),
              ni = j / (g.seeds * static_cast<int>(g.ks.size()));
    out[static_cast<std::size_t>(j)] =
        run(classes[static_cast<std::size_t>(ni)], g.ks[static_cast<std::size_t>(kk)], variant, static_cast<unsigned>(s + 1));
  }
  for (int j = 0; j < jobs; ++j) {
    const int kk = (j / g.seeds) % static_cast<int>(g.ks.size()), ni = j / (g.seeds * static_cast<int>(g.ks.size()));
    err[static_cast<std::size_t>(ni)][static_cast<std::size_t>(kk)] += out[static_cast<std::size_t>(j)] / g.seeds;
  }
  return err;
}

std::size_t argmin(const std::vector<double>& v) {
  return static_cast<std::size_t>(std::min_element(v.begin(), v.end()) - v.begin());
}

void print_table(const char* title, const Grid& g, const std::vector<int>& classes,
                 const std::vector<std::vector<double>>& err) {
  std::printf("\n%s: nearest-centroid error (mean of %d seeds)\n%6s", title, g.seeds, "k");
  for (int n : classes) std::printf("   N=%-5d", n);
  std::printf("\n");
  for (std::size_t kk = 0; kk < g.ks.size(); ++kk) {
    std::printf("%6d", g.ks[kk]);
    for (std::size_t ni = 0; ni < classes.size(); ++ni) {
      const bool best = argmin(err[ni]) == kk;
      std::printf("   %6.4f%c ", err[ni][kk], best ? '*' : ' ');
    }
    std::printf("\n");
  }
  std::printf("%6s", "best k");
  for (std::size_t ni = 0; ni < classes.size(); ++ni) std::printf("   %-8d", g.ks[argmin(err[ni])]);
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, check = false;
  int seeds = 0;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--check")) check = true;
    else if (!std::strcmp(argv[i], "--seeds") && i + 1 < argc) seeds = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: negatives_tradeoff [--seeds S] [--quick] [--check]\n");
      return 2;
    }
  }
  Grid g;
  if (quick) {
    g.classes = {8, 128};
    g.ks = {1, 4, 16, 64, 256, 1024};
    g.seeds = seeds > 0 ? seeds : 2;
  } else {
    g.classes = {8, 32, 128};
    for (int k = 1; k <= 1024; k *= 2) g.ks.push_back(k);
    g.seeds = seeds > 0 ? seeds : 4;
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::printf("collision-coverage trade-off: InfoNCE with k explicit negatives per anchor, tau 0.1,\n"
              "64 anchors x 60 Adam steps (lr 0.02), encoder R^(N+8) -> R^8; '*' marks the best k\n");
  const auto main_err = sweep(g, Variant::Standard, g.classes);
  print_table(variant_name(Variant::Standard), g, g.classes, main_err);
  // Controls at the smallest N (most collisions) and the largest.
  const std::vector<int> control_n = {g.classes.front(), g.classes.back()};
  const auto no_code = sweep(g, Variant::NoCode, control_n);
  print_table("control, no instance code", g, control_n, no_code);
  const auto free_err = sweep(g, Variant::CollisionFree, control_n);
  print_table("control, collision-free negatives", g, control_n, free_err);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("\n(%.1f s)\n", seconds);

  const int best_small = g.ks[argmin(main_err.front())], best_large = g.ks[argmin(main_err.back())];
  const auto& cf = free_err.front();
  const double cf_last = cf.back(), cf_best = cf[argmin(cf)];
  // "Does not rise" (at the smallest N, where collisions are most frequent):
  // at the largest k the error is at most one test instance (of 20 N per
  // seed) above the control's best.
  const double slack = 1.0 / (20.0 * g.classes.front());
  const bool ok_optimum = best_large > best_small, ok_control = cf_last <= cf_best + slack;
  std::printf("best k grows with N (%d at N=%d, %d at N=%d): %s\n", best_small, g.classes.front(), best_large,
              g.classes.back(), ok_optimum ? "yes" : "NO");
  std::printf("collision-free control, N=%d, at the largest k (%.4f) vs its best (%.4f): %s\n", g.classes.front(), cf_last, cf_best,
              ok_control ? "no rise" : "RISES");
  return check && !(ok_optimum && ok_control) ? 1 : 0;
}
