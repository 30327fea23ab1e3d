# The GPU tests (see ctdl_gpu_test in ../CMakeLists.txt): one line each.
ctdl_gpu_test(test_gpu_elementwise gpu/test_elementwise.cu)
ctdl_gpu_test(test_gpu_device_memory gpu/test_device_memory.cu)
ctdl_gpu_test(test_gpu_nccl gpu/test_nccl.cu ctdl::nccl)
ctdl_gpu_test(test_gpu_elem gpu/test_elem.cu)
ctdl_gpu_test(test_gpu_optim gpu/test_optim.cu)
ctdl_gpu_test(test_gpu_blas gpu/test_blas.cu)
ctdl_gpu_test(test_gpu_attention gpu/test_attention.cu)
ctdl_gpu_test(test_gpu_norm gpu/test_norm.cu)
