// The losses of issue 15 against their float64 torch references
// (tests/data/more_reference.txt, tests/data/REFERENCE_LOSSES.md), central
// differences, float against double and bad input.
#include <catch2/catch.hpp>

#include <limits>
#include <string>
#include <vector>

#include "fd_check.hpp"
#include "support.hpp"

using namespace testing;
using Catch::Matchers::Contains;

// ============================================================================
// Alignment, uniformity and the learned log logit scale (issue 15, items 7
// and 8): REFERENCE_LOSSES.md sections 7 and 8.
// ============================================================================

namespace align_uniform {

const std::vector<ReferenceCase>& more_cases() {
  static const std::vector<ReferenceCase> cases = read_reference(CONTRASTIVE_TEST_DATA_DIR "/more_reference.txt");
  return cases;
}

std::vector<ReferenceCase> cases_of(const std::string& loss) {
  std::vector<ReferenceCase> out;
  for (const auto& c : more_cases())
    if (c.loss == loss) out.push_back(c);
  return out;
}

/// Scalar lines of a case that read_reference() skips (value_u, value_v).
std::map<std::string, double> extra_scalars(const std::string& case_name) {
  std::ifstream f(CONTRASTIVE_TEST_DATA_DIR "/more_reference.txt");
  std::map<std::string, double> out;
  std::string line;
  bool inside = false;
  while (std::getline(f, line)) {
    std::istringstream is(line);
    std::string key;
    is >> key;
    if (key == "case") {
      std::string name;
      is >> name;
      inside = name == case_name;
    } else if (inside && (key == "value_u" || key == "value_v")) {
      is >> out[key];
    }
  }
  return out;
}

/// Checks a Result against a reference case to 1e-10 (value, both gradients).
template <typename R>
void check_against(const R& r, const ReferenceCase& c) {
  CHECK(near(r.value, c.value, 1e-10, 0.0));
  CHECK(near(r.grad_a, c.grad_a, 1e-10, 0.0));
  CHECK(near(r.grad_b, c.grad_b, 1e-10, 0.0));
}

/// Near-aligned pairs: zb = za + spread * noise (||u_i - v_i|| ~ spread).
MatD nearby(const MatD& za, double spread, std::mt19937_64& rng) {
  return za + spread * uneven_rows(za.rows(), za.cols(), rng, 0.0).cwiseProduct(
                           za.rowwise().norm().replicate(1, za.cols()) / std::sqrt(static_cast<double>(za.cols())));
}

}  // namespace align_uniform

TEST_CASE("alignment matches align_uniform's align_loss (float64 autograd)", "[more][alignment]") {
  using namespace align_uniform;
  const auto cases = cases_of("align");
  REQUIRE(cases.size() == 5);
  for (const auto& c : cases) {
    SECTION(c.name) {
      const contrastive::Alignment<double> loss({c.param.at("alpha")});
      const auto r = loss.value_and_grad(c.za, c.zb);
      check_against(r, c);
      CHECK(near(r.grad_alpha, c.grad.at("alpha"), 1e-10, 0.0));
      CHECK(r.grad_temperature == 0.0);  // the scalar gradient is grad_alpha, nowhere else
      REQUIRE(r.per_anchor.size() == c.per_anchor.size());
      for (std::size_t i = 0; i < c.per_anchor.size(); ++i) CHECK(near(r.per_anchor[i], c.per_anchor[i], 1e-10, 0.0));
      contrastive::Workspace<double> ws;
      CHECK(near(loss.value(c.za, c.zb, ws), c.value, 1e-10, 0.0));
    }
  }
}

