// Explicit negative keys against PyTorch (info-nce-pytorch semantics), their
// gradients against central differences, reductions and per-anchor weights
// of the batch losses, and the memory bank.
#include <catch2/catch.hpp>

#include <set>

#include "fd_check.hpp"
#include "support.hpp"

using namespace testing;
using contrastive::NegativeMode;
using contrastive::CallOptions;
using contrastive::Reduction;

namespace {

struct NegCase {
  std::string name, mode, reduction;
  std::map<std::string, MatD> m;
};

std::vector<NegCase> read_negatives(const std::string& path) {
  std::ifstream f(path);
  std::vector<NegCase> cases;
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream is(line);
    std::string key;
    is >> key;
    if (key == "case") {
      cases.emplace_back();
      is >> cases.back().name >> cases.back().mode >> cases.back().reduction;
      continue;
    }
    Eigen::Index r = 0, c = 0;
    is >> r >> c;
    MatD v(r, c);
    for (Eigen::Index i = 0; i < r; ++i)
      for (Eigen::Index j = 0; j < c; ++j) is >> v(i, j);
    cases.back().m[key] = v;
  }
  return cases;
}

std::vector<double> row_vector(const MatD& m) { return std::vector<double>(m.data(), m.data() + m.size()); }

}  // namespace

TEST_CASE("explicit negative keys match info-nce-pytorch (float64 autograd)", "[negatives]") {
  const auto cases = read_negatives(CONTRASTIVE_TEST_DATA_DIR "/negatives_reference.txt");
  // 13 plain cases (info-nce-pytorch), 9 debiased / hard-negative ones
  // (tau_plus, beta: the formula of the script, REFERENCE_LOSSES.md §1-2).
  REQUIRE(cases.size() == 22);
  REQUIRE(std::count_if(cases.begin(), cases.end(), [](const NegCase& c) { return c.m.count("tau_plus") > 0; }) == 9);
  for (const auto& c : cases) {
    SECTION(c.name) {
      contrastive::NegativeKeysParams p;
      p.temperature = c.m.at("temperature")(0, 0);
      p.mode = c.mode == "shared" ? NegativeMode::Shared : NegativeMode::PerQuery;
      if (c.m.count("tau_plus")) {
        p.tau_plus = c.m.at("tau_plus")(0, 0);
        p.beta = c.m.at("beta")(0, 0);
      }
      contrastive::EngineOptions o;
      o.memory_budget_bytes = 8 * 150 * 7;  // several query blocks for the larger shared case
      const contrastive::InfoNCEWithNegatives<double> loss(p, o);
      CallOptions<double> red;
      red.reduction = c.reduction == "sum" ? Reduction::Sum : c.reduction == "none" ? Reduction::None : Reduction::Mean;
      std::vector<double> w, per(static_cast<std::size_t>(c.m.at("query").rows()));
      if (c.m.count("weights")) {
        w = row_vector(c.m.at("weights"));
        red.anchor_weights = w;
      }
      red.per_anchor = per;
      const auto& q = c.m.at("query");
      const auto& k = c.m.at("positive_key");
      const auto& nk = c.m.at("negative_keys");
      const auto r = loss.value_and_grad(q, k, nk, red);
      CHECK(near(r.value, c.m.at("value")(0, 0), 1e-10, 0.0));
      CHECK(near(loss.value(q, k, nk, red), c.m.at("value")(0, 0), 1e-10, 0.0));
      CHECK(near(r.grad_a, c.m.at("grad_query"), 1e-10, 0.0));
      CHECK(near(r.grad_b, c.m.at("grad_positive_key"), 1e-10, 0.0));
      CHECK(near(r.grad_negative_keys, c.m.at("grad_negative_keys"), 1e-10, 0.0));
      CHECK(near(r.grad_temperature, c.m.at("grad_temperature")(0, 0), 1e-10, 0.0));
      const Eigen::Map<const Eigen::VectorXd> got(per.data(), static_cast<Eigen::Index>(per.size()));
      CHECK(near(got.transpose(), c.m.at("per_anchor"), 1e-10, 0.0));
    }
  }
}

TEST_CASE("explicit negative keys: gradients match central differences", "[negatives][gradient]") {
  std::mt19937_64 rng(11);
  for (const auto mode : {NegativeMode::Shared, NegativeMode::PerQuery}) {
    const Eigen::Index n = 5, d = 4, m = mode == NegativeMode::Shared ? 7 : 3 * n;
    const MatD q = uneven_rows(n, d, rng), k = uneven_rows(n, d, rng), nk = uneven_rows(m, d, rng);
    contrastive::NegativeKeysParams p;
    p.temperature = 0.3;
    p.mode = mode;
    const contrastive::InfoNCEWithNegatives<double> loss(p);
    std::vector<double> w = {0.5, 2.0, 0.0, 1.0, 3.0};
    const auto red = reduce_call<double>(Reduction::Sum, &w);
    const auto r = loss.value_and_grad(q, k, nk, red);
    const auto f = [&](const MatD& a, const MatD& b, const MatD& c) { return static_cast<double>(loss.value(a, b, c, red)); };
    check_central_differences([&](const MatD& a, const MatD& b) { return f(a, b, nk); }, q, k, r.grad_a,
                              r.grad_b);
    const MatD fn = central_difference([&](const MatD& x) { return f(q, k, x); }, nk);
    for (Eigen::Index i = 0; i < m; ++i) CHECK(near(r.grad_negative_keys.row(i), fn.row(i), 1e-6, 1e-2 / nk.row(i).norm()));
    // Temperature: central difference in tau.
    const double h = 1e-6;
    auto at = [&](double tau) {
      contrastive::NegativeKeysParams pt = p;
      pt.temperature = tau;
      return contrastive::InfoNCEWithNegatives<double>(pt).value(q, k, nk, red);
    };
    CHECK(near(r.grad_temperature, (at(0.3 + h) - at(0.3 - h)) / (2 * h), 1e-6));
    // No gradient for the negatives requested: the others are unchanged.
    MatD gq(n, d), gk(n, d);
    double dtau = 0;
    contrastive::Workspace<double> ws;
    const double v = loss.value_and_grad(q, k, nk, gq, gk, nullptr, &dtau, ws, red);
    CHECK(v == Approx(r.value).epsilon(1e-14));
    CHECK(near(gq, r.grad_a, 1e-14));
    CHECK(near(gk, r.grad_b, 1e-14));
    CHECK(dtau == Approx(r.grad_temperature).epsilon(1e-14));
  }
}

