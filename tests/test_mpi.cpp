// Losses across MPI processes: every engine loss on uneven shards (one
// process may hold a single pair) gives the value, scalar gradients and
// the gradients of its own rows that one process computes on the
// concatenated batch; bad or mismatched calls, and failures on one process
// (in its engine, building its kernel, allocating the gathered batch), throw
// on every process and none hangs.  Run by ctest under mpiexec with 1, 2, 3 and 4 processes.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <mpi.h>

#include <contrastive/mpi.hpp>

#include "fail_malloc.hpp"
#include "support.hpp"

using namespace testing;
using Catch::Matchers::Contains;

namespace {

int rank_ = 0, procs_ = 1;

/// The shards of a global batch of n over the processes: uneven, and with
/// 3 or more processes the first holds a single pair.
std::vector<Eigen::Index> shard_sizes(Eigen::Index n) {
  std::vector<Eigen::Index> s(static_cast<std::size_t>(procs_));
  Eigen::Index left = n;
  for (int p = 0; p < procs_; ++p) {
    const Eigen::Index want = (procs_ >= 3 && p == 0) ? 1 : (left / (procs_ - p)) + (p % 2 == 0 ? 1 : -1);
    s[static_cast<std::size_t>(p)] = p == procs_ - 1 ? left : std::max<Eigen::Index>(1, std::min(want, left - (procs_ - p - 1)));
    left -= s[static_cast<std::size_t>(p)];
  }
  return s;
}

struct Shard {
  Eigen::Index offset = 0, rows = 0;
};
Shard my_shard(Eigen::Index n) {
  const auto s = shard_sizes(n);
  Shard sh;
  for (int p = 0; p < rank_; ++p) sh.offset += s[static_cast<std::size_t>(p)];
  sh.rows = s[static_cast<std::size_t>(rank_)];
  return sh;
}

template <typename T>
std::vector<T> slice(const std::vector<T>& v, Eigen::Index off, Eigen::Index len) {
  return std::vector<T>(v.begin() + off, v.begin() + off + len);
}

/// Compares a loss called on this process's shard with the same loss on the
/// whole batch, for every scalar-gradient signature.
template <typename S, typename Loss>
void expect_global(const char* name, const Loss& loss, const Eigen::Matrix<S, -1, -1>& za,
                   const Eigen::Matrix<S, -1, -1>& zb, const contrastive::CallOptions<S>& whole,
                   const contrastive::CallOptions<S>& local, double tol, int scalars = 1) {
  INFO(name << " on " << procs_ << " processes, rank " << rank_);
  using M = Eigen::Matrix<S, -1, -1>;
  const Eigen::Index n = za.rows(), d = za.cols();
  const Shard sh = my_shard(n);
  M ga(n, d), gb(n, d), la(sh.rows, d), lb(sh.rows, d);
  S g1[2] = {0, 0}, l1[2] = {0, 0};
  contrastive::Workspace<S> ws, wl;
  const S v = value_and_grad_scalars(loss, za, zb, ga, gb, g1, ws, whole);
  const S vl = value_and_grad_scalars(loss, za.middleRows(sh.offset, sh.rows), zb.middleRows(sh.offset, sh.rows), la,
                                      lb, l1, wl, local);
  CHECK(near(vl, v, tol));
  CHECK(near(la, ga.middleRows(sh.offset, sh.rows), tol));
  CHECK(near(lb, gb.middleRows(sh.offset, sh.rows), tol));
  for (int k = 0; k < scalars; ++k) CHECK(near(l1[k], g1[k], tol));
  // A value call agrees too.
  CHECK(near(loss.value(za.middleRows(sh.offset, sh.rows), zb.middleRows(sh.offset, sh.rows), wl, local), v, tol));
}

/// A loss on the engine (NT-Xent's kernel, tau = 0.2, via FailingKernel)
/// that fails with InjectedFault on process `failing` (-1: on none), at
/// `stage` 1 (its signature, read before the processes exchange their call
/// records) or 2 (building its kernel, after the rows are gathered).
struct UnbuildableLoss {
  explicit UnbuildableLoss(int fails_on = -1, int at_stage = 2) : failing(fails_on), stage(at_stage) {}
  int failing, stage;
  contrastive::EngineOptions opt;
  const char* name() const { return "test::UnbuildableLoss"; }
  const contrastive::EngineOptions& options() const { return opt; }
  contrastive::detail::Accepts accepts() const { return {false, true, false}; }
  Eigen::Index anchors(Eigen::Index n) const { return 2 * n; }
  bool requires_labels() const { return false; }
  std::vector<double> signature() const {
    if (rank_ == failing && stage == 1) throw InjectedFault();
    return {0.2};
  }
  template <typename F>
  double with_kernel(const contrastive::detail::Batch<double>& batch, F&& f) const {
    if (rank_ == failing && stage == 2) throw InjectedFault();
    return f(FailingKernel<double>(batch.n, 0, -1));
  }
};

}  // namespace

