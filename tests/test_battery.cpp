// The battery every loss runs: central differences for every input and
// scalar parameter, float against double, invariance to the scale of a row,
// bad input (throws, names the argument, leaves every output untouched),
// thread counts and cached against streamed tiles, and one Workspace reused
// across shapes and losses.
//
// A loss joins the battery with one entry in CONTRASTIVE_BATTERY, given an
// adapter (a few lines above it) that says how to build it from its scalar
// parameters and which scalar gradients its call returns.
#include <catch2/catch.hpp>

#include <array>
#include <string>
#include <vector>

#include "fd_check.hpp"
#include "support.hpp"

using namespace testing;
using contrastive::CallOptions;
using contrastive::EngineOptions;

namespace {

// ---- how a loss is called ----------------------------------------------------
//
// Each adapter has: name; theta0 (its differentiable scalar parameters);
// make<S>(theta, options); call<S>(n) (the CallOptions the battery uses);
// grad(loss, za, zb, ga, gb, dtheta, ws, call) -> value, filling dtheta.

/// The call shape value_and_grad(za, zb, ga, gb, &dtau, ws, call).
struct OneScalar {
  template <typename L, typename A, typename G, typename S>
  static S grad(const L& l, const A& za, const A& zb, G& ga, G& gb, std::vector<S>& dt, contrastive::Workspace<S>& ws,
                const CallOptions<S>& c) {
    dt.assign(1, S(0));
    return l.value_and_grad(za, zb, ga, gb, &dt[0], ws, c);
  }
};
/// value_and_grad(za, zb, ga, gb, &dt, &db, ws, call) (SigLIP).
struct TwoScalars {
  template <typename L, typename A, typename G, typename S>
  static S grad(const L& l, const A& za, const A& zb, G& ga, G& gb, std::vector<S>& dt, contrastive::Workspace<S>& ws,
                const CallOptions<S>& c) {
    dt.assign(2, S(0));
    return l.value_and_grad(za, zb, ga, gb, &dt[0], &dt[1], ws, c);
  }
};
/// value_and_grad(za, zb, ga, gb, ws, call) (no scalar parameter).
struct NoScalar {
  template <typename L, typename A, typename G, typename S>
  static S grad(const L& l, const A& za, const A& zb, G& ga, G& gb, std::vector<S>& dt, contrastive::Workspace<S>& ws,
                const CallOptions<S>& c) {
    dt.clear();
    return l.value_and_grad(za, zb, ga, gb, ws, c);
  }
};

/// No call options.
struct Plain {
  template <typename S>
  static CallOptions<S> call(Eigen::Index) {
    return {};
  }
};

/// Instance ids with two collisions (the mask is part of what is tested).
struct WithIds {
  template <typename S>
  static CallOptions<S> call(Eigen::Index n) {
    static std::vector<Eigen::Index> ids;
    ids.resize(static_cast<std::size_t>(n));
    for (Eigen::Index i = 0; i < n; ++i) ids[static_cast<std::size_t>(i)] = i;
    ids[static_cast<std::size_t>(n - 1)] = 0;
    ids[static_cast<std::size_t>(n / 2)] = 1;
    CallOptions<S> c;
    c.instance_ids = ids;
    return c;
  }
};

template <typename T>
using Span = contrastive::Span<T>;

/// A preset of the InfoNCE family, plain and with ids and per-anchor weights.
template <template <typename> class Loss, int TauMilli, bool Ids = false>
struct Preset1 : OneScalar {
  static std::vector<double> theta0() { return {TauMilli / 1000.0}; }
  template <typename S>
  static Loss<S> make(const std::vector<double>& t, const EngineOptions& o) {
    return Loss<S>(t[0], o);
  }
  template <typename S>
  static CallOptions<S> call(Eigen::Index n) {
    if (!Ids) return {};
    CallOptions<S> c = WithIds::call<S>(n);
    static std::vector<S> w;
    w.resize(static_cast<std::size_t>(2 * n));
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = S(0.5) + S(0.25) * static_cast<S>(i % 4);
    c.anchor_weights = Span<const S>(w.data(), static_cast<std::size_t>(make<S>(theta0(), {}).anchors(n)));
    c.reduction = contrastive::Reduction::Sum;
    return c;
  }
};
struct NTXentCase : Preset1<contrastive::NTXent, 300> {
  static constexpr const char* name = "NTXent";
};
struct NTXentIdsCase : Preset1<contrastive::NTXent, 300, true> {
  static constexpr const char* name = "NTXent with ids and weights";
};
struct InfoNCECase : Preset1<contrastive::InfoNCE, 200, true> {
  static constexpr const char* name = "InfoNCE with ids and weights";
};
struct CLIPCase : Preset1<contrastive::CLIP, 100> {
  static constexpr const char* name = "CLIP";
};
struct DCLCase : Preset1<contrastive::DCL, 250, true> {
  static constexpr const char* name = "DCL with ids and weights";
};
struct DHELCase : Preset1<contrastive::DHEL, 400> {
  static constexpr const char* name = "DHEL";
};

struct SupConCase : OneScalar {
  static constexpr const char* name = "SupCon";
  static std::vector<double> theta0() { return {0.2}; }
  template <typename S>
  static contrastive::SupCon<S> make(const std::vector<double>& t, const EngineOptions& o) {
    return contrastive::SupCon<S>(t[0], o);
  }
  template <typename S>
  static CallOptions<S> call(Eigen::Index n) {
    static std::vector<Eigen::Index> labels;
    labels.resize(static_cast<std::size_t>(n));
    for (Eigen::Index i = 0; i < n; ++i) labels[static_cast<std::size_t>(i)] = (i * 7) % 3;
    CallOptions<S> c;
    c.labels = labels;
    return c;
  }
};

struct SigLIPCase : TwoScalars, WithIds {
  static constexpr const char* name = "SigLIP with ids";
  static std::vector<double> theta0() { return {4.0, -1.5}; }
  template <typename S>
  static contrastive::SigLIP<S> make(const std::vector<double>& t, const EngineOptions& o) {
    return contrastive::SigLIP<S>(contrastive::SigLIPParams{t[0], t[1], 0.5}, o);
  }
};

struct SpectralCase : NoScalar, Plain {
  static constexpr const char* name = "Spectral";
  static std::vector<double> theta0() { return {}; }
  template <typename S>
  static contrastive::Spectral<S> make(const std::vector<double>&, const EngineOptions& o) {
    return contrastive::Spectral<S>(contrastive::SpectralParams{1.0, 0.5}, o);
  }
};

struct VRNSCase : NoScalar, WithIds {
  static constexpr const char* name = "VRNS (p = 3) with ids";
  static std::vector<double> theta0() { return {}; }
  template <typename S>
  static contrastive::VRNS<S> make(const std::vector<double>&, const EngineOptions& o) {
    contrastive::VRNSParams p;
    p.target = -0.1;
    p.power = 3.0;
    return contrastive::VRNS<S>(p, o);
  }
};

struct WithVRNSCase : OneScalar, WithIds {
  static constexpr const char* name = "WithVRNS(NT-Xent) with ids";
  static std::vector<double> theta0() { return {0.3}; }
  template <typename S>
  static contrastive::WithVRNS<S> make(const std::vector<double>& t, const EngineOptions& o) {
    contrastive::VRNSParams p;
    p.dataset_size = 50;
    return contrastive::WithVRNS<S>(contrastive::NTXent<S>(t[0], o), p, 4.0);
  }
};

struct CombinedCase : OneScalar, Plain {
  static constexpr const char* name = "Combined(CLIP + SigLIP + Spectral)";
  static std::vector<double> theta0() { return {0.15}; }
  template <typename S>
  static contrastive::Combined<S> make(const std::vector<double>& t, const EngineOptions& o) {
    return contrastive::Combined<S>(contrastive::CLIP<S>(t[0], o),
                                    {contrastive::LossTerm::make_siglip({3.0, -2.0, 0.0}, 0.5),
                                     contrastive::LossTerm::make_spectral({1.0, 0.0}, 0.25)});
  }
};

struct SampledCase : OneScalar, WithIds {
  static constexpr const char* name = "SampledNegatives(NT-Xent, k = 4) with ids";
  static constexpr bool engine = false;  // single-threaded, no tiles
  static std::vector<double> theta0() { return {0.3}; }
  template <typename S>
  static contrastive::SampledNegatives<S> make(const std::vector<double>& t, const EngineOptions&) {
    contrastive::SamplingParams sp;
    sp.num_negatives = 4;
    sp.seed = 5;
    return contrastive::SampledNegatives<S>(contrastive::NTXent<S>(t[0]).params(), sp);
  }
};

struct DCLWCase : OneScalar, WithIds {
  static constexpr const char* name = "DCLW (sigma = 0.5) with ids";
  // Its positive weights are constants of the call (lightly detaches them):
  // the input gradient is that of the loss with the weights frozen, checked
  // by central differences in tests/test_more_losses.cpp, not of the value.
  static constexpr bool detached_inputs = true;
  static std::vector<double> theta0() { return {0.25}; }
  template <typename S>
  static contrastive::DCLW<S> make(const std::vector<double>& t, const EngineOptions& o) {
    return contrastive::DCLW<S>(t[0], 0.5, o);
  }
};

struct SmoothingCase : OneScalar {
  static constexpr const char* name = "CLIP with label smoothing 0.1, ids and weights";
  static std::vector<double> theta0() { return {0.2}; }
  template <typename S>
  static contrastive::InfoNCEFamily<S> make(const std::vector<double>& t, const EngineOptions& o) {
    auto p = contrastive::CLIP<S>(t[0]).params();
    p.label_smoothing = 0.1;
    return contrastive::InfoNCEFamily<S>(p, o);
  }
  template <typename S>
  static CallOptions<S> call(Eigen::Index n) {
    return Preset1<contrastive::CLIP, 200, true>::call<S>(n);
  }
};

template <contrastive::PositivesForm Form, bool NTXentLike>
struct MultiPositiveCase : OneScalar, WithIds {
  static constexpr const char* name = Form == contrastive::PositivesForm::Sum
                                          ? (NTXentLike ? "MultiPositive Sum (NT-Xent)" : "MultiPositive Sum (CLIP)")
                                          : (NTXentLike ? "MultiPositive Mean (NT-Xent)" : "MultiPositive Mean (CLIP)");
  static std::vector<double> theta0() { return {0.3}; }
  template <typename S>
  static contrastive::MultiPositive<S> make(const std::vector<double>& t, const EngineOptions& o) {
    contrastive::MultiPositiveParams p;
    p.family = NTXentLike ? contrastive::NTXent<S>(t[0]).params() : contrastive::CLIP<S>(t[0]).params();
    p.form = Form;
    return contrastive::MultiPositive<S>(p, o);
  }
};
using MultiPosSumCase = MultiPositiveCase<contrastive::PositivesForm::Sum, false>;
using MultiPosMeanCase = MultiPositiveCase<contrastive::PositivesForm::Mean, true>;

template <int BetaTenths, bool Ids>
struct DebiasedCase : OneScalar {
  static constexpr const char* name = BetaTenths == 0 ? "Debiased (NT-Xent, tau+ = 0.1)" : "Debiased + hard (CLIP, beta = 1) with ids";
  static std::vector<double> theta0() { return {0.3}; }
  template <typename S>
  static contrastive::Debiased<S> make(const std::vector<double>& t, const EngineOptions& o) {
    contrastive::DebiasedParams p;
    p.family = BetaTenths == 0 ? contrastive::NTXent<S>(t[0]).params() : contrastive::CLIP<S>(t[0]).params();
    p.tau_plus = 0.1;
    p.beta = BetaTenths / 10.0;
    return contrastive::Debiased<S>(p, o);
  }
  template <typename S>
  static CallOptions<S> call(Eigen::Index n) {
    return Ids ? WithIds::call<S>(n) : CallOptions<S>{};
  }
};
using DebiasedNTXentCase = DebiasedCase<0, false>;
using HardCLIPCase = DebiasedCase<10, true>;

// Every loss of the battery: a new loss joins with its adapter and one entry here.
#define CONTRASTIVE_BATTERY                                                                                       \
  NTXentCase, NTXentIdsCase, InfoNCECase, CLIPCase, DCLCase, DHELCase, SupConCase, SigLIPCase, SpectralCase,  \
      VRNSCase, WithVRNSCase, CombinedCase, SampledCase, DCLWCase, SmoothingCase, MultiPosSumCase,              \
      MultiPosMeanCase, DebiasedNTXentCase, HardCLIPCase

template <typename C, typename = void>
struct detached_inputs : std::false_type {};
template <typename C>
struct detached_inputs<C, std::enable_if_t<C::detached_inputs>> : std::true_type {};

template <typename C, typename = void>
struct uses_engine : std::true_type {};
template <typename C>
struct uses_engine<C, std::enable_if_t<!C::engine>> : std::false_type {};

// ---- the battery -------------------------------------------------------------

template <typename C, typename S>
struct Eval {
  using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  S value = 0;
  Mat ga, gb;
  std::vector<S> dtheta;
};

template <typename C, typename S>
Eval<C, S> evaluate(const std::vector<double>& theta, const EngineOptions& o,
                    const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>& za,
                    const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>& zb, contrastive::Workspace<S>& ws) {
  const auto loss = C::template make<S>(theta, o);
  Eval<C, S> e;
  e.ga.resize(za.rows(), za.cols());
  e.gb.resize(zb.rows(), zb.cols());
  e.value = C::grad(loss, za, zb, e.ga, e.gb, e.dtheta, ws, C::template call<S>(za.rows()));
  // The value-only call and the allocating overload agree with the full call.
  CHECK(loss.value(za, zb, ws, C::template call<S>(za.rows())) == Approx(e.value).epsilon(sizeof(S) == 4 ? 1e-6 : 1e-12));
  return e;
}

template <typename C>
double value_at(const std::vector<double>& theta, const MatD& za, const MatD& zb) {
  contrastive::Workspace<double> ws;
  return C::template make<double>(theta, {}).value(za, zb, ws, C::template call<double>(za.rows()));
}

}  // namespace

