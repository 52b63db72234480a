// appendLatentCache(stream, [cache, kvC, kPe, slotMapping, cacheScale, ropeStyle?, positions?, cos?, sin?], after).
#include "op.h"

namespace mla::addon {
namespace {

namespace arg { enum : uint32_t { cache, kvC, kPe, slotMapping, cacheScale, ropeStyle, positions, cos, sin }; }

AppendLatentCacheParams read(const Napi::Array& o, Retained* keepAlive, bool) {
  AppendLatentCacheParams p;
  p.cache = toView(o, arg::cache, "cache", false, keepAlive);
  p.kvC = toView(o, arg::kvC, "kvC", false, keepAlive);
  p.kPe = toView(o, arg::kPe, "kPe", false, keepAlive);
  p.slotMapping = toView(o, arg::slotMapping, "slotMapping", false, keepAlive);
  p.cacheScale = static_cast<float>(getNumber(o, arg::cacheScale, "cacheScale"));
  Napi::Value style = o.Get(arg::ropeStyle);
  if (style.IsString()) {
    std::string s = style.As<Napi::String>().Utf8Value();
    if (s == "interleaved") p.ropeStyle = RopeStyle::Interleaved;
    else if (s == "neox") p.ropeStyle = RopeStyle::Neox;
    else throw Error(ErrorCode::Argument, "rope.style must be 'interleaved' or 'neox', got '" + s + "'");
    // As the caller spelled them.
    p.positions = toView(o, arg::positions, "rope.positions", false, keepAlive);
    p.cos = toView(o, arg::cos, "rope.cos", false, keepAlive);
    p.sin = toView(o, arg::sin, "rope.sin", false, keepAlive);
  }
  return p;
}

void run(Backend& backend, const AppendLatentCacheParams& p) { backend.appendLatentCache(p); }

const OpSpec<AppendLatentCacheParams> kAppend{"appendLatentCache", read, run};

}  // namespace

void exportAppendLatentCache(Napi::Env env, Napi::Object exports) { exportOp(env, exports, kAppend); }

}  // namespace mla::addon