TEST_CASE("every engine loss across processes equals the loss of the concatenated batch", "[mpi]") {
  contrastive::mpi::ProcessGroup group(MPI_COMM_WORLD);
  std::mt19937_64 rng(2024);  // the same on every process
  const Eigen::Index n = 13, d = 5;
  const MatD za = uneven_rows(n, d, rng), zb = uneven_rows(n, d, rng);
  const auto sh = my_shard(n);
  contrastive::CallOptions<double> whole, local;
  local.process_group = &group;
  // Cached, streamed, and 1000 bytes, which holds part of a process's tiles
  // (3 x 3 doubles) for some losses: CLIP's 1352 bytes on one process,
  // NT-Xent's 3000 split over two.
  for (std::size_t budget : {std::size_t(1) << 30, std::size_t(0), std::size_t(1000)})
    for (int threads : {1, 2}) {
      INFO("budget " << budget << " threads " << threads);
      contrastive::EngineOptions o;
      o.memory_budget_bytes = budget;
      o.num_threads = threads;
      o.parallel_threshold = 0;
      o.tile_size = 3;
      for (Preset p : kPresets) expect_global<double>(preset_name(p), make_loss<double>(p, 0.3, o), za, zb, whole, local, 1e-12);
      expect_global<double>("SigLIP", contrastive::SigLIP<double>(contrastive::SigLIPParams{7.0, -2.0, 0.5}, o), za, zb,
                            whole, local, 1e-12, 2);
      expect_global<double>("VRNS", contrastive::VRNS<double>({100}, o), za, zb, whole, local, 1e-12, 0);
      expect_global<double>("Spectral", contrastive::Spectral<double>({1.0, 0.5}, o), za, zb, whole, local, 1e-12, 0);
      expect_global<double>("Alignment", contrastive::Alignment<double>({3.0}, o), za, zb, whole, local, 1e-12);
      expect_global<double>("Uniformity", contrastive::Uniformity<double>({2.0}, o), za, zb, whole, local, 1e-12);
      expect_global<double>("WithVRNS", contrastive::WithVRNS<double>(contrastive::NTXent<double>(0.2, o), {100}, 30.0),
                            za, zb, whole, local, 1e-12);
      expect_global<double>(
          "Combined",
          contrastive::Combined<double>(contrastive::CLIP<double>(0.1, o),
                                        {contrastive::LossTerm::make_siglip({5.0, -1.0, 0.0}, 0.5),
                                         contrastive::LossTerm::make_spectral({1.0, 0.0}, 0.25)}),
          za, zb, whole, local, 1e-12);
    }
  // Instance ids across processes (equal ids on different processes are
  // still masked), labels, weights and per-anchor losses.
  std::vector<Eigen::Index> ids(static_cast<std::size_t>(n)), labels(static_cast<std::size_t>(n));
  for (Eigen::Index i = 0; i < n; ++i) {
    ids[static_cast<std::size_t>(i)] = i % 5;
    labels[static_cast<std::size_t>(i)] = (3 * i) % 4;
  }
  const auto my_ids = slice(ids, sh.offset, sh.rows), my_labels = slice(labels, sh.offset, sh.rows);
  {
    auto w = ids_call<double>(ids), l = ids_call<double>(my_ids);
    l.process_group = &group;
    for (Preset p : kPresets) expect_global<double>(preset_name(p), make_loss<double>(p, 0.25), za, zb, w, l, 1e-12);
    expect_global<double>("SigLIP ids", contrastive::SigLIP<double>(5.0, -3.0), za, zb, w, l, 1e-12, 2);
    expect_global<double>("VRNS ids", contrastive::VRNS<double>({50}), za, zb, w, l, 1e-12, 0);
  }
  {
    auto w = labels_call<double>(labels), l = labels_call<double>(my_labels);
    l.process_group = &group;
    expect_global<double>("SupCon", contrastive::SupCon<double>(0.2), za, zb, w, l, 1e-12);
  }
  {
    // Symmetric anchors: [za rows; zb rows] globally, [my za rows; my zb rows] locally.
    std::vector<double> wg(static_cast<std::size_t>(2 * n)), pg(static_cast<std::size_t>(2 * n));
    for (std::size_t r = 0; r < wg.size(); ++r) wg[r] = 0.5 + 0.1 * static_cast<double>(r % 7);
    std::vector<double> wl, pl(static_cast<std::size_t>(2 * sh.rows));
    for (Eigen::Index v = 0; v < 2; ++v)
      for (Eigen::Index i = 0; i < sh.rows; ++i) wl.push_back(wg[static_cast<std::size_t>(v * n + sh.offset + i)]);
    for (auto red : {contrastive::Reduction::Mean, contrastive::Reduction::Sum, contrastive::Reduction::None}) {
      INFO("reduction " << static_cast<int>(red));
      auto w = contrastive::CallOptions<double>{}.with_reduction(red).with_weights(wg).with_per_anchor(pg);
      auto l = contrastive::CallOptions<double>{}.with_reduction(red).with_weights(wl).with_per_anchor(pl).with_process_group(group);
      expect_global<double>("NTXent weighted", contrastive::NTXent<double>(0.3), za, zb, w, l, 1e-12);
      for (Eigen::Index v = 0; v < 2; ++v)
        for (Eigen::Index i = 0; i < sh.rows; ++i)
          CHECK(near(pl[static_cast<std::size_t>(v * sh.rows + i)], pg[static_cast<std::size_t>(v * n + sh.offset + i)], 1e-12));
    }
  }
  // The losses of issue 15.
  {
    auto w = ids_call<double>(ids), l = ids_call<double>(my_ids);
    l.process_group = &group;
    contrastive::DebiasedParams dp;
    dp.family = contrastive::CLIP<double>(0.3).params();
    dp.beta = 1.0;
    expect_global<double>("Debiased + hard", contrastive::Debiased<double>(dp), za, zb, w, l, 1e-12);
    contrastive::MultiPositiveParams mp;
    mp.family = contrastive::NTXent<double>(0.3).params();
    for (auto form : {contrastive::PositivesForm::Sum, contrastive::PositivesForm::Mean}) {
      mp.form = form;
      expect_global<double>("MultiPositive", contrastive::MultiPositive<double>(mp), za, zb, w, l, 1e-12);
    }
    expect_global<double>("DCLW", contrastive::DCLW<double>(0.2, 0.5), za, zb, w, l, 1e-12);
    auto sp = contrastive::CLIP<double>(0.2).params();
    sp.label_smoothing = 0.1;
    expect_global<double>("label smoothing", contrastive::InfoNCEFamily<double>(sp), za, zb, w, l, 1e-12);
  }
  {
    // One view: SupCon on one batch, each process holding its rows of z.
    const contrastive::SupConOneView<double> one(0.2);
    MatD g(n, d), gl(sh.rows, d);
    double t = 0, tl = 0;
    contrastive::Workspace<double> ws1, ws2;
    const double v = one.value_and_grad(za, g, &t, ws1, labels_call<double>(labels));
    auto lc = labels_call<double>(my_labels);
    lc.process_group = &group;
    const double vl = one.value_and_grad(za.middleRows(sh.offset, sh.rows), gl, &tl, ws2, lc);
    CHECK(near(vl, v, 1e-12));
    CHECK(near(tl, t, 1e-12));
    CHECK(near(gl, g.middleRows(sh.offset, sh.rows), 1e-12));
  }
  {
    // Alignment: one anchor per pair, this process's pairs.
    std::vector<double> wg(static_cast<std::size_t>(n)), pg(static_cast<std::size_t>(n));
    for (std::size_t r = 0; r < wg.size(); ++r) wg[r] = 0.25 * static_cast<double>(r % 5);
    std::vector<double> wl = slice(wg, sh.offset, sh.rows), pl(static_cast<std::size_t>(sh.rows));
    auto w = contrastive::CallOptions<double>{}.with_reduction(contrastive::Reduction::None).with_weights(wg).with_per_anchor(pg);
    auto l = contrastive::CallOptions<double>{}.with_reduction(contrastive::Reduction::None).with_weights(wl).with_per_anchor(pl).with_process_group(group);
    expect_global<double>("Alignment weighted", contrastive::Alignment<double>({1.5}), za, zb, w, l, 1e-12);
    for (Eigen::Index i = 0; i < sh.rows; ++i)
      CHECK(near(pl[static_cast<std::size_t>(i)], pg[static_cast<std::size_t>(sh.offset + i)], 1e-12));
  }
  // Float, against float on the whole batch.
  {
    const MatF fa = za.cast<float>(), fb = zb.cast<float>();
    contrastive::CallOptions<float> wf, lf;
    lf.process_group = &group;
    for (Preset p : kPresets) expect_global<float>(preset_name(p), make_loss<float>(p, 0.3), fa, fb, wf, lf, 1e-5);
    expect_global<float>("SigLIP float", contrastive::SigLIP<float>(5.0, -3.0), fa, fb, wf, lf, 1e-5, 2);
    expect_global<float>("Uniformity float", contrastive::Uniformity<float>({2.0}), fa, fb, wf, lf, 1e-5);
  }
}

