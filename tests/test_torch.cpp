// The libtorch adapter (contrastive/torch.hpp) against libtorch's own
// autograd of the same formulas written with torch ops, in float64 (values
// and every gradient to 1e-10): the InfoNCE presets with and without
// instance ids, SupCon, SigLIP with t and b as tensors, WithVRNS, sampled
// negatives, explicit negative keys (shared and per query), Reduction::None
// with upstream gradients of both signs, weights that receive a gradient;
// strided inputs against contiguous ones; float32 against float64; error
// cases; no-grad, retain_graph, double backward, threads; and the README's
// libtorch snippet, compiled here so that it cannot drift.
//
// Built only when libtorch is found, and never in the sanitizer build
// (tests/CMakeLists.txt): libtorch itself is not instrumented.
#include "readme_torch_includes.hpp"  // the README snippet's #include lines (generated)

#include <torch/torch.h>

#include <contrastive/torch.hpp>

// libtorch brings glog, whose CHECK aborts the process; Catch2's CHECK (an
// assertion that reports and continues) must be the one in force here.
#undef CHECK
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <vector>

namespace F = torch::nn::functional;
using Catch::Matchers::Contains;
using contrastive::Reduction;
using contrastive::tch::Options;
using Tensors = std::vector<torch::Tensor>;

