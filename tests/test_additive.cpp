// SigLIP, spectral CL, the VRNS penalty and NT-Xent + lambda * VRNS.
#include <catch2/catch.hpp>

#include <limits>

#include "fd_check.hpp"

using namespace testing;
using Catch::Matchers::Contains;

namespace {

contrastive::VRNSParams vrns_params(const ReferenceCase& c) {
  contrastive::VRNSParams p;
  p.dataset_size = static_cast<long long>(c.param.at("dataset_size"));
  if (p.dataset_size == 0) p.target = c.param.at("target");
  p.power = c.param.at("power");
  return p;
}

struct Out {
  double value, grad_param1 = 0, grad_param2 = 0;
  MatD ga, gb;
};

// Evaluates the case's loss with the library under the given engine options.
Out evaluate(const ReferenceCase& c, const contrastive::EngineOptions& o) {
  const std::vector<Eigen::Index>* ids = c.ids.empty() ? nullptr : &c.ids;
  Out out;
  if (c.loss == "siglip") {
    const double c2 = c.param.count("within_weight") ? c.param.at("within_weight") : 0.0;
    const contrastive::SigLIP<double> l({c.param.at("logit_scale"), c.param.at("logit_bias"), c2}, o);
    const auto r = l.value_and_grad(c.za, c.zb);
    out = {r.value, r.grad_logit_scale, r.grad_logit_bias, r.grad_a, r.grad_b};
    CHECK(near(l.value(c.za, c.zb), c.value, 1e-10));
  } else if (c.loss == "spectral") {
    const contrastive::Spectral<double> l({c.param.at("cross_weight"), c.param.at("within_weight")}, o);
    const auto r = l.value_and_grad(c.za, c.zb);
    out = {r.value, 0, 0, r.grad_a, r.grad_b};
  } else if (c.loss == "vrns") {
    const contrastive::VRNS<double> l(vrns_params(c), o);
    const auto r = l.value_and_grad(c.za, c.zb, ids_call(ids));
    out = {r.value, 0, 0, r.grad_a, r.grad_b};
    CHECK(near(l.value(c.za, c.zb, ids_call(ids)), c.value, 1e-10));
  } else {
    const contrastive::WithVRNS<double> l(contrastive::NTXent<double>(c.param.at("temperature"), o), vrns_params(c),
                                          c.param.at("lambda"));
    const auto r = l.value_and_grad(c.za, c.zb, ids_call(ids));
    out = {r.value, r.grad_temperature, 0, r.grad_a, r.grad_b};
    CHECK(near(l.value(c.za, c.zb, ids_call(ids)), c.value, 1e-10));
  }
  return out;
}

}  // namespace

TEST_CASE("additive family, VRNS and NT-Xent + VRNS match PyTorch autograd to 1e-10", "[reference][additive]") {
  const auto cases = read_reference(CONTRASTIVE_TEST_DATA_DIR "/additive_reference.txt");
  REQUIRE(cases.size() == 29);
  contrastive::EngineOptions one_tile, cached, streamed;
  cached.tile_size = 2;
  streamed.tile_size = 3;
  streamed.memory_budget_bytes = 0;
  streamed.num_threads = 2;
  streamed.parallel_threshold = 0;  // thread even these tiny batches
  for (const auto& c : cases) {
    for (const auto& o : {one_tile, cached, streamed}) {
      INFO(c.name << " tile " << o.tile_size << " budget " << o.memory_budget_bytes);
      const Out r = evaluate(c, o);
      CHECK(near(r.value, c.value, 1e-10));
      CHECK(near(r.ga, c.grad_a, 1e-10, 1e-4));  // floor: d = 1 cases, exact gradient 0
      CHECK(near(r.gb, c.grad_b, 1e-10, 1e-4));
      if (c.loss == "siglip") {
        CHECK(near(r.grad_param1, c.grad.at("logit_scale"), 1e-10));
        CHECK(near(r.grad_param2, c.grad.at("logit_bias"), 1e-10));
      }
      if (c.loss == "ntxent_vrns") CHECK(near(r.grad_param1, c.grad.at("temperature"), 1e-10));
    }
  }
}