TEST_CASE("uniformity matches align_uniform's uniform_loss (float64 autograd)", "[more][uniformity]") {
  using namespace align_uniform;
  const auto cases = cases_of("uniform");
  REQUIRE(cases.size() == 5);
  for (const auto& c : cases) {
    SECTION(c.name) {
      const double t = c.param.at("t");
      contrastive::EngineOptions o;
      o.tile_size = 3;  // several tiles, partial and off-diagonal ones included
      for (const bool stream : {false, true}) {
        INFO((stream ? "streamed" : "cached"));
        o.memory_budget_bytes = stream ? 0 : std::size_t(1) << 20;
        const contrastive::Uniformity<double> loss({t}, o);
        const auto r = loss.value_and_grad(c.za, c.zb);
        check_against(r, c);
        CHECK(near(r.grad_t, c.grad.at("t"), 1e-10, 0.0));
        CHECK(r.grad_temperature == 0.0);
        CHECK(r.per_anchor.empty());
      }
      // Each view's value, as the diagnostics report them.
      const auto au = contrastive::alignment_uniformity(c.za, c.zb, 2.0, t);
      const auto views = extra_scalars(c.name);
      REQUIRE(views.size() == 2);
      CHECK(near(au.uniformity_u, views.at("value_u"), 1e-10, 0.0));
      CHECK(near(au.uniformity_v, views.at("value_v"), 1e-10, 0.0));
      CHECK(near(au.uniformity, c.value, 1e-10, 0.0));
    }
  }
}

TEST_CASE("alignment + uniformity equals the authors' training sum (float64 autograd)", "[more][alignment][uniformity]") {
  using namespace align_uniform;
  const auto cases = cases_of("align_uniform");
  REQUIRE(cases.size() == 1);
  const auto& c = cases[0];
  REQUIRE(c.param.at("align_weight") == 1.0);
  REQUIRE(c.param.at("uniform_weight") == 1.0);
  const auto ra = contrastive::Alignment<double>({c.param.at("alpha")}).value_and_grad(c.za, c.zb);
  const auto ru = contrastive::Uniformity<double>({c.param.at("t")}).value_and_grad(c.za, c.zb);
  CHECK(near(ra.value + ru.value, c.value, 1e-10, 0.0));
  CHECK(near(MatD(ra.grad_a + ru.grad_a), c.grad_a, 1e-10, 0.0));
  CHECK(near(MatD(ra.grad_b + ru.grad_b), c.grad_b, 1e-10, 0.0));
  CHECK(near(ra.grad_alpha, c.grad.at("alpha"), 1e-10, 0.0));
  CHECK(near(ru.grad_t, c.grad.at("t"), 1e-10, 0.0));
  const auto au = contrastive::alignment_uniformity(c.za, c.zb, c.param.at("alpha"), c.param.at("t"));
  CHECK(near(au.alignment + au.uniformity, c.value, 1e-10, 0.0));
}

TEST_CASE("LogitScale: CLIP at tau = e^-phi and dL/dphi match open_clip (float64 autograd)", "[more][logit-scale]") {
  using namespace align_uniform;
  const auto cases = cases_of("clip_log_scale");
  REQUIRE(cases.size() == 3);
  for (const auto& c : cases) {
    SECTION(c.name) {
      const contrastive::LogitScale ls(c.param.at("log_scale"));
      const contrastive::CLIP<double> loss(ls.temperature());
      const auto r = loss.value_and_grad(c.za, c.zb);
      check_against(r, c);
      CHECK(near(ls.grad_log_scale(r.grad_temperature), c.grad.at("log_scale"), 1e-10, 0.0));
      CHECK(near(ls.grad_log_scale_from_scale(-ls.temperature() * ls.temperature() * r.grad_temperature),
                 c.grad.at("log_scale"), 1e-10, 0.0));
      CHECK(near(ls.scale() * ls.temperature(), 1.0, 1e-15, 0.0));
      // The partner case: the same loss written with tau.
      const auto partner = std::find_if(more_cases().begin(), more_cases().end(),
                                        [&](const ReferenceCase& x) { return x.name == c.name + "_as_tau"; });
      REQUIRE(partner != more_cases().end());
      CHECK(near(ls.temperature(), partner->param.at("temperature"), 1e-14, 0.0));
      CHECK(near(r.grad_temperature, partner->grad.at("temperature"), 1e-10, 0.0));
      // A central difference in phi.
      const double h = 1e-6;
      const auto at = [&](double phi) {
        return contrastive::CLIP<double>(contrastive::LogitScale(phi).temperature()).value(c.za, c.zb);
      };
      const double phi = ls.log_scale();
      CHECK(near(ls.grad_log_scale(r.grad_temperature), (at(phi + h) - at(phi - h)) / (2 * h), 1e-7, 1e-3));
    }
  }
}

