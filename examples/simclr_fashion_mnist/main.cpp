// SimCLR on Fashion-MNIST with the library's losses (README.md here).
//
// A small convolutional encoder (or, with --encoder mlp, an MLP) with a
// projection head is trained on two augmented views of each image; the loss
// and its exact gradient on the head outputs come from the library,
// everything else (augmentation, backpropagation, Adam) is in this
// directory.  The frozen encoder is then evaluated by linear probes and kNN
// beside raw pixels and the same encoder untrained, and the run is written
// as CSV for plot.py.  --study runs the batch-size x VRNS grid.
//
// Built with FMNIST_MPI (when the CMake target contrastive::mpi exists) it
// also trains data-parallel under mpiexec: every process makes the views and
// runs the network for its share of each global batch, the library's loss
// with the process group gives the global batch's loss and each process's
// rows' exact gradient, the parameter gradients are summed with one
// all-reduce, and every process makes the same update.  Rank 0 prints,
// evaluates and writes the files.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <contrastive/contrastive.hpp>
#ifdef FMNIST_MPI
#include <mpi.h>

#include <contrastive/mpi.hpp>
#endif

#include "augment.hpp"
#include "idx.hpp"
#include "net.hpp"
#include "evaluate.hpp"
#include "progress.hpp"
#include "train.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
double since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }

/// This process's rank (0 without MPI): only rank 0 prints usage and results.
int g_rank = 0;

/// Thrown to end the program with `code` (usage errors, --help), so that an
/// MPI run still finalises MPI on the way out.
struct ExitRequest {
  int code;
};

const char* kUsage =
    "usage: simclr_fashion_mnist [options]\n"
    "  --encoder NAME     cnn (default: conv 5x5x16 - pool - conv 3x3x32 - pool, 1568 features) or mlp (784-512-128)\n"
    "  --loss NAME        ntxent (default), infonce, clip, dcl, dhel\n"
    "  --tau T            temperature (default 0.2)\n"
    "  --lambda L         add L * VRNS variance penalty, N = training images used (default 0)\n"
    "  --batch B          pairs per step (default 256)\n"
    "  --epochs E         passes over the training images (default: cnn 2, mlp 5)\n"
    "  --train-subset N   training images used for contrastive training (default 60000 = all)\n"
    "  --lr LR            peak learning rate (default: cnn 2e-3, mlp 1e-3)\n"
    "  --schedule S       cosine (decay to 0 over the run; default for cnn) or constant (default for mlp)\n"
    "  --warmup W         steps of linear learning-rate warm-up (default 0)\n"
    "  --sgd              SGD with momentum 0.9 instead of Adam\n"
    "  --seed S           seed of initialisation, order and augmentations (default 1)\n"
    "  --threads T        threads for Eigen, the loss engine and the loops (default 0 = the cores not busy)\n"
    "  --probe-train N    training images for the linear probes (default 10000)\n"
    "  --knn-train N      training images for kNN (default 10000)\n"
    "  --knn-test N       test images for kNN (default 2000; the linear probes use all 10000)\n"
    "  --min-area A       smallest crop area fraction (default 1 = no crop, only the aspect stretch)\n"
    "  --shift P          largest shift of the crop box out of the image, pixels (default: cnn 1, mlp 0)\n"
    "  --noise S          pixel noise standard deviation (default 0.1)\n"
    "  --jitter J         brightness (+-J) and contrast (1 +- 1.6 J) jitter (default 0.1)\n"
    "  --erase P          probability of random erasing (default 0.5)\n"
    "  --wd W             weight decay (default 0)\n"
    "  --out DIR          where the CSV files for plot.py go (default: beside the executable)\n"
    "  --data DIR         data directory (default $FASHION_MNIST_DIR or /usr/share/datasets/fashion-mnist)\n"
#ifdef FMNIST_MPI
    "  under mpiexec -n P: data-parallel training, each process makes and runs 1/P of every batch\n"
#else
    "  (built without MPI: no data-parallel mode under mpiexec)\n"
#endif
    "  --study            run the batch {32,64,128,256} x lambda {0,30} grid instead\n"
    "  --study-seeds K    seeds per grid cell (default 3)\n"
    "  --study-samples S  images seen per run in the study, whatever the batch (default 120000)\n";

[[noreturn]] void usage_error(const std::string& msg) {
  if (g_rank == 0) std::fprintf(stderr, "simclr_fashion_mnist: %s\n%s", msg.c_str(), kUsage);
  throw ExitRequest{2};
}