TEST_CASE("explicit negative keys in float agree with double", "[negatives][gradient]") {
  std::mt19937_64 rng(5);
  const MatD q = uneven_rows(9, 6, rng), k = uneven_rows(9, 6, rng), nk = uneven_rows(20, 6, rng);
  for (const auto mode : {NegativeMode::Shared, NegativeMode::PerQuery}) {
    contrastive::NegativeKeysParams p;
    p.mode = mode;
    const MatD keys = mode == NegativeMode::Shared ? nk : MatD(nk.topRows(18));
    const auto rd = contrastive::InfoNCEWithNegatives<double>(p).value_and_grad(q, k, keys);
    const auto rf = contrastive::InfoNCEWithNegatives<float>(p).value_and_grad(q.cast<float>(), k.cast<float>(),
                                                                             keys.cast<float>());
    CHECK(near(rf.value, rd.value, 1e-5));
    CHECK(near(rf.grad_a, rd.grad_a, 1e-4));
    CHECK(near(rf.grad_b, rd.grad_b, 1e-4));
    CHECK(near(rf.grad_negative_keys, rd.grad_negative_keys, 1e-4));
  }
}

TEST_CASE("explicit negative keys: bad input names the argument and leaves outputs alone", "[negatives][bad-input]") {
  const MatD q = MatD::Random(4, 3), k = MatD::Random(4, 3), nk = MatD::Random(6, 3);
  contrastive::NegativeKeysParams pq;
  pq.mode = NegativeMode::PerQuery;
  const contrastive::InfoNCEWithNegatives<double> shared, per(pq);
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(shared.value(q, MatD::Random(3, 3), nk), Contains("'positive_key'"));
  CHECK_THROWS_WITH(shared.value(q, k, MatD::Random(6, 2)), Contains("'negative_keys'"));
  // No negative keys at all (an empty memory bank) is defined: 0, zero gradients.
  {
    const auto r0 = shared.value_and_grad(q, k, MatD(0, 3));
    CHECK(r0.value == 0.0);
    CHECK(r0.grad_a.isZero(0.0));
    CHECK(r0.grad_b.isZero(0.0));
    CHECK(r0.grad_temperature == 0.0);
    CHECK(r0.grad_negative_keys.rows() == 0);
  }
  CHECK_THROWS_WITH(per.value(q, k, nk), Contains("'negative_keys'") && Contains("multiple"));
  CHECK_THROWS_WITH(shared.value(MatD(0, 3), MatD(0, 3), nk), Contains("'query'"));
  MatD bad = nk;
  bad(2, 1) = std::nan("");
  CHECK_THROWS_WITH(shared.value(q, k, bad), Contains("'negative_keys'") && Contains("NaN"));
  CHECK_THROWS_WITH(contrastive::InfoNCEWithNegatives<double>(contrastive::NegativeKeysParams{-1.0}),
                    Contains("'temperature'"));
  std::vector<double> w = {1, 1};
  CHECK_THROWS_WITH(shared.value(q, k, nk, reduce_call<double>(Reduction::Mean, &w)), Contains("'call.anchor_weights'"));
  CHECK_THROWS_WITH(shared.value(q, k, nk, reduce_call<double>(Reduction::None)), Contains("'call.per_anchor'"));
  CHECK_THROWS_WITH(shared.value(q, k, nk, ids_call(std::vector<Eigen::Index>{0, 1, 2, 3})), Contains("'call.instance_ids'"));
  // Outputs untouched on failure.
  MatD gq = MatD::Constant(4, 3, 7.0), gk = MatD::Constant(4, 3, 7.0), gn = MatD::Constant(6, 3, 7.0);
  double dtau = 7.0;
  std::vector<double> per_anchor(4, 7.0);
  contrastive::Workspace<double> ws;
  CallOptions<double> none;
  none.reduction = Reduction::None;
  none.per_anchor = per_anchor;
  CHECK_THROWS_WITH(shared.value_and_grad(q, k, bad, gq, gk, gn, &dtau, ws, none), Contains("'negative_keys'"));
  MatD small(3, 3), gn_small = MatD::Constant(2, 2, 7.0);
  CHECK_THROWS_WITH(shared.value_and_grad(q, k, nk, small, gk, gn, &dtau, ws), Contains("'grad_query'"));
  CHECK_THROWS_WITH(shared.value_and_grad(q, k, nk, gq, gk, gn_small, &dtau, ws), Contains("'grad_negative_keys'"));
  CHECK((gq.array() == 7.0).all());
  CHECK((gk.array() == 7.0).all());
  CHECK((gn.array() == 7.0).all());
  CHECK((gn_small.array() == 7.0).all());
  CHECK(dtau == 7.0);
  CHECK(per_anchor == std::vector<double>(4, 7.0));
}

