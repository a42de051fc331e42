// See evaluate.hpp.
#include "evaluate.hpp"

#include <algorithm>

#include "probe.hpp"

namespace fmnist {

ProbeScores probe_scores(const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>& train,
                         const std::vector<int>& train_labels,
                         const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>& test,
                         const std::vector<int>& test_labels, Eigen::Index probe_train, Eigen::Index knn_train,
                         Eigen::Index knn_test) {
  const auto first = [](const std::vector<int>& y, Eigen::Index n) {
    return std::vector<int>(y.begin(), y.begin() + n);
  };
  const std::vector<int> ytr = first(train_labels, probe_train), ytr_knn = first(train_labels, knn_train),
                         yte_knn = first(test_labels, knn_test);
  ProbeScores s;
  s.logreg = logistic_probe_accuracy(train.topRows(probe_train), ytr, test, test_labels);
  s.ridge = linear_probe_accuracy(train.topRows(probe_train), ytr, test, test_labels);
  s.knn = knn_accuracy(train.topRows(knn_train), ytr_knn, test.topRows(knn_test), yte_knn);
  return s;
}

Eigen::MatrixXd pca_2d(const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>& f,
                       std::vector<double>* explained) {
  return pca_project(f, 2, explained);
}

}  // namespace fmnist
