// Explicit negative keys against PyTorch (info-nce-pytorch semantics), their
// gradients against central differences, reductions and per-anchor weights
// of the batch losses, and the memory bank.
#include <catch2/catch.hpp>

#include "fd_check.hpp"
#include "support.hpp"

using namespace testing;
using contrastive::NegativeMode;
using contrastive::Reduce;
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
  REQUIRE(cases.size() == 13);
  for (const auto& c : cases) {
    SECTION(c.name) {
      contrastive::NegativeKeysParams p;
      p.temperature = c.m.at("temperature")(0, 0);
      p.mode = c.mode == "shared" ? NegativeMode::Shared : NegativeMode::PerQuery;
      contrastive::EngineOptions o;
      o.memory_budget_bytes = 8 * 150 * 7;  // several query blocks for the larger shared case
      const contrastive::InfoNCEWithNegatives<double> loss(p, o);
      Reduce<double> red;
      red.reduction = c.reduction == "sum" ? Reduction::Sum : c.reduction == "none" ? Reduction::None : Reduction::Mean;
      std::vector<double> w, per;
      if (c.m.count("weights")) {
        w = row_vector(c.m.at("weights"));
        red.anchor_weights = &w;
      }
      red.per_anchor = &per;
      const auto& q = c.m.at("query");
      const auto& k = c.m.at("positive_key");
      const auto& nk = c.m.at("negative_keys");
      const auto r = loss.value_and_grad(q, k, nk, red);
      CHECK(near(r.value, c.m.at("value")(0, 0), 1e-10, 0.0));
      CHECK(near(loss.value(q, k, nk, red), c.m.at("value")(0, 0), 1e-10, 0.0));
      CHECK(near(r.grad_query, c.m.at("grad_query"), 1e-10, 0.0));
      CHECK(near(r.grad_positive_key, c.m.at("grad_positive_key"), 1e-10, 0.0));
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
    Reduce<double> red{Reduction::Sum, &w, nullptr};
    const auto r = loss.value_and_grad(q, k, nk, red);
    const auto f = [&](const MatD& a, const MatD& b, const MatD& c) { return static_cast<double>(loss.value(a, b, c, red)); };
    check_central_differences([&](const MatD& a, const MatD& b) { return f(a, b, nk); }, q, k, r.grad_query,
                              r.grad_positive_key);
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
    const double v = loss.value_and_grad(q, k, nk, gq, gk, nullptr, &dtau, red);
    CHECK(v == Approx(r.value).epsilon(1e-14));
    CHECK(near(gq, r.grad_query, 1e-14));
    CHECK(near(gk, r.grad_positive_key, 1e-14));
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
    CHECK(near(rf.grad_query, rd.grad_query, 1e-4));
    CHECK(near(rf.grad_positive_key, rd.grad_positive_key, 1e-4));
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
  CHECK_THROWS_WITH(shared.value(q, k, MatD(0, 3)), Contains("'negative_keys'") && Contains("0 rows"));
  CHECK_THROWS_WITH(per.value(q, k, nk), Contains("'negative_keys'") && Contains("multiple"));
  CHECK_THROWS_WITH(shared.value(MatD(0, 3), MatD(0, 3), nk), Contains("'query'"));
  MatD bad = nk;
  bad(2, 1) = std::nan("");
  CHECK_THROWS_WITH(shared.value(q, k, bad), Contains("'negative_keys'") && Contains("NaN"));
  CHECK_THROWS_WITH(contrastive::InfoNCEWithNegatives<double>(contrastive::NegativeKeysParams{-1.0}),
                    Contains("'temperature'"));
  std::vector<double> w = {1, 1};
  CHECK_THROWS_WITH(shared.value(q, k, nk, Reduce<double>{Reduction::Mean, &w, nullptr}), Contains("'anchor_weights'"));
  CHECK_THROWS_WITH(shared.value(q, k, nk, Reduce<double>{Reduction::None, nullptr, nullptr}), Contains("'reduce'"));
  // Outputs untouched on failure.
  MatD gq = MatD::Constant(4, 3, 7.0), gk = MatD::Constant(4, 3, 7.0), gn = MatD::Constant(2, 2, 7.0);
  double dtau = 7.0;
  std::vector<double> per_anchor = {7.0};
  CHECK_THROWS_WITH(shared.value_and_grad(q, k, bad, gq, gk, &gn, &dtau, Reduce<double>{Reduction::None, nullptr, &per_anchor}),
                    Contains("'negative_keys'"));
  MatD small(3, 3);
  CHECK_THROWS_WITH(shared.value_and_grad(q, k, nk, small, gk, &gn, &dtau), Contains("'grad_query'"));
  CHECK((gq.array() == 7.0).all());
  CHECK((gk.array() == 7.0).all());
  CHECK((gn.array() == 7.0).all());
  CHECK(gn.rows() == 2);
  CHECK(dtau == 7.0);
  CHECK(per_anchor == std::vector<double>{7.0});
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
      const double mean = loss.value(za, zb, ws, Reduce<double>{});
      CHECK(mean == Approx(loss.value(za, zb)).epsilon(1e-13));
      const double total = loss.value(za, zb, ws, Reduce<double>{Reduction::None, nullptr, &per});
      REQUIRE(static_cast<Eigen::Index>(per.size()) == a);
      double s = 0;
      for (double l : per) s += l;
      CHECK(total == Approx(s).epsilon(1e-13));
      CHECK(mean == Approx(s / static_cast<double>(a)).epsilon(1e-13));
      CHECK(loss.value(za, zb, ws, Reduce<double>{Reduction::Sum, nullptr, nullptr}) == Approx(s).epsilon(1e-13));
      // Anchor r's loss alone (weight 1 at r, 0 elsewhere) equals per[r].
      std::vector<double> e(static_cast<std::size_t>(a), 0.0);
      e[1] = 1.0;
      CHECK(loss.value(za, zb, ws, Reduce<double>{Reduction::Sum, &e, nullptr}) == Approx(per[1]).epsilon(1e-13));
      // Gradient of a weighted sum against central differences.
      std::vector<double> w(static_cast<std::size_t>(a));
      for (std::size_t i = 0; i < w.size(); ++i) w[i] = 0.25 * static_cast<double>(i % 5);
      const Reduce<double> red{Reduction::Sum, &w, nullptr};
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
      CHECK_THROWS_WITH(loss.value_and_grad(za, zb, g0, gb, &dtau, ws, Reduce<double>{Reduction::Sum, &neg, nullptr}),
                        Catch::Matchers::Contains("'anchor_weights'"));
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
  loss.value_and_grad(q, k, queue.keys(), gq, gk, nullptr, nullptr);
  CHECK(queue.keys() == before);
  const MatD fq = central_difference([&](const MatD& x) { return loss.value(x, k, before); }, q);
  CHECK(near(gq, fq, 1e-6, 1e-2));
  queue.enqueue(k);
  CHECK(queue.keys().bottomRows(3) == k);
}