/// --key value / --key=value options, validated as they are read.
class Args {
 public:
  Args(int argc, char** argv) {
    static const std::map<std::string, bool> known = {  // name -> takes a value
        {"loss", true},  {"tau", true},         {"lambda", true},    {"batch", true},       {"epochs", true},
        {"lr", true},    {"sgd", false},        {"seed", true},      {"threads", true},     {"train-subset", true},
        {"data", true},  {"probe-train", true}, {"knn-train", true}, {"knn-test", true},    {"study", false},
        {"study-seeds", true}, {"study-samples", true}, {"help", false},
        {"min-area", true}, {"shift", true}, {"noise", true}, {"erase", true}, {"jitter", true}, {"wd", true},
        {"encoder", true}, {"schedule", true}, {"warmup", true}, {"out", true}};
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0) usage_error("unexpected argument '" + a + "'");
      a = a.substr(2);
      std::string value;
      const auto eq = a.find('=');
      if (eq != std::string::npos) {
        value = a.substr(eq + 1);
        a = a.substr(0, eq);
      }
      const auto k = known.find(a);
      if (k == known.end()) usage_error("unknown option '--" + a + "'");
      if (k->second && eq == std::string::npos) {
        if (i + 1 >= argc) usage_error("option '--" + a + "' needs a value");
        value = argv[++i];
      }
      if (!k->second && eq != std::string::npos) usage_error("option '--" + a + "' takes no value");
      values_[a] = value;
    }
    if (has("help")) {
      if (g_rank == 0) std::printf("%s", kUsage);
      throw ExitRequest{0};
    }
  }
  bool has(const std::string& k) const { return values_.count(k) > 0; }
  std::string str(const std::string& k, const std::string& def) const { return has(k) ? values_.at(k) : def; }
  double num(const std::string& k, double def, double lo, double hi) const {
    if (!has(k)) return def;
    const std::string& s = values_.at(k);
    std::size_t used = 0;
    double v = 0;
    try {
      v = std::stod(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != s.size() || !std::isfinite(v))
      usage_error("option '--" + k + "': '" + s + "' is not a number");
    if (v < lo || v > hi)
      usage_error("option '--" + k + "': " + s + " is out of range [" + fmt(lo) + ", " + fmt(hi) + "]");
    return v;
  }
  long long integer(const std::string& k, long long def, long long lo, long long hi) const {
    const double v = num(k, static_cast<double>(def), static_cast<double>(lo), static_cast<double>(hi));
    if (v != std::floor(v)) usage_error("option '--" + k + "': '" + values_.at(k) + "' is not an integer");
    return static_cast<long long>(v);
  }

 private:
  static std::string fmt(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", v);
    return b;
  }
  std::map<std::string, std::string> values_;
};

/// A fixed set of view pairs of test images, the same for every run: rows
/// [0, m) are first views, [m, 2m) second views.
fmnist::ImageMatrix fixed_pairs(const fmnist::ImageMatrix& test, Eigen::Index m, const fmnist::AugmentParams& aug) {
  std::vector<Eigen::Index> idx(static_cast<std::size_t>(m));
  for (Eigen::Index i = 0; i < m; ++i) idx[static_cast<std::size_t>(i)] = i;
  fmnist::ImageMatrix v;
  fmnist::make_views(test, idx, aug, 20240601u, 0u, v);
  return v;
}

/// Loss and similarity statistics of the fixed pairs at the head (z) and the encoder (h).
struct PairStats {
  double loss = 0;
  contrastive::SimilarityStats head, encoder;
};
PairStats pair_stats(const fmnist::Network<float>& net, const fmnist::ImageMatrix& pairs, const fmnist::Loss& loss) {
  const Eigen::Index m = pairs.rows() / 2;
  fmnist::Network<float>::Cache c;
  const auto& z = net.forward(pairs, c);
  const auto& h = c.a[static_cast<std::size_t>(net.encoder_layers())];
  contrastive::Workspace<float> ws;
  return {loss.value(z.topRows(m), z.bottomRows(m), ws), contrastive::similarity_stats(z.topRows(m), z.bottomRows(m)),
          contrastive::similarity_stats(h.topRows(m), h.bottomRows(m))};
}

using Probe = fmnist::ProbeScores;