TEST_CASE("a batch of 64 pairs on any number of processes, online shifts included", "[mpi]") {
  contrastive::mpi::ProcessGroup group(MPI_COMM_WORLD);
  std::mt19937_64 rng(77);
  const MatD za = uneven_rows(64, 12, rng), zb = uneven_rows(64, 12, rng);
  contrastive::CallOptions<double> whole, local;
  local.process_group = &group;
  // tau = 0.01 in float takes the online (per-row max) path; double the fixed shift.
  expect_global<float>("NTXent float tau 0.01", contrastive::NTXent<float>(0.01), za.cast<float>().eval(),
                       zb.cast<float>().eval(), contrastive::CallOptions<float>{},
                       contrastive::CallOptions<float>{}.with_process_group(group), 2e-5);
  expect_global<double>("CLIP tau 0.01", contrastive::CLIP<double>(0.01), za, zb, whole, local, 1e-12);
}

TEST_CASE("bad or mismatched calls throw on every process, and none hangs", "[mpi]") {
  contrastive::mpi::ProcessGroup group(MPI_COMM_WORLD);
  std::mt19937_64 rng(5);
  const MatD za = uneven_rows(8, 4, rng), zb = uneven_rows(8, 4, rng);
  const auto sh = my_shard(8);
  const MatD a = za.middleRows(sh.offset, sh.rows), b = zb.middleRows(sh.offset, sh.rows);
  auto call = contrastive::CallOptions<double>{}.with_process_group(group);
  contrastive::Workspace<double> ws;
  MatD ga = MatD::Constant(a.rows(), a.cols(), 7.0), gb = ga;
  double dt = 7.0;
  const auto untouched = [&] { return (ga.array() == 7.0).all() && (gb.array() == 7.0).all() && dt == 7.0; };
  const contrastive::NTXent<double> loss(0.5);
  // NaN on the last process only.
  MatD bad = a;
  if (rank_ == procs_ - 1) bad(0, 0) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(loss.value_and_grad(bad, b, ga, gb, &dt, ws, call), Contains("'za'") && Contains("NaN"));
  CHECK(untouched());
  if (procs_ > 1) {
    // d differs on one process.
    const MatD wide = MatD::Random(a.rows(), rank_ == 1 ? 5 : 4), wideb = MatD::Random(a.rows(), wide.cols());
    MatD wa(wide.rows(), wide.cols()), wb(wide.rows(), wide.cols());
    CHECK_THROWS_WITH(loss.value_and_grad(wide, wideb, wa, wb, &dt, ws, call),
                      Contains("'call.process_group'") && Contains("dimension d"));
    // The temperature differs.
    CHECK_THROWS_WITH(contrastive::NTXent<double>(rank_ == 0 ? 0.5 : 0.4).value_and_grad(a, b, ga, gb, &dt, ws, call),
                      Contains("loss parameters"));
    // A malformed id vector on one process.
    std::vector<Eigen::Index> ids(static_cast<std::size_t>(a.rows() + (rank_ == 1 ? 1 : 0)), 0);
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<Eigen::Index>(i);
    auto with_ids = call;
    with_ids.instance_ids = ids;
    CHECK_THROWS_WITH(loss.value_and_grad(a, b, ga, gb, &dt, ws, with_ids), Contains("'call.instance_ids'") && Contains("process 1"));
    // One process in float, the others in double.
    if (rank_ == 0) {
      const auto fa = a.cast<float>().eval(), fb = b.cast<float>().eval();
      MatF fga(fa.rows(), fa.cols()), fgb = fga;
      float fdt = 0;
      contrastive::Workspace<float> wsf;
      CHECK_THROWS_WITH(contrastive::NTXent<float>(0.5).value_and_grad(fa, fb, fga, fgb, &fdt, wsf,
                                                                        contrastive::CallOptions<float>{}.with_process_group(group)),
                        Contains("scalar type"));
    } else {
      CHECK_THROWS_WITH(loss.value_and_grad(a, b, ga, gb, &dt, ws, call), Contains("scalar type"));
    }
    // One process asks for gradients, the others for the value only.
    if (rank_ == 0) CHECK_THROWS_WITH(loss.value(a, b, ws, call), Contains("'call.process_group'"));
    else CHECK_THROWS_WITH(loss.value_and_grad(a, b, ga, gb, &dt, ws, call), Contains("'call.process_group'"));
    CHECK(untouched());
  }
  // Losses that run per process reject a group (on every process alike).
  const contrastive::SampledNegatives<double> sampled(loss.params(), {4, false, 1});
  CHECK_THROWS_WITH(sampled.value(a, b, ws, call), Contains("'call.process_group'"));
  // The group still works after all of that.
  CHECK(std::isfinite(loss.value(a, b, ws, call)));
}

