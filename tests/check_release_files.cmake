# Checks what is written outside CMake against the project:
#   debian/changelog  its newest entry's upstream version is VERSION;
#   README.md, .ci/run  the README's test command installs the same Debian
#                       packages and runs the same scripts as .ci/run.
# cmake -DSOURCE_DIR=<tree> -DVERSION=<project version> -P check_release_files.cmake
set(errors "")

file(STRINGS ${SOURCE_DIR}/debian/changelog first_line LIMIT_COUNT 1)
if(NOT first_line MATCHES "^contrastive \\(([^)-]+)(-[^)]*)?\\) ")
  string(APPEND errors "debian/changelog: cannot read the version from '${first_line}'\n")
elseif(NOT CMAKE_MATCH_1 STREQUAL VERSION)
  string(APPEND errors "debian/changelog: newest entry is ${CMAKE_MATCH_1}, the project is ${VERSION} "
                       "(include/contrastive/version.hpp)\n")
endif()

# apt_packages(<line> <out>): the sorted package list of an "apt-get install ... --no-install-recommends" line.
function(apt_packages line out)
  if(NOT line MATCHES "apt-get install [^&]*--no-install-recommends ([^&]*)")
    set(${out} "" PARENT_SCOPE)
    return()
  endif()
  string(STRIP "${CMAKE_MATCH_1}" pkgs)
  separate_arguments(pkgs UNIX_COMMAND "${pkgs}")
  list(SORT pkgs)
  set(${out} "${pkgs}" PARENT_SCOPE)
endfunction()

file(STRINGS ${SOURCE_DIR}/.ci/run ci_install REGEX "apt-get install")
file(STRINGS ${SOURCE_DIR}/.ci/run ci_scripts REGEX "^bash ")
apt_packages("${ci_install}" ci_pkgs)
string(REPLACE ";" " && " ci_scripts "${ci_scripts}")
file(STRINGS ${SOURCE_DIR}/README.md readme_cmd REGEX "apt-get install .*&& bash tests/run.sh")
list(LENGTH readme_cmd n)
if(NOT n EQUAL 1)
  string(APPEND errors "README.md: expected one test command line ending in '&& bash tests/run.sh ...', found ${n}\n")
else()
  apt_packages("${readme_cmd}" readme_pkgs)
  if(NOT readme_pkgs STREQUAL ci_pkgs)
    string(REPLACE ";" " " readme_list "${readme_pkgs}")
    string(REPLACE ";" " " ci_list "${ci_pkgs}")
    string(APPEND errors "README.md's test command installs '${readme_list}', .ci/run installs '${ci_list}'\n")
  endif()
  string(REGEX MATCH "bash tests/run\\.sh.*$" readme_scripts "${readme_cmd}")
  if(NOT readme_scripts STREQUAL ci_scripts)
    string(APPEND errors "README.md's test command runs '${readme_scripts}', .ci/run runs '${ci_scripts}'\n")
  endif()
endif()

if(errors)
  message(FATAL_ERROR "${errors}")
endif()
string(REPLACE ";" " " ci_pkgs "${ci_pkgs}")
message("release files ok: version ${VERSION}, CI packages ${ci_pkgs}, CI scripts '${ci_scripts}'")
