# CPack: the Debian packages, one per install component (`cpack -G DEB` in the build folder).
#   fedprllm-common  the SentencePiece module (lib/fedprllm) and the example configs, which
#                    every binary package needs; the others depend on it
#   fedprllm-server  fedprllm-server and fedprllm-server.service
#   fedprllm-client  fedprllm-client and fedprllm-client@.service
#   fedprllm-tools   fedprllm-admin, -eval, -convert, -generate, -prune, -sim
# The server and client packages create the `fedprllm` system user their units run as
# (deploy/debian/postinst). Shared-library dependencies are computed by dpkg-shlibdeps.
# Included from the top-level CMakeLists.txt after the install() rules.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME fedprllm)
set(CPACK_PACKAGE_VENDOR "FedPrLLM")
set(CPACK_PACKAGE_CONTACT "FedPrLLM maintainers <fedprllm-maintainers@example.org>")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${CPACK_PACKAGE_CONTACT}")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL common server client tools)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# Libraries in these folders (e.g. a LibTorch distribution in /opt/libtorch/lib, see
# docker/Dockerfile.client-cuda) belong to no package: dpkg-shlibdeps skips them.
# Set with -DCPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS=...; default: none.
# Component dependencies below become Depends: fedprllm-common (= VERSION).
set(CPACK_DEBIAN_ENABLE_COMPONENT_DEPENDS ON)

# LibTorch's CPU kernels call BLAS through libblas.so.3; without OpenBLAS, Debian's
# alternative is the slow reference BLAS.
foreach(component SERVER CLIENT TOOLS)
  set(CPACK_DEBIAN_${component}_PACKAGE_RECOMMENDS "libopenblas0-pthread")
endforeach()

set(CPACK_DEBIAN_COMMON_PACKAGE_NAME fedprllm-common)
# Each description: the first line is the synopsis, the rest the extended description.
set(CPACK_COMPONENT_COMMON_DESCRIPTION
  "FedPrLLM shared files\nThe SentencePiece tokenizer module the FedPrLLM binaries load, and example\nconfigurations for the server, sites, operators and jobs.")

set(CPACK_DEBIAN_SERVER_PACKAGE_NAME fedprllm-server)
set(CPACK_COMPONENT_SERVER_DEPENDS common)
# procps: /bin/kill, the unit's ExecReload.
set(CPACK_DEBIAN_SERVER_PACKAGE_DEPENDS "adduser, procps")
set(CPACK_DEBIAN_SERVER_PACKAGE_CONTROL_EXTRA ${CMAKE_CURRENT_LIST_DIR}/debian/postinst)
set(CPACK_COMPONENT_SERVER_DESCRIPTION
  "FedPrLLM aggregation server\nThe long-running mutual-TLS gRPC server of a federated pruning job: sites\ncalibrate on their private data and upload masks, the server aggregates them and\nwrites the pruned model. Runs as the fedprllm user under fedprllm-server.service.")

set(CPACK_DEBIAN_CLIENT_PACKAGE_NAME fedprllm-client)
set(CPACK_COMPONENT_CLIENT_DEPENDS common)
set(CPACK_DEBIAN_CLIENT_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_CLIENT_PACKAGE_CONTROL_EXTRA ${CMAKE_CURRENT_LIST_DIR}/debian/postinst)
set(CPACK_COMPONENT_CLIENT_DESCRIPTION
  "FedPrLLM site daemon\nJoins a FedPrLLM server over mutual TLS, scores the model's weights on the\nsite's private calibration text and uploads only pruning masks. One instance per\nsite config: fedprllm-client@NAME.service.")

set(CPACK_DEBIAN_TOOLS_PACKAGE_NAME fedprllm-tools)
set(CPACK_COMPONENT_TOOLS_DEPENDS common)
set(CPACK_COMPONENT_TOOLS_DESCRIPTION
  "FedPrLLM command-line tools\nfedprllm-admin (the operator's client of the server: jobs, status, health),\nand fedprllm-eval, -convert, -generate, -prune and -sim for models.")

include(CPack)

# `cmake --build B --target packaged` builds exactly what the packages hold; configured with
# -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON, `cpack` then builds nothing else (by default it
# first builds `all`, tests included). The images (docker/) build this way.
add_custom_target(packaged)
add_dependencies(packaged fedprllm_sentencepiece fedprllm-server fedprllm-client fedprllm-admin
  fedprllm-eval fedprllm-convert fedprllm-generate fedprllm-prune)
if(TARGET fedprllm-sim)
  add_dependencies(packaged fedprllm-sim)
endif()