TEST_CASE("reductions and per-anchor weights of the batch losses", "[negatives][reduce]") {
  std::mt19937_64 rng(3);
  const Eigen::Index n = 6, d = 5;
  const MatD za = uneven_rows(n, d, rng), zb = uneven_rows(n, d, rng);
  for (const auto preset : kPresets) {
    SECTION(preset_name(preset)) {
      const auto loss = make_loss<double>(preset, 0.3);
      const Eigen::Index a = loss.anchors(n);
      REQUIRE(a == (is_symmetric(preset) ? 2 * n : n));
      contrastive::Workspace<double> ws;
      // Mean without weights is the plain loss; None gives the per-anchor losses.
      std::vector<double> per;
      const double mean = loss.value(za, zb, ws, reduce_call<double>(Reduction::Mean));
      CHECK(mean == Approx(loss.value(za, zb)).epsilon(1e-13));
      const double total = loss.value(za, zb, ws, reduce_call<double>(Reduction::None, nullptr, &per, a));
      REQUIRE(static_cast<Eigen::Index>(per.size()) == a);
      double s = 0;
      for (double l : per) s += l;
      CHECK(total == Approx(s).epsilon(1e-13));
      CHECK(mean == Approx(s / static_cast<double>(a)).epsilon(1e-13));
      CHECK(loss.value(za, zb, ws, reduce_call<double>(Reduction::Sum)) == Approx(s).epsilon(1e-13));
      // Anchor r's loss alone (weight 1 at r, 0 elsewhere) equals per[r].
      std::vector<double> e(static_cast<std::size_t>(a), 0.0);
      e[1] = 1.0;
      CHECK(loss.value(za, zb, ws, reduce_call<double>(Reduction::Sum, &e)) == Approx(per[1]).epsilon(1e-13));
      // Gradient of a weighted sum against central differences.
      std::vector<double> w(static_cast<std::size_t>(a));
      for (std::size_t i = 0; i < w.size(); ++i) w[i] = 0.25 * static_cast<double>(i % 5);
      const auto red = reduce_call<double>(Reduction::Sum, &w);
      MatD ga(n, d), gb(n, d);
      double dtau = 0;
      loss.value_and_grad(za, zb, ga, gb, &dtau, ws, red);
      check_central_differences([&](const MatD& x, const MatD& y) { return loss.value(x, y, ws, red); }, za, zb, ga,
                                gb);
      auto at = [&](double tau) {
        auto l2 = make_loss<double>(preset, tau);
        return l2.value(za, zb, ws, red);
      };
      CHECK(near(dtau, (at(0.3 + 1e-6) - at(0.3 - 1e-6)) / 2e-6, 1e-6));
      // Bad weights: named, outputs untouched.
      std::vector<double> neg = w;
      neg[0] = -1;
      MatD g0 = MatD::Constant(n, d, 3.0);
      CHECK_THROWS_WITH(loss.value_and_grad(za, zb, g0, gb, &dtau, ws, reduce_call<double>(Reduction::Sum, &neg)),
                        Catch::Matchers::Contains("'call.anchor_weights'"));
      CHECK((g0.array() == 3.0).all());
    }
  }
}

TEST_CASE("memory bank: FIFO order, capacity, no gradient into stored keys", "[negatives][memory-bank]") {
  contrastive::MemoryBank<double> bank(5, 2);
  CHECK(bank.empty());
  MatD a(3, 2), b(4, 2);
  a << 1, 1, 2, 2, 3, 3;
  b << 4, 4, 5, 5, 6, 6, 7, 7;
  bank.enqueue(a);
  CHECK(bank.size() == 3);
  CHECK(bank.keys().col(0).transpose() == Eigen::RowVector3d(1, 2, 3));
  bank.enqueue(b);  // 1 and 2 drop out
  CHECK(bank.size() == 5);
  Eigen::RowVectorXd expect(5);
  expect << 3, 4, 5, 6, 7;
  CHECK(bank.keys().col(0).transpose() == expect);
  MatD big(7, 2);
  for (int i = 0; i < 7; ++i) big.row(i).setConstant(10 + i);
  bank.enqueue(big);  // only the newest 5 survive
  expect << 12, 13, 14, 15, 16;
  CHECK(bank.keys().col(0).transpose() == expect);
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(bank.enqueue(MatD::Ones(1, 3)), Contains("'keys'"));
  MatD nan = MatD::Ones(1, 2);
  nan(0, 0) = std::nan("");
  CHECK_THROWS_WITH(bank.enqueue(nan), Contains("'keys'"));
  CHECK(bank.keys().col(0).transpose() == expect);  // unchanged by the failed calls
  CHECK_THROWS_WITH(contrastive::MemoryBank<double>(0, 2), Contains("'capacity'"));
  CHECK_THROWS_WITH(contrastive::MemoryBank<double>(3, 0), Contains("'dim'"));
  bank.clear();
  CHECK(bank.empty());

  // A MoCo step: loss against the bank, then enqueue; the bank's keys get no gradient.
  std::mt19937_64 rng(8);
  contrastive::MemoryBank<double> queue(16, 4);
  queue.enqueue(uneven_rows(16, 4, rng));
  const MatD q = uneven_rows(3, 4, rng), k = uneven_rows(3, 4, rng);
  const contrastive::InfoNCEWithNegatives<double> loss;
  MatD gq(3, 4), gk(3, 4);
  const MatD before = queue.keys();
  contrastive::Workspace<double> ws;
  loss.value_and_grad(q, k, queue.keys(), gq, gk, nullptr, nullptr, ws);
  CHECK(queue.keys() == before);
  const MatD fq = central_difference([&](const MatD& x) { return loss.value(x, k, before); }, q);
  CHECK(near(gq, fq, 1e-6, 1e-2));
  queue.enqueue(k);
  CHECK(queue.keys().bottomRows(3) == k);
}

