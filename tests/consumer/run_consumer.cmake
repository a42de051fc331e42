# Builds and runs one consumer of contrastive; cmake -P this file with
#   -DMODE=install | find_package | find_package_torch | version_rejected | pkg_config | add_subdirectory | fetchcontent | export
#   -DSOURCE_DIR=<contrastive source tree>   -DWORK_DIR=<scratch directory, emptied first>
#   -DPREFIX=<install prefix of the install mode; empty: the system's>
#   -DVERSION=<the version the consumer must see>
#   -DEXPECT_OPENMP=ON|OFF (whether contrastive::contrastive must bring OpenMP)
#   optional: -DOPENMP=ON|OFF (CONTRASTIVE_OPENMP of a library configured here),
#             -DCXX=<compiler> -DGENERATOR=<CMake generator>
# tests/CMakeLists.txt registers each mode as a ctest (consumer-*); tests/package.sh
# runs find_package and pkg_config against the installed Debian package.
# Success prints "consumer ok".
foreach(v MODE SOURCE_DIR WORK_DIR VERSION)
  if(NOT ${v})
    message(FATAL_ERROR "run_consumer.cmake: -D${v}= is required")
  endif()
endforeach()
if(NOT CXX)
  set(CXX c++)
endif()
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
set(consumers ${SOURCE_DIR}/tests/consumer)

# Arguments of every configure run here: same compiler and generator as the caller.
set(common -DCMAKE_CXX_COMPILER=${CXX})
if(GENERATOR)
  list(APPEND common -G ${GENERATOR})
endif()
if(DEFINED EXPECT_OPENMP)
  list(APPEND common -DEXPECT_OPENMP=${EXPECT_OPENMP})
endif()
if(DEFINED OPENMP)
  list(APPEND common -DCONTRASTIVE_OPENMP=${OPENMP})
endif()

# run(<out-var> <command...>): runs it, stops with its output if it fails.
function(run out)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE o ERROR_VARIABLE e)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n${o}\n${e}")
  endif()
  set(${out} "${o}" PARENT_SCOPE)
endfunction()

# expect(<text> <what> <regex>...): every regex must match the text.
function(expect text what)
  foreach(re ${ARGN})
    if(NOT text MATCHES "${re}")
      message(FATAL_ERROR "${what}: expected to match '${re}', got:\n${text}")
    endif()
  endforeach()
endfunction()

# Runs the consumer executable and checks what it reports.
function(run_consumer exe)
  run(out ${exe})
  message("${out}")
  set(openmp no)
  if(EXPECT_OPENMP)
    set(openmp yes)
  endif()
  string(REPLACE "." "\\." version_re "${VERSION}")
  expect("${out}" "consumer output" "version ${version_re} " "openmp: ${openmp}," "consumer ok")
endfunction()

function(build_and_run_consumer src)
  run(_ ${CMAKE_COMMAND} -S ${src} -B ${WORK_DIR}/build ${common} ${ARGN})
  run(_ ${CMAKE_COMMAND} --build ${WORK_DIR}/build)
  run_consumer(${WORK_DIR}/build/consumer)
endfunction()

set(prefix_args)
if(PREFIX)
  set(prefix_args -DCMAKE_PREFIX_PATH=${PREFIX})
endif()

if(MODE STREQUAL "install")
  # Configured for one prefix, installed to another: everything must name the second.
  if(NOT PREFIX)
    message(FATAL_ERROR "run_consumer.cmake: MODE=install needs -DPREFIX=")
  endif()
  run(_ ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/lib-build ${common}
      -DCMAKE_INSTALL_PREFIX=${WORK_DIR}/not-this-prefix
      -DCONTRASTIVE_BUILD_TESTS=OFF -DCONTRASTIVE_BUILD_EXAMPLES=OFF)
  run(_ ${CMAKE_COMMAND} --install ${WORK_DIR}/lib-build --prefix ${PREFIX})
  foreach(f include/contrastive/contrastive.hpp include/contrastive/version.hpp
            share/cmake/contrastive/contrastiveConfig.cmake
            share/cmake/contrastive/contrastiveConfigVersion.cmake
            share/cmake/contrastive/contrastiveTargets.cmake
            share/pkgconfig/contrastive.pc share/doc/contrastive/LICENSE)
    if(NOT EXISTS ${PREFIX}/${f})
      message(FATAL_ERROR "not installed: ${PREFIX}/${f}")
    endif()
  endforeach()
  file(READ ${PREFIX}/share/pkgconfig/contrastive.pc pc)
  expect("${pc}" "contrastive.pc" "\nprefix=${PREFIX}\n" "\nVersion: ${VERSION}\n" "\nRequires: eigen3")
  if(EXISTS ${WORK_DIR}/not-this-prefix)
    message(FATAL_ERROR "installed to the configured prefix instead of --prefix")
  endif()
  message("consumer ok: installed to ${PREFIX}")

elseif(MODE STREQUAL "find_package")
  build_and_run_consumer(${consumers}/find_package ${prefix_args})

elseif(MODE STREQUAL "find_package_torch")
  # Without libtorch the required component fails, saying why; with it, a
  # libtorch program builds and runs.
  execute_process(COMMAND ${CMAKE_COMMAND} -S ${consumers}/find_package_torch -B ${WORK_DIR}/no-torch ${common}
                          ${prefix_args} -DCMAKE_DISABLE_FIND_PACKAGE_Torch=ON
                  RESULT_VARIABLE rc OUTPUT_VARIABLE o ERROR_VARIABLE e)
  if(rc EQUAL 0)
    message(FATAL_ERROR "find_package(contrastive COMPONENTS torch) configured without libtorch:\n${o}\n${e}")
  endif()
  string(REGEX REPLACE "[ \t\r\n]+" " " e_flat "${e}")
  expect("${e_flat}" "the configure error without libtorch" "component 'torch' needs libtorch")
  build_and_run_consumer(${consumers}/find_package_torch ${prefix_args})