TEMPLATE_TEST_CASE("battery: central differences for every input and scalar parameter", "[battery][gradient]",
                   CONTRASTIVE_BATTERY) {
  INFO(TestType::name);
  std::mt19937_64 rng(17);
  const Eigen::Index n = 7, d = 4;
  const MatD za = uneven_rows(n, d, rng), zb = uneven_rows(n, d, rng);
  EngineOptions o;
  o.tile_size = 3;  // several tiles, partial ones included
  contrastive::Workspace<double> ws;
  const auto theta = TestType::theta0();
  const auto e = evaluate<TestType, double>(theta, o, za, zb, ws);
  if (!detached_inputs<TestType>::value)
    check_central_differences([&](const MatD& a, const MatD& b) { return value_at<TestType>(theta, a, b); }, za, zb,
                              e.ga, e.gb);
  REQUIRE(e.dtheta.size() == theta.size());
  for (std::size_t k = 0; k < theta.size(); ++k) {
    INFO("scalar parameter " << k);
    const double h = 1e-6 * std::max(1.0, std::abs(theta[k]));
    auto tp = theta, tm = theta;
    tp[k] += h;
    tm[k] -= h;
    const double fd = (value_at<TestType>(tp, za, zb) - value_at<TestType>(tm, za, zb)) / (2 * h);
    CHECK(near(e.dtheta[k], fd, 1e-6, 1e-3));
  }
  // A directional (Taylor) check: the first-order remainder shrinks as h^2
  // (h / 10: 1/100, with slack for the h^3 terms; a wrong gradient leaves 1/10).
  const MatD dir_a = MatD::Random(n, d), dir_b = MatD::Random(n, d);
  const double slope = (e.ga.array() * dir_a.array()).sum() + (e.gb.array() * dir_b.array()).sum();
  const auto remainder = [&](double h) {
    return std::abs(value_at<TestType>(theta, za + h * dir_a, zb + h * dir_b) - e.value - h * slope);
  };
  const double r1 = remainder(1e-3), r2 = remainder(1e-4);
  if (!detached_inputs<TestType>::value) CHECK(r2 < 0.03 * r1 + 1e-13);
}

