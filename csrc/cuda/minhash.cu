// The minhash CUDA kernels (to be written).
