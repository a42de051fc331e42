// The losses of issue 15 against tests/data/more_reference.txt (float64
// torch autograd of each peer's formula, tests/data/make_reference_more.py;
// conventions in tests/data/REFERENCE_LOSSES.md), under several engine
// set-ups; their reductions to the plain losses; float against double at
// tau = 0.05; their parameters' validation.  (Every one of them also runs
// the battery: central differences, bad input, threads, streaming.)
#include <catch2/catch.hpp>

#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "fd_check.hpp"
#include "support.hpp"

using namespace testing;
using namespace contrastive;
using Catch::Matchers::Contains;

namespace {

const std::vector<ReferenceCase>& cases() {
  static const auto c = read_reference(std::string(CONTRASTIVE_TEST_DATA_DIR) + "/more_reference.txt");
  return c;
}

InfoNCEFamilyParams member(const std::string& kind, double tau) {
  if (kind == "clip") return CLIP<double>(tau).params();
  if (kind == "infonce") return InfoNCE<double>(tau).params();
  return NTXent<double>(tau).params();
}
std::string suffix(const std::string& loss) { return loss.substr(loss.rfind('_') + 1); }

/// Our result for a reference case of a two-view loss (false: not ours here).
bool ours(const ReferenceCase& c, const EngineOptions& o, Result<double>& r) {
  if (!c.param.count("temperature") || !c.grad.count("temperature")) return false;
  const double tau = c.param.at("temperature");
  CallOptions<double> call;
  if (!c.ids.empty()) call.instance_ids = c.ids;
  if (c.loss == "dclw") {
    r = DCLW<double>(tau, c.param.at("sigma"), o).value_and_grad(c.za, c.zb, call);
  } else if (c.loss == "dcl") {
    r = DCL<double>(tau, o).value_and_grad(c.za, c.zb, call);
  } else if (c.loss.rfind("smooth_", 0) == 0) {
    auto p = member(suffix(c.loss), tau);
    p.label_smoothing = c.param.at("label_smoothing");
    r = InfoNCEFamily<double>(p, o).value_and_grad(c.za, c.zb, call);
  } else if (c.loss.rfind("multipos_", 0) == 0) {
    MultiPositiveParams p;
    p.family = member(suffix(c.loss), tau);
    p.form = c.loss.find("_sum_") != std::string::npos ? PositivesForm::Sum : PositivesForm::Mean;
    r = MultiPositive<double>(p, o).value_and_grad(c.za, c.zb, call);
  } else if (c.loss.rfind("debiased_", 0) == 0) {
    DebiasedParams p;
    p.family = member(suffix(c.loss), tau);
    p.tau_plus = c.param.at("tau_plus");
    p.beta = c.param.at("beta");
    r = Debiased<double>(p, o).value_and_grad(c.za, c.zb, call);
  } else if (c.loss == "ntxent" || c.loss == "infonce" || c.loss == "clip") {
    r = InfoNCEFamily<double>(member(c.loss, tau), o).value_and_grad(c.za, c.zb, call);
  } else {
    return false;
  }
  return true;
}

std::vector<EngineOptions> setups() {
  EngineOptions one, tiles, streamed;
  tiles.tile_size = 3;
  tiles.num_threads = 2;
  tiles.parallel_threshold = 0;
  streamed.tile_size = 2;
  streamed.memory_budget_bytes = 0;
  return {one, tiles, streamed};
}

}  // namespace

TEST_CASE("issue 15 losses match PyTorch float64 autograd to 1e-10", "[reference][more]") {
  int checked = 0;
  for (const auto& c : cases()) {
    for (const auto& o : setups()) {
      Result<double> r;
      if (c.loss == "supcon_single") {
        CallOptions<double> call;
        call.labels = c.labels;
        r = SupConOneView<double>(c.param.at("temperature"), o).value_and_grad(c.za, call);
        INFO(c.name);
        CHECK(near(r.value, c.value, 1e-10));
        CHECK(near(r.grad_a, c.grad_a, 1e-10));
        CHECK(near(r.grad_temperature, c.grad.at("temperature"), 1e-10));
        ++checked;
        continue;
      }
      if (!ours(c, o, r)) continue;
      INFO(c.name << " tile " << o.tile_size << " budget " << o.memory_budget_bytes);
      CHECK(near(r.value, c.value, 1e-10));
      CHECK(near(r.grad_a, c.grad_a, 1e-10));
      CHECK(near(r.grad_b, c.grad_b, 1e-10));
      CHECK(near(r.grad_temperature, c.grad.at("temperature"), 1e-10));
      if (!c.per_anchor.empty() && r.per_anchor.size() == c.per_anchor.size())
        for (std::size_t k = 0; k < c.per_anchor.size(); ++k) CHECK(near(r.per_anchor[k], c.per_anchor[k], 1e-10));
      ++checked;
    }
  }
  CHECK(checked >= 3 * 90);  // every case of these losses, in three engine set-ups
}