TEST_CASE("LogitScale: CLIP's projection after the step, the SigLIP chain rule, bad input", "[more][logit-scale]") {
  contrastive::LogitScale ls;
  CHECK(ls.log_scale() == contrastive::LogitScale::kInitialLogScale);
  CHECK(near(ls.log_scale(), std::log(1 / 0.07), 1e-15, 0.0));
  CHECK(near(ls.temperature(), 0.07, 1e-15, 0.0));
  CHECK(near(contrastive::LogitScale::kMaxLogScale, std::log(100.0), 1e-16, 0.0));
  // The data file's examples: 4.7 -> ln 100, -0.1 -> 0, 3.0 stays.
  ls.set_log_scale(4.7);
  CHECK(ls.clamp());
  CHECK(ls.log_scale() == 4.605170185988092);
  ls.set_log_scale(-0.1);
  CHECK(ls.clamp());
  CHECK(ls.log_scale() == 0.0);
  ls.set_log_scale(3.0);
  CHECK_FALSE(ls.clamp());
  CHECK(ls.log_scale() == 3.0);
  CHECK(near(contrastive::LogitScale::from_temperature(0.2).temperature(), 0.2, 1e-15, 0.0));
  // The projection is not in the gradient: beyond the bound dL/dphi is the
  // loss's own (nonzero), and only the step's projection moves phi back.
  std::mt19937_64 rng(41);
  const MatD za = uneven_rows(6, 4, rng), zb = uneven_rows(6, 4, rng);
  contrastive::LogitScale beyond(5.0);
  const auto r = contrastive::CLIP<double>(beyond.temperature()).value_and_grad(za, zb);
  CHECK(beyond.grad_log_scale(r.grad_temperature) != 0.0);
  // SigLIP's logit scale t = e^phi: dL/dphi = t dL/dt, against a central difference in phi.
  const contrastive::LogitScale sl(std::log(10.0));
  const auto rs = contrastive::SigLIP<double>(sl.scale(), -10.0).value_and_grad(za, zb);
  const double h = 1e-6, phi = sl.log_scale();
  const auto at = [&](double p) { return contrastive::SigLIP<double>(std::exp(p), -10.0).value(za, zb); };
  CHECK(near(sl.grad_log_scale_from_scale(rs.grad_logit_scale), (at(phi + h) - at(phi - h)) / (2 * h), 1e-7, 1e-3));
  // Bad input names the argument and leaves the parameter alone.
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  contrastive::LogitScale keep(1.5);
  CHECK_THROWS_WITH(keep.set_log_scale(nan), Contains("'log_scale'"));
  CHECK_THROWS_WITH(keep.set_log_scale(inf), Contains("'log_scale'"));
  CHECK(keep.log_scale() == 1.5);
  CHECK_THROWS_WITH(contrastive::LogitScale(-inf), Contains("'log_scale'"));
  CHECK_THROWS_WITH(keep.grad_log_scale(nan), Contains("'dL_dtau'"));
  CHECK_THROWS_WITH(keep.grad_log_scale_from_scale(inf), Contains("'dL_dt'"));
  CHECK_THROWS_WITH(contrastive::LogitScale::from_temperature(0.0), Contains("'tau'"));
  CHECK_THROWS_WITH(contrastive::LogitScale::from_temperature(nan), Contains("'tau'"));
}

