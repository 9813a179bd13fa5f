// The soft_cap CUDA kernels (to be written).