TEST_CASE("tau+ = 0 and beta = 0 is the plain loss, distinct ids and eps = 0 too, exactly", "[more][closed-form]") {
  std::mt19937_64 rng(151);
  const MatD za = uneven_rows(11, 6, rng), zb = uneven_rows(11, 6, rng);
  std::vector<Eigen::Index> distinct(11);
  for (std::size_t i = 0; i < distinct.size(); ++i) distinct[i] = static_cast<Eigen::Index>(10 * i + 3);
  for (const char* kind : {"ntxent", "clip", "infonce"}) {
    INFO(kind);
    const auto base = InfoNCEFamily<double>(member(kind, 0.2)).value_and_grad(za, zb);
    DebiasedParams dp;
    dp.family = member(kind, 0.2);
    dp.tau_plus = 0.0;
    const auto deb = Debiased<double>(dp).value_and_grad(za, zb);
    CHECK(near(deb.value, base.value, 1e-13));
    CHECK(near(deb.grad_a, base.grad_a, 1e-12));
    CHECK(near(deb.grad_b, base.grad_b, 1e-12));
    CHECK(near(deb.grad_temperature, base.grad_temperature, 1e-12));
    for (PositivesForm f : {PositivesForm::Sum, PositivesForm::Mean}) {
      MultiPositiveParams mp;
      mp.family = member(kind, 0.2);
      mp.form = f;
      const auto mult = MultiPositive<double>(mp).value_and_grad(za, zb, CallOptions<double>{}.with_ids(distinct));
      CHECK(near(mult.value, base.value, 1e-13));
      CHECK(near(mult.grad_a, base.grad_a, 1e-12));
      CHECK(near(mult.grad_temperature, base.grad_temperature, 1e-12));
    }
  }
  // The Mean form of NT-Xent is SupCon with labels = ids.
  std::vector<Eigen::Index> ids(11);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<Eigen::Index>(i % 4);
  MultiPositiveParams mp;
  mp.family = member("ntxent", 0.2);
  mp.form = PositivesForm::Mean;
  const auto mult = MultiPositive<double>(mp).value_and_grad(za, zb, CallOptions<double>{}.with_ids(ids));
  const auto sup = SupCon<double>(0.2).value_and_grad(za, zb, CallOptions<double>{}.with_labels(ids));
  CHECK(near(mult.value, sup.value, 1e-13));
  CHECK(near(mult.grad_a, sup.grad_a, 1e-12));
  CHECK(near(mult.grad_temperature, sup.grad_temperature, 1e-12));
  // DCLW tends to DCL as sigma grows: |difference| <= (e^{2/sigma} - 1) / tau.
  const double sigma = 1e8;
  const auto dclw = DCLW<double>(0.2, sigma).value(za, zb), dcl = DCL<double>(0.2).value(za, zb);
  CHECK(std::abs(dclw - dcl) <= (std::exp(2.0 / sigma) - 1.0) / 0.2);
  // One-batch SupCon with every label distinct or equal: 0, zero gradient.
  for (Eigen::Index same : {Eigen::Index(0), Eigen::Index(1)}) {
    std::vector<Eigen::Index> labels(11);
    for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = same ? 7 : static_cast<Eigen::Index>(i);
    const auto r = SupConOneView<double>(0.1).value_and_grad(za, CallOptions<double>{}.with_labels(labels));
    CHECK(r.value == 0.0);
    CHECK(r.grad_a.isZero(0.0));
    CHECK(r.grad_temperature == 0.0);
  }
}

