// The losses of issue 15 against tests/data/more_reference.txt (float64
// torch autograd of each peer's formula, tests/data/make_reference_more.py;
// conventions in tests/data/REFERENCE_LOSSES.md), under several engine
// set-ups; their reductions to the plain losses; float against double at
// tau = 0.05; their parameters' validation.  (Every one of them also runs
// the battery: central differences, bad input, threads, streaming.)
#include <catch2/catch.hpp>

#include <functional>
#include <string>

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
