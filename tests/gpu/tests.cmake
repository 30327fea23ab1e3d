# The GPU tests (see ctdl_gpu_test in ../CMakeLists.txt): one line each.
ctdl_gpu_test(test_gpu_elementwise gpu/test_elementwise.cu)
ctdl_gpu_test(test_gpu_norm gpu/test_norm.cu)
