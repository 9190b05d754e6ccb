// The console page (controller/console.html), built into the binary by cmake/embed_text.cmake.
#pragma once

namespace controller {

extern const char kConsolePage[];

}  // namespace controller
