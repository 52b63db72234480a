#include "env.h"

#include "stream.h"

namespace mla::addon {

AddonData& initEnv(Napi::Env env) {
  auto* data = new AddonData();
  env.SetInstanceData(data);  // deleted by Node after the cleanup hooks have run
  napi_add_env_cleanup_hook(env, stopStreams, data);
  return *data;
}

}  // namespace mla::addon