namespace {

const double kInf = std::numeric_limits<double>::infinity();

torch::Tensor normalize(const torch::Tensor& z) {
  return F::normalize(z, F::NormalizeFuncOptions().p(2).dim(1).eps(1e-12));
}

torch::Tensor reduce(const torch::Tensor& l, Reduction r) {
  if (r == Reduction::Mean) return l.mean();
  if (r == Reduction::Sum) return l.sum();
  return l;
}

/// Rows of Gaussian entries with norms spread over [e^-2, e^2], float64.
torch::Tensor uneven(int64_t n, int64_t d) {
  return torch::randn({n, d}, torch::kDouble) * torch::empty({n, 1}, torch::kDouble).uniform_(-2.0, 2.0).exp();
}

/// Pairs (i, j), j != i, of equal ids (none without ids).
torch::Tensor same_id(int64_t n, const torch::Tensor& ids) {
  if (!ids.defined()) return torch::zeros({n, n}, torch::kBool);
  return (ids.view({-1, 1}) == ids.view({1, -1})) & ~torch::eye(n, torch::kBool);
}

/// The InfoNCE family (Def. 3.1) over the stacked batch W = [U; V]: every
/// anchor's log-sum-exp over its row of W W^T / tau plus an additive offset
/// (log c for a negative, 0 for the positive when it is in the denominator,
/// -inf for everything else: itself, masked pairs, removed terms), minus
/// its positive logit.
torch::Tensor family_reference(const torch::Tensor& za, const torch::Tensor& zb, const torch::Tensor& tau,
                               const contrastive::InfoNCEFamilyParams& p, const torch::Tensor& ids,
                               Reduction r = Reduction::Mean) {
  const int64_t n = za.size(0);
  const torch::Tensor w = torch::cat({normalize(za), normalize(zb)}, 0);
  const torch::Tensor logits = w.matmul(w.t()) / tau;
  const torch::Tensor eye = torch::eye(n, torch::kBool), same = same_id(n, ids);
  const auto block = [&](double c, bool cross) {
    torch::Tensor b = torch::full({n, n}, c > 0 ? std::log(c) : -kInf, torch::kDouble);
    b.masked_fill_(same, -kInf);
    b.masked_fill_(eye, cross && p.positive_in_denominator ? 0.0 : -kInf);
    return b;
  };
  const torch::Tensor cross = block(p.cross_weight, true), within = block(p.within_weight, false);
  const torch::Tensor offset = torch::cat({torch::cat({within, cross}, 1), torch::cat({cross, within}, 1)}, 0);
  const torch::Tensor partner = torch::cat({torch::arange(n, 2 * n), torch::arange(0, n)});
  torch::Tensor l = torch::logsumexp(logits + offset, 1) - logits.gather(1, partner.view({-1, 1})).squeeze(1);
  if (p.direction == contrastive::Direction::OneWay) l = l.slice(0, 0, n);
  return reduce(l, r);
}

/// CLIP as open_clip writes it: the mean of the two cross entropies of U V^T / tau.
torch::Tensor clip_peer(const torch::Tensor& za, const torch::Tensor& zb, const torch::Tensor& tau) {
  const torch::Tensor logits = normalize(za).matmul(normalize(zb).t()) / tau;
  const torch::Tensor labels = torch::arange(za.size(0));
  return 0.5 * (F::cross_entropy(logits, labels) + F::cross_entropy(logits.t(), labels));
}

/// NT-Xent as SimCLR writes it: one cross entropy over [U; V] [U; V]^T / tau
/// with the diagonal removed, the other view as target.
torch::Tensor ntxent_peer(const torch::Tensor& za, const torch::Tensor& zb, const torch::Tensor& tau) {
  const int64_t n = za.size(0);
  const torch::Tensor w = torch::cat({normalize(za), normalize(zb)}, 0);
  const torch::Tensor logits = (w.matmul(w.t()) / tau).masked_fill(torch::eye(2 * n, torch::kBool), -kInf);
  return F::cross_entropy(logits, torch::cat({torch::arange(n, 2 * n), torch::arange(0, n)}));
}

/// SupCon as pytorch-metric-learning's SupConLoss on cat(za, zb) with labels cat(y, y).
torch::Tensor supcon_reference(const torch::Tensor& za, const torch::Tensor& zb, const torch::Tensor& tau,
                               const torch::Tensor& labels) {
  const int64_t m = 2 * za.size(0);
  const torch::Tensor w = torch::cat({normalize(za), normalize(zb)}, 0);
  const torch::Tensor y = torch::cat({labels, labels});
  const torch::Tensor eye = torch::eye(m, torch::kBool);
  const torch::Tensor logits = w.matmul(w.t()) / tau;
  const torch::Tensor log_prob = logits - torch::logsumexp(logits.masked_fill(eye, -kInf), 1, true);
  const torch::Tensor positive = ((y.view({-1, 1}) == y.view({1, -1})) & ~eye).to(torch::kDouble);
  return (-(positive * log_prob.masked_fill(eye, 0.0)).sum(1) / positive.sum(1)).mean();
}

/// SigLIP as open_clip's SigLipLoss (one process), pairs of equal ids dropped.
torch::Tensor siglip_reference(const torch::Tensor& za, const torch::Tensor& zb, const torch::Tensor& t,
                               const torch::Tensor& b, const torch::Tensor& ids) {
  const int64_t n = za.size(0);
  const torch::Tensor logits = t * normalize(za).matmul(normalize(zb).t()) + b;
  const torch::Tensor labels = 2 * torch::eye(n, torch::kDouble) - 1;
  const torch::Tensor keep = (~same_id(n, ids)).to(torch::kDouble);
  return -(F::logsigmoid(labels * logits) * keep).sum() / static_cast<double>(n);
}

/// NT-Xent + lambda * VRNS: the mean over cross-view negative pairs of (s - target)^2.
torch::Tensor ntxent_vrns_reference(const torch::Tensor& za, const torch::Tensor& zb, const torch::Tensor& tau,
                                    double target, double lambda, const torch::Tensor& ids) {
  const int64_t n = za.size(0);
  const torch::Tensor s = normalize(za).matmul(normalize(zb).t());
  const torch::Tensor negative = ids.defined() ? ids.view({-1, 1}) != ids.view({1, -1}) : ~torch::eye(n, torch::kBool);
  const torch::Tensor vrns = (s.masked_select(negative) - target).pow(2).mean();
  return family_reference(za, zb, tau, contrastive::NTXent<double>().params(), ids) + lambda * vrns;
}

/// InfoNCE with explicit negative keys as info-nce-pytorch writes it: a cross
/// entropy over [positive logit, negative logits] with target 0.
torch::Tensor negatives_reference(const torch::Tensor& q, const torch::Tensor& p, const torch::Tensor& keys,
                                  const torch::Tensor& tau, bool shared, Reduction r) {
  const torch::Tensor u = normalize(q), v = normalize(p), k = normalize(keys);
  const torch::Tensor pos = (u * v).sum(1, true);
  const torch::Tensor neg =
      shared ? u.matmul(k.t()) : (u.unsqueeze(1) * k.view({q.size(0), -1, q.size(1)})).sum(2);
  const torch::Tensor logits = torch::cat({pos, neg}, 1) / tau;
  const torch::Tensor l = torch::logsumexp(logits, 1) - logits.select(1, 0);
  return reduce(l, r);
}

/// f's value and its gradients with respect to every input (leaves made
/// from `values`), through torch::autograd::grad, with `upstream` as the
/// gradient of a non-scalar output.  Undefined where f does not depend on
/// an input.
Tensors value_and_grads(const std::function<torch::Tensor(const Tensors&)>& f, const Tensors& values,
                        const torch::Tensor& upstream = {}) {
  Tensors leaves;
  for (const auto& v : values) leaves.push_back(v.detach().clone().requires_grad_(true));
  const torch::Tensor out = f(leaves);
  Tensors r = {out.detach()};
  const Tensors g = torch::autograd::grad({out}, leaves, {upstream.defined() ? upstream : torch::ones_like(out)},
                                          /*retain_graph=*/false, /*create_graph=*/false, /*allow_unused=*/true);
  r.insert(r.end(), g.begin(), g.end());
  return r;
}

/// Max-norm closeness: |a - b| <= rel * max(|b|, floor).
bool close(const torch::Tensor& a, const torch::Tensor& b, double rel, double floor = 1e-6) {
  if (!a.defined() || !b.defined() || a.sizes() != b.sizes()) return false;
  const torch::Tensor ad = a.to(torch::kDouble), bd = b.to(torch::kDouble);
  const double scale = std::max(bd.numel() ? bd.abs().max().item<double>() : 0.0, floor);
  const double diff = ad.numel() ? (ad - bd).abs().max().item<double>() : 0.0;
  return diff <= rel * scale;
}

void check_all(const Tensors& got, const Tensors& want, double rel = 1e-10) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("output " << i << " (0: value, then the gradient of each input)");
    REQUIRE(got[i].defined() == want[i].defined());
    if (got[i].defined()) CHECK(close(got[i], want[i], rel));
  }
}