TEST_CASE("an exception inside one process's engine reaches every process, and none hangs", "[mpi]") {
  using contrastive::detail::Engine;
  contrastive::mpi::ProcessGroup group(MPI_COMM_WORLD);
  std::mt19937_64 rng(11);
  const Eigen::Index n = 96;
  const MatD za = uneven_rows(n, 8, rng), zb = uneven_rows(n, 8, rng);
  // The engine on this process's share of the tiles, as EngineCall runs it
  // after gathering the rows (every process holds the whole batch here).
  contrastive::detail::Distribution dist;
  dist.group = &group;
  dist.rank = rank_;
  dist.procs = procs_;
  dist.n = n;
  for (Eigen::Index rows : shard_sizes(n)) dist.rows.push_back(static_cast<long long>(rows));
  const Shard sh = my_shard(n);
  dist.offset = sh.offset;
  dist.local = sh.rows;
  contrastive::EngineOptions o;
  o.tile_size = 16;  // 78 tiles, at least 19 on each process
  const auto run = [&](const FailingKernel<double>& kernel, contrastive::detail::Buffers<double>& b) {
    Engine<double>::load(b, za, zb, "test");
    return Engine<double>::run(kernel, b, o, true, "test", dist);
  };
  const auto mine = [&](const MatD& dw) {
    MatD rows(2 * sh.rows, dw.cols());
    rows << dw.middleRows(sh.offset, sh.rows), dw.middleRows(n + sh.offset, sh.rows);
    return rows;
  };
  contrastive::Workspace<double> fresh;
  const double v_ref = run(FailingKernel<double>(n, 0, -1), contrastive::detail::buffers(fresh));
  const MatD dw_ref = mine(contrastive::detail::buffers(fresh).dw);
  for (int failing : {0, procs_ - 1})
    for (int pass : {1, 2}) {
      INFO("process " << failing << " fails in pass " << pass << "; this is process " << rank_);
      contrastive::Workspace<double> ws;
      auto& b = contrastive::detail::buffers(ws);
      if (rank_ == failing)
        CHECK_THROWS_AS(run(FailingKernel<double>(n, pass, 3), b), InjectedFault);
      else
        CHECK_THROWS_WITH(run(FailingKernel<double>(n, 0, -1), b),
                          Contains("1 of " + std::to_string(procs_) + " processes failed during the call"));
      // Every process left the call at the same collective: the next call
      // on the same workspaces runs as on fresh ones.
      CHECK(near(run(FailingKernel<double>(n, 0, -1), b), v_ref, 1e-14));
      CHECK(near(mine(b.dw), dw_ref, 1e-13));
    }
}

