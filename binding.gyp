# The CPU-only addon, built by node-gyp when no prebuild matches (npm install's fallback).
# Sources come from csrc/sources.gypi, the list CMakeLists.txt reads too.
{
  'includes': ['csrc/sources.gypi'],
  'targets': [
    {
      'target_name': 'mla_kernels',
      'sources': ['<@(mla_cpu_sources)'],
      'include_dirs': ["<!(node -p \"require('node-addon-api').include_dir\")", 'csrc'],
      'defines': ['NAPI_VERSION=8', 'NAPI_CPP_EXCEPTIONS', 'NODE_ADDON_API_CPP_EXCEPTIONS_ALL', 'NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS', 'NODE_ADDON_API_DISABLE_DEPRECATED'],
      'cflags!': ['-fno-exceptions', '-fno-rtti'],
      'cflags_cc!': ['-fno-exceptions', '-fno-rtti', '-std=gnu++14', '-std=gnu++17', '-std=c++17', '-std=gnu++20'],
      'cflags_cc': ['-std=c++17', '-O3'],
      'xcode_settings': {
        'GCC_ENABLE_CPP_EXCEPTIONS': 'YES',
        'CLANG_CXX_LANGUAGE_STANDARD': 'c++17',
        'MACOSX_DEPLOYMENT_TARGET': '11.0',
      },
      'msvs_settings': {'VCCLCompilerTool': {'ExceptionHandling': 1, 'AdditionalOptions': ['/std:c++17']}},
    },
  ],
}
