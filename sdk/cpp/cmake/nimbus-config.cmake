# find_package(nimbus) support for native function projects.
#   find_package(nimbus REQUIRED)
#   nimbus_add_function(hello hello.cpp)
#   target_link_libraries(hello PRIVATE nimbus::durable)   # an orchestrator or entity
# builds hello.so: a C++20 module library exporting only the Nimbus entry points. When the
# host builds an app it sets NIMBUS_OUTPUT_DIR so every function lands in one folder.
if(TARGET nimbus::sdk)
  return()
endif()
get_filename_component(_nimbus_sdk_dir "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
add_library(nimbus::sdk INTERFACE IMPORTED)
set_target_properties(nimbus::sdk PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_nimbus_sdk_dir}")

# Durable orchestrators and entities in C++ (nimbus/durable.h) speak JSON through Boost.JSON,
# compiled into the function from its headers (durable_json.cpp: one copy, nothing to load):
#   target_link_libraries(fn PRIVATE nimbus::durable)
add_library(nimbus::durable INTERFACE IMPORTED)
set_target_properties(nimbus::durable PROPERTIES
  INTERFACE_LINK_LIBRARIES nimbus::sdk
  INTERFACE_SOURCES "${_nimbus_sdk_dir}/nimbus/durable_json.cpp"
  INTERFACE_COMPILE_DEFINITIONS "BOOST_JSON_NO_LIB;BOOST_CONTAINER_NO_LIB")

function(nimbus_add_function name)
  add_library(${name} MODULE ${ARGN})
  target_link_libraries(${name} PRIVATE nimbus::sdk)
  target_compile_features(${name} PRIVATE cxx_std_20)
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    OUTPUT_NAME "${name}"
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    POSITION_INDEPENDENT_CODE ON)
  if(NIMBUS_OUTPUT_DIR)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${NIMBUS_OUTPUT_DIR}")
  endif()
endfunction()
