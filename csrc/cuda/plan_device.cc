// plan.cc compiled for the GPU kernels (mla::kernels); plan.cc as such serves cuda-sim (mla::kernels_sim).
#define MLA_KERNELS_DEVICE_API 1
#include "plan.cc"