TEMPLATE_TEST_CASE("battery: float agrees with double; row scale invariance", "[battery][invariance]",
                   CONTRASTIVE_BATTERY) {
  INFO(TestType::name);
  std::mt19937_64 rng(23);
  const Eigen::Index n = 9, d = 5;
  const MatD za = uneven_rows(n, d, rng), zb = uneven_rows(n, d, rng);
  const auto theta = TestType::theta0();
  contrastive::Workspace<double> wd;
  contrastive::Workspace<float> wf;
  const auto ed = evaluate<TestType, double>(theta, {}, za, zb, wd);
  const MatF fa = za.cast<float>(), fb = zb.cast<float>();
  const auto ef = evaluate<TestType, float>(theta, {}, fa, fb, wf);
  CHECK(near(static_cast<double>(ef.value), ed.value, 1e-5));
  // Rows have norms down to e^-2, where gradients are up to e^2 larger.
  for (Eigen::Index i = 0; i < n; ++i) {
    CHECK(near(ef.ga.row(i), ed.ga.row(i), 1e-4, 1.0 / za.row(i).norm()));
    CHECK(near(ef.gb.row(i), ed.gb.row(i), 1e-4, 1.0 / zb.row(i).norm()));
  }
  for (std::size_t k = 0; k < theta.size(); ++k) CHECK(near(ef.dtheta[k], ed.dtheta[k], 1e-4));
  // Scaling row 2 of za by c leaves the loss unchanged and divides its gradient by c.
  const double c = 3.5;
  MatD za2 = za;
  za2.row(2) *= c;
  const auto e2 = evaluate<TestType, double>(theta, {}, za2, zb, wd);
  CHECK(near(e2.value, ed.value, 1e-13));
  CHECK(near(e2.ga.row(2) * c, ed.ga.row(2), 1e-12));
  CHECK(near(e2.gb, ed.gb, 1e-12));
}