elseif(MODE STREQUAL "version_rejected")
  # Must fail, and because of the version: the package is found, with VERSION.
  execute_process(COMMAND ${CMAKE_COMMAND} -S ${consumers}/version_rejected -B ${WORK_DIR}/build ${prefix_args}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE o ERROR_VARIABLE e)
  if(rc EQUAL 0)
    message(FATAL_ERROR "find_package(contrastive 9.0 REQUIRED) configured:\n${o}\n${e}")
  endif()
  string(REPLACE "." "\\." version_re "${VERSION}")
  string(REGEX REPLACE "[ \t\r\n]+" " " e_flat "${e}")
  expect("${e_flat}" "the configure error"
         "compatible with requested version \"9\\.0\"" "contrastiveConfig\\.cmake, version: ${version_re}")
  message("consumer ok: find_package(contrastive 9.0) rejected version ${VERSION}")

elseif(MODE STREQUAL "pkg_config")
  find_program(PKG_CONFIG NAMES pkg-config pkgconf)
  if(NOT PKG_CONFIG)
    message(FATAL_ERROR "pkg-config not found")
  endif()
  if(PREFIX)
    set(ENV{PKG_CONFIG_PATH} "${PREFIX}/share/pkgconfig")
  endif()
  run(modversion ${PKG_CONFIG} --modversion contrastive)
  run(requires ${PKG_CONFIG} --print-requires contrastive)
  run(libs ${PKG_CONFIG} --libs contrastive)
  run(cflags ${PKG_CONFIG} --cflags contrastive)
  string(STRIP "${modversion}" modversion)
  string(STRIP "${libs}" libs)
  string(STRIP "${cflags}" cflags)
  if(NOT modversion STREQUAL VERSION)
    message(FATAL_ERROR "pkg-config --modversion contrastive: '${modversion}', expected '${VERSION}'")
  endif()
  expect("${requires}" "pkg-config --print-requires contrastive" "eigen3")
  if(NOT libs STREQUAL "")
    message(FATAL_ERROR "header-only, yet pkg-config --libs contrastive gives '${libs}'")
  endif()
  if(PREFIX)
    expect(" ${cflags} " "pkg-config --cflags contrastive" " -I${PREFIX}/include ")
  endif()
  message("pkg-config --cflags contrastive: ${cflags}")
  separate_arguments(cflags UNIX_COMMAND "${cflags}")
  set(openmp_flag 0)
  if(EXPECT_OPENMP)  # pkg-config does not carry OpenMP: the caller asks for it
    set(openmp_flag 1)
    set(extra -fopenmp)
  endif()
  run(_ ${CXX} -std=c++17 ${extra} ${cflags} -DCONSUMER_EXPECT_OPENMP=${openmp_flag}
      ${consumers}/main.cpp -o ${WORK_DIR}/consumer)
  run_consumer(${WORK_DIR}/consumer)

elseif(MODE STREQUAL "add_subdirectory")
  build_and_run_consumer(${consumers}/add_subdirectory -DCONTRASTIVE_SOURCE_DIR=${SOURCE_DIR})

elseif(MODE STREQUAL "fetchcontent")
  # A release-like tarball holding only what a subproject build reads.
  set(stage ${WORK_DIR}/contrastive-${VERSION})
  file(MAKE_DIRECTORY ${stage})
  file(COPY ${SOURCE_DIR}/CMakeLists.txt ${SOURCE_DIR}/LICENSE ${SOURCE_DIR}/cmake ${SOURCE_DIR}/include
       DESTINATION ${stage})
  run(_ ${CMAKE_COMMAND} -E chdir ${WORK_DIR} ${CMAKE_COMMAND} -E tar czf contrastive-${VERSION}.tar.gz
      contrastive-${VERSION})
  file(REMOVE_RECURSE ${stage})
  build_and_run_consumer(${consumers}/fetchcontent
                         -DCONTRASTIVE_URL=file://${WORK_DIR}/contrastive-${VERSION}.tar.gz)
  if(EXISTS ${WORK_DIR}/build/_deps/contrastive-build/tests)
    message(FATAL_ERROR "a FetchContent subproject configured contrastive's tests")
  endif()

elseif(MODE STREQUAL "export")
  set(src ${consumers}/export)
  run(_ ${CMAKE_COMMAND} -S ${src} -B ${WORK_DIR}/trainer-build ${common}
      -DCONTRASTIVE_SOURCE_DIR=${SOURCE_DIR} -DCMAKE_INSTALL_PREFIX=${WORK_DIR}/prefix)
  run(_ ${CMAKE_COMMAND} --build ${WORK_DIR}/trainer-build)
  run(_ ${CMAKE_COMMAND} --install ${WORK_DIR}/trainer-build)
  foreach(f share/cmake/trainer/trainerTargets.cmake share/cmake/contrastive/contrastiveConfig.cmake
            include/contrastive/version.hpp)
    if(NOT EXISTS ${WORK_DIR}/prefix/${f})
      message(FATAL_ERROR "not installed with trainer: ${WORK_DIR}/prefix/${f}")
    endif()
  endforeach()
  build_and_run_consumer(${src}/downstream -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)

else()
  message(FATAL_ERROR "run_consumer.cmake: unknown MODE '${MODE}'")
endif()