namespace {

contrastive::SamplingParams sampling(Eigen::Index k, bool replace, std::uint64_t seed) {
  contrastive::SamplingParams s;
  s.num_negatives = k;
  s.with_replacement = replace;
  s.seed = seed;
  return s;
}

}  // namespace

TEST_CASE("sampled negatives: k = all candidates is the unsampled loss", "[negatives][sampled]") {
  std::mt19937_64 rng(21);
  const Eigen::Index n = 7, d = 5;
  const MatD za = uneven_rows(n, d, rng), zb = uneven_rows(n, d, rng);
  const std::vector<Eigen::Index> ids = {0, 1, 2, 1, 3, 0, 4};
  for (const auto preset : kPresets) {
    for (const bool with_ids : {false, true}) {
      SECTION(std::string(preset_name(preset)) + (with_ids ? " with ids" : "")) {
        const auto full = make_loss<double>(preset, 0.3);
        const contrastive::SampledNegatives<double> sampled(full.params(), sampling(2 * n, false, 99));
        const auto id = ids_call(with_ids ? &ids : nullptr);
        const auto rf = full.value_and_grad(za, zb, id);
        const auto rs = sampled.value_and_grad(za, zb, id);
        CHECK(near(rs.value, rf.value, 1e-12));
        CHECK(near(rs.grad_a, rf.grad_a, 1e-12));
        CHECK(near(rs.grad_b, rf.grad_b, 1e-12));
        CHECK(near(rs.grad_temperature, rf.grad_temperature, 1e-12));
        // Per-anchor losses too.
        std::vector<double> pf, ps;
        contrastive::Workspace<double> ws;
        auto cf = reduce_call<double>(Reduction::None, nullptr, &pf, full.anchors(n));
        auto cs = reduce_call<double>(Reduction::None, nullptr, &ps, sampled.anchors(n));
        cf.instance_ids = cs.instance_ids = id.instance_ids;
        full.value(za, zb, ws, cf);
        sampled.value(za, zb, cs);
        REQUIRE(pf.size() == ps.size());
        for (std::size_t r = 0; r < pf.size(); ++r) CHECK(ps[r] == Approx(pf[r]).epsilon(1e-12).margin(1e-14));
      }
    }
  }
}

TEST_CASE("sampled negatives: gradients match central differences", "[negatives][sampled][gradient]") {
  std::mt19937_64 rng(4);
  const Eigen::Index n = 6, d = 4;
  const MatD za = uneven_rows(n, d, rng), zb = uneven_rows(n, d, rng);
  for (const auto preset : kPresets) {
    for (const bool replace : {false, true}) {
      SECTION(std::string(preset_name(preset)) + (replace ? " with replacement" : "")) {
        const contrastive::SampledNegatives<double> loss(make_loss<double>(preset, 0.4).params(),
                                                         sampling(3, replace, 7));
        std::vector<double> w(static_cast<std::size_t>(loss.anchors(n)));
        for (std::size_t i = 0; i < w.size(); ++i) w[i] = 0.5 + 0.25 * static_cast<double>(i % 3);
        const auto red = reduce_call<double>(Reduction::Mean, &w);
        const auto r = loss.value_and_grad(za, zb, red);
        check_central_differences([&](const MatD& a, const MatD& b) { return loss.value(a, b, red); }, za, zb,
                                  r.grad_a, r.grad_b);
        auto at = [&](double tau) {
          auto p = loss.params();
          p.temperature = tau;
          return contrastive::SampledNegatives<double>(p, loss.sampling()).value(za, zb, red);
        };
        CHECK(near(r.grad_temperature, (at(0.4 + 1e-6) - at(0.4 - 1e-6)) / 2e-6, 1e-6));
        // float agrees with double
        const contrastive::SampledNegatives<float> lf(loss.params(), loss.sampling());
        std::vector<float> wf(w.begin(), w.end());
        const auto rf = lf.value_and_grad(za.cast<float>(), zb.cast<float>(), reduce_call<float>(Reduction::Mean, &wf));
        CHECK(near(rf.value, r.value, 1e-5));
        CHECK(near(rf.grad_a, r.grad_a, 1e-4));
        CHECK(near(rf.grad_b, r.grad_b, 1e-4));
      }
    }
  }
}