struct Eval {
  const fmnist::Split& train;
  const fmnist::Split& test;
  Eigen::Index probe_train, knn_train, knn_test;
  Eval(const fmnist::Split& tr, const fmnist::Split& te, Eigen::Index pt, Eigen::Index kt, Eigen::Index ke)
      : train(tr), test(te), probe_train(pt), knn_train(kt), knn_test(ke) {}

  /// Linear probes and kNN on features f(x) of the first images of each split.
  template <typename F>
  Probe run(F&& features) const {
    const fmnist::ImageMatrix ftr = features(train.x.topRows(std::max(probe_train, knn_train)));
    const fmnist::ImageMatrix fte = features(test.x);
    return fmnist::probe_scores(ftr, train.y, fte, test.y, probe_train, knn_train, knn_test);
  }
  Probe encoder(const fmnist::Network<float>& net) const {
    return run([&](const auto& x) { return net.encode(x); });
  }
};

/// The network of --encoder.
fmnist::Network<float> make_network(const std::string& encoder, unsigned seed) {
  if (encoder == "mlp") return fmnist::make_mlp<float>({784, 512, 128, 128, 64}, 2, seed);
  return fmnist::make_cnn<float>(fmnist::CNNSpec{}, seed);
}

/// Shows progress inside an epoch: a line redrawn in place on a terminal
/// (at most ten times a second), else a plain line about every tenth of the epoch.
/// `plain` forces the plain lines (under mpiexec stdout is a pseudo-terminal
/// even when mpiexec's own output goes to a file).
class ProgressPrinter {
 public:
  ProgressPrinter(int epochs, bool plain) : epochs_(epochs), tty_(!plain && isatty(fileno(stdout)) != 0) {}
  void operator()(const fmnist::StepReport& r) {
    if (tty_) {
      const auto now = clock_type::now();
      if (r.step < r.steps && std::chrono::duration<double>(now - last_).count() < 0.1) return;
      last_ = now;
      std::printf("\r%s\033[K", fmnist::progress_line(r.epoch, epochs_, r.step, r.steps, r.samples, r.seconds,
                                                       r.mean_loss, 20).c_str());
      shown_ = true;
    } else if (fmnist::crosses_tenth(r.step, r.steps)) {
      std::printf("  %s\n", fmnist::progress_line(r.epoch, epochs_, r.step, r.steps, r.samples, r.seconds,
                                                   r.mean_loss, 0).c_str());
    }
    std::fflush(stdout);
  }
  /// Clears the in-place line before a row of the epoch table.
  void clear() {
    if (tty_ && shown_) std::printf("\r\033[K");
    shown_ = false;
  }

 private:
  int epochs_;
  bool tty_, shown_ = false;
  clock_type::time_point last_{};
};

struct EpochRow {
  int epoch;
  double train_loss, rate;  // NaN (not printed) for epoch 0, before training
  PairStats st;
};

void write_csv(const std::string& dir, const std::vector<EpochRow>& rows, const std::vector<double>& step_losses,
               long long steps_per_epoch, const Eigen::MatrixXd& proj,
               const std::vector<int>& labels, const std::vector<double>& explained, const Probe& raw,
               const Probe& rnd, const Probe& learned, const std::string& title) {
  const auto open = [&](const std::string& name) {
    std::ofstream f(dir + "/" + name);
    if (!f) throw std::runtime_error("cannot write " + dir + "/" + name);
    return f;
  };
  {
    std::ofstream f = open("epochs.csv");
    f << "epoch,train_loss,pair_loss,pos_mean,pos_sd,neg_mean,neg_sd,enc_neg_mean,enc_neg_sd\n";
    for (const EpochRow& r : rows) {
      f << r.epoch << ',';
      if (std::isfinite(r.train_loss)) f << r.train_loss;
      f << ',' << r.st.loss << ',' << r.st.head.positive.mean << ',' << std::sqrt(r.st.head.positive.variance) << ','
        << r.st.head.cross_negative.mean << ',' << std::sqrt(r.st.head.cross_negative.variance) << ','
        << r.st.encoder.cross_negative.mean << ',' << std::sqrt(r.st.encoder.cross_negative.variance) << '\n';
    }
  }
  {
    // The training loss in blocks of steps (about 100 points over the run).
    std::ofstream f = open("steps.csv");
    f << "epoch,train_loss\n";
    const std::size_t block = std::max<std::size_t>(1, step_losses.size() / 100);
    for (std::size_t b = 0; b + block <= step_losses.size(); b += block) {
      double sum = 0;
      for (std::size_t i = b; i < b + block; ++i) sum += step_losses[i];
      f << static_cast<double>(b + block) / static_cast<double>(steps_per_epoch) << ','
        << sum / static_cast<double>(block) << '\n';
    }
  }
  {
    // Every step's loss, to the float's precision (data-parallel runs are compared with it).
    std::ofstream f = open("losses.csv");
    f << "step,loss\n";
    char b[64];
    for (std::size_t i = 0; i < step_losses.size(); ++i) {
      std::snprintf(b, sizeof b, "%zu,%.9g\n", i + 1, step_losses[i]);
      f << b;
    }
  }
  {
    std::ofstream f = open("embedding.csv");
    f << "label,pc1,pc2\n";
    for (Eigen::Index i = 0; i < proj.rows(); ++i)
      f << labels[static_cast<std::size_t>(i)] << ',' << proj(i, 0) << ',' << proj(i, 1) << '\n';
  }
  {
    std::ofstream f = open("probes.csv");
    f << "representation,logreg,ridge,knn\n";
    f << "raw pixels," << raw.logreg << ',' << raw.ridge << ',' << raw.knn << '\n';
    f << "random encoder," << rnd.logreg << ',' << rnd.ridge << ',' << rnd.knn << '\n';
    f << "trained encoder," << learned.logreg << ',' << learned.ridge << ',' << learned.knn << '\n';
  }
  {
    std::ofstream f = open("run.txt");
    f << title << '\n' << "pca_explained," << explained[0] << ',' << explained[1] << '\n';
  }
}