TEST_CASE("VRNS with p = 2 equals its O(n d^2) closed form", "[closed-form][additive]") {
  // sum_{i != j} (s_ij - t)^2 = <U^T U, V^T V>_F - sum_i s_ii^2
  // (sum_ij s_ij^2 = ||U V^T||_F^2 = tr(U^T U V^T V); note: not ||U^T V||_F^2)
  //   - 2t [(sum u).(sum v) - sum_i s_ii] + n(n-1) t^2
  std::mt19937_64 rng(41);
  for (Eigen::Index n : {2, 7, 40}) {
    const MatD za = uneven_rows(n, 5, rng), zb = uneven_rows(n, 5, rng);
    const MatD u = za.rowwise().normalized(), v = zb.rowwise().normalized();
    const double t = -1.0 / 999.0, nn = static_cast<double>(n);
    const Eigen::VectorXd sii = (u.array() * v.array()).rowwise().sum();
    const double sum_sq = ((u.transpose() * u).array() * (v.transpose() * v).array()).sum() - sii.squaredNorm();
    const double sum = u.colwise().sum().dot(v.colwise().sum()) - sii.sum();
    const double expect = (sum_sq - 2 * t * sum + nn * (nn - 1) * t * t) / (nn * (nn - 1));
    contrastive::VRNSParams p;
    p.dataset_size = 1000;
    contrastive::EngineOptions o;
    o.tile_size = 3;
    CHECK(near(contrastive::VRNS<double>(p, o).value(za, zb), expect, 1e-12));
  }
}

TEST_CASE("SigLIP, spectral, VRNS and WithVRNS gradients match central differences", "[gradient][additive]") {
  std::mt19937_64 rng(42);
  contrastive::EngineOptions o;
  o.tile_size = 2;
  contrastive::VRNSParams vp;
  vp.dataset_size = 20;
  const std::vector<Eigen::Index> ids = {3, 1, 3, 2, 0, 1};
  for (Eigen::Index n : {2, 3, 6}) {
    for (Eigen::Index d : {1, 4}) {
      INFO("n=" << n << " d=" << d);
      const MatD za = uneven_rows(n, d, rng), zb = uneven_rows(n, d, rng);
      const std::vector<Eigen::Index> sub(ids.begin(), ids.begin() + n);
      const bool ids_ok = n == 6;  // the first 2 or 3 ids are distinct too, but use them only at n = 6
      const auto id = ids_call(ids_ok ? &sub : nullptr);
      const contrastive::SigLIP<double> sig({4.0, -1.0}, o);
      const contrastive::Spectral<double> spec({1.0, 0.7}, o);
      const contrastive::VRNS<double> pen(vp, o);
      const contrastive::WithVRNS<double> comb(contrastive::DCL<double>(0.3, o), vp, 5.0);
      const auto r1 = sig.value_and_grad(za, zb);
      check_central_differences([&](const MatD& a, const MatD& b) { return sig.value(a, b); }, za, zb, r1.grad_a, r1.grad_b);
      const double h = 1e-6;
      CHECK(near(r1.grad_logit_scale,
                 (contrastive::SigLIP<double>(4.0 + h, -1.0).value(za, zb) -
                  contrastive::SigLIP<double>(4.0 - h, -1.0).value(za, zb)) / (2 * h), 1e-6, 1e-3));
      CHECK(near(r1.grad_logit_bias,
                 (contrastive::SigLIP<double>(4.0, -1.0 + h).value(za, zb) -
                  contrastive::SigLIP<double>(4.0, -1.0 - h).value(za, zb)) / (2 * h), 1e-6, 1e-3));
      const auto r2 = spec.value_and_grad(za, zb);
      check_central_differences([&](const MatD& a, const MatD& b) { return spec.value(a, b); }, za, zb, r2.grad_a, r2.grad_b);
      const auto r3 = pen.value_and_grad(za, zb, id);
      check_central_differences([&](const MatD& a, const MatD& b) { return pen.value(a, b, id); }, za, zb, r3.grad_a, r3.grad_b);
      const auto r4 = comb.value_and_grad(za, zb, id);
      check_central_differences([&](const MatD& a, const MatD& b) { return comb.value(a, b, id); }, za, zb, r4.grad_a, r4.grad_b);
      CHECK(near(r4.value, contrastive::DCL<double>(0.3).value(za, zb, id) + 5.0 * pen.value(za, zb, id), 1e-12));
      CHECK(near(r4.grad_temperature, contrastive::DCL<double>(0.3).value_and_grad(za, zb, id).grad_temperature, 1e-10));
    }
  }
}