TEST_CASE("sampled negatives: the draws follow the documented rule", "[negatives][sampled]") {
  const Eigen::Index n = 9;
  const std::vector<Eigen::Index> ids = {0, 1, 1, 2, 3, 4, 5, 6, 7};
  const auto ntx = contrastive::NTXent<double>().params();
  for (const bool replace : {false, true}) {
    const contrastive::SampledNegatives<double> s(ntx, sampling(5, replace, 3));
    for (Eigen::Index r = 0; r < 2 * n; ++r) {
      const auto neg = s.negatives_of(r, n, ids);
      REQUIRE(neg.size() == 5);
      std::set<Eigen::Index> distinct(neg.begin(), neg.end());
      if (!replace) CHECK(distinct.size() == 5);
      for (Eigen::Index j : neg) {
        CHECK(j >= 0);
        CHECK(j < 2 * n);
        CHECK(j % n != r % n);                                                    // not itself or its positive
        CHECK(ids[static_cast<std::size_t>(j % n)] != ids[static_cast<std::size_t>(r % n)]);  // no false negative
      }
    }
    // Same seed: same draws; another seed: other draws somewhere.
    const contrastive::SampledNegatives<double> again(ntx, sampling(5, replace, 3)), other(ntx, sampling(5, replace, 4));
    bool differs = false;
    for (Eigen::Index r = 0; r < 2 * n; ++r) {
      CHECK(again.negatives_of(r, n, ids) == s.negatives_of(r, n, ids));
      differs = differs || other.negatives_of(r, n, ids) != s.negatives_of(r, n, ids);
    }
    CHECK(differs);
  }
  // The O(k) path without ids draws exactly what listing the candidates does
  // (distinct ids take the listing path and mask nothing).
  std::vector<Eigen::Index> distinct(static_cast<std::size_t>(n));
  for (Eigen::Index j = 0; j < n; ++j) distinct[static_cast<std::size_t>(j)] = 100 + j;
  for (const auto& params : {ntx, contrastive::DHEL<double>().params(), contrastive::InfoNCE<double>().params()})
    for (const bool replace : {false, true})
      for (const Eigen::Index k : {Eigen::Index{1}, Eigen::Index{4}, Eigen::Index{2 * n}}) {
        const contrastive::SampledNegatives<double> s(params, sampling(k, replace, 77));
        const contrastive::SampledNegatives<double> probe(params, sampling(1, false, 0));
        for (Eigen::Index r = 0; r < probe.anchors(n); ++r) CHECK(s.negatives_of(r, n) == s.negatives_of(r, n, distinct));
      }
  // Candidates by weight: DHEL (within-view only) draws from the anchor's own view.
  const contrastive::SampledNegatives<double> dhel(contrastive::DHEL<double>().params(), sampling(4, false, 1));
  for (Eigen::Index j : dhel.negatives_of(n + 2, n)) CHECK(j >= n);
  const contrastive::SampledNegatives<double> info(contrastive::InfoNCE<double>().params(), sampling(4, false, 1));
  for (Eigen::Index j : info.negatives_of(2, n)) CHECK(j >= n);
  // Uniform: over many seeds every candidate is drawn about k / |C| of the time.
  const Eigen::Index m = 2 * n - 2, k = 3, trials = 6000;
  for (const bool replace : {false, true}) {
    std::vector<double> hits(static_cast<std::size_t>(2 * n), 0.0);
    contrastive::SampledNegatives<double> s(ntx, sampling(k, replace, 0));
    for (Eigen::Index t = 0; t < trials; ++t) {
      s.set_seed(static_cast<std::uint64_t>(t));
      for (Eigen::Index j : s.negatives_of(0, n)) hits[static_cast<std::size_t>(j)] += 1;
    }
    const double p = static_cast<double>(k) / static_cast<double>(m), mean = p * trials;
    const double sd = std::sqrt(trials * p * (1 - p));
    for (Eigen::Index j = 0; j < 2 * n; ++j) {
      if (j % n == 0) CHECK(hits[static_cast<std::size_t>(j)] == 0.0);
      else CHECK(std::abs(hits[static_cast<std::size_t>(j)] - mean) < 5 * sd);
    }
  }
}

TEST_CASE("sampled negatives: one-way InfoNCE equals explicit per-query keys of the drawn rows", "[negatives][sampled]") {
  std::mt19937_64 rng(30);
  const Eigen::Index n = 8, d = 6, k = 3;
  const MatD za = uneven_rows(n, d, rng), zb = uneven_rows(n, d, rng);
  for (const bool replace : {false, true}) {
    const contrastive::SampledNegatives<double> s(contrastive::InfoNCE<double>(0.2).params(), sampling(k, replace, 5));
    MatD stacked(2 * n, d);
    stacked << za, zb;
    MatD keys(n * k, d);
    for (Eigen::Index i = 0; i < n; ++i) {
      const auto neg = s.negatives_of(i, n);
      for (Eigen::Index t = 0; t < k; ++t) keys.row(i * k + t) = stacked.row(neg[static_cast<std::size_t>(t)]);
    }
    contrastive::NegativeKeysParams p;
    p.temperature = 0.2;
    p.mode = NegativeMode::PerQuery;
    const double expect = contrastive::InfoNCEWithNegatives<double>(p).value(za, zb, keys);
    CHECK(near(s.value(za, zb), expect, 1e-13));
  }
}

TEST_CASE("sampled negatives: bad input", "[negatives][sampled][bad-input]") {
  using Catch::Matchers::Contains;
  const auto dcl = contrastive::DCL<double>().params();
  CHECK_THROWS_WITH(contrastive::SampledNegatives<double>(dcl, sampling(0, false, 0)), Contains("'num_negatives'"));
  const contrastive::SampledNegatives<double> s(dcl, sampling(2, false, 0));
  const MatD za = MatD::Random(3, 2), zb = MatD::Random(3, 2);
  const std::vector<Eigen::Index> ids = {0, 0, 1};  // anchors 0 and 1 still have instance 2; fine
  CHECK_NOTHROW(s.value(za, zb, ids_call(ids)));
  const std::vector<Eigen::Index> short_ids = {0, 1};
  CHECK_THROWS_WITH(s.value(za, zb, ids_call(short_ids)), Contains("'call.instance_ids'"));
  CHECK_THROWS_WITH(s.value(za, MatD::Random(2, 2)), Contains("'zb'"));
  MatD ga = MatD::Constant(3, 2, 5.0), gb = MatD::Constant(3, 2, 5.0);
  MatD bad = za;
  bad(0, 0) = std::nan("");
  contrastive::Workspace<double> ws;
  CHECK_THROWS_WITH(s.value_and_grad(bad, zb, ga, gb, nullptr, ws), Contains("'za'"));
  CHECK_THROWS_WITH(s.value_and_grad(za, zb, ga, MatD(2, 2), nullptr, ws), Contains("'grad_b'"));
  CHECK((ga.array() == 5.0).all());
  CHECK_THROWS_WITH(s.negatives_of(6, 3), Contains("'anchor'"));
}