torch::Tensor scalar(double v) { return torch::scalar_tensor(v, torch::kDouble); }

/// Instance ids with collisions (rows 0, n/2, n-1 share id 0; 1 and n-2 share 1).
torch::Tensor colliding_ids(int64_t n) {
  torch::Tensor ids = torch::arange(n);
  ids[n / 2] = 0;
  ids[n - 1] = 0;
  ids[n - 2] = 1;
  return ids;
}

template <typename Loss>
void check_preset(const Loss& loss, const torch::Tensor& ids, int64_t n, int64_t d) {
  const Tensors in = {uneven(n, d), uneven(n, d), scalar(0.3)};
  const auto p = loss.params();
  const auto got = value_and_grads(
      [&](const Tensors& v) {
        Options o;
        o.with_temperature(v[2]);
        if (ids.defined()) o.with_ids(ids);
        return contrastive::tch::apply(loss, v[0], v[1], o);
      },
      in);
  const auto want = value_and_grads([&](const Tensors& v) { return family_reference(v[0], v[1], v[2], p, ids); }, in);
  check_all(got, want);
}

}  // namespace

TEST_CASE("torch: the references agree with the peers' formulations", "[torch][reference]") {
  torch::manual_seed(1);
  const Tensors in = {uneven(9, 5), uneven(9, 5), scalar(0.2)};
  const auto family = [](const contrastive::InfoNCEFamilyParams& p) {
    return [p](const Tensors& v) { return family_reference(v[0], v[1], v[2], p, {}); };
  };
  check_all(value_and_grads(family(contrastive::CLIP<double>().params()), in),
            value_and_grads([](const Tensors& v) { return clip_peer(v[0], v[1], v[2]); }, in), 1e-12);
  check_all(value_and_grads(family(contrastive::NTXent<double>().params()), in),
            value_and_grads([](const Tensors& v) { return ntxent_peer(v[0], v[1], v[2]); }, in), 1e-12);
  // SupCon with distinct labels is NT-Xent.
  check_all(value_and_grads([](const Tensors& v) { return supcon_reference(v[0], v[1], v[2], torch::arange(9)); }, in),
            value_and_grads([](const Tensors& v) { return ntxent_peer(v[0], v[1], v[2]); }, in), 1e-12);
}

TEST_CASE("torch: the InfoNCE presets match libtorch autograd, with and without instance ids", "[torch][reference]") {
  torch::manual_seed(2);
  for (const bool with_ids : {false, true}) {
    for (const int64_t n : {11, 300}) {  // 300: several tiles of the engine
      INFO((with_ids ? "with ids, n = " : "no ids, n = ") << n);
      const torch::Tensor ids = with_ids ? colliding_ids(n) : torch::Tensor();
      check_preset(contrastive::InfoNCE<double>(), ids, n, 6);
      check_preset(contrastive::CLIP<double>(), ids, n, 6);
      check_preset(contrastive::NTXent<double>(), ids, n, 6);
      check_preset(contrastive::DCL<double>(), ids, n, 6);
      check_preset(contrastive::DHEL<double>(), ids, n, 6);
      check_preset(contrastive::InfoNCEFamily<double>({0.5, 0.3, 2.0, true, contrastive::Direction::OneWay}), ids, n, 6);
    }
  }
}