TEST_CASE("additive losses: float agrees with double, threads and streaming agree", "[engine][additive][float]") {
  std::mt19937_64 rng(43);
  const MatD za = uneven_rows(45, 16, rng), zb = uneven_rows(45, 16, rng);
  contrastive::VRNSParams vp;
  vp.dataset_size = 50000;
  const auto sd = contrastive::SigLIP<double>().value_and_grad(za, zb);
  const auto sf = contrastive::SigLIP<float>().value_and_grad(za.cast<float>(), zb.cast<float>());
  CHECK(near(sf.value, sd.value, 1e-5));
  CHECK(near(sf.grad_a, sd.grad_a, 1e-4, 1e-30));
  CHECK(near(sf.grad_logit_scale, sd.grad_logit_scale, 1e-4));
  CHECK(near(sf.grad_logit_bias, sd.grad_logit_bias, 1e-4));
  const auto cd = contrastive::WithVRNS<double>(contrastive::NTXent<double>(0.2), vp, 30).value_and_grad(za, zb);
  const auto cf = contrastive::WithVRNS<float>(contrastive::NTXent<float>(0.2), vp, 30)
                      .value_and_grad(za.cast<float>(), zb.cast<float>());
  CHECK(near(cf.value, cd.value, 1e-5));
  CHECK(near(cf.grad_a, cd.grad_a, 1e-4, 1e-30));
  CHECK(near(cf.grad_b, cd.grad_b, 1e-4, 1e-30));
  CHECK(near(cf.grad_temperature, cd.grad_temperature, 1e-4));
  for (int threads : {1, 2, 3}) {
    contrastive::EngineOptions o;
    o.tile_size = 7;
    o.num_threads = threads;
    o.parallel_threshold = 0;
    o.memory_budget_bytes = threads == 2 ? 0 : std::size_t(1) << 30;
    const auto r = contrastive::WithVRNS<double>(contrastive::NTXent<double>(0.2, o), vp, 30).value_and_grad(za, zb);
    CHECK(near(r.value, cd.value, 1e-13));
    CHECK(near(r.grad_a, cd.grad_a, 1e-12));
    CHECK(near(r.grad_temperature, cd.grad_temperature, 1e-12));
    const auto s = contrastive::SigLIP<double>(contrastive::SigLIPParams{}, o).value_and_grad(za, zb);
    CHECK(near(s.value, sd.value, 1e-13));
    CHECK(near(s.grad_b, sd.grad_b, 1e-12));
    CHECK(near(s.grad_logit_bias, sd.grad_logit_bias, 1e-12));
  }
}