// ---- debiased and hard negatives for explicit keys (tau_plus, beta) --------

namespace {

/// The debiased / hard-negative loss of one query written out plainly in
/// long double (no shifts): REFERENCE_LOSSES.md §1-2 with N its keys.
struct Plain {
  long double loss = 0;
  bool clamped = false;
};
Plain debiased_by_definition(const MatD& q, const MatD& p, const MatD& keys, Eigen::Index i, double tau,
                             double tau_plus, double beta) {
  using L = long double;
  const auto unit = [](const Eigen::RowVectorXd& r) { return Eigen::RowVectorXd(r / r.norm()); };
  const Eigen::RowVectorXd u = unit(q.row(i));
  const L xp = static_cast<L>(u.dot(unit(p.row(i)))) / tau;
  const auto n_keys = static_cast<L>(keys.rows());
  L sum_w = 0, sum_we = 0;
  for (Eigen::Index j = 0; j < keys.rows(); ++j) {
    const L x = static_cast<L>(u.dot(unit(keys.row(j)))) / tau;
    sum_w += std::exp(beta * x);
    sum_we += std::exp(beta * x) * std::exp(x);
  }
  const L r = beta == 0.0 ? sum_we : n_keys * sum_we / sum_w;
  const L raw = (r - tau_plus * n_keys * std::exp(xp)) / (1 - tau_plus), floor = n_keys * std::exp(-1 / static_cast<L>(tau));
  Plain out;
  out.clamped = raw < floor;
  out.loss = std::log(std::exp(xp) + (out.clamped ? floor : raw)) - xp;
  return out;
}

/// Queries whose positive keys are close (rows i % 3 == 0) or far: with
/// tau_plus > 0 some queries are clamped and some are not.
void mixed_batch(Eigen::Index n, Eigen::Index d, Eigen::Index m, std::mt19937_64& rng, MatD& q, MatD& p, MatD& keys) {
  q = uneven_rows(n, d, rng);
  p = uneven_rows(n, d, rng);
  for (Eigen::Index i = 0; i < n; i += 3) p.row(i) = 1.7 * q.row(i) + 0.05 * p.row(i);
  keys = uneven_rows(m, d, rng);
}

}  // namespace

TEST_CASE("explicit keys, debiased and hard: values by definition, tau_plus = beta = 0 is the plain loss",
          "[negatives][debiased]") {
  std::mt19937_64 rng(61);
  MatD q, p, keys;
  mixed_batch(9, 4, 3 * 9, rng, q, p, keys);
  const MatD shared = keys.topRows(11);
  for (const auto mode : {NegativeMode::Shared, NegativeMode::PerQuery}) {
    const MatD& nk = mode == NegativeMode::Shared ? shared : keys;
    for (const auto& tb : std::vector<std::pair<double, double>>{{0.3, 0.0}, {0.0, 1.0}, {0.2, 2.0}, {0.6, 0.5}}) {
      INFO("tau_plus " << tb.first << " beta " << tb.second << (mode == NegativeMode::Shared ? " shared" : " per query"));
      const double tau = 0.25;
      const contrastive::InfoNCEWithNegatives<double> loss({tau, mode, tb.first, tb.second});
      std::vector<double> per;
      loss.value(q, p, nk, reduce_call<double>(Reduction::None, nullptr, &per, 9));
      int clamped = 0;
      for (Eigen::Index i = 0; i < 9; ++i) {
        const Eigen::Index k = mode == NegativeMode::Shared ? nk.rows() : 3;
        const MatD own = mode == NegativeMode::Shared ? nk : MatD(nk.middleRows(i * k, k));
        const auto ref = debiased_by_definition(q, p, own, i, tau, tb.first, tb.second);
        clamped += ref.clamped ? 1 : 0;
        CHECK(near(per[static_cast<std::size_t>(i)], static_cast<double>(ref.loss), 1e-13));
      }
      if (tb.first >= 0.3) CHECK(clamped > 0);  // both kinds of query are in the batch
      CHECK(clamped < 9);
    }
    // tau_plus = beta = 0 is the plain loss, bit for bit; tiny ones approach it.
    const auto plain = contrastive::InfoNCEWithNegatives<double>({0.25, mode}).value_and_grad(q, p, nk);
    const auto zero = contrastive::InfoNCEWithNegatives<double>({0.25, mode, 0.0, 0.0}).value_and_grad(q, p, nk);
    CHECK(zero.value == plain.value);
    CHECK(zero.grad_a == plain.grad_a);
    CHECK(zero.grad_negative_keys == plain.grad_negative_keys);
    CHECK(zero.grad_temperature == plain.grad_temperature);
    const auto tiny = contrastive::InfoNCEWithNegatives<double>({0.25, mode, 1e-14, 1e-14}).value_and_grad(q, p, nk);
    CHECK(near(tiny.value, plain.value, 1e-12));
    CHECK(near(tiny.grad_a, plain.grad_a, 1e-12));
    CHECK(near(tiny.grad_b, plain.grad_b, 1e-12));
    CHECK(near(tiny.grad_negative_keys, plain.grad_negative_keys, 1e-12));
    CHECK(near(tiny.grad_temperature, plain.grad_temperature, 1e-12));
  }
}