TEST_CASE("torch: SupCon, SigLIP, WithVRNS and sampled negatives match libtorch autograd", "[torch][reference]") {
  torch::manual_seed(3);
  const int64_t n = 12, d = 5;
  SECTION("SupCon with labels") {
    const torch::Tensor labels = torch::tensor({0, 1, 2, 0, 1, 2, 0, 3, 3, 1, 0, 4});
    const Tensors in = {uneven(n, d), uneven(n, d), scalar(0.15)};
    check_all(value_and_grads(
                  [&](const Tensors& v) {
                    return contrastive::tch::apply(contrastive::SupCon<double>(), v[0], v[1],
                                                   Options{}.with_temperature(v[2]).with_labels(labels));
                  },
                  in),
              value_and_grads([&](const Tensors& v) { return supcon_reference(v[0], v[1], v[2], labels); }, in));
  }
  SECTION("SigLIP with t, b as tensors and instance ids") {
    const torch::Tensor ids = colliding_ids(n);
    const Tensors in = {uneven(n, d), uneven(n, d), scalar(7.0), scalar(-3.0)};
    check_all(value_and_grads(
                  [&](const Tensors& v) {
                    return contrastive::tch::apply(contrastive::SigLIP<double>(), v[0], v[1],
                                                   Options{}.with_logit_scale(v[2]).with_logit_bias(v[3]).with_ids(ids));
                  },
                  in),
              value_and_grads([&](const Tensors& v) { return siglip_reference(v[0], v[1], v[2], v[3], ids); }, in));
    // Only the bias as a tensor: the loss's own t is used and no dL/dt is formed.
    const Tensors in_b = {in[0], in[1], in[3]};
    check_all(value_and_grads(
                  [&](const Tensors& v) {
                    return contrastive::tch::apply(contrastive::SigLIP<double>(7.0, 0.0), v[0], v[1],
                                                   Options{}.with_logit_bias(v[2]));
                  },
                  in_b),
              value_and_grads([&](const Tensors& v) { return siglip_reference(v[0], v[1], scalar(7.0), v[2], {}); },
                              in_b));
  }
  SECTION("NT-Xent + VRNS, with and without instance ids") {
    for (const bool with_ids : {false, true}) {
      const torch::Tensor ids = with_ids ? colliding_ids(n) : torch::Tensor();
      const Tensors in = {uneven(n, d), uneven(n, d), scalar(0.4)};
      contrastive::VRNSParams vp;
      vp.dataset_size = 20;
      const contrastive::WithVRNS<double> loss(contrastive::NTXent<double>(0.5), vp, 3.0);
      check_all(value_and_grads(
                    [&](const Tensors& v) {
                      Options o;
                      o.with_temperature(v[2]);
                      if (with_ids) o.with_ids(ids);
                      return contrastive::tch::apply(loss, v[0], v[1], o);
                    },
                    in),
                value_and_grads(
                    [&](const Tensors& v) { return ntxent_vrns_reference(v[0], v[1], v[2], -1.0 / 19.0, 3.0, ids); },
                    in));
    }
  }
  SECTION("sampled negatives with k above every anchor's candidates are the full DCL") {
    contrastive::SamplingParams sp;
    sp.num_negatives = 4 * n;
    const contrastive::SampledNegatives<double> loss(contrastive::DCL<double>().params(), sp);
    const Tensors in = {uneven(n, d), uneven(n, d), scalar(0.25)};
    check_all(value_and_grads(
                  [&](const Tensors& v) {
                    return contrastive::tch::apply(loss, v[0], v[1], Options{}.with_temperature(v[2]));
                  },
                  in),
              value_and_grads(
                  [&](const Tensors& v) {
                    return family_reference(v[0], v[1], v[2], contrastive::DCL<double>().params(), {});
                  },
                  in));
  }
}

TEST_CASE("torch: explicit negative keys, shared and per query, every reduction", "[torch][reference][negatives]") {
  torch::manual_seed(4);
  const int64_t n = 7, d = 5, k = 3;
  for (const bool shared : {true, false}) {
    for (const Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
      INFO((shared ? "shared" : "per query") << ", reduction " << static_cast<int>(r));
      const contrastive::InfoNCEWithNegatives<double> loss(
          {0.1, shared ? contrastive::NegativeMode::Shared : contrastive::NegativeMode::PerQuery});
      const Tensors in = {uneven(n, d), uneven(n, d), uneven(shared ? 10 : n * k, d), scalar(0.2)};
      const torch::Tensor upstream =
          r == Reduction::None ? torch::randn({n}, torch::kDouble) : torch::Tensor();  // both signs
      check_all(value_and_grads(
                    [&](const Tensors& v) {
                      return contrastive::tch::apply(loss, v[0], v[1], v[2],
                                                     Options{}.with_temperature(v[3]).with_reduction(r));
                    },
                    in, upstream),
                value_and_grads([&](const Tensors& v) { return negatives_reference(v[0], v[1], v[2], v[3], shared, r); },
                                in, upstream));
    }
  }
  SECTION("keys that do not require grad get none, the rest is unchanged") {
    const contrastive::InfoNCEWithNegatives<double> loss({0.1});
    const torch::Tensor keys = uneven(9, d);
    const Tensors in = {uneven(n, d), uneven(n, d)};
    const auto got = value_and_grads(
        [&](const Tensors& v) { return contrastive::tch::apply(loss, v[0], v[1], keys); }, in);
    check_all(got, value_and_grads(
                       [&](const Tensors& v) {
                         return negatives_reference(v[0], v[1], keys, scalar(0.1), true, Reduction::Mean);
                       },
                       in));
    CHECK_FALSE(keys.grad().defined());
  }
  SECTION("no negative keys at all (an empty memory bank): loss 0, zero gradients") {
    const contrastive::InfoNCEWithNegatives<double> loss({0.1});
    const Tensors got = value_and_grads(
        [&](const Tensors& v) { return contrastive::tch::apply(loss, v[0], v[1], v[2]); },
        {uneven(n, d), uneven(n, d), torch::empty({0, d}, torch::kDouble)});
    CHECK(got[0].item<double>() == 0.0);
    CHECK(got[1].abs().max().item<double>() == 0.0);
    CHECK(got[2].abs().max().item<double>() == 0.0);
    CHECK(got[3].sizes() == torch::IntArrayRef({0, d}));
  }
}