TEST_CASE("issue 15 losses: float agrees with double at tau = 0.05", "[more][float]") {
  std::mt19937_64 rng(152);
  const MatD za = uneven_rows(24, 8, rng), zb = za + 0.5 * uneven_rows(24, 8, rng, 0.0);
  std::vector<Eigen::Index> ids(24);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<Eigen::Index>(i % 9);
  const auto compare = [&](const char* what, const auto& rf, const auto& rd) {
    INFO(what);
    CHECK(near(static_cast<double>(rf.value), rd.value, 1e-4));
    CHECK(near(rf.grad_a, rd.grad_a, 1e-4));
    CHECK(near(rf.grad_b, rd.grad_b, 1e-4));
    CHECK(near(static_cast<double>(rf.grad_temperature), rd.grad_temperature, 1e-4));
  };
  const MatF fa = za.cast<float>(), fb = zb.cast<float>();
  const MatD da = fa.cast<double>(), db = fb.cast<double>();
  compare("DCLW", DCLW<float>(0.05).value_and_grad(fa, fb), DCLW<double>(0.05).value_and_grad(da, db));
  {
    auto p = CLIP<double>(0.05).params();
    p.label_smoothing = 0.1;
    compare("label smoothing", InfoNCEFamily<float>(p).value_and_grad(fa, fb), InfoNCEFamily<double>(p).value_and_grad(da, db));
  }
  for (PositivesForm f : {PositivesForm::Sum, PositivesForm::Mean}) {
    MultiPositiveParams p;
    p.family = CLIP<double>(0.05).params();
    p.form = f;
    compare("multi-positive", MultiPositive<float>(p).value_and_grad(fa, fb, CallOptions<float>{}.with_ids(ids)),
            MultiPositive<double>(p).value_and_grad(da, db, CallOptions<double>{}.with_ids(ids)));
  }
  {
    DebiasedParams p;
    p.family = NTXent<double>(0.05).params();
    p.tau_plus = 0.05;
    compare("debiased", Debiased<float>(p).value_and_grad(fa, fb), Debiased<double>(p).value_and_grad(da, db));
    p.family = CLIP<double>(0.1).params();
    p.beta = 1.0;
    compare("hard negatives (tau 0.1: 2 (1 + beta) / tau must fit float)", Debiased<float>(p).value_and_grad(fa, fb),
            Debiased<double>(p).value_and_grad(da, db));
  }
  std::vector<Eigen::Index> labels(24);
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<Eigen::Index>(i % 5);
  const auto rf = SupConOneView<float>(0.05).value_and_grad(fa, CallOptions<float>{}.with_labels(labels));
  const auto rd = SupConOneView<double>(0.05).value_and_grad(da, CallOptions<double>{}.with_labels(labels));
  CHECK(near(static_cast<double>(rf.value), rd.value, 1e-4));
  CHECK(near(rf.grad_a, rd.grad_a, 1e-4));
  CHECK(near(static_cast<double>(rf.grad_temperature), rd.grad_temperature, 1e-4));
}

TEST_CASE("one-batch SupCon: central differences, bad input named, outputs untouched", "[more][gradient][bad-input]") {
  std::mt19937_64 rng(153);
  const MatD z = uneven_rows(9, 4, rng);
  std::vector<Eigen::Index> labels = {0, 1, 0, 2, 1, 0, 3, 2, 2};
  EngineOptions o;
  o.tile_size = 4;
  const SupConOneView<double> loss(0.3, o);
  const auto call = CallOptions<double>{}.with_labels(labels);
  const auto r = loss.value_and_grad(z, call);
  const MatD fd = central_difference([&](const MatD& x) { return loss.value(x, call); }, z);
  for (Eigen::Index i = 0; i < z.rows(); ++i) CHECK(near(r.grad_a.row(i), fd.row(i), 1e-6, 1e-2 / z.row(i).norm()));
  const double h = 1e-4;
  const double ft = (SupConOneView<double>(0.3 + h, o).value(z, call) - SupConOneView<double>(0.3 - h, o).value(z, call)) / (2 * h);
  CHECK(near(r.grad_temperature, ft, 1e-6));
  MatD g = MatD::Constant(9, 4, 7.0);
  double dt = 7;
  Workspace<double> ws;
  CHECK_THROWS_WITH(loss.value_and_grad(z, g, &dt, ws), Contains("'call.labels'"));
  const std::vector<Eigen::Index> short_labels = {0, 1};
  CHECK_THROWS_WITH(loss.value_and_grad(z, g, &dt, ws, CallOptions<double>{}.with_labels(short_labels)), Contains("'call.labels'"));
  MatD bad = z;
  bad(2, 2) = std::nan("");
  CHECK_THROWS_WITH(loss.value_and_grad(bad, g, &dt, ws, call), Contains("'z'") && Contains("NaN"));
  MatD wrong = MatD::Constant(8, 4, 7.0);
  CHECK_THROWS_WITH(loss.value_and_grad(z, wrong, &dt, ws, call), Contains("'grad'"));
  CHECK((g.array() == 7.0).all());
  CHECK(dt == 7);
  CHECK_THROWS_WITH(loss.value(z, ids_call(labels)), Contains("'call.instance_ids'"));
  CHECK_THROWS_WITH(SupConOneView<float>(1e-4), Contains("'temperature'"));
}