TEST_CASE("explicit keys, debiased and hard: central differences for every input and tau, clamped queries included",
          "[negatives][debiased][gradient]") {
  std::mt19937_64 rng(62);
  for (const auto mode : {NegativeMode::Shared, NegativeMode::PerQuery}) {
    const Eigen::Index n = 6, d = 4, m = mode == NegativeMode::Shared ? 7 : 3 * n;
    MatD q, p, nk;
    mixed_batch(n, d, m, rng, q, p, nk);
    for (const auto& tb : std::vector<std::pair<double, double>>{{0.4, 0.0}, {0.0, 1.0}, {0.3, 2.0}}) {
      INFO("tau_plus " << tb.first << " beta " << tb.second << (mode == NegativeMode::Shared ? " shared" : " per query"));
      const double tau = 0.3;
      const contrastive::NegativeKeysParams prm{tau, mode, tb.first, tb.second};
      const contrastive::InfoNCEWithNegatives<double> loss(prm);
      std::vector<double> w = {0.5, 2.0, 0.0, 1.0, 3.0, 1.5};
      const auto red = reduce_call<double>(Reduction::Sum, &w);
      const auto r = loss.value_and_grad(q, p, nk, red);
      const auto f = [&](const MatD& a, const MatD& b, const MatD& c) { return loss.value(a, b, c, red); };
      check_central_differences([&](const MatD& a, const MatD& b) { return f(a, b, nk); }, q, p, r.grad_a, r.grad_b);
      const MatD fn = central_difference([&](const MatD& x) { return f(q, p, x); }, nk);
      for (Eigen::Index i = 0; i < m; ++i)
        CHECK(near(r.grad_negative_keys.row(i), fn.row(i), 1e-6, 1e-2 / nk.row(i).norm()));
      const double h = 1e-6;
      const auto at = [&](double t) {
        contrastive::NegativeKeysParams pt = prm;
        pt.temperature = t;
        return contrastive::InfoNCEWithNegatives<double>(pt).value(q, p, nk, red);
      };
      CHECK(near(r.grad_temperature, (at(tau + h) - at(tau - h)) / (2 * h), 1e-6, 1e-3));
      // A clamped query's own negatives get no gradient.
      if (mode == NegativeMode::PerQuery) {
        int clamped = 0;
        for (Eigen::Index i = 0; i < n; ++i) {
          if (!debiased_by_definition(q, p, MatD(nk.middleRows(3 * i, 3)), i, tau, tb.first, tb.second).clamped)
            continue;
          ++clamped;
          CHECK(r.grad_negative_keys.middleRows(3 * i, 3).isZero(0.0));
          if (w[static_cast<std::size_t>(i)] > 0) CHECK_FALSE(r.grad_b.row(i).isZero(0.0));  // its positive still has one
        }
        if (tb.first == 0.4) CHECK(clamped > 0);
      }
    }
  }
}

TEST_CASE("explicit keys, debiased and hard: float agrees with double at tau = 0.05 and on a collapsed batch",
          "[negatives][debiased][float]") {
  std::mt19937_64 rng(63);
  MatD q, p, nk;
  mixed_batch(12, 16, 40, rng, q, p, nk);
  for (const auto& tb : std::vector<std::pair<double, double>>{{0.1, 0.0}, {0.0, 1.0}, {0.1, 6.0}}) {
    for (const auto mode : {NegativeMode::Shared, NegativeMode::PerQuery}) {
      INFO("tau_plus " << tb.first << " beta " << tb.second << (mode == NegativeMode::Shared ? " shared" : " per query"));
      const MatD keys = mode == NegativeMode::Shared ? nk : MatD(nk.topRows(36));
      const contrastive::NegativeKeysParams prm{0.05, mode, tb.first, tb.second};
      const MatF fq = q.cast<float>(), fp = p.cast<float>(), fk = keys.cast<float>();
      const auto rd = contrastive::InfoNCEWithNegatives<double>(prm).value_and_grad(MatD(fq.cast<double>()),
                                                                                    MatD(fp.cast<double>()),
                                                                                    MatD(fk.cast<double>()));
      const auto rf = contrastive::InfoNCEWithNegatives<float>(prm).value_and_grad(fq, fp, fk);
      CHECK(near(rf.value, rd.value, 1e-4));
      CHECK(near(rf.grad_a, rd.grad_a, 1e-4));
      CHECK(near(rf.grad_b, rd.grad_b, 1e-4));
      CHECK(near(rf.grad_negative_keys, rd.grad_negative_keys, 1e-4));
      CHECK(near(rf.grad_temperature, rd.grad_temperature, 1e-4));
    }
  }
  // Near-collapsed (every cosine within ~1e-4 of 1) at tau = 0.01: dL/dtau keeps float precision.
  Eigen::RowVectorXd c = Eigen::RowVectorXd::Random(16);
  MatD cq = MatD::Random(32, 16) * 0.0025, cp = MatD::Random(32, 16) * 0.0025, ck = MatD::Random(32, 16) * 0.0025;
  cq.rowwise() += c;
  cp.rowwise() += c;
  ck.rowwise() += c;
  for (const auto& tb : std::vector<std::pair<double, double>>{{0.1, 0.0}, {0.0, 1.0}, {0.1, 6.0}}) {
    INFO("collapsed, tau_plus " << tb.first << " beta " << tb.second);
    const contrastive::NegativeKeysParams prm{0.01, NegativeMode::Shared, tb.first, tb.second};
    const MatF fq = cq.cast<float>(), fp = cp.cast<float>(), fk = ck.cast<float>();
    const auto rd = contrastive::InfoNCEWithNegatives<double>(prm).value_and_grad(
        MatD(fq.cast<double>()), MatD(fp.cast<double>()), MatD(fk.cast<double>()));
    const auto rf = contrastive::InfoNCEWithNegatives<float>(prm).value_and_grad(fq, fp, fk);
    CHECK(std::isfinite(rf.grad_temperature));
    CHECK(near(rf.grad_temperature, rd.grad_temperature, 1e-4));
  }
}

