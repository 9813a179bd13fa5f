// The sampling CUDA kernels (to be written).