/// Whether `ok` holds on every process of the group (collective; `ok` without one).
bool all_ok(const contrastive::ProcessGroup* group, bool ok) {
  if (!group) return ok;
  float bad = ok ? 0.f : 1.f;
  group->all_reduce(&bad, 1, contrastive::ProcessGroup::Op::Max);
  return bad == 0.f;
}

/// Whether every process of the group holds exactly these parameters (collective).
bool same_everywhere(const contrastive::ProcessGroup* group, const fmnist::Vec<float>& params) {
  if (!group) return true;
  fmnist::Vec<float> hi = params, lo = -params;
  group->all_reduce(hi.data(), static_cast<std::size_t>(hi.size()), contrastive::ProcessGroup::Op::Max);
  group->all_reduce(lo.data(), static_cast<std::size_t>(lo.size()), contrastive::ProcessGroup::Op::Max);
  return all_ok(group, (hi.array() == -lo.array()).all());
}

/// A process other than rank 0 of a data-parallel run: the same network and
/// the same training on its share of each batch; no output (the progress,
/// the probes and the files are rank 0's).
int run_worker(const std::string& encoder, const fmnist::Split& train, const fmnist::TrainConfig& cfg,
               Eigen::Index subset) {
  if (!all_ok(cfg.group, true)) return 1;  // rank 0 could not start
  const fmnist::ImageMatrix x = train.x.topRows(subset);
  fmnist::Network<float> net = make_network(encoder, cfg.seed);
  fmnist::train(net, x, cfg);
  same_everywhere(cfg.group, net.params);
  return 0;
}