TEST_CASE("a failure on one process before its engine reaches every process", "[mpi]") {
  contrastive::mpi::ProcessGroup group(MPI_COMM_WORLD);
  std::mt19937_64 rng(13);
  const Eigen::Index n = 60, d = 16;
  const MatD za = uneven_rows(n, d, rng), zb = uneven_rows(n, d, rng);
  const Shard sh = my_shard(n);
  const MatD a = za.middleRows(sh.offset, sh.rows), b = zb.middleRows(sh.offset, sh.rows);
  const auto call = contrastive::CallOptions<double>{}.with_process_group(group);
  std::vector<Eigen::Index> ids(static_cast<std::size_t>(sh.rows));
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = sh.offset + static_cast<Eigen::Index>(i);
  auto with_ids = call;
  with_ids.instance_ids = ids;
  const std::string others = "1 of " + std::to_string(procs_) + " processes failed during the call";
  MatD ga(sh.rows, d), gb(sh.rows, d);
  const auto untouched = [&] { return (ga.array() == 7.0).all() && (gb.array() == 7.0).all(); };
  // Through EngineCall, as a loss's value_and_grad and value call it.
  const auto run = [&](const UnbuildableLoss& loss, contrastive::Workspace<double>& ws) {
    return contrastive::detail::EngineCall::run(loss, contrastive::detail::buffers(ws), a, b, &ga, &gb, false, call);
  };
  const auto run_value = [&](const UnbuildableLoss& loss, contrastive::Workspace<double>& ws) {
    return contrastive::detail::EngineCall::run(loss, contrastive::detail::buffers(ws), a, b,
                                                contrastive::detail::no_gradient<double>(),
                                                contrastive::detail::no_gradient<double>(), false, with_ids);
  };
  contrastive::Workspace<double> fresh;
  const double v_ref = run(UnbuildableLoss(), fresh);
  const MatD ga_ref = ga, gb_ref = gb;
  const double value_ref = run_value(UnbuildableLoss(), fresh);
#if CONTRASTIVE_TEST_FAIL_MALLOC
  const contrastive::NTXent<double> ntxent(0.2);
  double dt_ref = 0;
  const double nt_ref = ntxent.value_and_grad(a, b, ga, gb, &dt_ref, fresh, call);
  const MatD nga_ref = ga, ngb_ref = gb;
#else
  WARN("the failed allocation of the gathered batch is not tested: malloc cannot be replaced in this build");
#endif
  for (const int failing : {0, procs_ - 1}) {
    INFO("process " << failing << " fails; this is process " << rank_);
    contrastive::Workspace<double> ws;
    // Before the call records are exchanged (not only bad input): the
    // exchange tells every process.  (One process exchanges nothing.)
    if (procs_ > 1) {
      ga.setConstant(7.0);
      gb.setConstant(7.0);
      if (rank_ == failing)
        CHECK_THROWS_AS(run(UnbuildableLoss(failing, 1), ws), InjectedFault);
      else
        CHECK_THROWS_WITH(run(UnbuildableLoss(failing, 1), ws),
                          Contains("process " + std::to_string(failing) + " of " + std::to_string(procs_) +
                                   ": injected fault"));
      CHECK(untouched());
    }
    // Its kernel cannot be built: it joins the engine's first collective
    // failed; in a gradient call, and in a value call with instance ids.
    ga.setConstant(7.0);
    gb.setConstant(7.0);
    if (rank_ == failing) {
      CHECK_THROWS_AS(run(UnbuildableLoss(failing), ws), InjectedFault);
      CHECK_THROWS_AS(run_value(UnbuildableLoss(failing), ws), InjectedFault);
    } else {
      CHECK_THROWS_WITH(run(UnbuildableLoss(failing), ws), Contains(others));
      CHECK_THROWS_WITH(run_value(UnbuildableLoss(failing), ws), Contains(others));
    }
    CHECK(untouched());
    // Every process left at the same collective: the next calls agree.
    CHECK(near(run_value(UnbuildableLoss(), ws), value_ref, 1e-14));
    CHECK(near(run(UnbuildableLoss(), ws), v_ref, 1e-14));
    CHECK(near(ga, ga_ref, 1e-14));
    CHECK(near(gb, gb_ref, 1e-14));
#if CONTRASTIVE_TEST_FAIL_MALLOC
    // An allocation fails on that process: (1) the gathered batch W
    // (2n x d doubles), sized before the exchange of the call records,
    // which carries the failure; (2) the exchange's own buffer (a 568-byte
    // record per process), which the all_reduce before the exchange
    // reports.  (One process exchanges nothing.)
    const std::size_t w_bytes = static_cast<std::size_t>(2 * n * d) * sizeof(double);
    const std::size_t records = sizeof(contrastive::detail::CallRecord) * static_cast<std::size_t>(procs_);
    const std::string w_failed = "process " + std::to_string(failing) + " of " + std::to_string(procs_) + ": ";
    for (const int what : {1, 2}) {
      if (what == 2 && procs_ == 1) continue;
      INFO((what == 1 ? "W" : "the records") << " cannot be allocated");
      contrastive::Workspace<double> ws2;
      ga.setConstant(7.0);
      gb.setConstant(7.0);
      double dt = 7.0;
      if (rank_ == failing) {
        if (what == 1) fail_malloc::arm(0, w_bytes, w_bytes + 128, true);  // (+ Eigen's alignment)
        else fail_malloc::arm(0, records, records, true);
      }
      if (rank_ == failing)
        CHECK_THROWS_AS(ntxent.value_and_grad(a, b, ga, gb, &dt, ws2, call), std::bad_alloc);
      else if (what == 1)
        CHECK_THROWS_WITH(ntxent.value_and_grad(a, b, ga, gb, &dt, ws2, call),
                          Contains(w_failed + "std::bad_alloc"));
      else
        CHECK_THROWS_WITH(ntxent.value_and_grad(a, b, ga, gb, &dt, ws2, call), Contains(others));
      fail_malloc::armed = false;
      if (rank_ == failing) CHECK(fail_malloc::seen.load() >= 1);
      CHECK((untouched() && dt == 7.0));
      CHECK(near(ntxent.value_and_grad(a, b, ga, gb, &dt, ws2, call), nt_ref, 1e-14));
      CHECK(near(ga, nga_ref, 1e-14));
      CHECK(near(gb, ngb_ref, 1e-14));
      CHECK(near(dt, dt_ref, 1e-14));
    }
#endif
  }
}

