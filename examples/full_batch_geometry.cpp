// Reproduces the full-batch and mini-batch geometry of "On the Similarities of
// Embeddings in Contrastive Learning" (paper notes, Sec. 5) with the library's
// gradients: free unit embeddings u_i, v_i are optimised by Riemannian
// gradient descent on the sphere (step along -grad, which the library already
// returns tangent to each row, then renormalise), and the similarities reached
// are printed beside the values the theorems predict.
//
// It checks every row against its prediction and exits non-zero if one is
// off, so the test suite runs it as a test.
#include <contrastive/contrastive.hpp>

#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

using Mat = Eigen::MatrixXd;
namespace th = contrastive::theory;

namespace {

// (za, zb) -> value; writes dL/dza, dL/dzb.
using LossFn = std::function<double(const Mat&, const Mat&, Mat&, Mat&)>;

Mat random_unit(Eigen::Index n, Eigen::Index d, std::mt19937& rng) {
  std::normal_distribution<double> g(0, 1);
  Mat z = Mat::NullaryExpr(n, d, [&] { return g(rng); });
  return z.rowwise().normalized();
}

// Riemannian gradient descent on (S^{d-1})^{2n}.  The loss of a list of fixed
// batches is the sum of the batch losses.
void optimise(Mat& za, Mat& zb, const LossFn& loss, const std::vector<std::vector<Eigen::Index>>& batches, int steps,
              double lr) {
  Mat ga(za.rows(), za.cols()), gb(zb.rows(), zb.cols());
  for (int it = 0; it < steps; ++it) {
    ga.setZero();
    gb.setZero();
    for (const auto& b : batches) {
      const Mat ba = za(b, Eigen::all), bb = zb(b, Eigen::all);
      Mat gba(ba.rows(), ba.cols()), gbb(bb.rows(), bb.cols());
      loss(ba, bb, gba, gbb);
      ga(b, Eigen::all) += gba;
      gb(b, Eigen::all) += gbb;
    }
    za = (za - lr * ga).rowwise().normalized();
    zb = (zb - lr * gb).rowwise().normalized();
  }
}

std::vector<std::vector<Eigen::Index>> full_batch(Eigen::Index n) {
  std::vector<Eigen::Index> all(static_cast<std::size_t>(n));
  for (Eigen::Index i = 0; i < n; ++i) all[static_cast<std::size_t>(i)] = i;
  return {all};
}

template <typename Loss>
LossFn infonce_family(const Loss& l) {
  return [l](const Mat& a, const Mat& b, Mat& ga, Mat& gb) {
    contrastive::Workspace<double> ws;
    return l.value_and_grad(a, b, ga, gb, nullptr, ws);
  };
}

int failures = 0;

void row(const std::string& what, const std::string& quantity, double predicted, double reached, double tol) {
  const bool ok = std::abs(predicted - reached) <= tol;
  failures += ok ? 0 : 1;
  std::printf("%-34s %-26s %10.5f %10.5f  %s\n", what.c_str(), quantity.c_str(), predicted, reached, ok ? "ok" : "OFF");
}

}  // namespace

