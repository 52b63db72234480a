// The prebuilds link libstdc++ statically (scripts/build-prebuild.mjs). Its exception classes pull in
// std::random_device (which this addon never uses), and GCC 12's calls arc4random, which glibc has only since 2.36:
// this hidden definition, from getrandom (glibc 2.25), satisfies it inside the addon, so the prebuilds load on glibc
// 2.34 (docs/platforms.md). A build that links libstdc++ dynamically never refers to it.
#include <stdint.h>  // defines __GLIBC__ on glibc
#if defined(__linux__) && defined(__GLIBC__)
#include <sys/random.h>

extern "C" __attribute__((visibility("hidden"))) uint32_t arc4random(void) {
  uint32_t value = 0;
  while (getrandom(&value, sizeof value, 0) != static_cast<ssize_t>(sizeof value)) {
  }
  return value;
}
#endif