TEST_CASE("torch: Reduction::None and Sum, weights that receive a gradient", "[torch][reduction]") {
  torch::manual_seed(5);
  const int64_t n = 10, d = 4;
  const contrastive::NTXent<double> loss;
  const auto p = loss.params();
  const torch::Tensor ids = colliding_ids(n);
  const Tensors in = {uneven(n, d), uneven(n, d), scalar(0.3)};
  const auto adapter = [&](Reduction r) {
    return [&, r](const Tensors& v) {
      return contrastive::tch::apply(loss, v[0], v[1], Options{}.with_temperature(v[2]).with_ids(ids).with_reduction(r));
    };
  };
  const auto reference = [&](Reduction r) {
    return [&, r](const Tensors& v) { return family_reference(v[0], v[1], v[2], p, ids, r); };
  };
  SECTION("None: per-anchor losses, backward with an upstream gradient of both signs, of one sign, zero") {
    const torch::Tensor mixed = torch::randn({2 * n}, torch::kDouble);
    REQUIRE((mixed > 0).any().item<bool>());
    REQUIRE((mixed < 0).any().item<bool>());
    for (const torch::Tensor& up : {mixed, mixed.abs() * 1e6, -mixed.abs() * 1e-7, torch::zeros({2 * n}, torch::kDouble)}) {
      check_all(value_and_grads(adapter(Reduction::None), in, up), value_and_grads(reference(Reduction::None), in, up));
    }
    // An expanded upstream gradient (stride 0): what per.sum().backward() passes.
    check_all(value_and_grads([&](const Tensors& v) { return adapter(Reduction::None)(v).sum(); }, in),
              value_and_grads(reference(Reduction::Sum), in));
  }
  SECTION("Sum") {
    check_all(value_and_grads(adapter(Reduction::Sum), in), value_and_grads(reference(Reduction::Sum), in));
  }
  SECTION("anchor weights as a tensor that requires grad, Mean and Sum") {
    const Tensors inw = {in[0], in[1], in[2], torch::rand({2 * n}, torch::kDouble) + 0.5};
    for (const Reduction r : {Reduction::Mean, Reduction::Sum}) {
      const double scale = r == Reduction::Mean ? 1.0 / static_cast<double>(2 * n) : 1.0;
      check_all(value_and_grads(
                    [&](const Tensors& v) {
                      return contrastive::tch::apply(
                          loss, v[0], v[1],
                          Options{}.with_temperature(v[2]).with_ids(ids).with_weights(v[3]).with_reduction(r));
                    },
                    inw),
                value_and_grads(
                    [&](const Tensors& v) {
                      return (v[3] * family_reference(v[0], v[1], v[2], p, ids, Reduction::None)).sum() * scale;
                    },
                    inw));
    }
  }
}

TEST_CASE("torch: strided inputs give what contiguous ones give, without a copy", "[torch][strided]") {
  torch::manual_seed(6);
  const int64_t n = 9, d = 5;
  const contrastive::CLIP<double> loss(0.2);
  const torch::Tensor za = uneven(n, d), zb = uneven(n, d);
  const auto plain = value_and_grads([&](const Tensors& v) { return contrastive::tch::apply(loss, v[0], v[1]); },
                                     {za, zb});
  // za as the transposed view of a d x n tensor, zb as a slice (every other
  // row, columns 1 .. d) of a larger tensor.
  const torch::Tensor za_t = za.t().contiguous();
  torch::Tensor big = torch::randn({2 * n, d + 3}, torch::kDouble);
  big.slice(0, 0, 2 * n, 2).narrow(1, 1, d).copy_(zb);
  const auto strided = value_and_grads(
      [&](const Tensors& v) {
        const torch::Tensor a = v[0].t(), b = v[1].slice(0, 0, 2 * n, 2).narrow(1, 1, d);
        REQUIRE_FALSE(a.is_contiguous());
        REQUIRE_FALSE(b.is_contiguous());
        return contrastive::tch::apply(loss, a, b);
      },
      {za_t, big});
  CHECK(close(strided[0], plain[0], 1e-14));
  CHECK(close(strided[1].t(), plain[1], 1e-14));
  CHECK(close(strided[2].slice(0, 0, 2 * n, 2).narrow(1, 1, d), plain[2], 1e-14));
  // Rows and columns the views do not cover get no gradient.
  CHECK(strided[2].slice(0, 1, 2 * n, 2).abs().max().item<double>() == 0.0);
  CHECK(strided[2].narrow(1, 0, 1).abs().max().item<double>() == 0.0);
  // Expanded rows (stride 0) are read in place too.
  const torch::Tensor row = torch::randn({1, d}, torch::kDouble), rows = row.expand({n, d});
  CHECK(rows.stride(0) == 0);
  const double v = contrastive::tch::apply(loss, rows + 0.0 * zb, zb).item<double>();
  CHECK(contrastive::tch::apply(loss, rows, zb).item<double>() == Approx(v).epsilon(1e-14));
}