int main() {
  const Eigen::Index n = 8;
  std::mt19937 rng(7);
  std::printf("%-34s %-26s %10s %10s\n", "setting", "quantity", "predicted", "reached");

  // Thm 5.1: family A, d >= n-1, full batch -> positives 1, negatives -1/(n-1).
  const double simplex = th::simplex_similarity(n);
  const std::pair<const char*, LossFn> family_a[] = {
      {"NT-Xent tau=0.5", infonce_family(contrastive::NTXent<double>(0.5))},
      {"InfoNCE (one-way) tau=0.5", infonce_family(contrastive::InfoNCE<double>(0.5))},
      {"DCL tau=0.5", infonce_family(contrastive::DCL<double>(0.5))},
      {"DHEL tau=0.5", infonce_family(contrastive::DHEL<double>(0.5))}};
  for (const auto& f : family_a) {
    Mat za = random_unit(n, 8, rng), zb = random_unit(n, 8, rng);
    optimise(za, zb, f.second, full_batch(n), 3000, 0.5);
    const auto st = contrastive::similarity_stats(za, zb);
    row(std::string("Thm 5.1 ") + f.first, "mean positive", 1.0, st.positive.mean, 1e-3);
    row(std::string("Thm 5.1 ") + f.first, "mean cross-view negative", simplex, st.cross_negative.mean, 1e-3);
    row(std::string("Thm 5.1 ") + f.first, "var cross-view negative", 0.0, st.cross_negative.variance, 1e-4);
  }

  // Thm 5.3: SigLIP, (c1, c2) = (1, 0), d >= n.  Paper bias b = -(open_clip bias).
  const struct { double t, b_paper; } siglip_cases[] = {{5.0, 0.0}, {5.0, 5.0}};
  for (const auto& c : siglip_cases) {
    const contrastive::SigLIP<double> l(c.t, -c.b_paper);
    const LossFn f = [&l](const Mat& a, const Mat& b, Mat& ga, Mat& gb) {
      contrastive::Workspace<double> ws;
      return l.value_and_grad(a, b, ga, gb, nullptr, nullptr, ws);
    };
    Mat za = random_unit(n, 8, rng), zb = random_unit(n, 8, rng);
    optimise(za, zb, f, full_batch(n), 4000, 0.5);
    const auto opt = th::full_batch_optimum(th::siglip_terms(n, c.t, -c.b_paper), n);
    const auto st = contrastive::similarity_stats(za, zb);
    char name[64];
    std::snprintf(name, sizeof name, "Thm 5.3 SigLIP t=%g b=%g (%s)", c.t, c.b_paper, opt.excessive ? "excess" : "none");
    row(name, "mean positive", opt.positive, st.positive.mean, 2e-3);
    row(name, "mean cross-view negative", opt.negative, st.cross_negative.mean, 2e-3);
  }

  // Thm 5.5: n = 8 split into fixed batches of m = 4, d = 3: each batch forms
  // its own simplex and the variance of negatives reaches the upper bound.
  const std::vector<std::vector<Eigen::Index>> halves = {{0, 1, 2, 3}, {4, 5, 6, 7}};
  {
    Mat za = random_unit(n, 3, rng), zb = random_unit(n, 3, rng);
    optimise(za, zb, infonce_family(contrastive::NTXent<double>(0.5)), halves, 3000, 0.5);
    const auto st = contrastive::similarity_stats(za, zb);
    const auto vb = th::minibatch_variance_bounds(n, 4);
    row("Thm 5.5 NT-Xent m=4 d=3", "var cross-view negative", vb.upper, st.cross_negative.variance, 2e-3);
    row("Thm 5.5 NT-Xent m=4 d=3", "mean cross-view negative", simplex, st.cross_negative.mean, 1e-3);
  }

  // VRNS: NT-Xent + lambda * VRNS (target -1/7 from the data-set size 8) on
  // the same fixed batches, d = 8: the within-batch negatives move from the
  // batch simplex -1/3 towards -1/7 as lambda grows.  Predicted: the paper's
  // toy numbers, given to 3 decimals (hence the 1e-3 band).
  const struct { double lambda, paper; } vr[] = {{0, -0.333}, {3, -0.253}, {10, -0.179}, {30, -0.155}, {100, -0.147}};
  contrastive::VRNSParams vp;
  vp.dataset_size = n;
  double previous = -1;
  for (const auto& c : vr) {
    const contrastive::WithVRNS<double> l(contrastive::NTXent<double>(0.5), vp, c.lambda);
    const LossFn f = [&l](const Mat& a, const Mat& b, Mat& ga, Mat& gb) {
      contrastive::Workspace<double> ws;
      return l.value_and_grad(a, b, ga, gb, nullptr, ws);
    };
    Mat za = random_unit(n, 8, rng), zb = random_unit(n, 8, rng);
    // Large lambda needs small steps (the paper notes that large steps oscillate).
    optimise(za, zb, f, halves, 6000, 0.5 / (1.0 + c.lambda));
    double within = 0;
    for (const auto& b : halves) within += contrastive::similarity_stats(za(b, Eigen::all), zb(b, Eigen::all)).cross_negative.mean / 2;
    char name[64];
    std::snprintf(name, sizeof name, "VRNS lambda=%g (n=8, m=4, d=8)", c.lambda);
    row(name, "within-batch negative", c.paper, within, 1e-3);
    if (within <= previous - 1e-6) ++failures;  // must move monotonically towards -1/7
    previous = within;
  }
  std::printf("%s\n", failures == 0 ? "all rows within tolerance" : "SOME ROWS ARE OFF");
  return failures == 0 ? 0 : 1;
}
