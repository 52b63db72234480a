# The CPU sources of the addon: read by binding.gyp (as a gyp include) and by CMakeLists.txt (by pattern).
{
  'variables': {
    'mla_cpu_sources': [
      'csrc/core/ops.cc',
      'csrc/core/backends.cc',
      'csrc/cpu/cpu_backend.cc',
      'csrc/cpu/thread_pool.cc',
      'csrc/cpu/prefill_cpu.cc',
      'csrc/cpu/kernels_portable.cc',
      'csrc/cpu/kernels_avx2.cc',
      'csrc/cpu/kernels_avx512.cc',
      'csrc/cpu/kernels_avx512bf16.cc',
      'csrc/addon/addon.cc',
      'csrc/addon/stream.cc',
      'csrc/addon/graph.cc',
      'csrc/addon/device_buffer.cc',
    ],
  },
}