int run_main(const std::string& encoder, const std::string& out_dir, const fmnist::Split& train,
             const fmnist::Split& test, const fmnist::TrainConfig& cfg, const Eval& eval, Eigen::Index subset,
             int epochs, double load_seconds) {
  if (cfg.group && cfg.group->rank() != 0) return run_worker(encoder, train, cfg, subset);
  const int processes = cfg.group ? cfg.group->size() : 1;
  const auto t_start = clock_type::now();
  // Where the CSV files go must be writable before minutes of training, not after.
  std::string setup_error;
  {
    std::error_code ec;
    std::filesystem::create_directories(out_dir, ec);
    if (!std::ofstream(out_dir + "/run.txt"))
      setup_error = "cannot write in '" + out_dir + "' (--out): " + (ec ? ec.message() : "not writable");
  }
  if (!all_ok(cfg.group, setup_error.empty())) {
    std::fprintf(stderr, "simclr_fashion_mnist: %s\n", setup_error.c_str());
    return 1;
  }
  const fmnist::ImageMatrix x = train.x.topRows(subset);
  const fmnist::ImageMatrix pairs = fixed_pairs(test.x, 1000, cfg.aug);
  fmnist::Network<float> net = make_network(encoder, cfg.seed);
  const fmnist::Network<float> untrained = net;
  const fmnist::Loss loss(cfg.loss, cfg.tau, cfg.lambda, static_cast<long long>(subset));
  char title[512];
  std::snprintf(title, sizeof title,
                "SimCLR on Fashion-MNIST: encoder=%s loss=%s tau=%g lambda=%g batch=%d epochs=%d train-subset=%lld "
                "lr=%g %s %s seed=%u%s",
                encoder.c_str(), cfg.loss.c_str(), cfg.tau, cfg.lambda, cfg.batch, epochs,
                static_cast<long long>(subset), cfg.lr, cfg.cosine ? "cosine" : "constant", cfg.sgd ? "sgd" : "adam",
                cfg.seed, processes > 1 ? (" processes=" + std::to_string(processes)).c_str() : "");
  std::printf("%s\n", title);
  if (processes > 1) {
    const fmnist::Shard last(cfg.batch, processes - 1, processes);
    std::printf("data-parallel: %d processes, %lld to %lld pairs of each batch per process; one all-reduce of the "
                "parameter gradient per step\n",
                processes, static_cast<long long>(last.count), static_cast<long long>(fmnist::Shard(cfg.batch, 0, processes).count));
  }
  std::printf("network: %s\n(%lld parameters, %.2f M multiply-adds per image; representation: the %lld-d encoder output)\n",
              net.describe().c_str(), static_cast<long long>(net.params.size()), net.macs() / 1e6,
              static_cast<long long>(net.encoder_size()));
  std::printf("per epoch: mean training loss, then on 1000 fixed view pairs of test images: loss, cosine similarity of\n"
              "positive pairs and of cross-view negative pairs at the head (mean, sd), and of negatives at the encoder\n\n");
  std::printf("%5s %10s %10s %10s %8s %7s %8s %7s %11s\n", "epoch", "train loss", "pair loss", "samples/s", "pos mean",
              "pos sd", "neg mean", "neg sd", "enc neg sd");
  std::vector<EpochRow> rows;
  ProgressPrinter progress(epochs, processes > 1);
  const auto show = [&](int epoch, double train_loss, double rate) {
    const PairStats st = pair_stats(net, pairs, loss);
    rows.push_back({epoch, train_loss, rate, st});
    progress.clear();
    char tl[32] = "-", rt[32] = "-";
    if (std::isfinite(train_loss)) std::snprintf(tl, sizeof tl, "%.4f", train_loss);
    if (std::isfinite(rate)) std::snprintf(rt, sizeof rt, "%.0f", rate);
    std::printf("%5d %10s %10.4f %10s %8.4f %7.4f %8.4f %7.4f %11.4f\n", epoch, tl, st.loss, rt,
                st.head.positive.mean, std::sqrt(st.head.positive.variance), st.head.cross_negative.mean,
                std::sqrt(st.head.cross_negative.variance), std::sqrt(st.encoder.cross_negative.variance));
    std::fflush(stdout);
  };
  const double nan = std::nan("");
  show(0, nan, nan);  // the untrained network: measured on the fixed pairs, no training yet
  const auto t_train = clock_type::now();
  std::vector<double> step_losses;
  const fmnist::TrainTimes tt = fmnist::train(
      net, x, cfg, [&](const fmnist::EpochReport& r) { show(r.epoch, r.mean_loss, r.samples_per_second); },
      &step_losses,
      [&](const fmnist::StepReport& r) { progress(r); });
  const double train_seconds = since(t_train);
  if (processes > 1)
    std::printf("parameters after training: %s on all %d processes\n",
                same_everywhere(cfg.group, net.params) ? "identical" : "DIFFERENT", processes);

  const auto t_probe = clock_type::now();
  const Probe raw = eval.run([](const auto& xs) { return fmnist::ImageMatrix(xs); });
  const Probe rnd = eval.encoder(untrained);
  const Probe learned = eval.encoder(net);
  const double probe_seconds = since(t_probe);
  const std::string rep = std::to_string(net.encoder_size());
  std::printf("\n%-24s %15s %15s %11s\n", "representation", "linear (logreg)", "linear (ridge)", "kNN (k=20)");
  std::printf("%-24s %15.4f %15.4f %11.4f\n", "raw pixels (784)", raw.logreg, raw.ridge, raw.knn);
  std::printf("%-24s %15.4f %15.4f %11.4f\n", ("random encoder (" + rep + ")").c_str(), rnd.logreg, rnd.ridge, rnd.knn);
  std::printf("%-24s %15.4f %15.4f %11.4f\n", ("trained encoder (" + rep + ")").c_str(), learned.logreg, learned.ridge,
              learned.knn);
  std::printf("(linear probes: logistic regression / ridge on %lld train images, all %lld test images; kNN: cosine, "
              "%lld train / %lld test)\n",
              static_cast<long long>(eval.probe_train), static_cast<long long>(test.x.rows()),
              static_cast<long long>(eval.knn_train), static_cast<long long>(eval.knn_test));
  std::vector<std::string> lost;
  const auto judge = [&](const char* probe, double trained, double pixels, double random) {
    if (!(trained > pixels)) lost.push_back(std::string(probe) + " (raw pixels)");
    if (!(trained > random)) lost.push_back(std::string(probe) + " (random encoder)");
  };
  judge("logreg", learned.logreg, raw.logreg, rnd.logreg);
  judge("ridge", learned.ridge, raw.ridge, rnd.ridge);
  judge("kNN", learned.knn, raw.knn, rnd.knn);
  if (lost.empty()) {
    std::printf("the trained encoder beats raw pixels and the random encoder on every probe\n");
  } else {
    std::string s;
    for (const auto& l : lost) s += (s.empty() ? "" : ", ") + l;
    std::printf("the trained encoder does NOT beat: %s\n", s.c_str());
  }

  // The picture: a 2-D PCA of the trained representation of 2000 test images.
  const auto t_out = clock_type::now();
  const Eigen::Index shown = std::min<Eigen::Index>(2000, test.x.rows());
  std::vector<double> explained;
  const Eigen::MatrixXd proj = fmnist::pca_2d(net.encode(test.x.topRows(shown)), &explained);
  write_csv(out_dir, rows, step_losses, static_cast<long long>(subset / cfg.batch), proj, std::vector<int>(test.y.begin(), test.y.begin() + shown), explained, raw, rnd, learned,
            title);
  const double out_seconds = since(t_out);

  const double rest = train_seconds - tt.augment - tt.network() - tt.loss - tt.reduce;
  char reduce[64] = "";
  if (processes > 1) std::snprintf(reduce, sizeof reduce, " + all-reduce %.1f", tt.reduce);
  std::printf("\ntime%s: load %.1f s | training %.1f s = augment %.1f + forward %.1f + loss+gradient (library) %.1f"
              " + backward %.1f%s + Adam %.1f + per-epoch diagnostics and rest %.1f | probes %.1f s | PCA + CSV %.1f s"
              " | total %.1f s\n",
              processes > 1 ? " (rank 0)" : "", load_seconds, train_seconds, tt.augment, tt.forward, tt.loss,
              tt.backward, reduce, tt.update, rest, probe_seconds, out_seconds, load_seconds + since(t_start));
  std::printf("\nwrote %s/epochs.csv, steps.csv, losses.csv, embedding.csv, probes.csv; draw them (Debian: apt-get install python3-matplotlib):\n"
              "  python3 examples/simclr_fashion_mnist/plot.py %s\n",
              out_dir.c_str(), out_dir.c_str());
  if (!(learned.logreg > rnd.logreg)) {
    std::printf("warning: the trained encoder does not beat the random one on the linear probe\n");
    return 1;
  }
  return 0;
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}
double sd(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double mu = mean(v);
  double s = 0;
  for (double x : v) s += (x - mu) * (x - mu);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

int run_study(const std::string& encoder, const fmnist::Split& train, const fmnist::Split& test,
              fmnist::TrainConfig cfg, const Eval& eval, Eigen::Index subset, int seeds, long long samples) {
  const auto t_start = clock_type::now();
  const fmnist::ImageMatrix x = train.x.topRows(subset);
  const fmnist::ImageMatrix pairs = fixed_pairs(test.x, 1000, cfg.aug);
  const std::vector<int> batches = {32, 64, 128, 256};
  const std::vector<double> lambdas = {0.0, 30.0};
  cfg.samples = samples;
  std::printf("study: encoder=%s loss=%s tau=%g lr=%g %s, %lld training images, %lld images seen per run, %d seeds;\n"
              "negative-similarity variance on 1000 fixed test view pairs; VRNS target -1/(N-1), N=%lld\n",
              encoder.c_str(), cfg.loss.c_str(), cfg.tau, cfg.lr, cfg.cosine ? "cosine" : "constant",
              static_cast<long long>(subset), samples, seeds, static_cast<long long>(subset));
  std::printf("%5s %6s %4s %11s %11s %9s %8s %8s %7s\n", "batch", "lambda", "seed", "neg var z", "neg var h",
              "neg mean", "linear", "kNN", "sec");
  struct Cell {
    std::vector<double> var_z, var_h, mean_z, lin, knn;
  };
  std::map<std::pair<int, double>, Cell> cells;
  const fmnist::Loss loss(cfg.loss, cfg.tau, 0.0, static_cast<long long>(subset));
  for (int b : batches)
    for (double lam : lambdas)
      for (int s = 1; s <= seeds; ++s) {
        const auto t0 = clock_type::now();
        fmnist::TrainConfig c = cfg;
        c.batch = b;
        c.lambda = lam;
        c.seed = static_cast<unsigned>(s);
        fmnist::Network<float> net = make_network(encoder, c.seed);
        fmnist::train(net, x, c);
        const PairStats st = pair_stats(net, pairs, loss);
        const Probe p = eval.encoder(net);
        Cell& cell = cells[{b, lam}];
        cell.var_z.push_back(st.head.cross_negative.variance);
        cell.var_h.push_back(st.encoder.cross_negative.variance);
        cell.mean_z.push_back(st.head.cross_negative.mean);
        cell.lin.push_back(p.logreg);
        cell.knn.push_back(p.knn);
        std::printf("%5d %6g %4d %11.4e %11.4e %9.4f %8.4f %8.4f %7.1f\n", b, lam, s, st.head.cross_negative.variance,
                    st.encoder.cross_negative.variance, st.head.cross_negative.mean, p.logreg, p.knn, since(t0));
        std::fflush(stdout);
      }
  std::printf("\n| batch | lambda | neg-sim variance, head z (x1e-3) | neg-sim variance, encoder h (x1e-3) | "
              "neg-sim mean, head z | linear probe acc | kNN acc |\n|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& [key, c] : cells)
    std::printf("| %d | %g | %.2f ± %.2f | %.2f ± %.2f | %.4f ± %.4f | %.4f ± %.4f | %.4f ± %.4f |\n", key.first,
                key.second, 1e3 * mean(c.var_z), 1e3 * sd(c.var_z), 1e3 * mean(c.var_h), 1e3 * sd(c.var_h),
                mean(c.mean_z), sd(c.mean_z), mean(c.lin), sd(c.lin), mean(c.knn), sd(c.knn));
  std::printf("\n(mean ± sample sd over %d seeds; study wall time %.0f s)\n", seeds, since(t_start));
  return 0;
}

/// Threads when --threads is 0: the cores not already busy, going by the
/// 1-minute load average (at least one).  OpenMP threads that share a core
/// with another process wait for each other at every product: on 2 cores
/// with one busy, 2 threads trained 2.5x slower than 1.
int free_cores(int& cores, double& load) {
  cores = 1;
#ifdef _OPENMP
  cores = omp_get_num_procs();
#endif
  load = 0;
  if (getloadavg(&load, 1) != 1) return cores;
  return std::clamp(cores - static_cast<int>(std::lround(load)), 1, cores);
}

/// The directory of the executable (where the CSV files go by default).
std::string exe_dir(const char* argv0) {
  const std::string s = argv0 ? argv0 : "";
  const auto slash = s.find_last_of('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : s.substr(0, slash);
}

int program(int argc, char** argv, const contrastive::ProcessGroup* group) {
  const int processes = group ? group->size() : 1;
  const Args args(argc, argv);
  const std::string encoder = args.str("encoder", "cnn");
  if (encoder != "cnn" && encoder != "mlp") usage_error("unknown encoder '" + encoder + "' (cnn, mlp)");
  const bool cnn = encoder == "cnn";
  fmnist::TrainConfig cfg;
  cfg.loss = args.str("loss", "ntxent");
  if (!fmnist::Loss::known(cfg.loss)) usage_error("unknown loss '" + cfg.loss + "'");
  cfg.tau = args.num("tau", 0.2, 1e-3, 100);
  cfg.lambda = args.num("lambda", 0, 0, 1e6);
  cfg.batch = static_cast<int>(args.integer("batch", 256, 2, 60000));
  const int epochs = static_cast<int>(args.integer("epochs", cnn ? 2 : 5, 1, 100000));
  cfg.lr = args.num("lr", cnn ? 2e-3 : 1e-3, 1e-9, 100);
  const std::string schedule = args.str("schedule", cnn ? "cosine" : "constant");
  if (schedule != "cosine" && schedule != "constant") usage_error("unknown schedule '" + schedule + "'");
  cfg.cosine = schedule == "cosine";
  cfg.warmup = args.integer("warmup", 0, 0, 1000000);
  cfg.sgd = args.has("sgd");
  cfg.seed = static_cast<unsigned>(args.integer("seed", 1, 0, 4294967295LL));
  cfg.threads = static_cast<int>(args.integer("threads", 0, 0, 1024));
  cfg.aug.min_area = static_cast<float>(args.num("min-area", cfg.aug.min_area, 0.05, 1));
  cfg.aug.max_shift = static_cast<int>(args.integer("shift", cnn ? 1 : 0, 0, 14));
  cfg.aug.noise = static_cast<float>(args.num("noise", cfg.aug.noise, 0, 1));
  cfg.aug.brightness = static_cast<float>(args.num("jitter", cfg.aug.brightness, 0, 0.6));
  cfg.aug.contrast = 1.6f * cfg.aug.brightness;
  cfg.aug.erase_prob = static_cast<float>(args.num("erase", cfg.aug.erase_prob, 0, 1));
  cfg.weight_decay = args.num("wd", 0, 0, 1);
  const bool study = args.has("study");
  const auto subset = static_cast<Eigen::Index>(args.integer("train-subset", 60000, 2, 60000));
  const auto probe_train = static_cast<Eigen::Index>(args.integer("probe-train", 10000, 11, 60000));
  const auto knn_train = static_cast<Eigen::Index>(args.integer("knn-train", 10000, 20, 60000));
  const auto knn_test = static_cast<Eigen::Index>(args.integer("knn-test", 2000, 1, 10000));
  const int seeds = static_cast<int>(args.integer("study-seeds", 3, 1, 100));
  const long long study_samples = args.integer("study-samples", 120000, 256, 100000000);
  const std::string out_dir = args.str("out", exe_dir(argc > 0 ? argv[0] : nullptr));
  if (cfg.batch > subset) usage_error("--batch must not exceed --train-subset");
  if (processes > 1 && study) usage_error("--study runs on one process (it is a grid of independent runs)");
  if (cfg.batch < processes) usage_error("--batch must be at least the number of processes");
  cfg.group = group;
  int cores = 1;
  double load = 0;
  const int free = free_cores(cores, load);
  const bool chosen = cfg.threads > 0;
  if (!chosen) cfg.threads = std::max(1, free / processes);
  Eigen::setNbThreads(cfg.threads);
#ifdef _OPENMP
  omp_set_num_threads(cfg.threads);
#endif
  if (g_rank == 0)
    std::printf("threads: %d%s (%s; %d cores, 1-minute load average %.2f)\n", cfg.threads,
                processes > 1 ? (" per process, " + std::to_string(processes) + " processes").c_str() : "",
                chosen ? "--threads" : processes > 1 ? "the cores not busy, shared" : "the cores not busy", cores, load);
  cfg.samples = static_cast<long long>(epochs) * (subset / cfg.batch) * cfg.batch;

  try {
    const auto t0 = clock_type::now();
    const std::string dir = fmnist::data_dir(args.str("data", ""));
    const fmnist::Split train = fmnist::load(dir, true), test = fmnist::load(dir, false);
    const double load_seconds = since(t0);
    const Eval eval(train, test, probe_train, knn_train, knn_test);
    return study ? run_study(encoder, train, test, cfg, eval, subset, seeds, study_samples)
                 : run_main(encoder, out_dir, train, test, cfg, eval, subset, epochs, load_seconds);
  } catch (const std::exception& e) {
    if (processes == 1) {
      std::fprintf(stderr, "simclr_fashion_mnist: %s\n", e.what());
      return 1;
    }
    std::fprintf(stderr, "simclr_fashion_mnist (rank %d of %d): %s\n", g_rank, processes, e.what());
#ifdef FMNIST_MPI
    // The other processes may be waiting in a collective for this one.
    MPI_Abort(MPI_COMM_WORLD, 1);
#endif
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
#ifdef FMNIST_MPI
  // Only the main thread calls MPI (the OpenMP threads compute).
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  int status = 0;
  {
    const contrastive::mpi::ProcessGroup group(MPI_COMM_WORLD);
    g_rank = group.rank();
    try {
      status = program(argc, argv, group.size() > 1 ? &group : nullptr);
    } catch (const ExitRequest& e) {
      status = e.code;
    }
  }
  MPI_Finalize();
  return status;
#else
  try {
    return program(argc, argv, nullptr);
  } catch (const ExitRequest& e) {
    return e.code;
  }
#endif
}