TEST_CASE("a sum of several terms equals the sum of its parts, in one call", "[additive][gradient]") {
  std::mt19937_64 rng(44);
  const MatD za = uneven_rows(10, 6, rng), zb = uneven_rows(10, 6, rng);
  const std::vector<Eigen::Index> ids = {0, 1, 2, 3, 4, 0, 5, 6, 7, 1};
  contrastive::VRNSParams vp;
  vp.dataset_size = 100;
  const contrastive::SpectralParams sp{1.0, 0.4};
  const contrastive::SigLIPParams gp{3.0, -1.0, 0.5};
  contrastive::EngineOptions o;
  o.tile_size = 3;
  const contrastive::NTXent<double> base(0.25, o);
  const contrastive::Combined<double> sum(base, {contrastive::LossTerm::make_vrns(vp, 30.0),
                                                 contrastive::LossTerm::make_spectral(sp, 0.5),
                                                 contrastive::LossTerm::make_siglip(gp, 0.2)});
  for (const auto& id : {ids_call(nullptr), ids_call(ids)}) {
    const auto r = sum.value_and_grad(za, zb, id);
    const auto rb = base.value_and_grad(za, zb, id);
    const auto rv = contrastive::VRNS<double>(vp).value_and_grad(za, zb, id);
    const auto rs = contrastive::Combined<double>({contrastive::LossTerm::make_spectral(sp)}).value_and_grad(za, zb, id);
    const auto rg = contrastive::Combined<double>({contrastive::LossTerm::make_siglip(gp)}).value_and_grad(za, zb, id);
    CHECK(near(r.value, rb.value + 30 * rv.value + 0.5 * rs.value + 0.2 * rg.value, 1e-12));
    CHECK(near(r.grad_a, rb.grad_a + 30 * rv.grad_a + 0.5 * rs.grad_a + 0.2 * rg.grad_a, 1e-11));
    CHECK(near(r.grad_b, rb.grad_b + 30 * rv.grad_b + 0.5 * rs.grad_b + 0.2 * rg.grad_b, 1e-11));
    CHECK(near(r.grad_temperature, rb.grad_temperature, 1e-10));
    CHECK(rs.grad_temperature == 0.0);
    check_central_differences([&](const MatD& a, const MatD& b) { return sum.value(a, b, id); }, za, zb, r.grad_a,
                              r.grad_b);
  }
  // Without ids the SigLIP term equals the SigLIP functor.
  CHECK(near(contrastive::Combined<double>({contrastive::LossTerm::make_siglip(gp)}).value(za, zb),
             contrastive::SigLIP<double>(gp).value(za, zb), 1e-13));
}

