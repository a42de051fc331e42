// contrastive — the library's version.
// SPDX-License-Identifier: MIT
//
// The one place the version is written: CMake reads it (project(VERSION) is
// taken from these lines, and configuration fails if the string disagrees
// with the numbers), so a release changes this file and nothing else in the
// build.
#pragma once

/// \file
/// The version of the library, as numbers for the preprocessor and as a string.
///
/// Versions follow major.minor.patch; while the major version is 0, a new
/// minor version may change the API (the CMake package accepts a request for
/// the same major.minor only).

/// Major version number.
#define CONTRASTIVE_VERSION_MAJOR 0
/// Minor version number (at most 99).
#define CONTRASTIVE_VERSION_MINOR 2
/// Patch version number (at most 99).
#define CONTRASTIVE_VERSION_PATCH 0

/// The version as one integer, major * 10000 + minor * 100 + patch (0.2.0 is
/// 200), for comparisons such as `#if CONTRASTIVE_VERSION >= 200`.
#define CONTRASTIVE_VERSION \
  (CONTRASTIVE_VERSION_MAJOR * 10000 + CONTRASTIVE_VERSION_MINOR * 100 + CONTRASTIVE_VERSION_PATCH)

/// The version as a string literal, "major.minor.patch".
#define CONTRASTIVE_VERSION_STRING "0.2.0"