TEMPLATE_TEST_CASE("battery: bad input throws, names the argument, leaves outputs untouched", "[battery][bad-input]",
                   CONTRASTIVE_BATTERY) {
  INFO(TestType::name);
  using Catch::Matchers::Contains;
  const Eigen::Index n = 6, d = 3;
  const MatD za = MatD::Random(n, d), zb = MatD::Random(n, d);
  const auto loss = TestType::template make<double>(TestType::theta0(), {});
  const auto call = TestType::template call<double>(n);
  contrastive::Workspace<double> ws;
  MatD ga = MatD::Constant(n, d, 7.0), gb = MatD::Constant(n, d, 7.0);
  std::vector<double> dt;
  const auto untouched = [&] {
    CHECK((ga.array() == 7.0).all());
    CHECK((gb.array() == 7.0).all());
  };
  MatD bad = za;
  bad(3, 1) = std::nan("");
  CHECK_THROWS_WITH(TestType::grad(loss, bad, zb, ga, gb, dt, ws, call), Contains("'za'") && Contains("NaN"));
  untouched();
  bad = zb;
  bad(0, 0) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(TestType::grad(loss, za, bad, ga, gb, dt, ws, call), Contains("'zb'"));
  untouched();
  MatD small = MatD::Constant(n - 1, d, 7.0);
  CHECK_THROWS_WITH(TestType::grad(loss, za, zb, small, gb, dt, ws, call), Contains("'grad_a'"));
  CHECK_THROWS_WITH(TestType::grad(loss, za, zb, ga, small, dt, ws, call), Contains("'grad_b'"));
  CHECK((small.array() == 7.0).all());
  untouched();
  const MatD other = MatD::Random(n - 1, d);
  CHECK_THROWS_WITH(TestType::grad(loss, za, other, ga, gb, dt, ws, call), Contains("'zb'"));
  CHECK_THROWS_WITH(loss.value(MatD::Random(1, d), MatD::Random(1, d), call), Contains("'za'"));
  untouched();
  // Options of the call that the loss does not define are rejected by name.
  auto wrong = call;
  if (!call.labels.given()) {
    static const std::vector<Eigen::Index> labels(static_cast<std::size_t>(n), 0);
    wrong.labels = labels;
    CHECK_THROWS_WITH(TestType::grad(loss, za, zb, ga, gb, dt, ws, wrong), Contains("'call.labels'"));
  } else {
    static const std::vector<Eigen::Index> short_labels = {0, 1};
    wrong.labels = short_labels;
    CHECK_THROWS_WITH(TestType::grad(loss, za, zb, ga, gb, dt, ws, wrong), Contains("'call.labels'"));
  }
  untouched();
  // A valid call after the failures works with the same workspace.
  CHECK_NOTHROW(TestType::grad(loss, za, zb, ga, gb, dt, ws, call));
  CHECK(ga.allFinite());
}