TEST_CASE("alignment and uniformity: central differences for inputs, alpha and t", "[more][gradient]") {
  std::mt19937_64 rng(43);
  const Eigen::Index n = 6, d = 4;
  const MatD za = uneven_rows(n, d, rng), zb = uneven_rows(n, d, rng);
  const double h = 1e-6;
  for (const double alpha : {0.5 + 2 * h, 1.0, 2.0, 3.0, 7.5}) {
    INFO("alpha " << alpha);
    const contrastive::Alignment<double> loss({alpha});
    const auto r = loss.value_and_grad(za, zb);
    check_central_differences([&](const MatD& a, const MatD& b) { return loss.value(a, b); }, za, zb, r.grad_a,
                              r.grad_b);
    const auto at = [&](double a) { return contrastive::Alignment<double>({a}).value(za, zb); };
    CHECK(near(r.grad_alpha, (at(alpha + h) - at(alpha - h)) / (2 * h), 1e-7, 1e-3));
  }
  for (const double t : {0.05, 0.5, 2.0, 10.0}) {
    INFO("t " << t);
    contrastive::EngineOptions o;
    o.tile_size = 4;
    const contrastive::Uniformity<double> loss({t}, o);
    const auto r = loss.value_and_grad(za, zb);
    check_central_differences([&](const MatD& a, const MatD& b) { return loss.value(a, b); }, za, zb, r.grad_a,
                              r.grad_b);
    const auto at = [&](double s) { return contrastive::Uniformity<double>({s}, o).value(za, zb); };
    CHECK(near(r.grad_t, (at(t + h) - at(t - h)) / (2 * h), 1e-7, 1e-3));
  }
}

TEST_CASE("alignment: weights, reductions and per-pair losses; coincident pairs", "[more][alignment]") {
  std::mt19937_64 rng(47);
  const Eigen::Index n = 5, d = 3;
  const MatD za = uneven_rows(n, d, rng), zb = uneven_rows(n, d, rng);
  const contrastive::Alignment<double> loss({3.0});
  // The per-pair losses from their definition.
  std::vector<double> direct(static_cast<std::size_t>(n));
  for (Eigen::Index i = 0; i < n; ++i)
    direct[static_cast<std::size_t>(i)] = std::pow((za.row(i).normalized() - zb.row(i).normalized()).norm(), 3.0);
  const std::vector<double> w = {0.5, 2.0, 0.0, 1.0, 3.0};
  double weighted = 0;
  for (std::size_t i = 0; i < w.size(); ++i) weighted += w[i] * direct[i];
  std::vector<double> per;
  const auto call = reduce_call<double>(contrastive::Reduction::None, &w, &per, n);
  contrastive::Workspace<double> ws;
  MatD ga(n, d), gb(n, d);
  double dalpha = 0;
  CHECK(near(loss.value_and_grad(za, zb, ga, gb, &dalpha, ws, call), weighted, 1e-13, 0.0));
  for (std::size_t i = 0; i < per.size(); ++i) CHECK(near(per[i], direct[i], 1e-13, 0.0));
  CHECK(near(loss.value(za, zb, ws, reduce_call<double>(contrastive::Reduction::Mean, &w)), weighted / 5, 1e-13, 0.0));
  // The weights are the chain rule of the per-pair losses: central differences of sum_i w_i l_i.
  check_central_differences(
      [&](const MatD& a, const MatD& b) { return loss.value(a, b, reduce_call<double>(contrastive::Reduction::Sum, &w)); },
      za, zb, ga, gb);
  CHECK(ga.row(2).isZero(0.0));  // weight 0
  // A pair with u_i = v_i: loss 0 and gradient 0 (the limit for alpha > 1; a
  // subgradient at alpha = 1; below 1 the gradient does not exist).
  MatD zc = zb, zd = zb;
  zc.row(1) = za.row(1);
  zd.row(1) = 2.5 * za.row(1);  // the same direction up to the rounding of the normalisation
  for (const double alpha : {0.5, 1.0, 2.0, 3.0}) {
    INFO("alpha " << alpha);
    const auto r = contrastive::Alignment<double>({alpha}).value_and_grad(za, zc);
    CHECK(r.per_anchor[1] == 0.0);
    CHECK(r.grad_a.row(1).isZero(0.0));
    CHECK(r.grad_b.row(1).isZero(0.0));
    CHECK(r.grad_a.allFinite());
    CHECK(std::isfinite(r.grad_alpha));
    const auto rd = contrastive::Alignment<double>({alpha}).value_and_grad(za, zd);
    CHECK(rd.per_anchor[1] < 1e-7);
    CHECK(rd.grad_a.allFinite());
    CHECK(rd.grad_b.allFinite());
    CHECK(std::isfinite(rd.grad_alpha));
  }
}

