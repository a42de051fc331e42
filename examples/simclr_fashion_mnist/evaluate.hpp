// The evaluations of main.cpp, compiled in their own translation unit
// (evaluate.cpp) so that a parallel build compiles them beside the training
// code: the probes of probe.hpp on given features, and the 2-D PCA of the
// picture.
#pragma once

#include <vector>

#include <Eigen/Core>

namespace fmnist {

/// Accuracies of the three probes of one representation.
struct ProbeScores {
  double logreg = 0, ridge = 0, knn = 0;
};

/// The probes on features of training images (rows: the first training
/// images, at least max(probe_train, knn_train)) and of all test images:
/// logistic regression and ridge trained on the first probe_train rows and
/// tested on every test row; kNN over the first knn_train training rows for
/// the first knn_test test rows.
ProbeScores probe_scores(const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>& train,
                         const std::vector<int>& train_labels,
                         const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>& test,
                         const std::vector<int>& test_labels, Eigen::Index probe_train, Eigen::Index knn_train,
                         Eigen::Index knn_test);

/// The first two principal components of the rows of f (pca_project in probe.hpp).
Eigen::MatrixXd pca_2d(const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>& f,
                       std::vector<double>* explained);

}  // namespace fmnist