TEST_CASE("explicit keys, debiased and hard: bad parameters are named, outputs untouched", "[negatives][debiased][bad-input]") {
  using Catch::Matchers::Contains;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  using P = contrastive::NegativeKeysParams;
  for (const double tp : {1.0, -0.1, 1.5, nan})
    CHECK_THROWS_WITH(contrastive::InfoNCEWithNegatives<double>(P{0.1, NegativeMode::Shared, tp, 0.0}),
                      Contains("'tau_plus'"));
  for (const double beta : {-1.0, nan, std::numeric_limits<double>::infinity()})
    CHECK_THROWS_WITH(contrastive::InfoNCEWithNegatives<double>(P{0.1, NegativeMode::Shared, 0.0, beta}),
                      Contains("'beta'"));
  // (1 + beta) / tau at most 1e3 (float) or 1e6 (double), at both ends.
  CHECK_NOTHROW(contrastive::InfoNCEWithNegatives<float>(P{0.1, NegativeMode::Shared, 0.1, 99.0}));
  CHECK_THROWS_WITH(contrastive::InfoNCEWithNegatives<float>(P{0.1, NegativeMode::Shared, 0.1, 99.5}), Contains("'beta'"));
  CHECK_NOTHROW(contrastive::InfoNCEWithNegatives<double>(P{0.1, NegativeMode::Shared, 0.1, 99.5}));
  CHECK_THROWS_WITH(contrastive::InfoNCEWithNegatives<double>(P{0.1, NegativeMode::Shared, 0.0, 1e6}), Contains("'beta'"));
  contrastive::InfoNCEWithNegatives<float> settable(P{0.1, NegativeMode::Shared, 0.1, 9.0});
  CHECK_THROWS_WITH(settable.set_temperature(0.005), Contains("'temperature'") && Contains("beta"));
  CHECK(settable.params().temperature == 0.1);
  CHECK_NOTHROW(settable.set_temperature(0.01));
  // At the ends of the range the float loss is finite and within 1e-2 of double (tau / (1 + beta) = 1e-3).
  std::mt19937_64 rng(64);
  MatD q, p, nk;
  mixed_batch(8, 6, 24, rng, q, p, nk);
  {
    const P prm{0.1, NegativeMode::PerQuery, 0.1, 99.0};
    const MatF fq = q.cast<float>(), fp = p.cast<float>(), fk = nk.cast<float>();
    const auto rf = contrastive::InfoNCEWithNegatives<float>(prm).value_and_grad(fq, fp, fk);
    const auto rd = contrastive::InfoNCEWithNegatives<double>(prm).value_and_grad(
        MatD(fq.cast<double>()), MatD(fp.cast<double>()), MatD(fk.cast<double>()));
    REQUIRE(std::isfinite(rf.value));
    REQUIRE(rf.grad_negative_keys.allFinite());
    CHECK(near(rf.value, rd.value, 1e-2));
    CHECK(near(rf.grad_a, rd.grad_a, 1e-2));
    CHECK(near(rf.grad_negative_keys, rd.grad_negative_keys, 1e-2));
    CHECK(near(rf.grad_temperature, rd.grad_temperature, 1e-2));
  }
  // Bad input with debiasing on: named, nothing written.
  const contrastive::InfoNCEWithNegatives<double> loss(P{0.2, NegativeMode::PerQuery, 0.2, 1.0});
  MatD gq = MatD::Constant(8, 6, 7.0), gp = MatD::Constant(8, 6, 7.0), gn = MatD::Constant(24, 6, 7.0);
  double dtau = 7.0;
  contrastive::Workspace<double> ws;
  MatD bad = nk;
  bad(5, 2) = nan;
  CHECK_THROWS_WITH(loss.value_and_grad(q, p, bad, gq, gp, gn, &dtau, ws), Contains("'negative_keys'"));
  MatD gn20 = MatD::Constant(20, 6, 7.0);
  CHECK_THROWS_WITH(loss.value_and_grad(q, p, MatD(nk.topRows(20)), gq, gp, gn20, &dtau, ws),
                    Contains("'negative_keys'") && Contains("multiple"));
  CHECK((gn20.array() == 7.0).all());
  CHECK((gq.array() == 7.0).all());
  CHECK((gp.array() == 7.0).all());
  CHECK((gn.array() == 7.0).all());
  CHECK(dtau == 7.0);
  // No negative keys: 0 with zero gradients, as the plain loss.
  const auto r0 = contrastive::InfoNCEWithNegatives<double>(P{0.2, NegativeMode::Shared, 0.2, 1.0}).value_and_grad(q, p, MatD(0, 6));
  CHECK(r0.value == 0.0);
  CHECK(r0.grad_a.isZero(0.0));
  CHECK(r0.grad_temperature == 0.0);
}
