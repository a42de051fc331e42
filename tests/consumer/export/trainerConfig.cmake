include(CMakeFindDependencyMacro)
find_dependency(contrastive 0.2)
include("${CMAKE_CURRENT_LIST_DIR}/trainerTargets.cmake")