namespace {
/// The library's own call on the tensors' values: value, dL/dza, dL/dzb.
template <typename Loss>
Tensors direct(const Loss& loss, const torch::Tensor& za, const torch::Tensor& zb,
               const contrastive::CallOptions<double>& call = {}) {
  using RowMatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const torch::Tensor a = za.contiguous(), b = zb.contiguous();
  const RowMatD ea = Eigen::Map<const RowMatD>(a.data_ptr<double>(), a.size(0), a.size(1));
  const RowMatD eb = Eigen::Map<const RowMatD>(b.data_ptr<double>(), b.size(0), b.size(1));
  const auto r = loss.value_and_grad(ea, eb, call);
  torch::Tensor ga = torch::empty_like(a), gb = torch::empty_like(b);
  Eigen::Map<RowMatD>(ga.data_ptr<double>(), ga.size(0), ga.size(1)) = r.grad_a;
  Eigen::Map<RowMatD>(gb.data_ptr<double>(), gb.size(0), gb.size(1)) = r.grad_b;
  return {torch::scalar_tensor(r.value, torch::kDouble), ga, gb};
}

template <typename Loss>
void expect_direct(const Loss& loss, const torch::Tensor& za, const torch::Tensor& zb, const Options& o = {},
                   const contrastive::CallOptions<double>& call = {}) {
  INFO(loss.name());
  const auto got =
      value_and_grads([&](const Tensors& v) { return contrastive::tch::apply(loss, v[0], v[1], o); }, {za, zb});
  const auto want = direct(loss, za, zb, call);
  CHECK(close(got[0], want[0], 1e-14));
  CHECK(close(got[1], want[1], 1e-14));
  CHECK(close(got[2], want[2], 1e-14));
}
}  // namespace

TEST_CASE("torch: the losses added since the adapter run through it unchanged", "[torch][losses]") {
  torch::manual_seed(11);
  const int64_t n = 8, d = 5;
  const torch::Tensor za = uneven(n, d), zb = uneven(n, d);
  const torch::Tensor ids = torch::tensor({0, 1, 1, 2, 3, 3, 3, 4}, torch::kLong);
  const std::vector<Eigen::Index> eids = {0, 1, 1, 2, 3, 3, 3, 4};
  auto with_ids = contrastive::CallOptions<double>{}.with_ids(eids);
  expect_direct(contrastive::DCLW<double>(0.2, 0.5), za, zb);
  contrastive::DebiasedParams dp;
  dp.tau_plus = 0.1;
  dp.beta = 1.0;
  expect_direct(contrastive::Debiased<double>(dp), za, zb);
  expect_direct(contrastive::MultiPositive<double>(), za, zb, Options{}.with_ids(ids), with_ids);
  auto smooth = contrastive::CLIP<double>(0.1).params();
  smooth.label_smoothing = 0.1;
  expect_direct(contrastive::InfoNCEFamily<double>(smooth), za, zb);
  expect_direct(contrastive::Alignment<double>(), za, zb);
  expect_direct(contrastive::Uniformity<double>(), za, zb);
  // Their scalar parameters are not temperatures: the adapter says so.
  CHECK_THROWS_WITH(contrastive::tch::apply(contrastive::Uniformity<double>(), za, zb, Options{}.with_temperature(0.5)),
                    Contains("'options.temperature'"));
}

TEST_CASE("torch: float32 agrees with float64 to 1e-4", "[torch][float]") {
  torch::manual_seed(7);
  const int64_t n = 40, d = 16;
  const torch::Tensor za = torch::randn({n, d}, torch::kDouble), zb = za + 0.5 * torch::randn({n, d}, torch::kDouble);
  const auto run = [&](auto loss, torch::ScalarType t) {
    return value_and_grads(
        [&](const Tensors& v) { return contrastive::tch::apply(loss, v[0], v[1], Options{}.with_temperature(v[2])); },
        {za.to(t), zb.to(t), scalar(0.1).to(t)});
  };
  const auto check = [](const Tensors& f, const Tensors& dbl) {
    REQUIRE(f.size() == dbl.size());
    for (std::size_t i = 0; i < f.size(); ++i) {
      INFO("output " << i);
      CHECK(f[i].scalar_type() == torch::kFloat);
      CHECK(close(f[i], dbl[i], 1e-4));
    }
  };
  check(run(contrastive::NTXent<float>(), torch::kFloat), run(contrastive::NTXent<double>(), torch::kDouble));
  check(run(contrastive::CLIP<float>(), torch::kFloat), run(contrastive::CLIP<double>(), torch::kDouble));
  check(run(contrastive::DHEL<float>(), torch::kFloat), run(contrastive::DHEL<double>(), torch::kDouble));
}