TEMPLATE_TEST_CASE("battery: thread counts, cached and streamed tiles, workspace reuse across shapes",
                   "[battery][engine]", CONTRASTIVE_BATTERY) {
  INFO(TestType::name);
  std::mt19937_64 rng(31);
  const auto theta = TestType::theta0();
  const MatD za = uneven_rows(40, 6, rng), zb = uneven_rows(40, 6, rng);
  contrastive::Workspace<double> fresh;
  EngineOptions base;
  base.tile_size = 16;
  base.num_threads = 1;
  const auto ref = evaluate<TestType, double>(theta, base, za, zb, fresh);
  if (uses_engine<TestType>::value) {
    for (const int threads : {2, 3}) {
      for (const bool stream : {false, true}) {
        INFO("threads " << threads << (stream ? " streamed" : " cached"));
        EngineOptions o = base;
        o.num_threads = threads;
        o.parallel_threshold = 0;
        if (stream) o.memory_budget_bytes = 0;
        contrastive::Workspace<double> ws;
        const auto e = evaluate<TestType, double>(theta, o, za, zb, ws);
        CHECK(ws.last_call_streamed() == stream);
        CHECK(near(e.value, ref.value, 1e-13));
        CHECK(near(e.ga, ref.ga, 1e-12));
        CHECK(near(e.gb, ref.gb, 1e-12));
        for (std::size_t k = 0; k < theta.size(); ++k) CHECK(near(e.dtheta[k], ref.dtheta[k], 1e-12));
      }
    }
  }
  // One workspace across shapes (and after another loss used it) gives
  // exactly what a fresh one gives.
  contrastive::Workspace<double> ws;
  contrastive::NTXent<double>(0.5).value(MatD::Random(64, 9), MatD::Random(64, 9), ws);
  const MatD sa = za.topRows(11).leftCols(3), sb = zb.topRows(11).leftCols(3);
  evaluate<TestType, double>(theta, base, sa, sb, ws);
  const auto again = evaluate<TestType, double>(theta, base, za, zb, ws);
  CHECK(again.value == ref.value);
  CHECK(again.ga == ref.ga);
  CHECK(again.gb == ref.gb);
  for (std::size_t k = 0; k < theta.size(); ++k) CHECK(again.dtheta[k] == ref.dtheta[k]);
  const std::size_t bytes = ws.bytes();
  evaluate<TestType, double>(theta, base, za, zb, ws);
  CHECK(ws.bytes() == bytes);  // same shape again: nothing grows
}