TEST_CASE("DCLW: the gradient of the loss with its positive weights frozen, by central differences", "[more][gradient]") {
  std::mt19937_64 rng(155);
  const MatD za = uneven_rows(7, 4, rng), zb = uneven_rows(7, 4, rng);
  const double tau = 0.2, sigma = 0.5;
  EngineOptions o;
  o.tile_size = 3;
  const auto r = DCLW<double>(tau, sigma, o).value_and_grad(za, zb);
  // w_i = 2 - n softmax_i(s_ii / sigma) at the point of the call.
  const auto unit = [](const MatD& z) { return MatD(z.rowwise().normalized()); };
  Eigen::ArrayXd s = (unit(za).array() * unit(zb).array()).rowwise().sum();
  Eigen::ArrayXd w = (s / sigma).exp();
  w = 2.0 - 7.0 * w / w.sum();
  // With w frozen, L = DCL + (1 / (2n)) sum over both anchors of (1 - w_i) x_ii.
  const auto frozen = [&](const MatD& a, const MatD& b) {
    const Eigen::ArrayXd sii = (unit(a).array() * unit(b).array()).rowwise().sum();
    return DCL<double>(tau).value(a, b) + ((1.0 - w) * sii).sum() / tau / 7.0;
  };
  CHECK(near(r.value, frozen(za, zb), 1e-13));
  check_central_differences(frozen, za, zb, r.grad_a, r.grad_b);
}

TEST_CASE("issue 15 parameters are validated by name", "[more][bad-input]") {
  DebiasedParams dp;
  dp.tau_plus = 1.0;
  CHECK_THROWS_WITH(dp.check(), Contains("'tau_plus'"));
  dp.tau_plus = 0.1;
  dp.beta = -1;
  CHECK_THROWS_WITH(dp.check(), Contains("'beta'"));
  dp.beta = 6;
  dp.family = NTXent<double>(0.1).params();
  CHECK_THROWS_WITH(Debiased<float>(dp), Contains("'beta'") && Contains("'temperature'"));  // 2 * 7 / 0.1 > 64 in float
  CHECK_NOTHROW(Debiased<double>(dp));
  dp.beta = 0;
  dp.family.positive_in_denominator = false;
  CHECK_THROWS_WITH(dp.check(), Contains("'family.positive_in_denominator'"));
  dp.family = NTXent<double>(0.1).params();
  dp.family.cross_weight = 0.5;
  CHECK_THROWS_WITH(dp.check(), Contains("'family.cross_weight'"));
  auto p = DCL<double>(0.1).params();
  p.label_smoothing = 0.1;
  CHECK_THROWS_WITH(p.check(), Contains("'label_smoothing'"));
  p = CLIP<double>(0.1).params();
  p.label_smoothing = 1.0;
  CHECK_THROWS_WITH(p.check(), Contains("'label_smoothing'"));
  CHECK_THROWS_WITH(DCLW<double>(0.1, 0.0), Contains("'sigma'"));
  CHECK_THROWS_WITH(DCLW<double>(0.1, std::nan("")), Contains("'sigma'"));
  // MultiPositive needs ids; nothing is written without them.
  std::mt19937_64 rng(154);
  const MatD za = uneven_rows(5, 3, rng), zb = uneven_rows(5, 3, rng);
  MatD ga = MatD::Constant(5, 3, 7.0), gb = ga;
  double dt = 7;
  Workspace<double> ws;
  CHECK_THROWS_WITH(MultiPositive<double>().value_and_grad(za, zb, ga, gb, &dt, ws), Contains("'call.instance_ids'"));
  CHECK((ga.array() == 7.0).all());
  CHECK(dt == 7);
  MultiPositiveParams mp;
  mp.family = DCL<double>(0.1).params();
  CHECK_THROWS_WITH(mp.check(), Contains("'family.positive_in_denominator'"));
}

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