TEST_CASE("alignment and uniformity: float agrees with double (t = 10: logit scale 2t = 1/0.05)", "[more][float]") {
  using namespace align_uniform;
  std::mt19937_64 rng(53);
  const Eigen::Index n = 40, d = 16;
  const MatD za0 = uneven_rows(n, d, rng);
  // Spread pairs, and well-aligned ones (||u_i - v_i|| ~ 1e-2 .. 1e-3).
  for (const double spread : {1.0, 1e-2, 1e-3}) {  // below 1e-3 the rounding of the normalised rows (~6e-8) exceeds 1e-4 of u_i - v_i
    const MatF fa = za0.cast<float>(), fb = nearby(za0, spread, rng).cast<float>();
    const MatD da = fa.cast<double>(), db = fb.cast<double>();
    for (const double alpha : {0.5, 2.0, 8.0}) {
      INFO("spread " << spread << " alpha " << alpha);
      const auto rd = contrastive::Alignment<double>({alpha}).value_and_grad(da, db);
      const auto rf = contrastive::Alignment<float>({alpha}).value_and_grad(fa, fb);
      CHECK(near(rf.value, rd.value, 1e-4, 1e-300));
      CHECK(near(rf.grad_a, rd.grad_a, 1e-4, 1e-300));
      CHECK(near(rf.grad_b, rd.grad_b, 1e-4, 1e-300));
      CHECK(near(rf.grad_alpha, rd.grad_alpha, 1e-4, 1e-300));
    }
    for (const double t : {1e-4, 2.0, 10.0, 16.0}) {
      INFO("spread " << spread << " t " << t);
      const auto rd = contrastive::Uniformity<double>({t}).value_and_grad(da, db);
      const auto rf = contrastive::Uniformity<float>({t}).value_and_grad(fa, fb);
      CHECK(near(rf.value, rd.value, 1e-4));
      CHECK(near(rf.grad_a, rd.grad_a, 1e-4, 1e-300));
      CHECK(near(rf.grad_b, rd.grad_b, 1e-4, 1e-300));
      CHECK(near(rf.grad_t, rd.grad_t, 1e-4));
    }
  }
  // A near-collapsed batch (every cosine within ~1e-4 of 1): dL/dt and
  // dL/dalpha keep float precision (sums of terms of one sign).
  Eigen::RowVectorXd c = Eigen::RowVectorXd::Random(d);
  MatD ca = 0.0025 * MatD::Random(64, d), cb = 0.0025 * MatD::Random(64, d);
  ca.rowwise() += c;
  cb.rowwise() += c;
  const MatF fa = ca.cast<float>(), fb = cb.cast<float>();
  const MatD da = fa.cast<double>(), db = fb.cast<double>();
  for (const double t : {2.0, 16.0}) {
    INFO("collapsed, t " << t);
    const auto rd = contrastive::Uniformity<double>({t}).value_and_grad(da, db);
    const auto rf = contrastive::Uniformity<float>({t}).value_and_grad(fa, fb);
    CHECK(std::isfinite(rf.grad_t));
    CHECK(near(rf.grad_t, rd.grad_t, 1e-4));
    CHECK(near(rf.value, rd.value, 1e-4));
  }
  const auto rd = contrastive::Alignment<double>().value_and_grad(da, db);
  const auto rf = contrastive::Alignment<float>().value_and_grad(fa, fb);
  CHECK(near(rf.grad_alpha, rd.grad_alpha, 1e-4, 1e-300));
  CHECK(near(rf.value, rd.value, 1e-4, 1e-300));
}