TEST_CASE("additive losses and VRNS reject bad input by name", "[bad-input][additive]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(contrastive::SigLIP<double>(0.0, -10.0), Contains("'logit_scale'"));
  CHECK_THROWS_WITH(contrastive::SigLIP<double>(10.0, nan), Contains("'logit_bias'"));
  contrastive::SpectralParams sp;
  sp.within_weight = -1;
  CHECK_THROWS_WITH(contrastive::Spectral<double>(sp), Contains("'within_weight'"));
  contrastive::VRNSParams vp;  // neither dataset_size nor target
  CHECK_THROWS_WITH(contrastive::VRNS<double>(vp), Contains("'target'"));
  vp.dataset_size = 1;
  CHECK_THROWS_WITH(contrastive::VRNS<double>(vp), Contains("'dataset_size'"));
  vp.dataset_size = 100;
  vp.target = 0.1;
  CHECK_THROWS_WITH(contrastive::VRNS<double>(vp), Contains("exactly one"));
  vp.target = nan;
  vp.power = 0.5;
  CHECK_THROWS_WITH(contrastive::VRNS<double>(vp), Contains("'power'"));
  vp.power = 2;
  CHECK_THROWS_WITH(contrastive::WithVRNS<double>(contrastive::NTXent<double>(), vp, -1.0), Contains("'lambda'"));
  CHECK_THROWS_WITH(contrastive::Combined<double>({contrastive::LossTerm::make_spectral({}, nan)}), Contains("'weight'"));
  CHECK_THROWS_WITH(contrastive::SigLIP<double>(contrastive::SigLIPParams{10, -10, -1}), Contains("'within_weight'"));

  const contrastive::WithVRNS<double> comb(contrastive::NTXent<double>(), vp, 30.0);
  const MatD za = MatD::Random(4, 3), zb = MatD::Random(4, 3);
  MatD ga = MatD::Constant(4, 3, 42.0), gb = MatD::Constant(4, 3, 43.0);
  double gt = 44.0;
  contrastive::Workspace<double> ws;
  const std::vector<Eigen::Index> short_ids = {0, 1, 2}, same_ids = {5, 5, 5, 5};
  CHECK_THROWS_WITH(comb.value_and_grad(za, zb, ga, gb, &gt, ws, ids_call(short_ids)),
                    Contains("'call.instance_ids'") && Contains("3 entries"));
  CHECK_THROWS_WITH(comb.value_and_grad(za, zb, ga, gb, &gt, ws, ids_call(same_ids)), Contains("no negative pair"));
  MatD bad = za;
  bad(1, 1) = nan;
  CHECK_THROWS_WITH(comb.value_and_grad(bad, zb, ga, gb, &gt, ws), Contains("'za'"));
  CHECK_THROWS_WITH(contrastive::VRNS<double>(vp).value(za, MatD::Random(3, 3)), Contains("'zb'"));
  CHECK_THROWS_WITH(contrastive::SigLIP<double>().value(MatD::Random(1, 3), MatD::Random(1, 3)), Contains("at least 2"));
  CHECK((ga.array() == 42.0).all());
  CHECK((gb.array() == 43.0).all());
  CHECK(gt == 44.0);
}

TEST_CASE("SigLIP with instance ids drops the pairs of equal ids", "[additive][gradient]") {
  std::mt19937_64 rng(17);
  const Eigen::Index n = 6, d = 4;
  const MatD za = uneven_rows(n, d, rng), zb = uneven_rows(n, d, rng);
  const std::vector<Eigen::Index> ids = {3, 1, 3, 2, 1, 0};
  const double t = 4.0, b = -1.0;
  const contrastive::SigLIP<double> loss(t, b);
  // Direct sum over the pairs: positives softplus(-(t s + b)), negatives softplus(t s + b), / n.
  const auto brute = [&](const MatD& a, const MatD& c) {
    const auto sp = [](double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); };
    double v = 0;
    for (Eigen::Index i = 0; i < n; ++i)
      for (Eigen::Index j = 0; j < n; ++j) {
        const double s = a.row(i).normalized().dot(c.row(j).normalized());
        if (i == j) v += sp(-(t * s + b));
        else if (ids[static_cast<std::size_t>(i)] != ids[static_cast<std::size_t>(j)]) v += sp(t * s + b);
      }
    return v / static_cast<double>(n);
  };
  const auto r = loss.value_and_grad(za, zb, ids_call(ids));
  CHECK(near(r.value, brute(za, zb), 1e-12));
  check_central_differences([&](const MatD& a, const MatD& c) { return loss.value(a, c, ids_call(ids)); }, za, zb, r.grad_a,
                            r.grad_b);
  const double h = 1e-6;
  CHECK(near(r.grad_logit_bias,
             (contrastive::SigLIP<double>(t, b + h).value(za, zb, ids_call(ids)) -
              contrastive::SigLIP<double>(t, b - h).value(za, zb, ids_call(ids))) / (2 * h), 1e-6, 1e-3));
  // Distinct ids are no mask at all.
  const std::vector<Eigen::Index> distinct = {0, 1, 2, 3, 4, 5};
  CHECK(near(loss.value(za, zb, ids_call(distinct)), loss.value(za, zb), 1e-14));
  const std::vector<Eigen::Index> short_ids = {0, 1};
  CHECK_THROWS_WITH(loss.value(za, zb, ids_call(short_ids)), Catch::Matchers::Contains("'call.instance_ids'"));
}
