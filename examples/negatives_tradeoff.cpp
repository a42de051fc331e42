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
// Losses at the smallest and the largest N, on the same data: plain InfoNCE,
// Chuang et al.'s debiased term with tau+ = 1/N (the true collision rate),
// Robinson et al.'s hard-negative weights with beta = 1 (one of their
// defaults; tau+ = 0), and (full grid) both together, as HCL runs them.
//
//   negatives_tradeoff [--seeds S] [--quick] [--check]
//     --quick   reduced grid (N in {8, 128}, k in {1, 4, ..., 1024}, 2 seeds;
//               the debiased loss at N = 8 only, hard negatives at N = 128 only)
//     --check   exit 1 unless best k(largest N) > best k(smallest N), the
//               collision-free control (smallest N) does not rise at the
//               largest k, and for every seed: at the smallest N the debiased
//               loss rises less and ends lower than plain InfoNCE, at the
//               largest N hard-negative weights end above it
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

/// The loss on the same data: plain InfoNCE, Chuang et al.'s debiased term
/// with tau+ = 1/N (the true collision rate), Robinson et al.'s importance
/// weights with beta = 1 (one of their defaults) alone, and both (HCL's
/// estimator as their runs use it).
enum class Method { Plain, Debiased, Hard, DebiasedHard };
const char* method_name(Method m) {
  switch (m) {
    case Method::Plain: return "plain InfoNCE";
    case Method::Debiased: return "debiased, tau+ = 1/N";
    case Method::Hard: return "hard negatives, beta = 1";
    case Method::DebiasedHard: return "debiased + hard, tau+ = 1/N, beta = 1";
  }
  return "?";
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

/// Trains one encoder and returns its nearest-centroid error.  The data and
/// the initialisation depend on (N, k, variant, seed) only: every method
/// sees the same draws.
double run(int classes, int k, Variant variant, Method method, unsigned seed) {
  const int anchors = 64, steps = 60;
  Sampler smp{classes, variant, std::mt19937_64(seed * 1000003ull + static_cast<unsigned>(classes) * 7919ull +
                                                static_cast<unsigned>(k) * 31ull + static_cast<unsigned>(variant))};
  Mat w(kCode, classes + kCode);  // [E | V]
  for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = 0.1 * smp.g(smp.rng);
  contrastive::NegativeKeysParams params;
  params.temperature = 0.1;
  params.mode = contrastive::NegativeMode::PerQuery;
  if (method == Method::Debiased || method == Method::DebiasedHard) params.tau_plus = 1.0 / classes;
  if (method == Method::Hard || method == Method::DebiasedHard) params.beta = 1.0;
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

/// Mean error over seeds for every (N, k) of the grid, runs spread over
/// threads; `per_seed` (optional) receives [N][k][seed].
std::vector<std::vector<double>> sweep(const Grid& g, Variant variant, const std::vector<int>& classes,
                                       Method method = Method::Plain,
                                       std::vector<std::vector<std::vector<double>>>* per_seed = nullptr) {
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
        run(classes[static_cast<std::size_t>(ni)], g.ks[static_cast<std::size_t>(kk)], variant, method,
            static_cast<unsigned>(s + 1));
  }
  if (per_seed)
    per_seed->assign(classes.size(), std::vector<std::vector<double>>(g.ks.size(), std::vector<double>(static_cast<std::size_t>(g.seeds))));
  for (int j = 0; j < jobs; ++j) {
    const int s = j % g.seeds, kk = (j / g.seeds) % static_cast<int>(g.ks.size()),
              ni = j / (g.seeds * static_cast<int>(g.ks.size()));
    err[static_cast<std::size_t>(ni)][static_cast<std::size_t>(kk)] += out[static_cast<std::size_t>(j)] / g.seeds;
    if (per_seed)
      (*per_seed)[static_cast<std::size_t>(ni)][static_cast<std::size_t>(kk)][static_cast<std::size_t>(s)] =
          out[static_cast<std::size_t>(j)];
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

/// What one method's error does over the grid at the N compared: mean
/// errors [N][k] and every seed's errors [N][k][seed].
struct MethodResult {
  Method method = Method::Plain;
  std::vector<std::vector<double>> err;
  std::vector<std::vector<std::vector<double>>> per_seed;
  /// err(k_max) of one seed.
  double last(std::size_t ni, int seed) const { return per_seed[ni].back()[static_cast<std::size_t>(seed)]; }
  /// The rise at large k of one seed: err(k_max) - min_k err(k).
  double rise(std::size_t ni, int seed) const {
    double best = last(ni, seed);
    for (const auto& row : per_seed[ni]) best = std::min(best, row[static_cast<std::size_t>(seed)]);
    return last(ni, seed) - best;
  }
  /// The rise of the mean errors.
  double mean_rise(std::size_t ni) const { return err[ni].back() - *std::min_element(err[ni].begin(), err[ni].end()); }
};

/// Runs every method after the first (given: plain InfoNCE of the main
/// sweep) at the N of `classes` and prints one table per N.
std::vector<MethodResult> compare_methods(const Grid& g, const std::vector<int>& classes, MethodResult plain,
                                          const std::vector<Method>& others) {
  std::vector<MethodResult> res = {std::move(plain)};
  for (Method m : others) {
    MethodResult r;
    r.method = m;
    r.err = sweep(g, Variant::Standard, classes, m, &r.per_seed);
    res.push_back(std::move(r));
  }
  for (std::size_t ni = 0; ni < classes.size(); ++ni) {
    std::printf("\nN = %d, nearest-centroid error by loss (mean of %d seeds; the same data and initialisation for each):\n",
                classes[ni], g.seeds);
    for (std::size_t mi = 0; mi < res.size(); ++mi) std::printf("  (%c) %s\n", static_cast<char>('a' + mi), method_name(res[mi].method));
    std::printf("%6s", "k");
    for (std::size_t mi = 0; mi < res.size(); ++mi) std::printf("       (%c)", static_cast<char>('a' + mi));
    std::printf("\n");
    for (std::size_t kk = 0; kk < g.ks.size(); ++kk) {
      std::printf("%6d", g.ks[kk]);
      for (const auto& r : res) std::printf("   %6.4f%c", r.err[ni][kk], argmin(r.err[ni]) == kk ? '*' : ' ');
      std::printf("\n");
    }
    std::printf("%6s", "rise");
    for (const auto& r : res) std::printf("  %+7.4f ", r.mean_rise(ni));
    std::printf("   error at k = %d minus the best\n", g.ks.back());
    for (int s = 0; s < g.seeds; ++s) {
      std::printf("seed %d", s + 1);
      for (const auto& r : res) std::printf("  %+7.4f ", r.rise(ni, s));
      std::printf("   its rise;  error at k = %d:", g.ks.back());
      for (const auto& r : res) std::printf(" %6.4f", r.last(ni, s));
      std::printf("\n");
    }
  }
  return res;
}

/// True when `pred(seed)` holds for every seed.
template <typename P>
bool every_seed(const Grid& g, P pred) {
  for (int s = 0; s < g.seeds; ++s)
    if (!pred(s)) return false;
  return true;
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
  std::vector<std::vector<std::vector<double>>> main_seeds;
  const auto main_err = sweep(g, Variant::Standard, g.classes, Method::Plain, &main_seeds);
  print_table(variant_name(Variant::Standard), g, g.classes, main_err);
  // Controls at the smallest N (most collisions) and the largest.
  const std::vector<int> control_n = {g.classes.front(), g.classes.back()};
  const auto no_code = sweep(g, Variant::NoCode, control_n);
  print_table("control, no instance code", g, control_n, no_code);
  const auto free_err = sweep(g, Variant::CollisionFree, control_n);
  print_table("control, collision-free negatives", g, control_n, free_err);
  // The same runs with the debiased loss and hard-negative weights, at the
  // smallest and the largest N (the full grid adds both together, HCL's
  // estimator).  The reduced grid runs only what --check asserts: debiased
  // at the smallest N, hard negatives at the largest.
  const auto plain_at = [&](std::size_t from) {
    MethodResult p;
    p.err = {main_err[from]};
    p.per_seed = {main_seeds[from]};
    return p;
  };
  std::vector<MethodResult> small_n, large_n;
  if (quick) {
    small_n = compare_methods(g, {g.classes.front()}, plain_at(0), {Method::Debiased});
    large_n = compare_methods(g, {g.classes.back()}, plain_at(g.classes.size() - 1), {Method::Hard});
  } else {
    const std::vector<Method> all = {Method::Debiased, Method::Hard, Method::DebiasedHard};
    small_n = compare_methods(g, {g.classes.front()}, plain_at(0), all);
    large_n = compare_methods(g, {g.classes.back()}, plain_at(g.classes.size() - 1), all);
  }
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
  // Directions that held for each of 8 seeds (README): at the smallest N the
  // debiased loss rises less at large k and ends lower than plain InfoNCE;
  // at the largest N hard-negative weights end far above it.  Checked per
  // seed, strictly.
  const MethodResult &pl8 = small_n[0], &deb = small_n[1], &pl128 = large_n[0], &hard = large_n[quick ? 1 : 2];
  const bool ok_debiased = every_seed(g, [&](int s) { return deb.rise(0, s) < pl8.rise(0, s) && deb.last(0, s) < pl8.last(0, s); });
  const bool ok_hard = every_seed(g, [&](int s) { return hard.last(0, s) > pl128.last(0, s); });
  std::printf("N=%d, every seed: the debiased loss rises less at large k and ends lower than plain InfoNCE: %s\n",
              g.classes.front(), ok_debiased ? "yes" : "NO");
  std::printf("N=%d, every seed: hard-negative weights end above plain InfoNCE at k = %d: %s\n", g.classes.back(),
              g.ks.back(), ok_hard ? "yes" : "NO");
  return check && !(ok_optimum && ok_control && ok_debiased && ok_hard) ? 1 : 0;
}
