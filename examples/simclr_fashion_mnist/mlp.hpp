// A multilayer perceptron with hand-written backpropagation, and its optimisers.
//
// Rows are samples.  Layer l maps a_l (n x in) to a_{l+1} = act(a_l W_l + b_l)
// with W_l (in x out), b_l (1 x out); act is ReLU for every layer but the
// last, which is linear.  The first `encoder_layers` layers are the encoder
// (its output h = a_{encoder_layers} is the representation that is probed);
// the rest is the projection head on whose output z the loss is computed.
// Templated on the scalar so the gradient check can run in double.
#pragma once

#include <cmath>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Core>

namespace fmnist {

template <typename S>
class MLP {
 public:
  using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  using Row = Eigen::Matrix<S, 1, Eigen::Dynamic>;

  /// Activations of a forward pass, kept for the backward pass: a[0] is the
  /// input, a[l + 1] the output of layer l.
  struct Cache {
    std::vector<Mat> a;
  };

  /// sizes = {in, hidden..., out}; He-normal weights from `seed`, zero biases.
  MLP(const std::vector<int>& sizes, int encoder_layers, unsigned seed) : encoder_layers_(encoder_layers) {
    if (sizes.size() < 2 || encoder_layers < 1 || encoder_layers >= static_cast<int>(sizes.size()))
      throw std::invalid_argument("MLP: need >= 2 sizes and 1 <= encoder_layers < number of sizes");
    std::mt19937 rng(seed);
    for (std::size_t l = 0; l + 1 < sizes.size(); ++l) {
      std::normal_distribution<double> g(0.0, std::sqrt(2.0 / sizes[l]));
      Mat w(sizes[l], sizes[l + 1]);
      for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = static_cast<S>(g(rng));
      W.push_back(w);
      b.push_back(Row::Zero(sizes[l + 1]));
    }
    zero_grad();
  }

  int layers() const { return static_cast<int>(W.size()); }
  int encoder_layers() const { return encoder_layers_; }
  Eigen::Index input_size() const { return W.front().rows(); }
  Eigen::Index output_size() const { return W.back().cols(); }
  Eigen::Index encoder_size() const { return W[static_cast<std::size_t>(encoder_layers_ - 1)].cols(); }

  /// Forward through layers [0, upto) (all by default); returns the last activation.
  template <typename D>
  const Mat& forward(const Eigen::MatrixBase<D>& x, Cache& c, int upto = -1) const {
    const std::size_t L = upto < 0 ? W.size() : static_cast<std::size_t>(upto);
    c.a.resize(L + 1);
    c.a[0] = x.template cast<S>();
    for (std::size_t l = 0; l < L; ++l) {
      c.a[l + 1].noalias() = c.a[l] * W[l];
      c.a[l + 1].rowwise() += b[l];
      if (l + 1 < W.size()) c.a[l + 1] = c.a[l + 1].cwiseMax(S(0));
    }
    return c.a[L];
  }

  /// Encoder output h for the rows of x (in chunks, to bound memory).
  template <typename D>
  Mat encode(const Eigen::MatrixBase<D>& x, Eigen::Index chunk = 4096) const {
    Mat h(x.rows(), encoder_size());
    Cache c;
    for (Eigen::Index r = 0; r < x.rows(); r += chunk) {
      const Eigen::Index n = std::min(chunk, x.rows() - r);
      h.middleRows(r, n) = forward(x.middleRows(r, n), c, encoder_layers_);
    }
    return h;
  }

  /// Adds dL/dW, dL/db to gW, gb given dL/d(output) of a full forward pass.
  template <typename D>
  void backward(const Cache& c, const Eigen::MatrixBase<D>& dout) {
    Mat d = dout.template cast<S>(), next;
    for (std::size_t l = W.size(); l-- > 0;) {
      if (l + 1 < W.size()) d = (c.a[l + 1].array() > S(0)).select(d, S(0));  // through the ReLU
      gW[l].noalias() += c.a[l].transpose() * d;
      gb[l] += d.colwise().sum();
      if (l > 0) {
        next.noalias() = d * W[l].transpose();
        d.swap(next);
      }
    }
  }

  void zero_grad() {
    gW.resize(W.size());
    gb.resize(b.size());
    for (std::size_t l = 0; l < W.size(); ++l) {
      gW[l] = Mat::Zero(W[l].rows(), W[l].cols());
      gb[l] = Row::Zero(b[l].cols());
    }
  }

  std::vector<Mat> W, gW;
  std::vector<Row> b, gb;

 private:
  int encoder_layers_;
};

/// Adam (Kingma & Ba) or SGD with momentum over all parameters of an MLP.
template <typename S>
class Optimizer {
 public:
  enum class Kind { Adam, SGD };
  Optimizer(const MLP<S>& net, Kind kind, double lr, double weight_decay = 0.0, double momentum = 0.9)
      : kind_(kind), lr_(lr), wd_(weight_decay), momentum_(momentum) {
    for (std::size_t l = 0; l < net.W.size(); ++l) {
      mW_.push_back(MLP<S>::Mat::Zero(net.W[l].rows(), net.W[l].cols()));
      vW_.push_back(mW_.back());
      mb_.push_back(MLP<S>::Row::Zero(net.b[l].cols()));
      vb_.push_back(mb_.back());
    }
  }

  /// One update from the MLP's accumulated gradients (which it then zeroes).
  void step(MLP<S>& net) {
    ++t_;
    for (std::size_t l = 0; l < net.W.size(); ++l) {
      if (wd_ > 0) net.gW[l] += static_cast<S>(wd_) * net.W[l];  // decay on weights, not biases
      update(net.W[l], net.gW[l], mW_[l], vW_[l]);
      update(net.b[l], net.gb[l], mb_[l], vb_[l]);
    }
    net.zero_grad();
  }

 private:
  template <typename P, typename G>
  void update(P& p, const G& g, P& m, P& v) const {
    const S lr = static_cast<S>(lr_);
    if (kind_ == Kind::SGD) {
      m = static_cast<S>(momentum_) * m + g;
      p -= lr * m;
      return;
    }
    const S b1 = S(0.9), b2 = S(0.999), eps = S(1e-8);
    m = b1 * m + (S(1) - b1) * g;
    v = b2 * v + (S(1) - b2) * g.cwiseProduct(g);
    const S c1 = S(1) - static_cast<S>(std::pow(0.9, t_)), c2 = S(1) - static_cast<S>(std::pow(0.999, t_));
    p.array() -= lr * (m.array() / c1) / ((v.array() / c2).sqrt() + eps);
  }

  Kind kind_;
  double lr_, wd_, momentum_;
  int t_ = 0;
  std::vector<typename MLP<S>::Mat> mW_, vW_;
  std::vector<typename MLP<S>::Row> mb_, vb_;
};

}  // namespace fmnist