TEST_CASE("alignment and uniformity: parameter ranges, bad input named, outputs untouched", "[more][bad-input]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  // alpha in [0.5, 8]; t in [1e-4, 16] (float), [1e-4, 150] (double).
  CHECK_NOTHROW(contrastive::Alignment<float>({0.5}));
  CHECK_NOTHROW(contrastive::Alignment<float>({8.0}));
  for (const double alpha : {0.49, 0.0, -2.0, 8.5, 64.0, nan})
    CHECK_THROWS_WITH(contrastive::Alignment<double>({alpha}), Contains("'alpha'"));
  CHECK_NOTHROW(contrastive::Uniformity<float>({16.0}));
  CHECK_NOTHROW(contrastive::Uniformity<float>({1e-4}));
  CHECK_NOTHROW(contrastive::Uniformity<double>({150.0}));
  for (const double t : {16.5, 9e-5, 0.0, -1.0, nan}) CHECK_THROWS_WITH(contrastive::Uniformity<float>({t}), Contains("'t'"));
  for (const double t : {151.0, 1e300}) CHECK_THROWS_WITH(contrastive::Uniformity<double>({t}), Contains("'t'"));
  contrastive::Uniformity<float> u({2.0});
  CHECK_THROWS_WITH(u.set_t(20.0), Contains("'t'"));
  CHECK(u.t() == 2.0);
  contrastive::Alignment<float> a({2.0});
  CHECK_THROWS_WITH(a.set_alpha(0.1), Contains("'alpha'"));
  CHECK(a.alpha() == 2.0);
  a.set_alpha(1.5);
  CHECK(a.alpha() == 1.5);
  // At the ends the double loss is finite; t = 150 spans e^-600 (still normal).
  std::mt19937_64 rng(59);
  const MatD za = uneven_rows(20, 8, rng), zb = uneven_rows(20, 8, rng);
  {
    const auto r = contrastive::Uniformity<double>({150.0}).value_and_grad(za, zb);
    CHECK(std::isfinite(r.value));
    CHECK(r.grad_a.allFinite());
    CHECK(std::isfinite(r.grad_t));
  }
  // Bad inputs and options: named, nothing written.
  const Eigen::Index n = 6, d = 3;
  const MatD xa = MatD::Random(n, d), xb = MatD::Random(n, d);
  MatD ga = MatD::Constant(n, d, 7.0), gb = MatD::Constant(n, d, 7.0);
  double g = 7.0;
  contrastive::Workspace<double> ws;
  const contrastive::Alignment<double> align;
  const contrastive::Uniformity<double> unif;
  MatD bad = xa;
  bad(2, 1) = nan;
  CHECK_THROWS_WITH(align.value_and_grad(bad, xb, ga, gb, &g, ws), Contains("'za'") && Contains("NaN"));
  CHECK_THROWS_WITH(unif.value_and_grad(xa, bad, ga, gb, &g, ws), Contains("'zb'"));
  CHECK_THROWS_WITH(unif.value_and_grad(xa, xb, ga, MatD(n, d + 1), &g, ws), Contains("'grad_b'"));
  CHECK_THROWS_WITH(align.value_and_grad(xa, MatD(xb.topRows(5)), ga, gb, &g, ws), Contains("'zb'"));
  CHECK_THROWS_WITH(unif.value(MatD::Random(1, d), MatD::Random(1, d)), Contains("'za'"));
  const std::vector<Eigen::Index> ids = {0, 1, 2, 3, 4, 5};
  CHECK_THROWS_WITH(align.value_and_grad(xa, xb, ga, gb, &g, ws, ids_call(ids)), Contains("'call.instance_ids'"));
  CHECK_THROWS_WITH(unif.value_and_grad(xa, xb, ga, gb, &g, ws, labels_call(ids)), Contains("'call.labels'"));
  std::vector<double> per(static_cast<std::size_t>(n), 7.0), w(static_cast<std::size_t>(n), 1.0);
  CHECK_THROWS_WITH(unif.value_and_grad(xa, xb, ga, gb, &g, ws, reduce_call<double>(contrastive::Reduction::Sum)),
                    Contains("'call.reduction'"));
  w[1] = -1.0;
  CHECK_THROWS_WITH(align.value_and_grad(xa, xb, ga, gb, &g, ws, contrastive::CallOptions<double>{}.with_weights(w).with_per_anchor(per)),
                    Contains("'call.anchor_weights'"));
  CHECK((ga.array() == 7.0).all());
  CHECK((gb.array() == 7.0).all());
  CHECK(g == 7.0);
  CHECK(per == std::vector<double>(static_cast<std::size_t>(n), 7.0));
  CHECK_THROWS_WITH(contrastive::alignment_uniformity(xa, xb, 100.0), Contains("'alpha'"));
  CHECK_THROWS_WITH(contrastive::alignment_uniformity(xa, xb, 2.0, 200.0), Contains("'t'"));
  CHECK_THROWS_WITH(contrastive::alignment_uniformity(xa, bad), Contains("'zb'"));
  // A valid call afterwards, with the same workspace.
  CHECK_NOTHROW(align.value_and_grad(xa, xb, ga, gb, &g, ws));
  CHECK(ga.allFinite());
}