TEST_CASE("torch: bad arguments throw naming the argument, before anything is computed", "[torch][bad-input]") {
  torch::manual_seed(8);
  const int64_t n = 6, d = 3;
  const torch::Tensor za = torch::randn({n, d}, torch::kDouble).requires_grad_(true), zb = torch::randn({n, d}, torch::kDouble);
  const contrastive::NTXent<double> loss;
  contrastive::tch::release_thread_workspaces();
  const auto untouched = [&] {
    CHECK(contrastive::tch::thread_workspace<double>().bytes() == 0);
    CHECK_FALSE(za.grad().defined());
  };
  const auto apply = [&](const torch::Tensor& a, const torch::Tensor& b, const Options& o = {}) {
    return contrastive::tch::apply(loss, a, b, o);
  };
  const torch::Tensor meta = torch::empty({n, d}, torch::TensorOptions().device(torch::kMeta).dtype(torch::kDouble));
  CHECK_THROWS_WITH(apply(meta, zb), Contains("contrastive::tch: argument 'za' is on meta") &&
                                         Contains("only CPU tensors are supported"));
  CHECK_THROWS_WITH(apply(za, meta), Contains("argument 'zb' is on meta"));
  CHECK_THROWS_WITH(apply(za, zb.to(torch::kFloat)),
                    Contains("'zb' has dtype float32 but contrastive::NTXent<double> computes in float64"));
  CHECK_THROWS_WITH(apply(za.to(torch::kInt), zb), Contains("'za' has dtype Int; only float32 and float64"));
  CHECK_THROWS_WITH(apply(za, zb.to(torch::kHalf)), Contains("'zb' has dtype Half"));
  CHECK_THROWS_WITH(apply(za.view({2, 3, 3}), zb), Contains("'za' has shape [2, 3, 3]; expected 2 dimensions"));
  CHECK_THROWS_WITH(apply(za, zb.to_sparse()), Contains("'zb' is not a dense"));
  CHECK_THROWS_WITH(apply(za, torch::Tensor()), Contains("'zb' is an undefined tensor"));
  CHECK_THROWS_WITH(apply(za, zb, Options{}.with_ids(torch::arange(n).to(torch::kInt))),
                    Contains("'options.instance_ids' has dtype Int; expected int64"));
  CHECK_THROWS_WITH(apply(za, zb, Options{}.with_ids(torch::arange(n).view({2, 3}))),
                    Contains("'options.instance_ids' has shape [2, 3]"));
  CHECK_THROWS_WITH(apply(za, zb, Options{}.with_temperature(torch::ones({2}, torch::kDouble))),
                    Contains("'options.temperature' has shape [2]; expected a single element"));
  CHECK_THROWS_WITH(apply(za, zb, Options{}.with_temperature(torch::ones({}, torch::kLong))),
                    Contains("'options.temperature' has dtype Long"));
  CHECK_THROWS_WITH(apply(za, zb, Options{}.with_logit_scale(2.0)), Contains("'options.logit_scale' is given but"));
  CHECK_THROWS_WITH(apply(za, zb, Options{}.with_weights(torch::ones({2 * n}, torch::kFloat))),
                    Contains("'options.anchor_weights' has dtype float32"));
  CHECK_THROWS_WITH(apply(za, zb, Options{}.with_weights(torch::ones({2 * n}, torch::kDouble)).with_reduction(Reduction::None)),
                    Contains("'options.anchor_weights' is given with Reduction::None"));
  CHECK_THROWS_WITH(contrastive::tch::apply(contrastive::Spectral<double>(), za, zb, Options{}.with_temperature(0.5)),
                    Contains("'options.temperature' is given but contrastive::Spectral has no temperature"));
  CHECK_THROWS_WITH(contrastive::tch::apply(contrastive::SigLIP<double>(), za, zb, Options{}.with_temperature(0.5)),
                    Contains("'options.temperature' is given but contrastive::SigLIP"));
  CHECK_THROWS_WITH(contrastive::tch::apply(contrastive::InfoNCEWithNegatives<double>(), za, zb, za.to(torch::kFloat)),
                    Contains("'negative_keys' has dtype float32"));
  untouched();
  // The loss's own checks propagate with their messages.
  torch::Tensor bad = zb.clone();
  bad[2][1] = std::nan("");
  CHECK_THROWS_WITH(apply(za, bad), Contains("contrastive::NTXent: argument 'zb'") && Contains("NaN"));
  CHECK_THROWS_WITH(apply(za, zb, Options{}.with_ids(torch::arange(n + 1))), Contains("'call.instance_ids'"));
  CHECK_THROWS_WITH(apply(za, zb, Options{}.with_temperature(0.0)), Contains("contrastive::NTXent: field 'temperature'"));
  CHECK_THROWS_WITH(apply(za, zb.narrow(0, 0, n - 1)), Contains("'zb'"));
  CHECK_THROWS_WITH(contrastive::tch::apply(contrastive::SupCon<double>(), za, zb), Contains("'call.labels'"));
  CHECK_THROWS_WITH(contrastive::tch::apply(contrastive::SupCon<double>(), za, zb, Options{}.with_reduction(Reduction::None)),
                    Contains("'call.reduction'"));
  CHECK_THROWS_WITH(contrastive::tch::apply(contrastive::Combined<double>({contrastive::LossTerm::make_spectral({})}), za,
                                            zb, Options{}.with_temperature(0.5)),
                    Contains("field 'temperature' does not exist"));
  CHECK_FALSE(za.grad().defined());
  // A non-finite upstream gradient of per-anchor losses is named.
  const torch::Tensor per = apply(za, zb, Options{}.with_reduction(Reduction::None));
  CHECK_THROWS_WITH(per.backward(torch::full({2 * n}, std::nan(""), torch::kDouble)), Contains("'grad_output'"));
}