TEST_CASE("the allocating Result calls across processes and their failures", "[mpi]") {
  contrastive::mpi::ProcessGroup group(MPI_COMM_WORLD);
  std::mt19937_64 rng(17);
  const Eigen::Index n = procs_ + 1, d = 8;  // (a process may hold a single pair)
  const MatD za = uneven_rows(n, d, rng), zb = uneven_rows(n, d, rng);
  const Shard sh = my_shard(n);
  const MatD a = za.middleRows(sh.offset, sh.rows), b = zb.middleRows(sh.offset, sh.rows);
  const auto call = contrastive::CallOptions<double>{}.with_process_group(group);
  const contrastive::NTXent<double> loss(0.3);
  const contrastive::SupConOneView<double> supcon(0.3);
  std::vector<Eigen::Index> labels(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<Eigen::Index>(i % 2);
  const std::vector<Eigen::Index> my_labels(labels.begin() + sh.offset, labels.begin() + sh.offset + sh.rows);
  auto with_labels = call;
  with_labels.labels = my_labels;
  // The Result equals the output overload's numbers (and the whole batch's).
  const auto r = loss.value_and_grad(a, b, call);
  const auto whole = loss.value_and_grad(za, zb);
  CHECK(near(r.value, whole.value, 1e-12));
  CHECK(near(r.grad_a, whole.grad_a.middleRows(sh.offset, sh.rows), 1e-12));
  CHECK(near(r.grad_b, whole.grad_b.middleRows(sh.offset, sh.rows), 1e-12));
  const auto r1 = supcon.value_and_grad(a, with_labels);
  auto whole_labels = contrastive::CallOptions<double>{};
  whole_labels.labels = labels;
  const auto whole1 = supcon.value_and_grad(za, whole_labels);
  CHECK(near(r1.value, whole1.value, 1e-12));
  CHECK(near(r1.grad_a, whole1.grad_a.middleRows(sh.offset, sh.rows), 1e-12));
#if CONTRASTIVE_TEST_FAIL_MALLOC
  // Allocating the Result fails on one process: it joins the call failed.
  const std::size_t g_bytes = static_cast<std::size_t>(sh.rows * d) * sizeof(double);
  for (const int failing : {0, procs_ - 1}) {
    INFO("process " << failing << " fails; this is process " << rank_);
    const std::string named = "process " + std::to_string(failing) + " of " + std::to_string(procs_) + ": ";
    for (const int one_view : {0, 1}) {
      INFO((one_view ? "SupConOneView" : "NT-Xent"));
      const auto go = [&] {
        if (one_view) (void)supcon.value_and_grad(a, with_labels);
        else (void)loss.value_and_grad(a, b, call);
      };
      if (rank_ == failing) {
        fail_malloc::arm(0, g_bytes, g_bytes + 128, true);
        CHECK_THROWS_AS(go(), std::bad_alloc);
        fail_malloc::armed = false;
        CHECK(fail_malloc::seen.load() >= 1);
      } else {
        CHECK_THROWS_WITH(go(), Contains(named + "std::bad_alloc"));
      }
    }
  }
  // The processes disagree on d, and the gathered batch cannot be
  // allocated anywhere: the disagreement is what every process reports
  // (the batch is not sized when the rows' widths differ).
  if (procs_ > 1) {
    const Eigen::Index d0 = 64, dw = rank_ == 1 ? d0 + 1 : d0;  // (W: kilobytes, above any message's buffer)
    const MatD wa = MatD::Random(sh.rows, dw), wb = MatD::Random(sh.rows, dw);
    MatD ga(sh.rows, dw), gb(sh.rows, dw);
    double dt = 0;
    contrastive::Workspace<double> ws;
    const std::size_t lo = static_cast<std::size_t>(2 * n * d0) * sizeof(double);
    fail_malloc::arm(0, lo, lo + static_cast<std::size_t>(2 * n) * sizeof(double) + 128, true);
    CHECK_THROWS_WITH(loss.value_and_grad(wa, wb, ga, gb, &dt, ws, call),
                      Contains("'call.process_group'") && Contains("dimension d"));
    fail_malloc::armed = false;
    CHECK(fail_malloc::seen.load() == 0);
  }
#endif
}

#if CONTRASTIVE_TEST_FAIL_MALLOC
TEST_CASE("a ProcessGroup that one process cannot size throws on every process", "[mpi]") {
  // Its scratch (an int per process, twice) is sized before the collective
  // dup and a failure is all-reduced after it: no process is left with a
  // group the others do not have.
  for (const int failing : {0, procs_ - 1}) {
    INFO("process " << failing << " fails; this is process " << rank_);
    const std::size_t bytes = sizeof(int) * static_cast<std::size_t>(procs_);
    if (rank_ == failing) {
      fail_malloc::arm(0, bytes, bytes, true);
      CHECK_THROWS_AS(contrastive::mpi::ProcessGroup(MPI_COMM_WORLD), std::bad_alloc);
      fail_malloc::armed = false;
      CHECK(fail_malloc::seen.load() >= 1);
    } else {
      CHECK_THROWS_WITH(contrastive::mpi::ProcessGroup(MPI_COMM_WORLD),
                        Contains("1 of " + std::to_string(procs_) + " processes could not allocate"));
    }
    // Every process left at the same collective: a group made now works.
    contrastive::mpi::ProcessGroup group(MPI_COMM_WORLD);
    double one = 1;
    group.all_reduce(&one, 1, contrastive::ProcessGroup::Op::Sum);
    CHECK(one == static_cast<double>(procs_));
  }
}
#endif

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &procs_);
  Catch::Session session;
  int failed = session.run(argc, argv);
  int worst = 0;
  MPI_Allreduce(&failed, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank_ == 0) std::printf("test_mpi: %d processes, %s\n", procs_, worst == 0 ? "all passed" : "FAILED");
  MPI_Finalize();
  return worst == 0 ? 0 : 1;
}