TEST_CASE("alignment visits no tile; uniformity's tiles: threads and streaming agree", "[more][engine]") {
  std::mt19937_64 rng(67);
  const MatD za = uneven_rows(300, 8, rng), zb = uneven_rows(300, 8, rng);
  contrastive::EngineOptions one;
  one.num_threads = 1;
  one.tile_size = 64;
  const auto ra = contrastive::Alignment<double>({2.0}, one).value_and_grad(za, zb);
  const auto ru = contrastive::Uniformity<double>({2.0}, one).value_and_grad(za, zb);
  for (const bool stream : {false, true}) {
    contrastive::EngineOptions o = one;
    o.num_threads = 2;
    o.parallel_threshold = 0;
    if (stream) o.memory_budget_bytes = 0;
    INFO((stream ? "streamed" : "cached"));
    contrastive::Workspace<double> ws;
    MatD ga(300, 8), gb(300, 8);
    double g = 0;
    const double va = contrastive::Alignment<double>({2.0}, o).value_and_grad(za, zb, ga, gb, &g, ws);
    CHECK(contrastive::detail::buffers(ws).tiles.empty());
    CHECK(ws.last_call_threads() == 1);  // no tile, no parallel region
    CHECK(va == ra.value);
    CHECK(ga == ra.grad_a);
    CHECK(g == ra.grad_alpha);
    const double vu = contrastive::Uniformity<double>({2.0}, o).value_and_grad(za, zb, ga, gb, &g, ws);
    CHECK(ws.last_call_streamed() == stream);
    CHECK(vu == ru.value);  // bitwise: the sums run in tile order whatever the threads
    CHECK(ga == ru.grad_a);
    CHECK(gb == ru.grad_b);
    CHECK(g == ru.grad_t);
  }
  // Alignment by its definition on a larger batch.
  double sum = 0;
  for (Eigen::Index i = 0; i < 300; ++i) sum += (za.row(i).normalized() - zb.row(i).normalized()).squaredNorm();
  CHECK(near(ra.value, sum / 300, 1e-13));
  const auto au = contrastive::alignment_uniformity(za, zb);
  CHECK(near(au.alignment, ra.value, 1e-15, 0.0));
  CHECK(near(au.uniformity, ru.value, 1e-15, 0.0));
  CHECK(near(0.5 * (au.uniformity_u + au.uniformity_v), au.uniformity, 1e-14));
}