TEST_CASE("torch: no grad, retain_graph, a second backward, double backward", "[torch][autograd]") {
  torch::manual_seed(9);
  const int64_t n = 8, d = 4;
  const contrastive::NTXent<double> loss;
  const torch::Tensor za = torch::randn({n, d}, torch::kDouble).requires_grad_(true);
  const torch::Tensor zb = torch::randn({n, d}, torch::kDouble);
  const double value = contrastive::tch::apply(loss, za.detach(), zb).item<double>();
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor l = contrastive::tch::apply(loss, za, zb);
    CHECK_FALSE(l.requires_grad());
    CHECK(l.item<double>() == value);
  }
  CHECK_FALSE(contrastive::tch::apply(loss, za.detach(), zb).requires_grad());
  // A plain double temperature, a constant tensor and the loss's own agree exactly.
  {
    const auto own = value_and_grads(
        [&](const Tensors& v) { return contrastive::tch::apply(contrastive::NTXent<double>(0.3), v[0], v[1]); }, {za, zb});
    const auto as_double = value_and_grads(
        [&](const Tensors& v) { return contrastive::tch::apply(loss, v[0], v[1], Options{}.with_temperature(0.3)); },
        {za, zb});
    const auto as_tensor = value_and_grads(
        [&](const Tensors& v) {
          return contrastive::tch::apply(loss, v[0], v[1], Options{}.with_temperature(scalar(0.3)));
        },
        {za, zb});
    for (std::size_t i = 0; i < own.size(); ++i) {
      CHECK(torch::equal(as_double[i], own[i]));
      CHECK(torch::equal(as_tensor[i], own[i]));
    }
    CHECK_FALSE(torch::equal(own[0], value_and_grads([&](const Tensors& v) {
                                       return contrastive::tch::apply(loss, v[0], v[1]);
                                     }, {za, zb})[0]));  // tau 0.5: a different value
  }
  const torch::Tensor l = contrastive::tch::apply(loss, za, zb);
  REQUIRE(l.requires_grad());
  CHECK(l.item<double>() == Approx(value).epsilon(1e-15));
  CHECK(l.grad_fn()->name() == "contrastive::tch::LossBackward<contrastive::NTXent>");
  l.backward({}, /*retain_graph=*/true);
  const torch::Tensor once = za.grad().clone();
  l.backward();
  CHECK(close(za.grad(), 2 * once, 1e-15));
  CHECK_THROWS_WITH(l.backward(), Contains("a second time"));
  // create_graph: the gradient exists; differentiating it again throws.
  const torch::Tensor l2 = contrastive::tch::apply(loss, za, zb, Options{}.with_reduction(Reduction::Sum));
  const torch::Tensor g = torch::autograd::grad({l2}, {za}, {}, true, /*create_graph=*/true)[0];
  CHECK(close(g, once * static_cast<double>(2 * n), 1e-12));
  CHECK_THROWS_WITH(torch::autograd::grad({g.sum()}, {za}), Contains("double backward is not supported"));
}

TEST_CASE("torch: threads compute concurrently in their own workspaces", "[torch][threads]") {
  torch::manual_seed(10);
  const int64_t n = 24, d = 6;
  const contrastive::DCL<double> loss(0.2);
  Tensors a, b, want;
  for (int t = 0; t < 4; ++t) {
    a.push_back(uneven(n, d));
    b.push_back(uneven(n, d));
    want.push_back(value_and_grads([&](const Tensors& v) { return contrastive::tch::apply(loss, v[0], v[1]); },
                                   {a.back(), b.back()})[1]);
  }
  std::vector<Tensors> got(2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 10; ++rep) {
        const int k = (t + rep) % 4;
        torch::Tensor za = a[static_cast<std::size_t>(k)].clone().requires_grad_(true);
        contrastive::tch::apply(loss, za, b[static_cast<std::size_t>(k)]).backward();
        got[static_cast<std::size_t>(t)].push_back(za.grad());
      }
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 2; ++t)
    for (int rep = 0; rep < 10; ++rep)
      CHECK(torch::equal(got[static_cast<std::size_t>(t)][static_cast<std::size_t>(rep)],
                         want[static_cast<std::size_t>((t + rep) % 4)]));
}

TEST_CASE("torch: the README's libtorch snippet runs and learns the temperature", "[torch][readme]") {
  torch::manual_seed(11);
#include "readme_torch_snippet.inc"
  CHECK(std::isfinite(loss.item<float>()));
  REQUIRE(log_tau.grad().defined());
  CHECK(std::abs(log_tau.item<float>() - std::log(0.5f)) > 1e-4f);  // the temperature moved
}
